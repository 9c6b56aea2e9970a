import { createInterface } from 'node:readline/promises';
import { CofferError } from '../../errors.js';
import { callDaemon } from '../../daemon/control.js';
import type { PendingUploads, UnmountResult } from '../../daemon/daemon.js';
import { isDaemonAlive, removeDaemonInfo, removeMountRecord } from '../../daemon/registry.js';
import { findMount, forceUnmount, isStaleMount } from '../../fs/mountinfo.js';
import { printJson, say, secondsOption, waitFor } from '../shared.js';
import { resolveTarget } from '../target.js';
import { describePending, describeRefusal, waitForSync } from './sync.js';

/** How long the question "wait for the upload?" waits for an answer before taking no. */
const PROMPT_TIMEOUT_MS = 30_000;

export interface UnmountArgs {
  target: string;
  /** true: wait for the upload first; false: do not, and do not ask; undefined: ask on a terminal. */
  waitSync?: boolean;
  /** Seconds: the longest to wait for the upload before unmounting anyway. */
  timeout?: number;
  /** Print the result as one JSON object on stdout; never asks (no wait unless waitSync is true). */
  json?: boolean;
}

const hasPending = (p: PendingUploads) => p.pendingChunks > 0 || p.unpublished;

/** What becomes of what is not uploaded: it stays queued; it uploads at the next mount unless the remote refuses this drive. */
function whatHappensToPending(result: PendingUploads, vault: string, waited: boolean): string {
  const refusal = result.refused.find((r) => r.code !== 'REMOTE_QUOTA') ?? result.refused[0];
  if (refusal) return `This stays queued in ${vault}, but cannot upload while ${describeRefusal(refusal)}.`;
  return `This stays queued in ${vault} and uploads at the next mount${waited ? '.' : ' (coffer unmount --wait-sync waits for the upload first).'}`;
}

/** A yes/no question on the terminal; no answer within `timeoutMs` is no. */
async function askYesNo(question: string, timeoutMs: number): Promise<boolean> {
  const rl = createInterface({ input: process.stdin, output: process.stderr });
  try {
    const answer = await rl.question(question, { signal: AbortSignal.timeout(timeoutMs) });
    return /^\s*y(es)?\s*$/i.test(answer);
  } catch (err) {
    if ((err as Error).name !== 'AbortError') throw err;
    process.stderr.write('\n');
    say(`No answer within ${timeoutMs / 1000} s: not waiting.`);
    return false;
  } finally {
    rl.close();
  }
}

export async function unmountCommand(args: UnmountArgs): Promise<void> {
  const timeoutMs = secondsOption('--timeout', args.timeout);
  const target = await resolveTarget(args.target);
  if (target.alive && target.info) {
    const { info } = target;
    let wait = args.waitSync === true;
    if (args.waitSync === undefined && !args.json && process.stdin.isTTY && process.stderr.isTTY) {
      // Someone is at the terminal: say what is still to upload and offer to wait for it.
      const pending = (await callDaemon(info.socket, { op: 'pending' }, 30_000).catch(() => undefined)) as PendingUploads | undefined;
      if (pending && hasPending(pending)) {
        say(`${describePending(pending)}. Unmounting now keeps this queued here; it uploads at the next mount.`);
        wait = await askYesNo(`Wait for the upload before unmounting? [y/N] `, PROMPT_TIMEOUT_MS);
      }
    }
    const outcome = wait ? await waitForSync(info.socket, { timeoutMs }) : undefined;
    const result = (await callDaemon(info.socket, { op: 'unmount' })) as UnmountResult;
    await waitFor(async () => !(await isDaemonAlive(info.pid)), 60_000, 'the daemon stopping');
    if (await findMount(info.mountpoint)) await forceUnmount(info.mountpoint);
    if (args.json) {
      printJson({
        mountpoint: info.mountpoint,
        vault: info.vault,
        unmounted: true,
        staleCleaned: false,
        pendingFiles: result.pendingFiles,
        pendingChunks: result.pendingChunks,
        pendingBytes: result.pendingBytes,
        unpublished: result.unpublished,
        waited: wait,
        // With --wait-sync: whether the remote got everything before the unmount (false: --timeout ran out, or the remote refused).
        syncComplete: outcome?.complete ?? null,
        reason: outcome?.reason ?? null,
      });
    } else {
      say(`Unmounted ${info.mountpoint}.`);
      if (hasPending(result)) say(`${describePending(result)}. ${whatHappensToPending(result, info.vault, wait)}`);
    }
    // Waiting was asked for and did not get everything up: the unmount happened, the sync did not.
    if (outcome && !outcome.complete) throw new CofferError('SYNC_INCOMPLETE', `unmounted, but not synced: ${outcome.reason}`);
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
    if (!(await isStaleMount(mountpoint))) {
      // A live mount this user has no record of: another user's daemon serves it.
      const owner = /(?:^|,)user_id=(\d+)/.exec(entry.options)?.[1];
      throw new CofferError(
        'NOT_MOUNTED',
        `${mountpoint} is served by a running daemon that is not yours${owner !== undefined ? ` (user id ${owner})` : ''}; run coffer unmount as that user`,
      );
    }
    await forceUnmount(mountpoint);
    if (args.json) {
      printJson({ mountpoint, vault: target.vault ?? target.info?.vault ?? null, unmounted: true, staleCleaned: true });
      return;
    }
    say(`Cleaned up the stale mount at ${mountpoint} (its daemon was no longer running).`);
    return;
  }
  throw new CofferError('NOT_MOUNTED', `nothing is mounted at ${args.target}`);
}
