// What Coffer's scripts share (scripts/bench.mjs, scripts/bench-sync.mjs, scripts/lib/bench-targets.mjs,
// scripts/file-manager-check.mjs, scripts/thumbnail-scan.mjs): the command line, running the
// coffer CLI and other programs as children that may hang on a mount, mounting and unmounting
// vaults, background and serving processes, reading mountinfo, watching a serving process's
// memory, dropping the page cache, and a cleanup that runs on success, failure and Ctrl-C alike.
//
// Ground rules this module enforces for its callers:
// - No filesystem operation on a mount ever runs in the script's own process: a request stuck
//   in a FUSE daemon would freeze the script, its cleanup included. Everything that touches a
//   mount runs in a child started by run() or sh().
// - Children get their own process group, so a Ctrl-C at the terminal reaches only the script,
//   which then decides what to stop. coffer commands that change state (init, mount, clone,
//   unmount) are let finish: a `mount` cut short could bring a daemon up after the cleanup
//   looked for one, and an unmount started by the cleanup is never killed halfway by the
//   keypress that asked for it.
// - Whatever was mounted is released on every way out (success, failure, Ctrl-C): background
//   processes are stopped first (SIGTERM, then SIGKILL to their whole group), then each mount
//   gets a graceful stop (`coffer unmount`), `umount -l` / `fusermount -uz` where that fails,
//   then its serving process is stopped if it lingers; no directory is removed while something
//   is mounted inside it.
import { spawn } from 'node:child_process';
import { accessSync, closeSync, constants, copyFileSync, existsSync, mkdtempSync, openSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import os from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

export const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
export const CLI = join(ROOT, 'dist', 'cli', 'main.js');
export const PASSPHRASE = 'correct horse battery staple';

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// ---------------------------------------------------------------------------------------------
// Messages

let programName = 'coffer-script';
let quiet = false;

/** Sets the prefix of every progress and warning line (the script's name). */
export function setProgramName(name) {
  programName = name;
}

export function progress(message) {
  if (!quiet) process.stderr.write(`${programName}: ${message}\n`);
}

export function warn(message) {
  process.stderr.write(`${programName}: ${message}\n`);
}

// ---------------------------------------------------------------------------------------------
// Command line

export class UsageError extends Error {}

export function integerArg(flag, value, min, max) {
  if (value === undefined || !/^\d+$/.test(value)) throw new UsageError(`${flag} needs a whole number, got ${JSON.stringify(value ?? '')}`);
  const n = Number(value);
  if (n < min || n > max) throw new UsageError(`${flag} must be between ${min} and ${max}, got ${n}`);
  return n;
}

/**
 * Walks `argv` and calls `onFlag(flag, value, arg)` for each argument: `flag` without an inline
 * `=value`, `value()` that value or else the next argument (consumed), `arg` the argument as given.
 */
export function eachFlag(argv, onFlag) {
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    const [flag, inline] = arg.split(/=(.*)/s, 2);
    onFlag(flag, () => (inline !== undefined ? inline : argv[++i]), arg);
  }
}

/**
 * This process's options by `parseArgs`, for a main() that returns an exit code: a number when
 * the script should stop right away (0 after printing `usage` for --help; 2 after a usage error,
 * printed with `usage`; 1 when the build it needs is missing).
 */
export function commandLine(parseArgs, usage) {
  let opts;
  try {
    opts = parseArgs(process.argv.slice(2));
  } catch (err) {
    if (!(err instanceof UsageError)) throw err;
    process.stderr.write(`${programName}: ${err.message}\n\n${usage}`);
    return 2;
  }
  if (opts.help) {
    process.stdout.write(usage);
    return 0;
  }
  if (!existsSync(CLI)) {
    process.stderr.write(`${programName}: ${CLI} is missing; build Coffer first with: npx tsc -p tsconfig.json\n`);
    return 1;
  }
  return opts;
}

// ---------------------------------------------------------------------------------------------
// Interrupts

/** Children that an interrupt should stop right now, mapped to how to give up on each. */
const liveChildren = new Map();
let interrupted;
let cleaningUp = false;

export class Interrupted extends Error {
  constructor(signal) {
    super(`interrupted by ${signal}`);
    this.signal = signal;
  }
}

/** The signal that interrupted this run, if any. */
export const interruptedBy = () => interrupted;

