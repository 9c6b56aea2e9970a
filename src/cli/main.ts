#!/usr/bin/env node
/**
 * The `coffer` command line. Exit codes: 0 success, 1 the command failed (the
 * message says why), 2 the command line itself was wrong.
 */
import yargs from 'yargs';
import { hideBin } from 'yargs/helpers';
import { CofferError } from '../errors.js';
import { initCommand, mountCommand, statusCommand, unmountCommand } from './commands.js';

const EXIT_FAILED = 1;
const EXIT_USAGE = 2;

async function main(): Promise<void> {
  await yargs(hideBin(process.argv))
    .scriptName('coffer')
    .usage('$0 <command> [options]\n\nAn end-to-end encrypted drive: a folder whose contents live as ciphertext on storage you do not have to trust.')
    .option('passphrase-file', { type: 'string', describe: 'read the passphrase from this file (else COFFER_PASSPHRASE, else a prompt)', global: true })
    .command(
      'init <vault-dir>',
      'create a new vault',
      (y) =>
        y
          .positional('vault-dir', { type: 'string', demandOption: true, describe: 'a new or empty directory for the vault' })
          .option('remote', { type: 'string', describe: 'where the encrypted data goes (default: a folder inside the vault), e.g. file:///srv/coffer' })
          .example('$0 init ~/vault', 'create a vault whose remote is the folder ~/vault/remote'),
      (argv) => initCommand({ vault: argv['vault-dir'], remote: argv.remote, passphraseFile: argv['passphrase-file'] }),
    )
    .command(
      'mount <vault-dir> <mountpoint>',
      'unlock a vault and mount it as a folder',
      (y) =>
        y
          .positional('vault-dir', { type: 'string', demandOption: true })
          .positional('mountpoint', { type: 'string', demandOption: true, describe: 'an existing directory' })
          .option('foreground', { type: 'boolean', default: false, describe: 'keep the daemon attached to this terminal (for systemd and debugging)' })
          .example('$0 mount ~/vault ~/Coffer', 'mount in the background; returns once ~/Coffer is live'),
      (argv) => mountCommand({ vault: argv['vault-dir'], mountpoint: argv.mountpoint, foreground: argv.foreground, passphraseFile: argv['passphrase-file'] }),
    )
    .command(
      'unmount <target>',
      'commit everything, stop the daemon and unmount (target: mountpoint or vault dir)',
      (y) => y.positional('target', { type: 'string', demandOption: true }).example('$0 unmount ~/Coffer', ''),
      (argv) => unmountCommand({ target: argv.target }),
    )
    .command(
      'status <target>',
      'show whether a vault is mounted and what it holds (target: vault dir or mountpoint)',
      (y) =>
        y
          .positional('target', { type: 'string', demandOption: true })
          .option('json', { type: 'boolean', default: false, describe: 'print one JSON object' })
          .example('$0 status ~/Coffer --json', ''),
      (argv) => statusCommand({ target: argv.target, json: argv.json }),
    )
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
