import type { DaemonStatus } from '../../daemon/daemon.js';
import type { RemoteSpaceStatus } from '../../sync/remote-space.js';
import { VaultIndex, type IndexCounts } from '../../index/vault-index.js';
import { readConfig, volumeName } from '../../vault/config.js';
import { vaultPaths } from '../../vault/layout.js';
import { formatAgo, formatBytes } from '../format.js';
import { liveStatus } from '../shared.js';
import { describeRefusal } from './sync.js';
import { requireVault, resolveTarget } from '../target.js';

export interface OfflineStatus extends IndexCounts {
  mounted: false;
  /** The volume name the mount shows. */
  name: string;
  vault: string;
  remote: string;
}

export async function statusCommand(args: { target: string; json: boolean; watch?: boolean }): Promise<void> {
  if (!args.watch) {
    process.stdout.write(await renderStatus(args.target, args.json));
    return;
  }
  // Refreshes until interrupted: a redrawn screen on a terminal, one JSON line per second with --json.
  for (;;) {
    const text = await renderStatus(args.target, args.json);
    process.stdout.write(process.stdout.isTTY && !args.json ? `\x1b[2J\x1b[H${text}` : text);
    await new Promise((r) => setTimeout(r, 1000));
  }
}

async function renderStatus(path: string, json: boolean): Promise<string> {
  const args = { target: path, json };
  const target = await resolveTarget(args.target);
  let status: DaemonStatus | OfflineStatus;
  if (target.alive && target.info) {
    const { socket: _socket, ...live } = await liveStatus(target, args.target);
    status = live;
  } else {
    const vaultDir = requireVault(target, args.target);
    const paths = vaultPaths(vaultDir);
    const config = await readConfig(paths);
    const index = new VaultIndex(paths.index, { readonly: true });
    try {
      status = { mounted: false, name: volumeName(config, paths), vault: vaultDir, remote: config.remote, ...index.counts() };
    } finally {
      index.close();
    }
  }
  if (args.json) return JSON.stringify(status) + '\n';
  const lines = [
    `name:       ${status.name}`,
    `vault:      ${status.vault}`,
    !status.mounted
      ? 'mounted:    no'
      : status.stopping
        ? `mounted:    no longer at ${status.mountpoint}; the daemon (pid ${status.pid}) is uploading what it can before it exits`
        : `mounted:    yes, at ${status.mountpoint} (daemon pid ${status.pid})`,
    `remote:     ${status.remote}`,
    `files:      ${status.files} (${formatBytes(status.bytes)}), ${status.directories} directories`,
    `chunks:     ${status.chunks} (${formatBytes(status.chunkBytes)} stored)`,
    `not yet on the remote: ${'pendingFiles' in status ? `${status.pendingFiles} files, ` : ''}${status.pendingChunks} chunks (${formatBytes(status.pendingBytes)})${status.failedChunks ? `, ${status.failedChunks} failing` : ''}`,
  ];
  if (status.mounted) {
    const over = status.cacheBytes > status.cacheLimitBytes;
    lines.push(
      `cache:      ${formatBytes(status.cacheBytes)} of ${formatBytes(status.cacheLimitBytes)}${over ? ' — over the limit: what is not uploaded yet cannot be evicted' : ''}`,
    );
    if (status.uploadRate !== null && (status.uploadRate > 0 || status.pendingChunks > 0)) {
      const eta = status.uploadEtaSeconds === null ? '' : `, about ${formatSeconds(status.uploadEtaSeconds)} to go`;
      lines.push(`uploading:  ${formatBytes(status.uploadRate)}/s${eta}`);
    }
    lines.push(...remoteSpaceLines(status.remoteSpace));
    lines.push(`last publish: ${formatAgo(status.sync.lastPublishMs)}${status.sync.publishedChange < status.sync.changeCount ? ' (changes not yet published)' : ''}`);
    for (const refusal of status.sync.refused) lines.push(`remote refused: ${describeRefusal(refusal, status)} (since ${formatAgo(refusal.sinceMs)})`);
    if (status.sync.pausedUntilMs !== null) {
      lines.push(`uploads paused: tried again in ${Math.max(0, Math.ceil((status.sync.pausedUntilMs - Date.now()) / 1000))} s, or now with: coffer sync ${status.mountpoint}`);
    }
    lines.push(`this device: ${status.sync.device.name} (${status.sync.device.device.slice(0, 8)})`);
    for (const d of status.sync.devices) {
      lines.push(`device ${JSON.stringify(d.name)} (${d.device.slice(0, 8)}): last published ${formatAgo(d.publishedMs)}, heard from ${formatAgo(d.heardMs)}, ${d.seq} entries applied here`);
    }
    for (const s of status.sync.stuck) lines.push(`device ${JSON.stringify(s.name)} (${s.device.slice(0, 8)}): its changes cannot be applied: ${s.reason}`);
    if (status.sync.conflicts > 0) lines.push(`conflicts: merges made ${status.sync.conflicts} conflicted cop${status.sync.conflicts === 1 ? 'y' : 'ies'} since the mount (named "… (conflicted copy DATE from DEVICE)")`);
    if (status.sync.lastError) lines.push(`last error: ${status.sync.lastError}`);
    for (const failing of status.uploadErrors.slice(0, 3)) {
      const where = failing.paths.length > 0 ? ` of ${failing.paths.join(', ')}` : '';
      lines.push(`failing upload: chunk ${failing.id.slice(0, 16)}…${where} after ${failing.attempts} attempts: ${failing.error} (retrying)`);
    }
  }
  return lines.join('\n') + '\n';
}

/** The account's usage and quota as the server last reported it, and the room left for this drive. */
function remoteSpaceLines(space: RemoteSpaceStatus | null | undefined): string[] {
  if (!space) return [];
  const objects = space.quotaObjects > 0 ? `, ${space.usedObjects} of ${space.quotaObjects} objects` : '';
  const lines = [
    space.quotaBytes > 0
      ? `remote space: ${formatBytes(space.usedBytes)} used of ${formatBytes(space.quotaBytes)}${objects}; ${formatBytes(space.freeBytes ?? 0)} free for new writes (after ${formatBytes(space.unsentBytes)} not yet uploaded)`
      : `remote space: ${formatBytes(space.usedBytes)} used, no byte quota${objects}`,
  ];
  if (space.full) {
    const quota = space.quotaBytes > 0 ? `quota of ${formatBytes(space.quotaBytes)}` : 'quota';
    lines.push(`remote full: the account's ${quota} is used; writes fail with ENOSPC until space is freed or the quota raised (what was written stays queued)`);
  }
  if (space.lastError) lines.push(`remote space: figures from ${formatAgo(space.checkedAtMs)}; asking again failed: ${space.lastError}`);
  return lines;
}

function formatSeconds(seconds: number): string {
  if (seconds < 90) return `${seconds} s`;
  if (seconds < 90 * 60) return `${Math.round(seconds / 60)} min`;
  return `${(seconds / 3600).toFixed(1)} h`;
}
