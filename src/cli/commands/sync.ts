import { CofferError } from '../../errors.js';
import { callDaemon } from '../../daemon/control.js';
import type { DaemonStatus, SyncStarted } from '../../daemon/daemon.js';
import { formatBytes } from '../format.js';
import { ProgressLine, TransferMeter } from '../progress.js';
import { say } from '../shared.js';
import { resolveTarget } from '../target.js';

export async function syncCommand(args: { target: string; wait: boolean; json: boolean }): Promise<void> {
  const target = await resolveTarget(args.target);
  if (!target.alive || !target.info) {
    throw new CofferError('NOT_MOUNTED', `${args.target} is not mounted; sync runs while a vault is mounted (coffer mount <vault-dir> <mountpoint>)`);
  }
  if (!args.wait) {
    await callDaemon(target.info.socket, { op: 'sync' });
    say('Sync started; `coffer status` shows its progress.');
    return;
  }
  const { status } = await waitForSync(target.info.socket);
  if (args.json) process.stdout.write(JSON.stringify(status) + '\n');
}

/**
 * Asks the daemon to sync now and shows progress until the remote holds everything
 * written before the call: its chunks and a published index that names them. With
 * `timeoutMs`, gives up waiting after that long (the upload carries on in the daemon);
 * `complete` says which happened.
 */
export async function waitForSync(socket: string, options: { timeoutMs?: number } = {}): Promise<{ status: DaemonStatus; complete: boolean }> {
  const deadline = options.timeoutMs === undefined ? Infinity : Date.now() + options.timeoutMs;
  const { target } = (await callDaemon(socket, { op: 'sync' })) as SyncStarted;
  const line = new ProgressLine();
  let status = (await callDaemon(socket, { op: 'status' })) as DaemonStatus;
  const meter = new TransferMeter(status.sync.uploadedBytes);
  while (status.sync.publishedChange < target) {
    if (Date.now() >= deadline) {
      line.done(`Stopped waiting after ${options.timeoutMs! / 1000} s; the upload is not finished.`);
      return { status, complete: false };
    }
    const note = status.sync.lastError ? `retrying: ${status.sync.lastError}` : status.pendingChunks === 0 ? 'publishing the index' : '';
    line.update(meter.describe(status.sync.uploadedBytes, status.pendingBytes, status.pendingChunks, note));
    await new Promise((r) => setTimeout(r, Math.max(1, Math.min(250, deadline - Date.now()))));
    status = (await callDaemon(socket, { op: 'status' })) as DaemonStatus;
  }
  line.done(`Synced: the remote holds everything written before the sync (manifest ${status.sync.lastManifest}, ${formatBytes(status.sync.uploadedBytes)} uploaded this session).`);
  return { status, complete: true };
}
