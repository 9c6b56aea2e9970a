/**
 * What each command does. The CLI never opens the index of a mounted vault: it asks
 * the daemon over its control socket.
 */
import { spawn } from 'node:child_process';
import { openSync, closeSync, mkdirSync } from 'node:fs';
import { stat } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { CofferError } from '../errors.js';
import { callDaemon } from '../daemon/control.js';
import { runDaemon, type DaemonStatus } from '../daemon/daemon.js';
import { createLogger } from '../daemon/log.js';
import { daemonInfoForMountpoint, isDaemonAlive, removeDaemonInfo, removeMountRecord } from '../daemon/registry.js';
import { findMount, forceUnmount, isStaleMount } from '../fs/mountinfo.js';
import { VaultIndex, type IndexCounts } from '../index/vault-index.js';
import { initVault, readConfig, readVaultHeaderRaw, unlockVault } from '../vault/vault.js';
import { vaultPaths } from '../vault/layout.js';
import { obtainPassphrase } from './passphrase.js';
import { resolveTarget, requireVault } from './target.js';
import { formatAgo, formatBytes } from './format.js';

const say = (line: string) => process.stderr.write(line + '\n');

export async function initCommand(args: { vault: string; remote?: string; passphraseFile?: string }): Promise<void> {
  const passphrase = await obtainPassphrase({ passphraseFile: args.passphraseFile, confirm: true });
  const paths = await initVault(args.vault, passphrase, args.remote);
  const config = await readConfig(paths);
  say(`Created vault ${paths.dir} (remote ${config.remote}).`);
  say(`Mount it with: coffer mount ${args.vault} <mountpoint>`);
}

export async function mountCommand(args: { vault: string; mountpoint: string; foreground: boolean; passphraseFile?: string }): Promise<void> {
  const vaultDir = resolve(args.vault);
  const mountpoint = resolve(args.mountpoint);
  await readVaultHeaderRaw(vaultDir); // a clear error before asking for a passphrase
  const target = await resolveTarget(vaultDir);
  if (target.alive && target.info) {
    throw new CofferError('ALREADY_MOUNTED', `the vault ${vaultDir} is already mounted at ${target.info.mountpoint} (daemon pid ${target.info.pid}); unmount it first with: coffer unmount ${target.info.mountpoint}`);
  }
  await cleanStaleMount(mountpoint);
  const mountStat = await stat(mountpoint).catch(() => undefined);
  if (!mountStat) throw new CofferError('BAD_ARGUMENT', `mountpoint ${mountpoint} does not exist; create it first (mkdir -p ${mountpoint})`);
  if (!mountStat.isDirectory()) throw new CofferError('BAD_ARGUMENT', `mountpoint ${mountpoint} is not a directory`);
  const passphrase = await obtainPassphrase({ passphraseFile: args.passphraseFile });
  const vault = await unlockVault(vaultDir, passphrase);

  if (args.foreground) {
    const log = createLogger(vault.paths.log, true);
    try {
      await runDaemon({ vault, mountpoint, log, onReady: () => say(`Mounted ${vaultDir} at ${mountpoint}. Stop with Ctrl-C or: coffer unmount ${mountpoint}`) });
    } finally {
      await log.close();
    }
    return;
  }

  mkdirSync(dirname(vault.paths.log), { recursive: true });
  const logFd = openSync(vault.paths.log, 'a');
  const daemonMain = join(dirname(fileURLToPath(import.meta.url)), '..', 'daemon', 'main.js');
  const child = spawn(process.execPath, [daemonMain], {
    detached: true,
    stdio: ['pipe', logFd, logFd, 'pipe'],
  });
  closeSync(logFd);
  child.stdin!.end(JSON.stringify({ vault: vaultDir, mountpoint, masterKey: Buffer.from(vault.masterKey).toString('hex') }));
  const report = child.stdio[3] as NodeJS.ReadableStream;
  const outcome = await new Promise<string>((resolveOutcome) => {
    let text = '';
    report.setEncoding('utf8');
    report.on('data', (data: string) => (text += data));
    report.on('end', () => resolveOutcome(text.trim()));
    report.on('error', () => resolveOutcome(text.trim()));
  });
  if (outcome !== 'ready') {
    await new Promise((r) => setTimeout(r, 50));
    if (outcome.startsWith('error ')) {
      const { code, message } = JSON.parse(outcome.slice(6)) as { code: string; message: string };
      throw new CofferError(code as CofferError['code'], message);
    }
    throw new CofferError('DAEMON_FAILED', `the daemon stopped before the mount was ready; see ${vault.paths.log}`);
  }
  child.unref();
  say(`Mounted ${vaultDir} at ${mountpoint}.`);
}

