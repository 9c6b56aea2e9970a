/** Small pieces the commands share. */
import { CofferError } from '../errors.js';
import { callDaemon } from '../daemon/control.js';
import type { DaemonStatus } from '../daemon/daemon.js';
import { daemonInfoForMountpoint, isDaemonAlive, removeMountRecord } from '../daemon/registry.js';
import { findMount, forceUnmount, isStaleMount } from '../fs/mountinfo.js';
import type { Target } from './target.js';

/** Messages for the person at the terminal go to stderr; stdout is for results (JSON). */
export const say = (line: string) => process.stderr.write(line + '\n');

/** With --json: the command's result as one JSON object on one line of stdout. */
export const printJson = (value: unknown) => process.stdout.write(JSON.stringify(value) + '\n');

/** A `--timeout`-like option in seconds (0 or more), as milliseconds; undefined when not given. */
export function secondsOption(flag: string, seconds: number | undefined): number | undefined {
  if (seconds === undefined) return undefined;
  if (!Number.isFinite(seconds) || seconds < 0) {
    throw new CofferError('BAD_ARGUMENT', `${flag} takes a number of seconds, 0 or more (got ${String(seconds)})`);
  }
  return seconds * 1000;
}

export async function waitFor(condition: () => Promise<boolean>, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new CofferError('DAEMON_FAILED', `${what} did not happen within ${Math.round(timeoutMs / 1000)} s`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** A mount whose daemon died answers ENOTCONN; it is ours to clean before mounting again. */
export async function cleanStaleMount(mountpoint: string): Promise<boolean> {
  const entry = await findMount(mountpoint);
  if (!entry || !entry.fstype.startsWith('fuse') || !(await isStaleMount(mountpoint))) return false;
  const owner = await daemonInfoForMountpoint(mountpoint);
  if (owner && (await isDaemonAlive(owner.pid))) return false;
  say(`Cleaning up the stale mount at ${mountpoint} (its daemon is no longer running).`);
  await forceUnmount(mountpoint);
  await removeMountRecord(mountpoint).catch(() => {});
  return true;
}

/** The status of the daemon serving `target`, which must be mounted. */
export async function liveStatus(target: Target, path: string): Promise<DaemonStatus & { socket: string }> {
  if (!target.alive || !target.info) {
    throw new CofferError('NOT_MOUNTED', `${path} is not mounted; mount it first with: coffer mount <vault-dir> <mountpoint>`);
  }
  const status = (await callDaemon(target.info.socket, { op: 'status' }, 30_000)) as DaemonStatus;
  return { ...status, socket: target.info.socket };
}