export function checkInterrupt() {
  if (interrupted) throw new Interrupted(interrupted);
}

/** Lets a pending Ctrl-C be seen during long in-process loops, and acts on it. */
export async function yieldToSignals() {
  await new Promise((r) => setImmediate(r));
  checkInterrupt();
}

/** From here on, signals only say that the cleanup is under way. */
export function beginCleanup() {
  cleaningUp = true;
}

/**
 * SIGINT, SIGTERM and SIGHUP stop the run: every child that may be killed is killed at once,
 * background processes are stopped, and the caller's `finally` (or runScript) does the cleanup.
 * `onInterrupt` may print what happens next.
 */
export function installSignalHandlers({ onInterrupt } = {}) {
  const onSignal = (signal) => {
    if (cleaningUp) {
      progress(`${signal} received; still cleaning up (unmounting), please wait`);
      return;
    }
    if (interrupted) {
      progress(`${signal} received; already stopping`);
      return;
    }
    interrupted = signal;
    onInterrupt?.(signal);
    for (const giveUp of [...liveChildren.values()]) giveUp();
    // Stop background processes now: something waiting on one (a window to appear) ends sooner.
    for (const child of [...owned.background]) stopBackground(child);
  };
  for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP']) process.on(signal, onSignal);
}

/** Runs `main` and exits with the code it returns. */
export function runMain(main) {
  main().then(
    (code) => process.exit(code),
    (err) => {
      process.stderr.write(`${programName}: unexpected error: ${err?.stack ?? err}\n`);
      process.exit(1);
    },
  );
}

/**
 * Runs `main` (which returns an exit code) with signal handling and the cleanup (background
 * processes, owned mounts, temp dirs); exits with main's code, 1 on an error (its message
 * printed), 2 on a usage error, 130 on an interrupt.
 */
export function runScript(name, main, { keep = () => false, isQuiet = () => false } = {}) {
  setProgramName(name);
  installSignalHandlers({ onInterrupt: (signal) => progress(`${signal} received; stopping, then cleaning up`) });
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
    quiet = isQuiet();
    try {
      await cleanup({ keepDirs: keep() });
    } catch (err) {
      warn(`cleanup failed: ${err?.stack ?? err}`);
      if (code === 0) code = 1;
    }
    process.exit(code);
  })();
}

// ---------------------------------------------------------------------------------------------
// Children

/**
 * Runs a command to completion and returns { code, signal, stdout, stderr, seconds, ms, timedOut }.
 *
 * On a timeout or an interrupt the child's process group gets SIGKILL but is not waited for: a
 * process whose request a FUSE daemon has already taken sleeps uninterruptibly in the kernel
 * until the daemon answers or dies, and only the cleanup (which ends that daemon) can release it.
 *
 * `killOnInterrupt: false` is for commands that change state (mounting, unmounting): one cut
 * short could bring a daemon up after the cleanup has looked for it, so they are allowed to
 * finish and the interrupt takes effect when they return. `cleanup: true` runs even after an
 * interrupt. `input` is written to the child's stdin.
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
      resolveRun({ stdout, stderr, ms, seconds: ms / 1000, timedOut: false, ...outcome });
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
    if (input !== undefined) {
      child.stdin.on('error', () => {}); // a child that exits without reading is not our failure
      child.stdin.end(input);
    }
    child.stdout.setEncoding('utf8').on('data', (d) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d) => (stderr += d));
    const timer = timeoutMs > 0 ? setTimeout(() => abandon({ code: null, signal: 'SIGKILL', timedOut: true }), timeoutMs) : undefined;
    child.on('error', (err) => finish(new Error(`cannot run ${cmd}: ${err.message}`)));
    child.on('close', (code, signal) => finish({ code, signal }));
  });
}

export const describeExit = (r) => (r.timedOut ? 'timed out' : r.signal ? `killed by ${r.signal}` : `exit code ${r.code}`);

/** A child's stderr for an error message: its last lines, indented. */
export function tailOf(stderr, lines = 15) {
  const all = (stderr ?? '').trim().split('\n').filter(Boolean);
  if (all.length === 0) return '';
  const shown = all.slice(-lines).map((l) => `  ${l}`).join('\n');
  return `\n${all.length > lines ? `  ... (${all.length - lines} earlier lines)\n` : ''}${shown}`;
}

