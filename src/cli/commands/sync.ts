import { CofferError } from '../../errors.js';
import { callDaemon } from '../../daemon/control.js';
import type { DaemonStatus, PendingUploads, SyncStarted } from '../../daemon/daemon.js';
import type { SyncRefusal } from '../../sync/syncer.js';
import { formatBytes } from '../format.js';
import { ProgressLine, TransferMeter } from '../progress.js';
import { printJson, say, secondsOption } from '../shared.js';
import { resolveTarget } from '../target.js';

export async function syncCommand(args: { target: string; wait: boolean; timeout?: number; json: boolean }): Promise<void> {
  const timeoutMs = secondsOption('--timeout', args.timeout);
  const target = await resolveTarget(args.target);
  if (!target.alive || !target.info) {
    throw new CofferError('NOT_MOUNTED', `${args.target} is not mounted; sync runs while a vault is mounted (coffer mount <vault-dir> <mountpoint>)`);
  }
  if (!args.wait) {
    if (timeoutMs !== undefined) throw new CofferError('BAD_ARGUMENT', '--timeout goes with --wait');
    await callDaemon(target.info.socket, { op: 'sync' });
    say('Sync started; `coffer status` shows its progress.');
    return;
  }
  const outcome = await waitForSync(target.info.socket, { timeoutMs });
  if (args.json) printJson({ ...outcome.status, synced: outcome.complete, reason: outcome.reason ?? null });
  if (!outcome.complete) throw new CofferError('SYNC_INCOMPLETE', `not synced: ${outcome.reason}`);
}

export interface SyncOutcome {
  status: DaemonStatus;
  /** The remote holds everything written before the call. */
  complete: boolean;
  /** Why not, when not: the bound ran out, or the remote refused (with what is still pending). */
  reason?: string;
}

/**
 * Asks the daemon to sync now and shows progress until the remote holds everything written
 * before the call: its chunks and a published index that names them. Ends early, incomplete,
 * when the remote refuses an attempt made after the call (a refused token, a full account,
 * another writer: retrying cannot fix those), or after `timeoutMs`. An unreachable remote is
 * waited for (retrying fixes that), up to `timeoutMs`. The upload carries on in the daemon.
 */
export async function waitForSync(socket: string, options: { timeoutMs?: number } = {}): Promise<SyncOutcome> {
  const deadline = options.timeoutMs === undefined ? Infinity : Date.now() + options.timeoutMs;
  const { target, requestedAtMs } = (await callDaemon(socket, { op: 'sync' })) as SyncStarted;
  const line = new ProgressLine();
  let status = (await callDaemon(socket, { op: 'status' })) as DaemonStatus;
  const meter = new TransferMeter(status.sync.uploadedBytes);
  for (;;) {
    const refusals = status.sync.refused.filter((r) => r.atMs >= requestedAtMs);
    // A refused token ends the wait even with nothing left to send: the remote no longer takes this drive.
    const token = refusals.find((r) => r.code === 'REMOTE_UNAUTHORIZED');
    // Everything written before the call is published, and other devices' journals were read since.
    const polled = status.sync.lastPollStartMs >= requestedAtMs;
    const complete = status.sync.publishedChange >= target && polled;
    const refusal = token ?? refusals.find((r) => r.code === 'REMOTE_ROLLBACK') ?? (complete ? undefined : refusals[0]);
    if (refusal) {
      const reason = `${describeRefusal(refusal, status)}. ${describePending(pendingOf(status))}`;
      line.done(`Not synced: ${reason}`);
      return { status, complete: false, reason };
    }
    if (complete && status.sync.stuck.length > 0) {
      const reason = status.sync.stuck.map((s) => `the changes of device ${JSON.stringify(s.name)} (${s.device.slice(0, 8)}) cannot be applied: ${s.reason}`).join('; ');
      line.done(`Not synced: ${reason}`);
      return { status, complete: false, reason };
    }
    if (complete) break;
    if (Date.now() >= deadline) {
      const reason = `stopped waiting after ${options.timeoutMs! / 1000} s (--timeout); the upload carries on. ${describePending(pendingOf(status))}`;
      line.done(`Not synced: ${reason}`);
      return { status, complete: false, reason };
    }
    const note = status.sync.lastError ? `retrying: ${status.sync.lastError}` : status.pendingChunks === 0 ? (status.sync.publishPending ? 'publishing changes' : "reading other devices' changes") : '';
    line.update(meter.describe(status.sync.uploadedBytes, status.pendingBytes, status.pendingChunks, note));
    await new Promise((r) => setTimeout(r, Math.max(1, Math.min(250, deadline - Date.now()))));
    status = (await callDaemon(socket, { op: 'status' })) as DaemonStatus;
  }
  line.done(`Synced: the remote holds everything written before the sync (journal entry ${status.sync.publishedSeq}, ${formatBytes(status.sync.uploadedBytes)} uploaded this session).`);
  return { status, complete: true };
}

function pendingOf(status: DaemonStatus): PendingUploads {
  const { pendingFiles, pendingChunks, pendingBytes } = status;
  return { pendingFiles, pendingChunks, pendingBytes, unpublished: status.sync.publishPending, refused: status.sync.refused };
}

/** "Not on the remote yet: 3 files (12.0 MiB in 12 chunks)", that only the index is not published, or that nothing is pending. */
export function describePending(p: PendingUploads): string {
  const plural = (n: number, word: string) => `${n} ${word}${n === 1 ? '' : 's'}`;
  if (p.pendingChunks === 0) return p.unpublished ? 'Not on the remote yet: the latest index (names, folders, sizes)' : 'Nothing is waiting to upload';
  const data = `${formatBytes(p.pendingBytes)} in ${plural(p.pendingChunks, 'chunk')}`;
  return `Not on the remote yet: ${p.pendingFiles > 0 ? `${plural(p.pendingFiles, 'file')} (${data})` : data}`;
}

/** What a refusal means for the user, and what fixes it. */
export function describeRefusal(refusal: SyncRefusal, status?: Pick<DaemonStatus, 'remoteSpace'>): string {
  switch (refusal.code) {
    case 'REMOTE_UNAUTHORIZED':
      return `the remote refuses this drive's token or credentials (${refusal.message}); uploads cannot resume until the vault has ones the remote accepts (then mount again)`;
    case 'REMOTE_QUOTA': {
      const space = status?.remoteSpace;
      const figures = space && space.quotaBytes > 0 ? ` (${formatBytes(space.usedBytes)} used of its quota of ${formatBytes(space.quotaBytes)})` : '';
      return `the remote account is full${figures}: it refuses more data until space is freed on it (delete files, which frees their chunks once published) or its quota is raised — the server said: ${refusal.message}`;
    }
    case 'REMOTE_ROLLBACK':
      return `the remote rolled back or withholds published changes: ${refusal.message}`;
    case 'REMOTE_CONFLICT':
      return `another copy of this device wrote to its journal: ${refusal.message}`;
    default:
      return `the remote refuses: ${refusal.message}`;
  }
}
