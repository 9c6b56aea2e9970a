/**
 * What the kernel says is mounted, and the one way Coffer detaches a FUSE mount. Shared by the
 * FUSE binding (clean unmount) and the daemon/CLI (cleaning a mount whose daemon was killed).
 * Never imports fuse-native: stale-mount cleanup must work even when the addon cannot load.
 */
import { execFile } from 'node:child_process';
import { constants as fsConstants } from 'node:fs';
import { access, readFile } from 'node:fs/promises';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

export interface MountEntry {
  mountpoint: string;
  /** e.g. `fuse.coffer` (FUSE reports `fuse.<subtype>`). */
  fstype: string;
  /** The mount source; for FUSE, the `fsname` option. */
  source: string;
  /** Per-mount options followed by the superblock options, comma-separated, as /proc/mounts shows them. */
  options: string;
}

const MOUNTINFO = '/proc/self/mountinfo';

/** mountinfo escapes space, tab, newline and backslash as `\ooo`. */
function unescapeOctal(field: string): string {
  return field.replace(/\\([0-7]{3})/g, (_, oct: string) => String.fromCharCode(parseInt(oct, 8)));
}

export function parseMountinfo(text: string): MountEntry[] {
  const entries: MountEntry[] = [];
  for (const line of text.split('\n')) {
    if (!line) continue;
    // id parent major:minor root mountpoint options [optional fields...] - fstype source superoptions
    const fields = line.split(' ');
    const dash = fields.indexOf('-', 6);
    if (dash < 0 || fields.length < dash + 3) continue;
    const mountOptions = fields[5] ?? '';
    const superOptions = fields[dash + 3] ?? '';
    entries.push({
      mountpoint: unescapeOctal(fields[4]!),
      fstype: unescapeOctal(fields[dash + 1]!),
      source: unescapeOctal(fields[dash + 2]!),
      options: superOptions ? `${mountOptions},${superOptions}` : mountOptions,
    });
  }
  return entries;
}

export async function readMounts(): Promise<MountEntry[]> {
  return parseMountinfo(await readFile(MOUNTINFO, 'utf8'));
}

/** The topmost mount at `mountpoint` (later lines stack over earlier ones), if any. */
export async function findMount(mountpoint: string): Promise<MountEntry | undefined> {
  const target = path.resolve(mountpoint);
  const mounts = await readMounts();
  for (let i = mounts.length - 1; i >= 0; i--) {
    if (mounts[i]!.mountpoint === target) return mounts[i];
  }
  return undefined;
}

/**
 * Probes with `stat` in a child process: a hung (stopped, not dead) daemon makes `stat` block,
 * and blocking one of our own thread-pool threads on it could starve a daemon that also
 * serves FUSE from that pool. A stuck child is simply killed.
 */
const PROBE = `require('node:fs').stat(process.argv[1], (err) => {
  process.exit(!err ? 0 : err.code === 'ENOTCONN' ? 3 : 4);
});`;

function probeStat(mountpoint: string, timeoutMs: number): Promise<'ok' | 'ENOTCONN' | 'error' | 'timeout'> {
  return new Promise((resolve) => {
    execFile(process.execPath, ['-e', PROBE, mountpoint], { timeout: timeoutMs, killSignal: 'SIGKILL' }, (err) => {
      if (!err) return resolve('ok');
      // For a child that ran and exited, execFile puts the exit status in `code`.
      const e = err as { killed?: boolean; code?: unknown };
      if (e.killed) return resolve('timeout');
      resolve(e.code === 3 ? 'ENOTCONN' : 'error');
    });
  });
}

/**
 * True when `mountpoint` is listed as mounted but its filesystem is gone (`stat` gives ENOTCONN),
 * as after `kill -9` of the daemon. A live mount, even a slow one, is not stale.
 * Never call this from the process that serves the mount.
 */
export async function isStaleMount(mountpoint: string, timeoutMs = 5_000): Promise<boolean> {
  const target = path.resolve(mountpoint);
  if (!(await findMount(target))) return false;
  return (await probeStat(target, timeoutMs)) === 'ENOTCONN';
}

let detachCommand: Promise<[string, string[]]> | undefined;

async function isExecutable(file: string): Promise<boolean> {
  try {
    await access(file, fsConstants.X_OK);
    return true;
  } catch {
    return false;
  }
}

/**
 * `fusermount -uz` where a fusermount is installed (it also works unprivileged); otherwise
 * `umount -l`, which needs root. Both detach lazily, so a busy or dead mount still goes away.
 */
function resolveDetachCommand(): Promise<[string, string[]]> {
  detachCommand ??= (async (): Promise<[string, string[]]> => {
    const dirs = (process.env.PATH ?? '').split(path.delimiter).filter(Boolean);
    for (const name of ['fusermount', 'fusermount3']) {
      for (const dir of dirs) {
        const file = path.join(dir, name);
        if (await isExecutable(file)) return [file, ['-u', '-z']];
      }
    }
    return ['umount', ['-l']];
  })();
  return detachCommand;
}

function run(file: string, args: string[]): Promise<void> {
  return new Promise((resolve, reject) => {
    execFile(file, args, { timeout: 30_000 }, (err, _stdout, stderr) => {
      if (!err) return resolve();
      const detail = String(stderr).trim() || err.message;
      reject(new Error(`${path.basename(file)} ${args.join(' ')} failed: ${detail}`, { cause: err }));
    });
  });
}

/**
 * Detaches the mount at `mountpoint` without waiting for it to leave mountinfo.
 * `mountpoint` is resolved to an absolute path, so it can never be read as a command option.
 */
export async function detachMount(mountpoint: string): Promise<void> {
  const target = path.resolve(mountpoint);
  const [file, args] = await resolveDetachCommand();
  try {
    await run(file, [...args, target]);
  } catch (err) {
    // A concurrent unmount may have won the race; that is success, not failure.
    if (await findMount(target)) throw err;
  }
}

/** Resolves once `mountpoint` is no longer listed in mountinfo; rejects after `timeoutMs`. */
export async function waitUntilUnmounted(mountpoint: string, timeoutMs = 10_000): Promise<void> {
  const target = path.resolve(mountpoint);
  const deadline = Date.now() + timeoutMs;
  for (let delay = 5; ; delay = Math.min(delay * 2, 100)) {
    if (!(await findMount(target))) return;
    if (Date.now() >= deadline) throw new Error(`${target} is still mounted ${timeoutMs} ms after it was detached`);
    await sleep(delay);
  }
}

/**
 * Removes whatever is mounted at `mountpoint` (typically a stale Coffer mount left by a killed
 * daemon) and waits until mountinfo no longer lists it. A no-op when nothing is mounted there.
 */
export async function forceUnmount(mountpoint: string, timeoutMs = 10_000): Promise<void> {
  const target = path.resolve(mountpoint);
  const entry = await findMount(target);
  if (!entry) return;
  // As root, `umount -l` would detach anything; only FUSE mounts are ours to clean.
  if (!/^fuse(blk)?(\.|$)/.test(entry.fstype)) {
    throw new Error(`refusing to force-unmount ${target}: it is a ${entry.fstype} mount, not FUSE`);
  }
  await detachMount(target);
  await waitUntilUnmounted(target, timeoutMs);
}
