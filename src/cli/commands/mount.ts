import { spawn } from 'node:child_process';
import { closeSync, mkdirSync, openSync } from 'node:fs';
import { access, constants, stat } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { CofferError, type CofferErrorCode } from '../../errors.js';
import { runDaemon } from '../../daemon/daemon.js';
import { openDaemonLog, type StartRequest } from '../../daemon/main.js';
import { volumeName, withOverrides, type ConfigOverrides } from '../../vault/config.js';
import { readVaultHeaderRaw, unlockVault } from '../../vault/vault.js';
import { formatBytes } from '../format.js';
import { obtainPassphrase } from '../passphrase.js';
import { cleanStaleMount, liveStatus, printJson, say } from '../shared.js';
import { resolveTarget } from '../target.js';

export interface MountArgs {
  vault: string;
  mountpoint: string;
  foreground: boolean;
  passphraseFile?: string;
  overrides: ConfigOverrides;
  /** Print the result as one JSON object on stdout (in the foreground: once the mount is live). */
  json?: boolean;
}

export async function mountCommand(args: MountArgs): Promise<void> {
  const vaultDir = resolve(args.vault);
  const mountpoint = resolve(args.mountpoint);
  await readVaultHeaderRaw(vaultDir); // a clear error before asking for a passphrase
  const target = await resolveTarget(vaultDir);
  if (target.alive && target.info) {
    const live = await liveStatus(target, vaultDir).catch(() => undefined);
    if (live?.stopping) {
      throw new CofferError(
        'ALREADY_MOUNTED',
        `the vault ${vaultDir} is still stopping: its daemon (pid ${target.info.pid}) is uploading what is pending before it exits, for a bounded time (shutdownDrainMs); try again in a moment`,
      );
    }
    throw new CofferError(
      'ALREADY_MOUNTED',
      `the vault ${vaultDir} is already mounted at ${target.info.mountpoint} (daemon pid ${target.info.pid}); unmount it first with: coffer unmount ${target.info.mountpoint}`,
    );
  }
  const staleCleaned = await cleanStaleMount(mountpoint);
  const mountStat = await stat(mountpoint).catch(() => undefined);
  if (!mountStat) throw new CofferError('BAD_ARGUMENT', `mountpoint ${mountpoint} does not exist; create it first (mkdir -p ${mountpoint})`);
  if (!mountStat.isDirectory()) throw new CofferError('BAD_ARGUMENT', `mountpoint ${mountpoint} is not a directory`);
  await checkFuseAccess();
  const passphrase = await obtainPassphrase({ passphraseFile: args.passphraseFile });
  const vault = await unlockVault(vaultDir, passphrase);
  const name = volumeName(vault.config, vault.paths);
  const shown = `${JSON.stringify(name)} (${vaultDir})`;

  if (args.foreground) {
    vault.config = withOverrides(vault.config, args.overrides);
    const log = openDaemonLog(vault.paths, vault.config, true);
    try {
      await runDaemon({
        vault,
        mountpoint,
        log,
        onReady: () =>
          args.json
            ? printJson({ vault: vaultDir, mountpoint, name, pid: process.pid, foreground: true, staleCleaned })
            : say(`Mounted ${shown} at ${mountpoint}. Stop with Ctrl-C or: coffer unmount ${mountpoint}`),
      });
    } finally {
      await log.close();
    }
    return;
  }

  await startBackgroundDaemon({ vault: vaultDir, mountpoint, masterKey: Buffer.from(vault.masterKey).toString('hex'), overrides: args.overrides }, vault.paths.log);
  const started = await resolveTarget(vaultDir);
  const status = await liveStatus(started, vaultDir).catch(() => undefined);
  if (args.json) {
    printJson({
      vault: vaultDir,
      mountpoint,
      name,
      pid: status?.pid ?? started.info?.pid ?? null,
      foreground: false,
      staleCleaned,
      remote: vault.config.remote,
      // Written before the last unmount and not yet on the remote: the daemon resumes their upload.
      pendingChunks: status?.pendingChunks ?? null,
      pendingBytes: status?.pendingBytes ?? null,
      // Why the remote did not answer the first contact (the drive then works offline); null when it did.
      remoteError: status?.sync.offline ?? null,
    });
    return;
  }
  say(`Mounted ${shown} at ${mountpoint}.`);
  // The remote did not answer the first contact: the drive works offline (never a refusal: that fails the mount).
  if (status?.sync.offline) say(`Note: ${status.sync.offline}.`);
  if (status && status.pendingChunks > 0) {
    say(`Resuming the upload of ${status.pendingChunks} chunks (${formatBytes(status.pendingBytes)}) written before the last unmount.`);
  }
}

/**
 * A user who is not root mounts through the setuid `fusermount` (Debian's fuse3), and
 * must be able to open /dev/fuse: say so before asking for a passphrase.
 */
async function checkFuseAccess(): Promise<void> {
  try {
    await access('/dev/fuse', constants.R_OK | constants.W_OK);
  } catch {
    throw new CofferError('BAD_ARGUMENT', 'cannot open /dev/fuse: FUSE is missing or not open to this user (on Debian: apt-get install fuse3; /dev/fuse must be mode 0666)');
  }
  if (process.getuid?.() === 0) return;
  const dirs = ['/usr/local/bin', ...(process.env.PATH ?? '').split(':').filter(Boolean)];
  for (const dir of dirs) {
    if (await access(join(dir, 'fusermount'), constants.X_OK).then(() => true, () => false)) return;
  }
  throw new CofferError('BAD_ARGUMENT', 'mounting as a normal user needs the setuid fusermount program (on Debian: apt-get install fuse3)');
}

/**
 * Starts the daemon detached, hands it the key on stdin, and waits for it to say on
 * fd 3 that the mountpoint is live (or why it is not).
 */
async function startBackgroundDaemon(request: StartRequest, logPath: string): Promise<void> {
  mkdirSync(dirname(logPath), { recursive: true });
  const logFd = openSync(logPath, 'a');
  const daemonMain = join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'daemon', 'main.js');
  const child = spawn(process.execPath, [daemonMain], { detached: true, stdio: ['pipe', logFd, logFd, 'pipe'] });
  closeSync(logFd);
  child.stdin!.end(JSON.stringify(request));
  const report = child.stdio[3] as NodeJS.ReadableStream;
  const outcome = await new Promise<string>((resolveOutcome) => {
    let text = '';
    report.setEncoding('utf8');
    report.on('data', (data: string) => (text += data));
    report.on('end', () => resolveOutcome(text.trim()));
    report.on('error', () => resolveOutcome(text.trim()));
  });
  if (outcome !== 'ready') {
    if (outcome.startsWith('error ')) {
      const { code, message } = JSON.parse(outcome.slice(6)) as { code: CofferErrorCode; message: string };
      throw new CofferError(code, code === 'DAEMON_FAILED' || /libfuse/.test(message) ? `${message} (details: coffer logs ${request.vault})` : message);
    }
    throw new CofferError('DAEMON_FAILED', `the daemon stopped before the mount was ready; see what it logged with: coffer logs ${request.vault}`);
  }
  child.unref();
}
