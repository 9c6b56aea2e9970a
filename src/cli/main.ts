#!/usr/bin/env node
/**
 * The `coffer` command line. Exit codes: 0 success, 1 the command failed (the
 * message says why; a refusal by the remote server is one), 2 the command line itself was wrong.
 */
import yargs, { type Argv } from 'yargs';
import { hideBin } from 'yargs/helpers';
import { CofferError } from '../errors.js';
import { parseSize } from '../vault/config.js';
import { LOG_LEVELS, type LogLevel } from '../logging.js';
import { cloneCommand } from './commands/clone.js';
import { fsckCommand } from './commands/fsck.js';
import { initCommand } from './commands/init.js';
import { logsCommand } from './commands/logs.js';
import { lsMountsCommand } from './commands/ls-mounts.js';
import { devicesCommand } from './commands/devices.js';
import { upgradeCommand } from './commands/upgrade.js';
import { mountCommand } from './commands/mount.js';
import { passwdCommand } from './commands/passwd.js';
import {
  serveAccountAddCommand,
  serveAccountListCommand,
  serveAccountRemoveCommand,
  serveAccountRevokeCommand,
  serveAccountSetCommand,
  serveAccountTokenCommand,
  serveCommand,
} from './commands/serve.js';
import { rebuildIndexCommand } from './commands/rebuild-index.js';
import { DEFAULT_STOP_TIMEOUT_S, serviceInstallCommand, serviceUninstallCommand } from './commands/service.js';
import { statusCommand } from './commands/status.js';
import { syncCommand } from './commands/sync.js';
import { unmountCommand } from './commands/unmount.js';

const EXIT_FAILED = 1;
const EXIT_USAGE = 2;

// Whatever Coffer writes on this machine (vault directories, indexes, logs, a server's data) is
// its owner's alone; the daemon inherits this.
process.umask(0o077);

const size = (value: string | undefined) => (value === undefined ? undefined : parseSize(value));
/** Where a `coffer serve` command keeps its data: `--data DIR` or `--s3 URL [--s3-endpoint URL]`. */
const storeArgs = (argv: { data?: string; s3?: string; 's3-endpoint'?: string }) => ({ data: argv.data, s3: argv.s3, s3Endpoint: argv['s3-endpoint'] });

/** A positive number of seconds from the command line, as milliseconds. */
function seconds(flag: string, value: number | undefined): number | undefined {
  if (value === undefined) return undefined;
  if (!(Number.isFinite(value) && value > 0)) throw new CofferError('BAD_ARGUMENT', `${flag}: expected a number of seconds above 0, got ${value}`);
  return Math.round(value * 1000);
}

function remoteOptions<T>(y: Argv<T>) {
  return y
    .option('s3-endpoint', { type: 'string', describe: 'S3 endpoint URL for s3:// remotes other than AWS (else COFFER_S3_ENDPOINT)' })
    .option('s3-region', { type: 'string', describe: 'S3 region (else AWS_REGION, else us-east-1)' })
    .option('cache-size', { type: 'string', describe: 'local cache limit, e.g. 10G (chunks the remote holds are evicted beyond it)' });
}

/** For the commands that unlock a vault (the server commands have no passphrase to take). */
function passphraseOption<T>(y: Argv<T>, describe = 'read the passphrase from this file (else COFFER_PASSPHRASE, else a prompt)') {
  return y.option('passphrase-file', { type: 'string', describe });
}