export async function unmountCommand(args: { target: string }): Promise<void> {
  const target = await resolveTarget(args.target);
  if (target.alive && target.info) {
    await callDaemon(target.info.socket, { op: 'unmount' });
    await waitFor(async () => !(await isDaemonAlive(target.info!.pid)), 60_000);
    if (await findMount(target.info.mountpoint)) await forceUnmount(target.info.mountpoint);
    say(`Unmounted ${target.info.mountpoint}.`);
    return;
  }
  // No live daemon: clean up after one that died, if it left a mount behind.
  const mountpoint = target.mountpoint ?? target.info?.mountpoint;
  const entry = mountpoint ? await findMount(mountpoint) : undefined;
  if (target.info) await removeDaemonInfo(target.info).catch(() => {});
  if (mountpoint) await removeMountRecord(mountpoint).catch(() => {});
  if (mountpoint && entry) {
    if (!entry.fstype.startsWith('fuse')) {
      throw new CofferError('NOT_MOUNTED', `${mountpoint} is a ${entry.fstype} mount, not a Coffer drive; not touching it`);
    }
    await forceUnmount(mountpoint);
    say(`Cleaned up the stale mount at ${mountpoint} (its daemon was no longer running).`);
    return;
  }
  throw new CofferError('NOT_MOUNTED', `nothing is mounted at ${args.target}`);
}

export interface OfflineStatus extends IndexCounts {
  mounted: false;
  vault: string;
  remote: string;
}

export async function statusCommand(args: { target: string; json: boolean }): Promise<void> {
  const target = await resolveTarget(args.target);
  let status: DaemonStatus | OfflineStatus;
  if (target.alive && target.info) {
    status = (await callDaemon(target.info.socket, { op: 'status' }, 30_000)) as DaemonStatus;
  } else {
    const vaultDir = requireVault(target, args.target);
    const paths = vaultPaths(vaultDir);
    const config = await readConfig(paths);
    const index = new VaultIndex(paths.index, { readonly: true });
    try {
      status = { mounted: false, vault: vaultDir, remote: config.remote, ...index.counts() };
    } finally {
      index.close();
    }
  }
  if (args.json) {
    process.stdout.write(JSON.stringify(status) + '\n');
    return;
  }
  const lines = [
    `vault:      ${status.vault}`,
    status.mounted ? `mounted:    yes, at ${status.mountpoint} (daemon pid ${status.pid})` : 'mounted:    no',
    `remote:     ${status.remote}`,
    `files:      ${status.files} (${formatBytes(status.bytes)}), ${status.directories} directories`,
    `chunks:     ${status.chunks} (${formatBytes(status.chunkBytes)} stored)`,
    `not yet on the remote: ${status.pendingChunks} chunks (${formatBytes(status.pendingBytes)})${status.failedChunks ? `, ${status.failedChunks} failing` : ''}`,
  ];
  if (status.mounted) {
    lines.push(`last publish: ${formatAgo(status.sync.lastPublishMs)}${status.sync.publishPending ? ' (changes not yet published)' : ''}`);
    if (status.sync.lastError) lines.push(`last error: ${status.sync.lastError}`);
  }
  process.stdout.write(lines.join('\n') + '\n');
}

/** A mount whose daemon died answers ENOTCONN; it is ours to clean before mounting again. */
async function cleanStaleMount(mountpoint: string): Promise<void> {
  const entry = await findMount(mountpoint);
  if (!entry || !entry.fstype.startsWith('fuse') || !(await isStaleMount(mountpoint))) return;
  const owner = await daemonInfoForMountpoint(mountpoint);
  if (owner && (await isDaemonAlive(owner.pid))) return;
  say(`Cleaning up the stale mount at ${mountpoint} (its daemon is no longer running).`);
  await forceUnmount(mountpoint);
  await removeMountRecord(mountpoint).catch(() => {});
}

async function waitFor(condition: () => Promise<boolean>, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new CofferError('DAEMON_FAILED', 'the daemon did not stop in time');
    await new Promise((r) => setTimeout(r, 50));
  }
}