/** Runs a command that must exit 0; throws with its stderr otherwise. */
export async function mustRun(what, cmd, args, timeoutMs, opts = {}) {
  const r = await run(cmd, args, { timeoutMs, ...opts });
  if (r.code !== 0) {
    const hint = r.timedOut ? ` after ${Math.round(timeoutMs / 1000)} s (a hung mount looks like this)` : '';
    throw new Error(`${what} failed: ${describeExit(r)}${hint}${tailOf(r.stderr)}`);
  }
  return r;
}

/** A shell snippet in a child (for redirections and globs); fails loudly unless it exits 0. */
export function sh(what, script, args, timeoutMs) {
  return mustRun(what, 'sh', ['-c', script, 'sh', ...args], timeoutMs);
}

/** The last line of a command's stdout that is a JSON object. */
export function lastJson(stdout, what) {
  const line = stdout.trim().split('\n').reverse().find((l) => l.startsWith('{'));
  if (!line) throw new Error(`${what} printed no JSON: ${JSON.stringify(stdout.slice(-500))}`);
  return JSON.parse(line);
}

/** Whether `cmd` is on the PATH. */
export async function haveCommand(cmd) {
  const r = await run('sh', ['-c', 'command -v "$1"', 'sh', cmd], { timeoutMs: 10_000 });
  return r.code === 0;
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
// The coffer CLI and the vaults it mounts

/** The environment coffer commands get by default: the passphrase, and no faults unless asked for. */
export function cofferEnv(extra = {}) {
  return { ...process.env, COFFER_PASSPHRASE: PASSPHRASE, COFFER_FAULTS: '', ...extra };
}

const cofferDefaults = { cli: CLI, env: undefined };

/** Sets which coffer CLI coffer() runs (a private copy of dist/) and the environment it gets by default. */
export function useCoffer({ cli, env } = {}) {
  if (cli !== undefined) cofferDefaults.cli = cli;
  if (env !== undefined) cofferDefaults.env = env;
}

// `sync --wait`, `status`, `logs` and `--help` only watch or ask, so a Ctrl-C may cut them
// short; the rest change state and are let finish.
const INTERRUPTIBLE = new Set(['sync', 'status', 'logs', '--help']);

export async function coffer(args, { env, timeoutMs = 300_000, cleanup = false } = {}) {
  const r = await run(process.execPath, [cofferDefaults.cli, ...args], {
    env: env ?? cofferDefaults.env ?? cofferEnv(),
    timeoutMs,
    cleanup,
    killOnInterrupt: INTERRUPTIBLE.has(args[0]),
  });
  if (r.code !== 0) throw new Error(`coffer ${args.join(' ')} failed: ${describeExit(r)}${tailOf(r.stderr)}`);
  return r;
}

/** What a vault's running daemon registered: { pid, socket, ... }, or undefined. */
export function daemonInfo(vault) {
  try {
    return JSON.parse(readFileSync(join(vault, 'state', 'daemon.json'), 'utf8'));
  } catch {
    return undefined;
  }
}

/** What this run owns, for the cleanup. */
const owned = {
  mounts: new Map(), // mountpoint -> { vault, pid }
  background: new Set(),
  dirs: [],
};

/** The vaults mounted with mountVault() and not yet unmounted: mountpoint -> { vault, pid }. */
export const ownedMounts = () => owned.mounts;

/**
 * `coffer mount`, recorded for the cleanup; checks a live daemon and a fuse.coffer mount.
 * Returns { seconds, ms, pid, socket }.
 */
export async function mountVault(vault, mnt, { env } = {}) {
  owned.mounts.set(mnt, { vault, pid: undefined });
  const r = await coffer(['mount', vault, mnt], { env });
  const info = daemonInfo(vault);
  if (!info || !processAlive(info.pid)) throw new Error(`coffer mount ${vault} ${mnt} returned, but no live daemon is registered in ${vault}/state/daemon.json`);
  owned.mounts.get(mnt).pid = info.pid;
  const m = mountAt(mnt);
  if (!m || m.fstype !== 'fuse.coffer') throw new Error(`coffer mount returned, but ${mnt} is not a fuse.coffer mount in /proc/self/mountinfo`);
  return { seconds: r.seconds, ms: r.ms, pid: info.pid, socket: info.socket };
}

/** `coffer unmount`, then waits up to 10 s for the daemon to end. Returns the command's result. */
export async function unmountVault(mnt, { cleanup = false, timeoutMs = 300_000 } = {}) {
  const entry = owned.mounts.get(mnt);
  const r = await coffer(['unmount', mnt], { timeoutMs, cleanup });
  if (entry?.pid) await waitForExit(entry.pid, 10_000);
  owned.mounts.delete(mnt);
  return r;
}

/** Releases every vault mountVault() mounted and unmountVault() did not unmount (see releaseMount). */
export async function releaseOwnedMounts() {
  for (const [mnt, entry] of owned.mounts) {
    entry.pid ??= daemonInfo(entry.vault)?.pid;
    await releaseMount({
      mountpoint: mnt,
      pid: entry.pid,
      gracefulStop: () => coffer(['unmount', mnt], { timeoutMs: 120_000, cleanup: true }),
    });
  }
  owned.mounts.clear();
}

// ---------------------------------------------------------------------------------------------
// Background and serving processes, temp dirs

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

/** A temp dir removed by runScript's cleanup (unless `keep`), never while something is mounted in it. */
export function tempDir(prefix) {
  const dir = mkdtempSync(join(os.tmpdir(), prefix));
  owned.dirs.push(dir);
  return dir;
}

/** runScript's cleanup: background processes, then owned mounts, then temp dirs. */
async function cleanup({ keepDirs }) {
  beginCleanup();
  for (const child of [...owned.background]) await stopBackground(child);
  await releaseOwnedMounts();
  for (const dir of owned.dirs) {
    if (keepDirs && mountsUnder(dir).length === 0) progress(`kept ${dir}`);
    else removeDirUnlessMounted(dir);
  }
  owned.dirs.length = 0;
}

const servers = new Set();

/**
 * Waits up to `ms` for every server started by startServer() that has been told to stop, so
 * that none is left unreaped when this process exits (see waitForExit below).
 */
export async function reapServers(ms = 5_000) {
  const ending = [...servers].filter((s) => s.exit === undefined && !processAlive(s.pid));
  await Promise.all(ending.map((s) => s.waitForExit(ms)));
}

/**
 * Starts a long-running serving process (a FUSE daemon run in the foreground) with its output
 * in `logFile`. It gets its own process group and is not killed on Ctrl-C: the cleanup unmounts
 * it, which is what ends it cleanly. `input` is written to its stdin (a passphrase).
 */
export function startServer(cmd, args, { env, logFile, input, cwd } = {}) {
  const out = openSync(logFile, 'a');
  let child;
  try {
    child = spawn(cmd, args, { env: env ?? process.env, cwd, stdio: [input === undefined ? 'ignore' : 'pipe', out, out], detached: true });
  } finally {
    closeSync(out);
  }
  if (input !== undefined) {
    child.stdin.on('error', () => {});
    child.stdin.end(input);
  }
  const exited = new Promise((resolveExit) => {
    child.on('error', (err) => resolveExit({ code: null, signal: null, error: err }));
    child.on('exit', (code, signal) => resolveExit({ code, signal }));
  });
  let exit;
  child.unref();
  const server = {
    pid: child.pid,
    exited,
    get exit() { return exit; },
    /**
     * Waits up to `ms` for the process to end and be reaped; returns whether it was. Waiting
     * for the 'exit' event rather than for the pid to vanish matters: a child not yet reaped
     * when this process exits is handed to init, which on some machines never reaps it.
     */
    async waitForExit(ms) {
      let timer;
      const outcome = await Promise.race([exited, new Promise((r) => (timer = setTimeout(r, ms)))]);
      clearTimeout(timer);
      return outcome !== undefined;
    },
    logTail: (lines = 15) => {
      try {
        return tailOf(readFileSync(logFile, 'utf8'), lines);
      } catch {
        return '';
      }
    },
  };
  servers.add(server);
  exited.then((e) => {
    exit = e;
    servers.delete(server);
  });
  return server;
}

// ---------------------------------------------------------------------------------------------
// Observing the system

function unescapeMountField(field) {
  return field.replace(/\\([0-7]{3})/g, (_, oct) => String.fromCharCode(parseInt(oct, 8)));
}

/** [{ mountpoint, fstype, source }] from /proc/self/mountinfo, in mount order. */
export function readMounts() {
  const mounts = [];
  for (const line of readFileSync('/proc/self/mountinfo', 'utf8').split('\n')) {
    const fields = line.split(' ');
    const dash = fields.indexOf('-', 6);
    if (dash < 0) continue;
    mounts.push({
      mountpoint: unescapeMountField(fields[4]),
      fstype: unescapeMountField(fields[dash + 1]),
      source: unescapeMountField(fields[dash + 2]),
    });
  }
  return mounts;
}

export const mountAt = (path) => readMounts().findLast((m) => m.mountpoint === path);
export const isMounted = (path) => mountAt(path) !== undefined;
export const mountsUnder = (dir) => readMounts().filter((m) => m.mountpoint === dir || m.mountpoint.startsWith(dir + '/'));

/** The filesystem that holds `path`, to say in a report what "plain" was. */
export function filesystemOf(path) {
  let best;
  for (const m of readMounts()) {
    if ((path === m.mountpoint || path.startsWith(m.mountpoint === '/' ? '/' : m.mountpoint + '/')) &&
        (!best || m.mountpoint.length >= best.mountpoint.length)) best = m;
  }
  return best ? `${best.fstype} on ${best.source}` : 'unknown';
}

export function processAlive(pid) {
  try {
    process.kill(pid, 0);
  } catch (err) {
    return err.code === 'EPERM';
  }
  // A zombie still answers signal 0 but no longer runs.
  try {
    return !/^State:\s+Z/m.test(readFileSync(`/proc/${pid}/status`, 'utf8'));
  } catch {
    return false;
  }
}

/** Waits until `pid` has ended or `ms` have passed; returns whether it ended. */
export async function waitForExit(pid, ms) {
  for (const until = Date.now() + ms; processAlive(pid) && Date.now() < until; ) await sleep(50);
  return !processAlive(pid);
}

/** Waits until `path` shows in mountinfo while `alive()` holds; throws after `ms`. */
export async function waitForMount(path, ms, alive = () => true) {
  for (const until = Date.now() + ms; Date.now() < until; ) {
    if (isMounted(path)) return;
    if (!alive()) throw new Error(`the serving process ended before ${path} was mounted`);
    checkInterrupt();
    await sleep(50);
  }
  throw new Error(`${path} was not mounted after ${Math.round(ms / 1000)} s`);
}

const RSS_SAMPLE_MS = 100;

function readStatusKiB(status, field) {
  const m = new RegExp(`^${field}:\\s+(\\d+)\\s+kB`, 'm').exec(status);
  return m ? Number(m[1]) * 1024 : 0;
}

/**
 * Watches a process's resident set; stop() returns the peak in bytes since the start.
 *
 * The kernel's own high-water mark (VmHWM) sees every peak, however short, but counts from the
 * process's start: writing 5 to /proc/<pid>/clear_refs resets it (allowed for our own processes
 * and for root). Where that is refused, samples of VmRSS every 100 ms stand in for it. Both are
 * always taken and the larger wins, so a failed reset never under-reports.
 */
export function sampleRss(pid) {
  let hwmReset = false;
  try {
    writeFileSync(`/proc/${pid}/clear_refs`, '5');
    hwmReset = true;
  } catch {
    // Not ours to reset: the samples alone count.
  }
  let peak = 0;
  let busy = false;
  const take = async (final) => {
    if (busy && !final) return;
    busy = true;
    try {
      const status = await readFile(`/proc/${pid}/status`, 'utf8');
      peak = Math.max(peak, readStatusKiB(status, 'VmRSS'), hwmReset ? readStatusKiB(status, 'VmHWM') : 0);
    } catch {
      // The process is gone; the workload itself will report why.
    } finally {
      busy = false;
    }
  };
  void take();
  const timer = setInterval(take, RSS_SAMPLE_MS);
  return {
    method: hwmReset ? 'VmHWM (reset before the workload) and VmRSS samples' : 'VmRSS sampled every 100 ms',
    async stop() {
      clearInterval(timer);
      await take(true);
      return peak;
    },
  };
}

/**
 * Writes dirty data back and drops the page cache, dentries and inodes. Returns
 * { dropped: true } or { dropped: false, reason } (not root, or /proc/sys read-only).
 */
export async function dropCaches() {
  const r = await run('sh', ['-c', 'sync && echo 3 > /proc/sys/vm/drop_caches'], { timeoutMs: 300_000 });
  return r.code === 0 ? { dropped: true } : { dropped: false, reason: r.stderr.trim() || describeExit(r) };
}

/** What a report should say about the machine a run measured. */
export function hostInfo(workdir) {
  return {
    node: process.version,
    kernel: os.release(),
    platform: `${os.type()} ${os.release()} ${os.arch()}`,
    cpus: os.cpus().length,
    cpuModel: os.cpus()[0]?.model,
    memoryBytes: os.totalmem(),
    loadAverage1m: os.loadavg()[0],
    root: process.getuid?.() === 0,
    workdirFilesystem: filesystemOf(workdir),
  };
}

// ---------------------------------------------------------------------------------------------
// Cleaning up

/** Detaches a mount with `umount -l`, or `fusermount -uz` where umount is refused (not root). */
export async function detachMount(mountpoint) {
  for (const [cmd, args] of [['umount', ['-l', mountpoint]], ['fusermount', ['-uz', mountpoint]]]) {
    const r = await run(cmd, args, { timeoutMs: 60_000, cleanup: true }).catch((err) => ({ code: -1, stderr: err.message }));
    if (r.code === 0 || !isMounted(mountpoint)) return true;
    warn(`${cmd} ${args.join(' ')} failed: ${r.stderr?.trim() || describeExit(r)}`);
  }
  return !isMounted(mountpoint);
}

/** Waits for `pid` to end, then escalates to SIGTERM and SIGKILL; returns whether it ended. */
export async function stopProcess(pid, graceMs = 10_000) {
  for (const [signal, waitMs] of [[null, graceMs], ['SIGTERM', 10_000], ['SIGKILL', 5_000]]) {
    if (!processAlive(pid)) return true;
    if (signal) {
      progress(`pid ${pid} is still running; sending ${signal}`);
      try { process.kill(pid, signal); } catch { /* already gone */ }
    }
    await waitForExit(pid, waitMs);
  }
  return !processAlive(pid);
}

/**
 * Releases one mount this run made, whatever state it is in: `gracefulStop()` (the filesystem's
 * own unmount, which lets it write everything back), then `umount -l` if the mount is still
 * there, then the serving process `pid` is stopped if it lingers. Never throws.
 */
export async function releaseMount({ mountpoint, pid, gracefulStop }) {
  const alive = () => pid !== undefined && processAlive(pid);
  if (!isMounted(mountpoint) && !alive()) return;
  progress(`unmounting ${mountpoint}`);
  if (gracefulStop) {
    try {
      await gracefulStop();
    } catch (err) {
      warn(err.message);
    }
  }
  if (isMounted(mountpoint)) {
    progress(`${mountpoint} is still mounted; detaching it`);
    await detachMount(mountpoint);
  }
  // A daemon notices a vanished mount and stops by itself within seconds; one that does not
  // is hung, and it belongs to this run.
  if (alive() && !(await stopProcess(pid))) warn(`pid ${pid} would not stop`);
}

/** Removes a work directory unless something is still mounted inside it. */
export function removeDirUnlessMounted(dir) {
  const leftovers = mountsUnder(dir);
  if (leftovers.length > 0) {
    warn(
      `NOT removing ${dir}: still mounted there: ${leftovers.map((m) => m.mountpoint).join(', ')}\n` +
        `${programName}: clean up by hand with: umount -l ${leftovers[0].mountpoint} && rm -rf ${dir}`,
    );
    return false;
  }
  try {
    rmSync(dir, { recursive: true, force: true });
    return true;
  } catch (err) {
    warn(`could not remove ${dir}: ${err.message}`);
    return false;
  }
}

/** Shows the end of a daemon log and keeps a copy at `keepAs`, since its workdir is about to go. */
export function keepDaemonLog(log, keepAs) {
  if (!existsSync(log)) return;
  try {
    const lines = readFileSync(log, 'utf8').trimEnd().split('\n');
    warn(`last lines of ${log}:\n${lines.slice(-40).map((l) => `  ${l}`).join('\n')}`);
    copyFileSync(log, keepAs);
    warn(`the full log is kept at ${keepAs}`);
  } catch (err) {
    warn(`could not read ${log}: ${err.message}`);
  }
}

export const timestampForFile = () => new Date().toISOString().replace(/[:.]/g, '-');
