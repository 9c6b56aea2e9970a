// What scripts/file-manager-check.mjs and scripts/thumbnail-scan.mjs share: running the coffer
// CLI and other programs as children, mounting and unmounting vaults, background processes
// (an X server, a file manager, readers), and a cleanup that runs on success, failure and
// Ctrl-C alike.
//
// - Every filesystem operation on a mount runs in a child process, never in the script's own
//   process: a request stuck in a FUSE daemon would otherwise freeze the script, cleanup
//   included.
// - Children get their own process group, so a Ctrl-C reaches only the script, which decides
//   what to stop. coffer commands that change state (init, mount, clone, unmount) are let
//   finish: a `mount` cut short could bring a daemon up after the cleanup looked for one.
// - The cleanup stops background processes first (SIGTERM, then SIGKILL to their whole group),
//   then unmounts every mount the script made (`coffer unmount`, `umount -l` if that fails,
//   the daemon signalled if it lingers), then removes the temp dirs — never one that still has
//   a mount in it.
import { spawn } from 'node:child_process';
import { accessSync, constants, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

export const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
export const CLI = join(ROOT, 'dist', 'cli', 'main.js');
export const PASSPHRASE = 'correct horse battery staple';

export class UsageError extends Error {}

export class Interrupted extends Error {
  constructor(signal) {
    super(`interrupted by ${signal}`);
    this.signal = signal;
  }
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

let scriptName = 'coffer-script';
let quiet = false;
let interrupted;
let cleaningUp = false;
const liveChildren = new Map(); // child -> give up (kill + reject)
const owned = { mounts: new Map(), background: new Set(), dirs: [] };

export function progress(message) {
  if (!quiet) process.stderr.write(`${scriptName}: ${message}\n`);
}

export function warn(message) {
  process.stderr.write(`${scriptName}: ${message}\n`);
}

export function checkInterrupt() {
  if (interrupted) throw new Interrupted(interrupted);
}

/**
 * Runs a command to completion: { code, signal, stdout, stderr, ms, timedOut }.
 * On a timeout or an interrupt the child gets SIGKILL but is not waited for: a process blocked
 * in a FUSE request sleeps in the kernel until the daemon answers or dies, and only the cleanup
 * (which ends that daemon) can release it.
 */
export function run(cmd, args, { env, timeoutMs = 0, cleanup = false, killOnInterrupt = true, input, cwd } = {}) {
  if (interrupted && !cleanup) return Promise.reject(new Interrupted(interrupted));
  return new Promise((resolveRun, rejectRun) => {
    const started = process.hrtime.bigint();
    const child = spawn(cmd, args, { env: env ?? process.env, cwd, stdio: [input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'], detached: true });
    let stdout = '';
    let stderr = '';
    let settled = false;
    const finish = (outcome) => {
      if (settled) return;
      settled = true;
      const ms = Number(process.hrtime.bigint() - started) / 1e6;
      clearTimeout(timer);
      liveChildren.delete(child);
      if (outcome instanceof Error) return rejectRun(outcome);
      if (interrupted && !cleanup) return rejectRun(new Interrupted(interrupted));
      resolveRun({ stdout, stderr, ms, timedOut: false, ...outcome });
    };
    const abandon = (outcome) => {
      try {
        process.kill(-child.pid, 'SIGKILL');
      } catch {
        child.kill('SIGKILL');
      }
      child.stdout.destroy();
      child.stderr.destroy();
      child.unref();
      finish(outcome);
    };
    if (killOnInterrupt) liveChildren.set(child, () => abandon(new Interrupted(interrupted)));
    if (input !== undefined) child.stdin.end(input);
    child.stdout.setEncoding('utf8').on('data', (d) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d) => (stderr += d));
    const timer = timeoutMs > 0 ? setTimeout(() => abandon({ code: null, signal: 'SIGKILL', timedOut: true }), timeoutMs) : undefined;
    child.on('error', (err) => finish(new Error(`cannot run ${cmd}: ${err.message}`)));
    child.on('close', (code, signal) => finish({ code, signal }));
  });
}

export const describeExit = (r) => (r.timedOut ? 'timed out' : r.signal ? `killed by ${r.signal}` : `exit code ${r.code}`);

/** A child's stderr for an error message: its last lines, indented. */
export function tailOf(text, lines = 12) {
  const all = (text ?? '').trim().split('\n').filter(Boolean);
  if (all.length === 0) return '';
  return `\n${all.slice(-lines).map((l) => `  ${l}`).join('\n')}`;
}

/** Runs a command and throws unless it exits 0. */
export async function runOk(what, cmd, args, options = {}) {
  const r = await run(cmd, args, { timeoutMs: 120_000, ...options });
  if (r.code !== 0) throw new Error(`${what} failed: ${describeExit(r)}${tailOf(r.stderr)}`);
  return r;
}

/** The environment coffer commands get: the passphrase, and no faults unless asked for. */
export function cofferEnv(extra = {}) {
  return { ...process.env, COFFER_PASSPHRASE: PASSPHRASE, COFFER_FAULTS: '', ...extra };
}

// `sync --wait` and `status` only watch or ask, so a Ctrl-C may cut them short; the rest change
// state and are let finish.
const INTERRUPTIBLE = new Set(['sync', 'status', 'logs']);

export async function coffer(args, { env, timeoutMs = 300_000, cleanup = false } = {}) {
  const r = await run(process.execPath, [CLI, ...args], { env: env ?? cofferEnv(), timeoutMs, cleanup, killOnInterrupt: INTERRUPTIBLE.has(args[0]) });
  if (r.code !== 0) throw new Error(`coffer ${args.join(' ')} failed: ${describeExit(r)}${tailOf(r.stderr)}`);
  return r;
}

/** Finds a program on PATH (or takes an absolute path); undefined when absent. */
export function which(name, { verify } = {}) {
  const dirs = name.includes('/') ? [''] : (process.env.PATH ?? '').split(':').filter(Boolean);
  for (const dir of dirs) {
    const path = dir ? join(dir, name) : name;
    try {
      accessSync(path, constants.X_OK);
      if (!statSync(path).isFile()) continue;
    } catch {
      continue;
    }
    if (!verify || verify(path)) return path;
  }
  return undefined;
}

// ---------------------------------------------------------------------------------------------
// Mounts

function unescapeMountField(field) {
  return field.replace(/\\([0-7]{3})/g, (_, oct) => String.fromCharCode(parseInt(oct, 8)));
}

export function readMounts() {
  const mounts = [];
  for (const line of readFileSync('/proc/self/mountinfo', 'utf8').split('\n')) {
    const fields = line.split(' ');
    const dash = fields.indexOf('-', 6);
    if (dash < 0) continue;
    mounts.push({ mountpoint: unescapeMountField(fields[4]), fstype: unescapeMountField(fields[dash + 1]), source: unescapeMountField(fields[dash + 2]) });
  }
  return mounts;
}

export const mountOf = (path) => readMounts().findLast((m) => m.mountpoint === path);
export const isMounted = (path) => mountOf(path) !== undefined;
const mountsUnder = (dir) => readMounts().filter((m) => m.mountpoint === dir || m.mountpoint.startsWith(dir + '/'));

export function processAlive(pid) {
  try {
    process.kill(pid, 0);
  } catch (err) {
    return err.code === 'EPERM';
  }
  try {
    return !/^State:\s+Z/m.test(readFileSync(`/proc/${pid}/status`, 'utf8'));
  } catch {
    return false;
  }
}

export function daemonInfo(vault) {
  try {
    return JSON.parse(readFileSync(join(vault, 'state', 'daemon.json'), 'utf8'));
  } catch {
    return undefined;
  }
}

/** `coffer mount`, recorded for the cleanup; checks a live daemon and a fuse.coffer mount. */
export async function mountVault(vault, mnt, { env } = {}) {
  owned.mounts.set(mnt, { vault, pid: undefined });
  const r = await coffer(['mount', vault, mnt], { env });
  const info = daemonInfo(vault);
  if (!info || !processAlive(info.pid)) throw new Error(`coffer mount ${vault} ${mnt} returned, but no live daemon is registered in ${vault}/state/daemon.json`);
  owned.mounts.get(mnt).pid = info.pid;
  const m = mountOf(mnt);
  if (!m || m.fstype !== 'fuse.coffer') throw new Error(`coffer mount returned, but ${mnt} is not a fuse.coffer mount in /proc/self/mountinfo`);
  return { ms: r.ms, pid: info.pid };
}

export async function unmountVault(mnt, { cleanup = false } = {}) {
  const entry = owned.mounts.get(mnt);
  const r = await coffer(['unmount', mnt], { timeoutMs: 300_000, cleanup });
  if (entry?.pid) for (const until = Date.now() + 10_000; processAlive(entry.pid) && Date.now() < until; ) await sleep(50);
  owned.mounts.delete(mnt);
  return r;
}

// ---------------------------------------------------------------------------------------------
// Background processes and temp dirs

/**
 * Starts a long-running child in its own process group, stopped by the cleanup (or by
 * `stop()`). `stdio` as for spawn. Returns the ChildProcess with `exited` (a promise of
 * { code, signal }) and `stop()`.
 */
export function startBackground(cmd, args, { env, stdio = ['ignore', 'ignore', 'ignore'], cwd } = {}) {
  checkInterrupt();
  const child = spawn(cmd, args, { env: env ?? process.env, stdio, detached: true, cwd });
  child.exited = new Promise((resolveExit) => {
    child.on('error', (err) => resolveExit({ code: null, signal: null, error: err }));
    child.on('exit', (code, signal) => resolveExit({ code, signal }));
  });
  child.exited.then(() => owned.background.delete(child));
  child.stop = () => stopBackground(child);
  owned.background.add(child);
  return child;
}

async function stopBackground(child) {
  if (child.exitCode !== null || child.signalCode !== null || child.pid === undefined) return;
  const signalGroup = (signal) => {
    try {
      process.kill(-child.pid, signal);
    } catch {
      try {
        child.kill(signal);
      } catch {
        /* gone */
      }
    }
  };
  signalGroup('SIGTERM');
  const exited = await Promise.race([child.exited.then(() => true), sleep(3000).then(() => false)]);
  // Its group may hold helpers (a thumbnailer) even after the leader left.
  signalGroup('SIGKILL');
  if (!exited) await Promise.race([child.exited, sleep(2000)]);
  owned.background.delete(child);
}

/** A temp dir removed by the cleanup (unless `keep`), never while something is mounted in it. */
export function tempDir(prefix) {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  owned.dirs.push(dir);
  return dir;
}

let keepDirs = false;

async function cleanup() {
  cleaningUp = true;
  for (const child of [...owned.background]) await stopBackground(child);
  for (const [mnt, entry] of owned.mounts) {
    entry.pid ??= daemonInfo(entry.vault)?.pid;
    const daemonAlive = () => entry.pid !== undefined && processAlive(entry.pid);
    if (!isMounted(mnt) && !daemonAlive()) continue;
    progress(`unmounting ${mnt}`);
    try {
      await coffer(['unmount', mnt], { timeoutMs: 120_000, cleanup: true });
    } catch (err) {
      warn(err.message);
    }
    if (isMounted(mnt)) {
      progress(`${mnt} is still mounted; detaching it with umount -l`);
      const r = await run('umount', ['-l', mnt], { timeoutMs: 60_000, cleanup: true }).catch((err) => ({ code: -1, stderr: err.message }));
      if (r.code !== 0) warn(`umount -l ${mnt} failed: ${r.stderr?.trim() || describeExit(r)}`);
    }
    for (const [signal, waitMs] of [[null, 10_000], ['SIGTERM', 10_000], ['SIGKILL', 5_000]]) {
      if (!daemonAlive()) break;
      if (signal) {
        progress(`daemon pid ${entry.pid} is still running; sending ${signal}`);
        try {
          process.kill(entry.pid, signal);
        } catch {
          /* already gone */
        }
      }
      for (const until = Date.now() + waitMs; daemonAlive() && Date.now() < until; ) await sleep(100);
    }
    if (daemonAlive()) warn(`daemon pid ${entry.pid} would not stop`);
  }
  owned.mounts.clear();
  for (const dir of owned.dirs) {
    const leftovers = mountsUnder(dir);
    if (leftovers.length > 0) {
      warn(`NOT removing ${dir}: still mounted there: ${leftovers.map((m) => m.mountpoint).join(', ')}`);
      continue;
    }
    if (keepDirs) {
      progress(`kept ${dir}`);
      continue;
    }
    try {
      rmSync(dir, { recursive: true, force: true });
    } catch (err) {
      warn(`could not remove ${dir}: ${err.message}`);
    }
  }
  owned.dirs.length = 0;
}

function onSignal(signal) {
  if (cleaningUp) {
    progress(`${signal} received; still cleaning up, please wait`);
    return;
  }
  if (interrupted) {
    progress(`${signal} received; already stopping`);
    return;
  }
  interrupted = signal;
  progress(`${signal} received; stopping, then cleaning up`);
  for (const giveUp of [...liveChildren.values()]) giveUp();
  // Stop background processes now: something waiting on one (a window to appear) ends sooner.
  for (const child of [...owned.background]) stopBackground(child);
}

/**
 * Runs `main` (which returns an exit code) with signal handling and the cleanup; exits with
 * main's code, 1 on an error (its message printed), 2 on a usage error, 130 on an interrupt.
 */
export function runScript(name, main, { keep = () => false, isQuiet = () => false } = {}) {
  scriptName = name;
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  process.on('SIGHUP', onSignal);
  (async () => {
    let code;
    try {
      code = await main();
    } catch (err) {
      if (err instanceof UsageError) {
        warn(err.message);
        code = 2;
      } else if (err instanceof Interrupted) {
        code = 130;
      } else {
        warn(`FAILED: ${err?.message ?? err}`);
        code = 1;
      }
    }
    if (interrupted && code !== 130) code = 130;
    keepDirs = keep();
    quiet = isQuiet();
    try {
      await cleanup();
    } catch (err) {
      warn(`cleanup failed: ${err?.stack ?? err}`);
      if (code === 0) code = 1;
    }
    process.exit(code);
  })();
}
