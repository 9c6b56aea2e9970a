import { createInterface } from 'node:readline/promises';
import { CofferError } from '../../errors.js';
import { callDaemon } from '../../daemon/control.js';
import type { PendingUploads, UnmountResult } from '../../daemon/daemon.js';
import { isDaemonAlive, removeDaemonInfo, removeMountRecord } from '../../daemon/registry.js';
import { findMount, forceUnmount, isStaleMount } from '../../fs/mountinfo.js';
import { formatBytes } from '../format.js';
import { printJson, say, waitFor } from '../shared.js';
import { resolveTarget } from '../target.js';
import { waitForSync } from './sync.js';

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

/** "Not on the remote yet: 3 files (12.0 MiB in 12 chunks)", or that only the index is not published. */
export function describePending(p: PendingUploads): string {
  const plural = (n: number, word: string) => `${n} ${word}${n === 1 ? '' : 's'}`;
  if (p.pendingChunks === 0) return 'Not on the remote yet: the latest index (names, folders, sizes)';
  const data = `${formatBytes(p.pendingBytes)} in ${plural(p.pendingChunks, 'chunk')}`;
  return `Not on the remote yet: ${p.pendingFiles > 0 ? `${plural(p.pendingFiles, 'file')} (${data})` : data}`;
}

function checkTimeout(timeout: number | undefined): number | undefined {
  if (timeout === undefined) return undefined;
  if (!Number.isFinite(timeout) || timeout < 0) {
    throw new CofferError('BAD_ARGUMENT', `--timeout takes a number of seconds, 0 or more (got ${String(timeout)})`);
  }
  return timeout * 1000;
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
  const timeoutMs = checkTimeout(args.timeout);
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
    const synced = wait ? (await waitForSync(info.socket, { timeoutMs })).complete : undefined;
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
        // With --wait-sync: whether the remote got everything before the unmount (false: --timeout ran out).
        syncComplete: synced ?? null,
      });
      return;
    }
    say(`Unmounted ${info.mountpoint}.`);
    if (hasPending(result)) {
      say(
        `${describePending(result)}. This stays queued in ${info.vault} and uploads at the next mount` +
          `${wait ? '.' : ' (coffer unmount --wait-sync waits for the upload first).'}`,
      );
    }
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