async function main(): Promise<void> {
  await yargs(hideBin(process.argv))
    .scriptName('coffer')
    .usage('$0 <command> [options]\n\nAn end-to-end encrypted drive: a folder whose contents live as ciphertext on storage you do not have to trust.')
    .command(
      'init <vault-dir>',
      'create a new vault',
      (y) =>
        passphraseOption(remoteOptions(y))
          .positional('vault-dir', { type: 'string', demandOption: true, describe: 'a new or empty directory for the vault' })
          .option('remote', { type: 'string', describe: 'where the encrypted data goes (default: a folder inside the vault): file:///path, s3://bucket/prefix or http(s)://host:port/prefix/ (coffer serve; token from COFFER_TOKEN)' })
          .option('name', { type: 'string', describe: `the volume name the mount shows (df, findmnt, mountinfo); default: the directory's name. Kept on this machine only` })
          .option('json', { type: 'boolean', default: false, describe: 'print what was created as JSON' })
          .example('$0 init ~/vault', 'a vault whose remote is the folder ~/vault/remote')
          .example('$0 init ~/photos-vault --name Photos', 'mounts show up as "Photos"')
          .example('$0 init ~/vault --remote s3://my-bucket/coffer --s3-endpoint http://127.0.0.1:9000', 'a vault on an S3-compatible store'),
      (argv) =>
        initCommand({
          vault: argv['vault-dir'],
          name: argv.name,
          remote: argv.remote,
          s3Endpoint: argv['s3-endpoint'],
          s3Region: argv['s3-region'],
          cacheSize: size(argv['cache-size']),
          passphraseFile: argv['passphrase-file'],
          json: argv.json,
        }),
    )
    .command(
      'mount <vault-dir> <mountpoint>',
      'unlock a vault and mount it as a folder',
      (y) =>
        passphraseOption(y)
          .positional('vault-dir', { type: 'string', demandOption: true })
          .positional('mountpoint', { type: 'string', demandOption: true, describe: 'an existing directory' })
          .option('foreground', { type: 'boolean', default: false, describe: 'keep the daemon attached to this terminal (for systemd and debugging)' })
          .option('cache-size', { type: 'string', describe: 'local cache limit for this mount, e.g. 10G' })
          .option('log-level', { type: 'string', choices: LOG_LEVELS, describe: 'least important daemon log lines kept (else the config\'s logLevel, else info)' })
          .option('upload-limit', { type: 'string', describe: 'bytes per second sent to the remote, e.g. 2M; 0 for no limit (else the config\'s uploadLimit)' })
          .option('download-limit', { type: 'string', describe: 'bytes per second taken from the remote, e.g. 10M; 0 for no limit (else the config\'s downloadLimit)' })
          .option('json', { type: 'boolean', default: false, describe: 'print what was mounted (with the daemon pid) as JSON once the mount is live' })
          .example('$0 mount ~/vault ~/Coffer', 'mount in the background; returns once ~/Coffer is live')
          .example('$0 mount ~/vault ~/Coffer --upload-limit 1M --log-level debug', 'send at most 1 MiB/s, and log each upload'),
      (argv) =>
        mountCommand({
          vault: argv['vault-dir'],
          mountpoint: argv.mountpoint,
          foreground: argv.foreground,
          passphraseFile: argv['passphrase-file'],
          overrides: {
            cacheSize: size(argv['cache-size']),
            logLevel: argv['log-level'] as LogLevel | undefined,
            uploadLimit: size(argv['upload-limit']),
            downloadLimit: size(argv['download-limit']),
          },
          json: argv.json,
        }),
    )
    .command(
      'unmount <target>',
      'commit everything, stop the daemon and unmount (target: mountpoint or vault dir)',
      (y) =>
        y
          .positional('target', { type: 'string', demandOption: true })
          .option('wait-sync', {
            type: 'boolean',
            describe: 'first wait until the remote holds everything (with progress); --no-wait-sync: do not wait and do not ask. Without either, a terminal is asked',
          })
          .option('timeout', { type: 'number', describe: 'with --wait-sync: wait at most this many seconds, then unmount anyway (the rest stays queued; exit 1)' })
          .option('json', { type: 'boolean', default: false, describe: 'print what was unmounted and what is not uploaded yet as JSON; never asks (waits only with --wait-sync)' })
          .example('$0 unmount ~/Coffer', 'unmount now; says what is not uploaded yet (on a terminal, offers to wait)')
          .example('$0 unmount ~/Coffer --wait-sync --timeout 60', 'upload for up to a minute, then unmount')
          .example('$0 unmount ~/Coffer --json', 'unmount now without asking; pendingChunks and pendingBytes say what stays queued'),
      (argv) => unmountCommand({ target: argv.target, waitSync: argv['wait-sync'], timeout: argv.timeout, json: argv.json }),
    )
    .command(
      'status <target>',
      'show whether a vault is mounted and what it holds (target: vault dir or mountpoint)',
      (y) =>
        y
          .positional('target', { type: 'string', demandOption: true })
          .option('json', { type: 'boolean', default: false, describe: 'print one JSON object' })
          .option('watch', { alias: 'w', type: 'boolean', default: false, describe: 'refresh every second until interrupted' })
          .example('$0 status ~/Coffer --json', '')
          .example('$0 status ~/Coffer --watch', ''),
      (argv) => statusCommand({ target: argv.target, json: argv.json, watch: argv.watch }),
    )
    .command(
      'sync <target>',
      'upload and publish now (target: mountpoint or vault dir of a mounted vault)',
      (y) =>
        y
          .positional('target', { type: 'string', demandOption: true })
          .option('wait', {
            type: 'boolean',
            default: false,
            describe: 'show progress; exit 0 once the remote holds everything written before the call, 1 when the remote refuses (token, full account) or --timeout runs out',
          })
          .option('timeout', { type: 'number', describe: 'with --wait: wait at most this many seconds (the upload carries on in the background)' })
          .option('json', { type: 'boolean', default: false, describe: 'with --wait: print the final status as JSON (with synced and reason)' })
          .example('$0 sync ~/Coffer --wait', '')
          .example('$0 sync ~/Coffer --wait --timeout 300', 'give up waiting after five minutes'),
      (argv) => syncCommand({ target: argv.target, wait: argv.wait, timeout: argv.timeout, json: argv.json }),
    )
    .command(
      'clone <remote-url> <vault-dir>',
      'recreate a vault on this machine from its remote and passphrase',
      (y) =>
        passphraseOption(remoteOptions(y))
          .positional('remote-url', { type: 'string', demandOption: true, describe: 'file:///path, s3://bucket/prefix or http(s)://host:port/prefix/' })
          .positional('vault-dir', { type: 'string', demandOption: true, describe: 'a new or empty directory' })
          .option('name', { type: 'string', describe: `the volume name of this copy (names are never on the remote); default: the directory's name` })
          .option('device-name', { type: 'string', describe: 'what this device is called in coffer devices and in conflicted copies; default: the host name' })
          .option('json', { type: 'boolean', default: false, describe: 'print what was cloned as JSON' })
          .example('$0 clone s3://my-bucket/coffer ~/vault --s3-endpoint http://127.0.0.1:9000', '')
          .example('$0 clone file:///mnt/usb/coffer ~/vault --device-name laptop', 'a second device of the vault on the USB disk'),
      (argv) =>
        cloneCommand({
          remote: argv['remote-url'],
          vault: argv['vault-dir'],
          name: argv.name,
          deviceName: argv['device-name'],
          s3Endpoint: argv['s3-endpoint'],
          s3Region: argv['s3-region'],
          cacheSize: size(argv['cache-size']),
          passphraseFile: argv['passphrase-file'],
          json: argv.json,
        }),
    )
    .command(
      'fsck <vault-dir>',
      'check an unmounted vault: the index, every local chunk, and with --remote every chunk on the remote',
      (y) =>
        passphraseOption(y)
          .positional('vault-dir', { type: 'string', demandOption: true })
          .option('remote', { type: 'boolean', default: false, describe: 'also download and authenticate every chunk from the remote' })
          .option('json', { type: 'boolean', default: false, describe: 'print the report as JSON' })
          .example('$0 fsck ~/vault --remote', ''),
      (argv) => fsckCommand({ vault: argv['vault-dir'], remote: argv.remote, json: argv.json, passphraseFile: argv['passphrase-file'] }),
    )
    .command(
      'rebuild-index <vault-dir>',
      'rebuild a lost or damaged local index from the remote (keeps the old files and unplaced chunks aside)',
      (y) =>
        passphraseOption(y)
          .positional('vault-dir', { type: 'string', demandOption: true })
          .option('json', { type: 'boolean', default: false, describe: 'print what was restored and what was moved aside as JSON' })
          .example('$0 rebuild-index ~/vault', ''),
      (argv) => rebuildIndexCommand({ vault: argv['vault-dir'], passphraseFile: argv['passphrase-file'], json: argv.json }),
    )
    .command(
      'upgrade <vault-dir>',
      'upgrade a format-1 vault and its remote to format 2 (mounting does it too)',
      (y) =>
        passphraseOption(y)
          .positional('vault-dir', { type: 'string', demandOption: true })
          .option('json', { type: 'boolean', default: false, describe: 'print the outcome as JSON' })
          .example('$0 upgrade ~/vault', ''),
      (argv) => upgradeCommand({ vault: argv['vault-dir'], passphraseFile: argv['passphrase-file'], json: argv.json }),
    )
    .command(
      'passwd <vault-dir>',
      'change the passphrase, here and on the remote (the old one stops working)',
      (y) =>
        passphraseOption(y, 'read the current passphrase from this file (else COFFER_PASSPHRASE, else a prompt)')
          .positional('vault-dir', { type: 'string', demandOption: true })
          .option('new-passphrase-file', { type: 'string', describe: 'read the new passphrase from this file (else COFFER_NEW_PASSPHRASE, else a prompt asked twice)' })
          .option('json', { type: 'boolean', default: false, describe: 'print the outcome as JSON' })
          .example('$0 passwd ~/vault', 'asks for the current passphrase, then the new one twice'),
      (argv) =>
        passwdCommand({ vault: argv['vault-dir'], passphraseFile: argv['passphrase-file'], newPassphraseFile: argv['new-passphrase-file'], json: argv.json }),
    )
    .command(
      'devices <target>',
      "list the vault's devices: name, id, last publish, and what this device has applied of each",
      (y) =>
        y
          .positional('target', { type: 'string', demandOption: true, describe: 'a vault directory or its mountpoint' })
          .option('json', { type: 'boolean', default: false, describe: 'print {devices: [...]} as JSON' })
          .example('$0 devices ~/Coffer', ''),
      (argv) => devicesCommand({ target: argv.target, json: argv.json }),
    )
    .command(
      'ls-mounts',
      'list Coffer mounts on this machine: live, stale (daemon gone) or another user\'s',
      (y) => y.option('json', { type: 'boolean', default: false, describe: 'print a JSON array' }).example('$0 ls-mounts', ''),
      (argv) => lsMountsCommand({ json: argv.json }),
    )
    .command(
      'logs <target>',
      'show the daemon log of a vault (target: vault dir or mountpoint)',
      (y) =>
        y
          .positional('target', { type: 'string', demandOption: true })
          .option('lines', { alias: 'n', type: 'number', default: 50, describe: 'how many lines from the end (older rotated files are read when the current one has fewer)' })
          .option('follow', { alias: 'f', type: 'boolean', default: false, describe: 'keep printing new lines, across rotations, until interrupted' })
          .option('json', { type: 'boolean', default: false, describe: 'print the raw JSON lines (a line that is not JSON, e.g. what a crash printed, comes as {"unstructured": "..."})' })
          .example('$0 logs ~/vault -f', 'the last 50 lines, then new ones as they come')
          .example('$0 logs ~/Coffer -n 500 --json | jq \'select(.level == "error")\'', 'errors among the last 500 lines'),
      (argv) => logsCommand({ target: argv.target, lines: argv.lines, follow: argv.follow, json: argv.json }),
    )
    .command('service', 'run a vault as a systemd user service that keeps it mounted', (y) =>
      y
        .command(
          'install <vault-dir> <mountpoint>',
          'write a systemd user unit that mounts the vault (needs --passphrase-file, readable by you alone)',
          (yy) =>
            passphraseOption(yy, 'the passphrase file the service mounts with (required; readable by you alone)')
              .positional('vault-dir', { type: 'string', demandOption: true })
              .positional('mountpoint', { type: 'string', demandOption: true, describe: 'an existing directory' })
              .option('stop-timeout', {
                type: 'number',
                describe: `when the service stops, wait at most this many seconds for pending uploads before unmounting (default ${DEFAULT_STOP_TIMEOUT_S}; the rest stays queued)`,
              })
              .option('json', { type: 'boolean', default: false, describe: 'print what was written as JSON' })
              .example('$0 service install ~/vault ~/Coffer --passphrase-file ~/.config/coffer/passphrase', 'then: systemctl --user enable --now <unit>'),
          (argv) =>
            serviceInstallCommand({
              vault: argv['vault-dir'],
              mountpoint: argv.mountpoint,
              passphraseFile: argv['passphrase-file'],
              stopTimeout: argv['stop-timeout'],
              json: argv.json,
            }),
        )
        .command(
          'uninstall <vault-dir>',
          "remove the vault's systemd user unit (prints the systemctl commands that stop it)",
          (yy) =>
            yy
              .positional('vault-dir', { type: 'string', demandOption: true })
              .option('json', { type: 'boolean', default: false, describe: 'print what was removed as JSON' })
              .example('$0 service uninstall ~/vault', ''),
          (argv) => serviceUninstallCommand({ vault: argv['vault-dir'], json: argv.json }),
        )
        .demandCommand(1, 'name a service command: install or uninstall')
        .example('$0 service install ~/vault ~/Coffer --passphrase-file ~/.config/coffer/passphrase', '')
        .example('$0 service uninstall ~/vault', ''),
    )
    .command('serve', 'run the HTTP storage server for http(s):// remotes, or manage its accounts', (y) =>
      y
        .option('data', { type: 'string', describe: 'the server\'s data directory (accounts.json and every account\'s objects)' })
        .option('s3', { type: 'string', describe: 'keep accounts.json and the objects in s3://bucket/prefix instead (credentials from AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY); many servers may share it' })
        .option('s3-endpoint', { type: 'string', describe: 'S3 endpoint URL for --s3 (default COFFER_S3_ENDPOINT, else AWS)' })
        .conflicts('data', 's3')
        .command(
          '$0',
          'serve the HTTP API in the foreground until SIGTERM or SIGINT',
          (yy) =>
            yy
              .option('listen', { type: 'string', default: '127.0.0.1:8080', describe: 'HOST:PORT to listen on (port 0: any free port; the line printed names it)' })
              .option('max-object-size', { type: 'string', describe: 'largest object accepted, e.g. 65M (default 65M)' })
              .option('max-uploads', { type: 'number', describe: 'uploads one account may have in progress at once (default 16)' })
              .option('rate-limit', { type: 'number', describe: 'requests per second per account, sustained (default 500)' })
              .option('request-timeout', { type: 'number', describe: 'seconds a request (headers and body) may take (default 300)' })
              .option('headers-timeout', { type: 'number', describe: 'seconds the request headers may take to arrive (default 10)' })
              .option('idle-timeout', { type: 'number', describe: 'seconds a connection may stay silent (default 30)' })
              .option('admin-token-file', { type: 'string', describe: 'GET /metrics on --listen needs Authorization: Bearer <the token in this file> (readable by you alone; else COFFER_ADMIN_TOKEN; without either, /metrics is refused there)' })
              .option('metrics-listen', { type: 'string', describe: 'HOST:PORT of a second, private address that serves /metrics and /healthz only, without a token (e.g. for Prometheus)' })
              .example('$0 serve --listen 127.0.0.1:8080 --data /srv/coffer', 'then on the drive: coffer init ~/vault --remote http://127.0.0.1:8080/')
              .example('$0 serve --listen 0.0.0.0:8080 --data /srv/coffer --metrics-listen 127.0.0.1:9464', 'metrics for a Prometheus on this host, never on the public address')
              .example('$0 serve --listen 0.0.0.0:8080 --s3 s3://bucket/coffer --s3-endpoint http://rgw:7480', 'one of several servers over one bucket'),
          (argv) =>
            serveCommand({
              listen: argv.listen,
              metricsListen: argv['metrics-listen'],
              adminTokenFile: argv['admin-token-file'],
              ...storeArgs(argv),
              maxObjectSize: size(argv['max-object-size']),
              maxConcurrentUploads: argv['max-uploads'],
              rateLimit: argv['rate-limit'],
              requestTimeoutMs: seconds('--request-timeout', argv['request-timeout']),
              headersTimeoutMs: seconds('--headers-timeout', argv['headers-timeout']),
              idleTimeoutMs: seconds('--idle-timeout', argv['idle-timeout']),
            }),
        )
        .command('account', 'manage the accounts of a coffer serve data directory or bucket', (yy) =>
          yy
            .command(
              'add <name>',
              'create an account and print its token (once: only its hash is stored)',
              (yyy) =>
                yyy
                  .positional('name', { type: 'string', demandOption: true })
                  .option('quota-bytes', { type: 'string', describe: 'bytes the account may store, e.g. 100G (default: no limit)' })
                  .option('quota-objects', { type: 'number', describe: 'objects the account may store (default: no limit)' })
                  .option('json', { type: 'boolean', default: false, describe: 'print the account and its token as JSON' })
                  .example('$0 serve account add alice --data /srv/coffer --quota-bytes 100G', ''),
              (argv) =>
                serveAccountAddCommand({
                  name: argv.name,
                  ...storeArgs(argv),
                  quotaBytes: size(argv['quota-bytes']),
                  quotaObjects: argv['quota-objects'],
                  json: argv.json,
                }),
            )
            .command(
              'list',
              'list the accounts: name, id, quotas, number of tokens, creation time (never the token hashes)',
              (yyy) => yyy.option('json', { type: 'boolean', default: false, describe: 'print a JSON array' }).example('$0 serve account list --data /srv/coffer', ''),
              (argv) => serveAccountListCommand({ ...storeArgs(argv), json: argv.json }),
            )
            .command(
              'token <name>',
              'issue one more token to an account and print it (once); its other tokens keep working',
              (yyy) =>
                yyy
                  .positional('name', { type: 'string', demandOption: true })
                  .option('json', { type: 'boolean', default: false, describe: 'print the account and the new token as JSON' })
                  .example('$0 serve account token alice --data /srv/coffer', ''),
              (argv) => serveAccountTokenCommand({ name: argv.name, ...storeArgs(argv), json: argv.json }),
            )
            .command(
              'revoke <name>',
              'revoke every token of an account (a running server refuses them within a second or two); its objects stay',
              (yyy) =>
                yyy
                  .positional('name', { type: 'string', demandOption: true })
                  .option('json', { type: 'boolean', default: false, describe: 'print what was revoked as JSON' })
                  .example('$0 serve account revoke alice --data /srv/coffer', 'then `account token alice` to let alice in again with a new token'),
              (argv) => serveAccountRevokeCommand({ name: argv.name, ...storeArgs(argv), json: argv.json }),
            )
            .command(
              'set <name>',
              "change an account's quotas (a running server applies them within a second or two)",
              (yyy) =>
                yyy
                  .positional('name', { type: 'string', demandOption: true })
                  .option('quota-bytes', { type: 'string', describe: 'bytes the account may store, e.g. 200G; 0 for no limit' })
                  .option('quota-objects', { type: 'number', describe: 'objects the account may store; 0 for no limit' })
                  .option('json', { type: 'boolean', default: false, describe: 'print the account as JSON' })
                  .example('$0 serve account set alice --data /srv/coffer --quota-bytes 200G', ''),
              (argv) =>
                serveAccountSetCommand({
                  name: argv.name,
                  ...storeArgs(argv),
                  quotaBytes: size(argv['quota-bytes']),
                  quotaObjects: argv['quota-objects'],
                  json: argv.json,
                }),
            )
            .command(
              'remove <name>',
              'remove an account and delete all its objects (needs --delete-objects)',
              (yyy) =>
                yyy
                  .positional('name', { type: 'string', demandOption: true })
                  .option('delete-objects', { type: 'boolean', default: false, describe: 'confirm that the account\'s objects are deleted with it' })
                  .option('json', { type: 'boolean', default: false, describe: 'print what was removed as JSON' })
                  .example('$0 serve account remove bob --data /srv/coffer --delete-objects', ''),
              (argv) => serveAccountRemoveCommand({ name: argv.name, ...storeArgs(argv), deleteObjects: argv['delete-objects'], json: argv.json }),
            )
            .demandCommand(1, 'name an account command: add, list, token, revoke, set or remove'),
        ),
    )
    .completion('completion', 'print a shell completion script (bash, zsh): source <(coffer completion)')
    .demandCommand(1, 'name a command')
    .strict()
    .recommendCommands()
    .help()
    .fail((message, err) => {
      if (err) throw err;
      process.stderr.write(`coffer: ${message}\nRun 'coffer --help' for usage.\n`);
      process.exit(EXIT_USAGE);
    })
    .parseAsync();
}

main().catch((err: unknown) => {
  if (err instanceof CofferError) {
    process.stderr.write(`coffer: ${err.message}\n`);
    process.exit(err.code === 'BAD_ARGUMENT' ? EXIT_USAGE : EXIT_FAILED);
  }
  process.stderr.write(`coffer: unexpected error: ${(err as Error)?.stack ?? String(err)}\n`);
  process.exit(EXIT_FAILED);
});
