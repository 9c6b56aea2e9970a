// What Coffer's benchmark scripts (scripts/bench.mjs, scripts/bench-sync.mjs) share: running
// children that may hang on a mount, stopping on Ctrl-C without leaving mounts behind, reading
// mountinfo, watching a serving process's memory, and dropping the page cache.
//
// Ground rules this module enforces for its callers:
// - No filesystem operation on a mount ever runs in the benchmark's own process: a request stuck
//   in a FUSE daemon would freeze the benchmark, its cleanup included. Everything that touches
//   a mount runs in a child started by run() or sh().
// - Children get their own process group, so Ctrl-C at the terminal reaches only the benchmark,
//   which then decides what to stop; an unmount started by the cleanup is never killed halfway
//   by the keypress that asked for it.
// - Whatever was mounted is released on every way out (success, failure, Ctrl-C): a graceful
//   stop first, `umount -l` / `fusermount -uz` where that fails, then the serving process is
//   stopped if it lingers, and no directory is removed while something is mounted inside it.
import { spawn } from 'node:child_process';
import { copyFileSync, existsSync, openSync, closeSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import os from 'node:os';

// ---------------------------------------------------------------------------------------------
// Messages

let programName = 'bench';

/** Sets the prefix of every progress and warning line (the script's name). */
export function setProgramName(name) {
  programName = name;
}

export const progress = (msg) => process.stderr.write(`${programName}: ${msg}\n`);
export const warn = progress;

// ---------------------------------------------------------------------------------------------
// Command line

export class UsageError extends Error {}

export function integerArg(flag, value, min, max) {
  if (value === undefined || !/^\d+$/.test(value)) throw new UsageError(`${flag} needs a whole number, got ${JSON.stringify(value ?? '')}`);
  const n = Number(value);
  if (n < min || n > max) throw new UsageError(`${flag} must be between ${min} and ${max}, got ${n}`);
  return n;
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
 * SIGINT, SIGTERM and SIGHUP stop the run: every child that may be killed is killed at once, and
 * the caller's `finally` does the cleanup. `onInterrupt` may print what happens next.
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

// ---------------------------------------------------------------------------------------------
// Children

/**
 * Runs a command to completion and returns { code, signal, stdout, stderr, seconds, timedOut }.
 *
 * On a timeout or an interrupt the child gets SIGKILL but is not waited for: a process whose
 * request a FUSE daemon has already taken sleeps uninterruptibly in the kernel until the daemon
 * answers or dies, and only the cleanup (which ends that daemon) can release it.
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
      const seconds = Number(process.hrtime.bigint() - started) / 1e9;
      clearTimeout(timer);
      liveChildren.delete(child);
      if (outcome instanceof Error) return rejectRun(outcome);
      if (interrupted && !cleanup) return rejectRun(new Interrupted(interrupted));
      resolveRun({ stdout, stderr, seconds, timedOut: false, ...outcome });
    };
    const abandon = (outcome) => {
      child.kill('SIGKILL');
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
  const all = stderr.trim().split('\n').filter(Boolean);
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

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

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
