#!/usr/bin/env node
// Coffer's throughput benchmark: the same workloads through a Coffer mount and in a plain
// directory on the same disk, so the figure that matters is the ratio between the two.
//
//   node scripts/bench.mjs [--size-mib 1024] [--files 10000] [--dir <parent>] [--json] [--runs 1]
//
// Needs a built tree (npm run build), /dev/fuse, and root only to drop the page cache before
// the read workload (without it the read figures may come from memory; the output says so).
//
// Design notes:
// - Every byte of I/O runs in a child (scripts/lib/bench-workload.mjs, or the coffer CLI), never in
//   this process. That keeps the plain and Coffer figures produced by identical code, and keeps
//   this process free to sample the daemon's memory while a workload runs.
// - Between workloads the daemon is left to finish its background work (committing buffers,
//   moving chunks to the remote) before the next clock starts; otherwise one workload's upload
//   would be billed to the next. How long that took is reported as `settleSeconds`.
// - All figures use MB = 10^6 bytes; sizes given on the command line are MiB.
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import os from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const CLI = join(ROOT, 'dist', 'cli', 'main.js');
const WORKLOAD = join(ROOT, 'scripts', 'lib', 'bench-workload.mjs');
const MiB = 1024 * 1024;
const SMALL_FILE_BYTES = 1024;
const RSS_SAMPLE_MS = 100;

const USAGE = `Usage: node scripts/bench.mjs [options]   (or: npm run bench -- [options])

Measures Coffer against a plain directory on the same disk: sequential write and read
of one large file, and creating many small files.

  --size-mib <n>   size of the sequential file in MiB (default 1024)
  --files <n>      number of 1 KiB files to create (default 10000)
  --dir <path>     make the temporary workdir inside <path> (default ${os.tmpdir()})
  --runs <n>       repeat every workload n times and report the median (default 1)
  --json           print one JSON object on stdout instead of a table
  -h, --help       show this help
`;

// ---------------------------------------------------------------------------------------------
// Command line

class UsageError extends Error {}

function parseArgs(argv) {
  const opts = { sizeMiB: 1024, files: 10000, dir: os.tmpdir(), json: false, runs: 1 };
  const integer = (flag, value, min, max) => {
    if (value === undefined || !/^\d+$/.test(value)) throw new UsageError(`${flag} needs a whole number, got ${JSON.stringify(value ?? '')}`);
    const n = Number(value);
    if (n < min || n > max) throw new UsageError(`${flag} must be between ${min} and ${max}, got ${n}`);
    return n;
  };
  for (let i = 0; i < argv.length; i++) {
    let [flag, inline] = argv[i].split(/=(.*)/s, 2);
    const value = () => (inline !== undefined ? inline : argv[++i]);
    switch (flag) {
      case '--size-mib': opts.sizeMiB = integer(flag, value(), 1, 1024 * 1024); break;
      // The child holds every file's content in memory before it starts the clock.
      case '--files': opts.files = integer(flag, value(), 1, 1_000_000); break;
      case '--runs': opts.runs = integer(flag, value(), 1, 100); break;
      case '--dir': {
        const v = value();
        if (!v) throw new UsageError('--dir needs a path');
        opts.dir = resolve(v);
        break;
      }
      case '--json': opts.json = true; break;
      case '-h': case '--help': opts.help = true; break;
      default: throw new UsageError(`unknown argument ${JSON.stringify(argv[i])}`);
    }
  }
  return opts;
}

// ---------------------------------------------------------------------------------------------
// Children

/** Children that an interrupt should stop right now, mapped to how to give up on each. */
const liveChildren = new Map();
let interrupted;
let cleaningUp = false;

class Interrupted extends Error {
  constructor(signal) {
    super(`interrupted by ${signal}`);
    this.signal = signal;
  }
}

/**
 * Runs a command to completion and returns { code, signal, stdout, stderr, seconds, timedOut }.
 *
 * Children get their own process group: Ctrl-C at the terminal must reach only this process,
 * which then decides what to stop, so that an `unmount` started by the cleanup is not killed
 * halfway by the same keypress that asked for it.
 *
 * On a timeout or an interrupt the child gets SIGKILL but is not waited for: a process whose
 * request the daemon has already taken sleeps uninterruptibly in the kernel until the daemon
 * answers or dies, and only the cleanup (which ends that daemon) can release it.
 *
 * `killOnInterrupt: false` is for coffer CLI commands: a `mount` cut short could leave a
 * daemon coming up after the cleanup has looked for it, so they are allowed to finish (they
 * take seconds) and the interrupt takes effect when they return.
 */
function run(cmd, args, { env, timeoutMs = 0, cleanup = false, killOnInterrupt = true } = {}) {
  if (interrupted && !cleanup) return Promise.reject(new Interrupted(interrupted));
  return new Promise((resolveRun, rejectRun) => {
    const started = process.hrtime.bigint();
    const child = spawn(cmd, args, { env: env ?? process.env, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
    let stdout = '';
    let stderr = '';
    let settled = false;
    const finish = (outcome) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      liveChildren.delete(child);
      if (outcome instanceof Error) return rejectRun(outcome);
      if (interrupted && !cleanup) return rejectRun(new Interrupted(interrupted));
      resolveRun({ stdout, stderr, seconds: Number(process.hrtime.bigint() - started) / 1e9, timedOut: false, ...outcome });
    };
    const abandon = (outcome) => {
      child.kill('SIGKILL');
      child.stdout.destroy();
      child.stderr.destroy();
      child.unref();
      finish(outcome);
    };
    if (killOnInterrupt) liveChildren.set(child, () => abandon(new Interrupted(interrupted)));
    child.stdout.setEncoding('utf8').on('data', (d) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d) => (stderr += d));
    const timer = timeoutMs > 0 ? setTimeout(() => abandon({ code: null, signal: 'SIGKILL', timedOut: true }), timeoutMs) : undefined;
    child.on('error', (err) => finish(new Error(`cannot run ${cmd}: ${err.message}`)));
    child.on('close', (code, signal) => finish({ code, signal }));
  });
}

const describeExit = (r) => (r.timedOut ? 'timed out' : r.signal ? `killed by ${r.signal}` : `exit code ${r.code}`);

/** Runs one bench-workload.mjs command; returns its JSON answer or throws with the child's stderr. */
async function workload(what, args, timeoutMs) {
  const r = await run(process.execPath, [WORKLOAD, ...args], { timeoutMs });
  if (r.code !== 0) {
    const hint = r.timedOut ? ` after ${Math.round(timeoutMs / 1000)} s (a hung mount looks like this)` : '';
    throw new Error(`${what} failed: ${describeExit(r)}${hint}${r.stderr.trim() ? `\n  ${r.stderr.trim()}` : ''}`);
  }
  return JSON.parse(r.stdout.trim().split('\n').pop());
}

async function coffer(args, { env, timeoutMs = 120_000, cleanup = false } = {}) {
  const r = await run(process.execPath, [CLI, ...args], { env, timeoutMs, cleanup, killOnInterrupt: false });
  if (r.code !== 0) {
    throw new Error(`coffer ${args[0]} failed: ${describeExit(r)}${r.stderr.trim() ? `\n  ${r.stderr.trim()}` : ''}`);
  }
  return r;
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// ---------------------------------------------------------------------------------------------
// Observing the system

function unescapeMountField(field) {
  return field.replace(/\\([0-7]{3})/g, (_, oct) => String.fromCharCode(parseInt(oct, 8)));
}

/** [{ mountpoint, fstype, source }] from /proc/self/mountinfo, in mount order. */
function readMounts() {
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

const isMounted = (path) => readMounts().some((m) => m.mountpoint === path);
const mountsUnder = (dir) => readMounts().filter((m) => m.mountpoint === dir || m.mountpoint.startsWith(dir + '/'));

/** The filesystem that holds `path`, to say in the report what "plain" was. */
function filesystemOf(path) {
  let best;
  for (const m of readMounts()) {
    if ((path === m.mountpoint || path.startsWith(m.mountpoint === '/' ? '/' : m.mountpoint + '/')) &&
        (!best || m.mountpoint.length >= best.mountpoint.length)) best = m;
  }
  return best ? `${best.fstype} on ${best.source}` : 'unknown';
}

function processAlive(pid) {
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

/** Samples a process's resident set every RSS_SAMPLE_MS; stop() returns the peak in bytes. */
function sampleRss(pid) {
  let peak = 0;
  let busy = false;
  const take = async () => {
    if (busy) return;
    busy = true;
    try {
      const m = /^VmRSS:\s+(\d+)\s+kB/m.exec(await readFile(`/proc/${pid}/status`, 'utf8'));
      if (m) peak = Math.max(peak, Number(m[1]) * 1024);
    } catch {
      // The daemon is gone; the workload itself will report why.
    } finally {
      busy = false;
    }
  };
  void take();
  const timer = setInterval(take, RSS_SAMPLE_MS);
  return {
    get peak() { return peak; },
    async stop() {
      clearInterval(timer);
      await take();
      return peak;
    },
  };
}

// ---------------------------------------------------------------------------------------------
// Output

const formatRate = (unit, v) => (v === undefined ? '-' : unit === 'MB/s' ? `${v.toFixed(1)} MB/s` : `${Math.round(v)} files/s`);
const formatRatio = (r) => (r === undefined ? '-' : `${r >= 10 ? r.toFixed(1) : r.toFixed(2)}x`);
const formatMiB = (bytes) => (bytes ? `${(bytes / MiB).toFixed(1)} MiB` : '-');

function median(values) {
  const v = values.filter((x) => x !== undefined).sort((a, b) => a - b);
  if (v.length === 0) return undefined;
  const mid = v.length >> 1;
  return v.length % 2 ? v[mid] : (v[mid - 1] + v[mid]) / 2;
}

function renderTable(report) {
  const p = report.parameters;
  const rows = [['workload', 'plain dir', 'Coffer', 'Coffer/plain', 'daemon peak RSS']];
  for (const w of Object.values(report.workloads)) {
    rows.push([w.label, formatRate(w.unit, w.plain), formatRate(w.unit, w.coffer), formatRatio(w.ratio), formatMiB(w.daemonPeakRssBytes)]);
  }
  const widths = rows[0].map((_, c) => Math.max(...rows.map((r) => r[c].length)));
  const line = (r) => r.map((cell, c) => (c === 0 ? cell.padEnd(widths[c]) : cell.padStart(widths[c]))).join('   ').trimEnd();
  const out = [
    `Coffer ${report.coffer.version} benchmark, ${report.timestamp}`,
    `workdir ${report.environment.workdirFilesystem}; ${p.runs === 1 ? '1 run' : `median of ${p.runs} runs`}; node ${report.environment.node}, ${report.environment.cpus} CPUs`,
    '',
    line(rows[0]),
    line(widths.map((w) => '-'.repeat(w))),
    ...rows.slice(1).map(line),
    '',
    `daemon: pid ${report.daemon.pid}, peak RSS over the whole run ${formatMiB(report.daemon.peakRssBytes)}; unmount (final commit) took ${report.daemon.unmountSeconds?.toFixed(1) ?? '-'} s`,
    `read data verified against the source by sha256: ${report.verified ? 'yes' : 'NO'}`,
  ];
  for (const w of Object.values(report.workloads)) {
    if (w.settleSeconds > 0) out.push(`after ${w.label.replace(/\s+/g, ' ')}: the daemon needed ${w.settleSeconds.toFixed(1)} s more to finish its background work (peak RSS then ${formatMiB(w.daemonPeakRssInclBackgroundBytes)})`);
  }
  for (const note of report.notes) out.push(`note: ${note}`);
  return out.join('\n') + '\n';
}

// ---------------------------------------------------------------------------------------------
// The benchmark

const progress = (msg) => process.stderr.write(`bench: ${msg}\n`);

async function main() {
  let opts;
  try {
    opts = parseArgs(process.argv.slice(2));
  } catch (err) {
    if (!(err instanceof UsageError)) throw err;
    process.stderr.write(`bench: ${err.message}\n\n${USAGE}`);
    return 2;
  }
  if (opts.help) {
    process.stdout.write(USAGE);
    return 0;
  }
  if (!existsSync(CLI)) {
    process.stderr.write(`bench: ${CLI} is missing; build Coffer first with: npm run build\n`);
    return 1;
  }
  if (!existsSync(opts.dir) || !statSync(opts.dir).isDirectory()) {
    process.stderr.write(`bench: --dir ${opts.dir} is not an existing directory\n`);
    return 1;
  }

  const sizeBytes = opts.sizeMiB * MiB;
  // Deadlines only catch a hang: they allow 1 MiB/s and 20 files/s, far below anything sane.
  const bigTimeout = 120_000 + opts.sizeMiB * 1000;
  const filesTimeout = 120_000 + opts.files * 50;

  const work = mkdtempSync(join(opts.dir, 'coffer-bench-'));
  const paths = {
    work,
    source: join(work, 'source.bin'),
    plain: join(work, 'plain'),
    vault: join(work, 'vault'),
    mnt: join(work, 'mnt'),
  };
  const daemonLog = join(paths.vault, 'logs', 'daemon.log');
  // A throwaway vault: a random passphrase, handed only to the coffer CLI children.
  const cofferEnv = { ...process.env, COFFER_PASSPHRASE: randomBytes(24).toString('hex') };

  const state = { daemonPid: undefined };
  const notes = [];
  let failed = false;
  let report;

  try {
    mkdirSync(paths.plain);
    mkdirSync(paths.mnt);
    progress(`workdir ${work} (${filesystemOf(work)})`);
    progress(`preparing ${opts.sizeMiB} MiB of random data (not timed)`);
    const source = await workload('generating the source file', ['source', paths.source, String(sizeBytes)], bigTimeout);

    progress('creating a vault (Argon2id takes a second or two)');
    await coffer(['init', paths.vault], { env: cofferEnv });
    await coffer(['mount', paths.vault, paths.mnt], { env: cofferEnv });
    const status = JSON.parse((await coffer(['status', paths.mnt, '--json'])).stdout);
    if (!Number.isInteger(status.pid) || !processAlive(status.pid)) throw new Error(`coffer status --json gave no live daemon pid: ${JSON.stringify(status)}`);
    state.daemonPid = status.pid;
    const wholeRun = sampleRss(state.daemonPid);
    progress(`mounted at ${paths.mnt}, daemon pid ${state.daemonPid}`);

    /** Flush dirty pages of earlier steps so they are not written back during the next clock. */
    const quiesce = async () => {
      const r = await run('sync', [], { timeoutMs: 300_000 });
      if (r.code !== 0) notes.push(`sync failed (${describeExit(r)}); figures may include earlier writeback`);
    };

    let cacheDropWarned = false;
    /** Drops the page cache; without root, at least the one file about to be read. */
    const dropCaches = async (file) => {
      const r = await run('sh', ['-c', 'sync && echo 3 > /proc/sys/vm/drop_caches'], { timeoutMs: 300_000 });
      if (r.code === 0) return true;
      if (!cacheDropWarned) {
        cacheDropWarned = true;
        notes.push(`could not drop the page cache (${r.stderr.trim() || describeExit(r)}); only the file read was evicted (dd iflag=nocache), so the daemon's own chunk files may have been read from memory. Run as root for cold-cache read figures.`);
        progress('cannot drop the page cache (not root?); evicting just the file to be read');
      }
      await run('dd', [`if=${file}`, 'iflag=nocache', 'count=0', 'status=none'], { timeoutMs: 60_000 }).catch(() => {});
      return false;
    };

    /**
     * Waits until the daemon has no buffered data, no chunks waiting for the remote and no
     * unpublished change; returns how long that took. Upload failures are the remote's
     * business, not the benchmark's, so they end the wait only once nothing moves any more;
     * without failures, a backlog that stops shrinking for two minutes ends it too.
     */
    const settle = async (limitMs) => {
      const started = Date.now();
      let last;
      let lastMoveAt = started;
      let lastStatusOkAt;
      for (;;) {
        // Counted up to when the answer "idle" was asked for, not when it arrived: a status
        // call alone costs a few hundred ms of node start-up.
        const askedAt = Date.now();
        let s;
        try {
          s = JSON.parse((await coffer(['status', paths.mnt, '--json'])).stdout);
        } catch (err) {
          // Status only observes; one failed look (the daemon busy past the CLI's patience,
          // dist/ being rebuilt underneath) must not end a run that is otherwise fine.
          if (err instanceof Interrupted || !processAlive(state.daemonPid) || Date.now() - (lastStatusOkAt ?? started) > 60_000) throw err;
          progress(`status failed, retrying: ${err.message.split('\n')[0]}`);
          await sleep(2000);
          continue;
        }
        lastStatusOkAt = Date.now();
        if (s.bufferedBytes === 0 && s.pendingChunks === 0 && s.sync?.uploading === 0 && !s.sync?.publishPending) return (askedAt - started) / 1000;
        const backlog = `${s.pendingChunks} chunks pending, ${s.bufferedBytes} bytes buffered`;
        if (backlog !== last) [last, lastMoveAt] = [backlog, Date.now()];
        const failing = s.failedChunks > 0 || s.sync?.lastError;
        const stuck = Date.now() - lastMoveAt > (failing ? 60_000 : 120_000);
        if (stuck || Date.now() - started > limitMs) {
          const why = stuck
            ? failing
              ? `its uploads are failing (${s.failedChunks} chunks; last error ${JSON.stringify(s.sync?.lastError)})`
              : `its backlog stopped shrinking for ${Math.round((Date.now() - lastMoveAt) / 1000)} s`
            : `it was still busy after ${Math.round(limitMs / 1000)} s`;
          notes.push(`stopped waiting for the daemon's background work because ${why}, with ${backlog}; later figures may include that work`);
          return (Date.now() - started) / 1000;
        }
        if (interrupted) throw new Interrupted(interrupted);
        await sleep(250);
      }
    };

    /** Runs one timed step through the mount while watching the daemon's memory. */
    const onCoffer = async (step, settleLimitMs) => {
      const rss = sampleRss(state.daemonPid);
      const result = await step();
      const peak = await rss.stop();
      const background = sampleRss(state.daemonPid);
      const settleSeconds = await settle(settleLimitMs);
      const peakInclBackground = Math.max(peak, await background.stop());
      if (!processAlive(state.daemonPid)) throw new Error(`the daemon (pid ${state.daemonPid}) died during the workload`);
      return { result, peak, peakInclBackground, settleSeconds };
    };

    // Background work gets more room than the timed part: for small files it is bounded by
    // the upload pump rather than by the disk, and its duration is one of the findings.
    const settleBig = 120_000 + opts.sizeMiB * 500;
    const settleFiles = 120_000 + opts.files * 200;
    const runs = [];
    let verified = true;
    for (let i = 1; i <= opts.runs; i++) {
      const tag = opts.runs > 1 ? ` (run ${i}/${opts.runs})` : '';
      const plainFile = join(paths.plain, `seq-${i}.bin`);
      const cofferFile = join(paths.mnt, `seq-${i}.bin`);
      const r = {};

      // The source must come from memory, so only the destination is measured.
      await workload('reading the source into the page cache', ['warm', paths.source], bigTimeout);

      progress(`sequential write, plain${tag}`);
      await quiesce();
      const pw = await workload('sequential write to the plain dir', ['write', paths.source, plainFile], bigTimeout);
      progress(`  ${(pw.bytes / pw.seconds / 1e6).toFixed(1)} MB/s`);

      progress(`sequential write, Coffer${tag}`);
      await quiesce();
      const cw = await onCoffer(() => workload('sequential write to the Coffer mount', ['write', paths.source, cofferFile], bigTimeout), settleBig);
      progress(`  ${(cw.result.bytes / cw.result.seconds / 1e6).toFixed(1)} MB/s, daemon peak RSS ${formatMiB(cw.peak)}`);
      r.write = { plain: pw, coffer: cw };

      progress(`sequential read, plain${tag}`);
      const plainCold = await dropCaches(plainFile);
      const pr = await workload('sequential read from the plain dir', ['read', plainFile], bigTimeout);
      progress(`  ${(pr.bytes / pr.seconds / 1e6).toFixed(1)} MB/s`);

      progress(`sequential read, Coffer${tag}`);
      const cofferCold = await dropCaches(cofferFile);
      const cr = await onCoffer(() => workload('sequential read from the Coffer mount', ['read', cofferFile], bigTimeout), settleBig);
      progress(`  ${(cr.result.bytes / cr.result.seconds / 1e6).toFixed(1)} MB/s, daemon peak RSS ${formatMiB(cr.peak)}`);
      r.read = { plain: pr, coffer: cr, coldCache: plainCold && cofferCold };

      progress('verifying both copies by sha256 (not timed)');
      for (const [where, file, timed] of [['plain dir', plainFile, pr], ['Coffer mount', cofferFile, cr.result]]) {
        const h = await workload(`hashing the copy in the ${where}`, ['hash', file], bigTimeout);
        if (timed.bytes !== sizeBytes || h.bytes !== sizeBytes || h.sha256 !== source.sha256) {
          verified = false;
          throw new Error(
            `DATA MISMATCH in the ${where}: ${file} should be ${sizeBytes} bytes with sha256 ${source.sha256}, ` +
              `but the timed read returned ${timed.bytes} bytes and a second read ${h.bytes} bytes with sha256 ${h.sha256}`,
          );
        }
      }

      progress(`creating ${opts.files} files of 1 KiB, plain${tag}`);
      await quiesce();
      const pf = await workload('creating files in the plain dir', ['files', join(paths.plain, `files-${i}`), String(opts.files), String(SMALL_FILE_BYTES)], filesTimeout);
      progress(`  ${Math.round(pf.files / pf.seconds)} files/s`);

      progress(`creating ${opts.files} files of 1 KiB, Coffer${tag}`);
      await quiesce();
      const cf = await onCoffer(
        () => workload('creating files in the Coffer mount', ['files', join(paths.mnt, `files-${i}`), String(opts.files), String(SMALL_FILE_BYTES)], filesTimeout),
        settleFiles,
      );
      progress(`  ${Math.round(cf.result.files / cf.result.seconds)} files/s, daemon peak RSS ${formatMiB(cf.peak)}`);
      r.files = { plain: pf, coffer: cf };
      runs.push(r);

      if (i < opts.runs) {
        // Later runs should start from the same amount of free space and index size.
        progress('removing this run\'s files');
        for (const target of [plainFile, join(paths.plain, `files-${i}`), cofferFile, join(paths.mnt, `files-${i}`)]) {
          const rm = await run(process.execPath, ['-e', 'require("node:fs").rmSync(process.argv[1], { recursive: true, force: true })', target], { timeoutMs: filesTimeout });
          if (rm.code !== 0) throw new Error(`removing ${target} failed: ${describeExit(rm)}\n  ${rm.stderr.trim()}`);
        }
        await settle(settleFiles);
      }
    }

    progress('unmounting (commits everything)');
    const unmountStarted = Date.now();
    await coffer(['unmount', paths.mnt], { timeoutMs: 600_000 });
    const unmountSeconds = (Date.now() - unmountStarted) / 1000;
    const daemonPeak = await wholeRun.stop();

    if (runs.some((r) => !r.read.coldCache) && !notes.some((n) => n.startsWith('could not drop'))) {
      notes.push('the page cache could not be dropped before every read');
    }

    const summarize = (label, unit, key, rate) => {
      const plain = median(runs.map((r) => rate(r[key].plain)));
      const cofferRate = median(runs.map((r) => rate(r[key].coffer.result)));
      return {
        label,
        unit,
        plain,
        coffer: cofferRate,
        ratio: plain && cofferRate !== undefined ? cofferRate / plain : undefined,
        daemonPeakRssBytes: Math.max(...runs.map((r) => r[key].coffer.peak)),
        daemonPeakRssInclBackgroundBytes: Math.max(...runs.map((r) => r[key].coffer.peakInclBackground)),
        settleSeconds: median(runs.map((r) => r[key].coffer.settleSeconds)),
        runs: runs.map((r) => ({
          plain: rate(r[key].plain),
          coffer: rate(r[key].coffer.result),
          plainSeconds: r[key].plain.seconds,
          cofferSeconds: r[key].coffer.result.seconds,
          daemonPeakRssBytes: r[key].coffer.peak,
          daemonPeakRssInclBackgroundBytes: r[key].coffer.peakInclBackground,
          settleSeconds: r[key].coffer.settleSeconds,
          ...(key === 'read' ? { coldCache: r.read.coldCache } : {}),
        })),
      };
    };
    const mbps = (x) => x.bytes / x.seconds / 1e6;
    const filesPerSecond = (x) => x.files / x.seconds;
    report = {
      timestamp: new Date().toISOString(),
      parameters: { sizeMiB: opts.sizeMiB, files: opts.files, fileBytes: SMALL_FILE_BYTES, blockBytes: MiB, runs: opts.runs, dir: opts.dir },
      coffer: { version: JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')).version },
      environment: {
        node: process.version,
        platform: `${os.type()} ${os.release()} ${os.arch()}`,
        cpus: os.cpus().length,
        cpuModel: os.cpus()[0]?.model,
        memoryBytes: os.totalmem(),
        workdirFilesystem: filesystemOf(work),
      },
      workloads: {
        write: summarize(`sequential write (${opts.sizeMiB} MiB)`, 'MB/s', 'write', mbps),
        read: summarize(`sequential read  (${opts.sizeMiB} MiB)`, 'MB/s', 'read', mbps),
        files: summarize(`create ${opts.files} x 1 KiB files`, 'files/s', 'files', filesPerSecond),
      },
      daemon: { pid: state.daemonPid, peakRssBytes: daemonPeak, unmountSeconds },
      verified,
      notes,
    };
  } catch (err) {
    failed = true;
    if (err instanceof Interrupted) {
      progress(`${err.message}; cleaning up`);
    } else {
      process.stderr.write(`bench: FAILED: ${err.message}\n`);
    }
  } finally {
    cleaningUp = true;
    if (failed && !interrupted) reportDaemonLog(daemonLog, opts.dir);
    await cleanup(paths, state);
  }

  if (interrupted) return 130;
  if (failed) return 1;
  process.stdout.write(opts.json ? JSON.stringify(report, null, 2) + '\n' : renderTable(report));
  return 0;
}

/** Shows the end of the daemon log and keeps a copy, since the workdir is about to go. */
function reportDaemonLog(log, parent) {
  if (!existsSync(log)) return;
  try {
    const lines = readFileSync(log, 'utf8').trimEnd().split('\n');
    process.stderr.write(`bench: last lines of the daemon log (${log}):\n${lines.slice(-40).map((l) => `  ${l}`).join('\n')}\n`);
    const kept = join(parent, `coffer-bench-${new Date().toISOString().replace(/[:.]/g, '-')}.daemon.log`);
    copyFileSync(log, kept);
    process.stderr.write(`bench: the full daemon log is kept at ${kept}\n`);
  } catch (err) {
    process.stderr.write(`bench: could not read the daemon log ${log}: ${err.message}\n`);
  }
}

/**
 * Unmounts and removes the workdir, whatever state the run ended in. Escalates from a clean
 * `coffer unmount` to `umount -l`, and never removes the workdir while anything is still
 * mounted inside it: a recursive delete must not walk into a drive that still holds data.
 */
async function cleanup(paths, state) {
  // A daemon that was starting when a run was interrupted may not be known by pid yet.
  if (!state.daemonPid) {
    try {
      state.daemonPid = JSON.parse(readFileSync(join(paths.vault, 'state', 'daemon.json'), 'utf8')).pid;
    } catch {
      // No daemon ever registered.
    }
  }
  const daemonAlive = () => state.daemonPid !== undefined && processAlive(state.daemonPid);

  if (isMounted(paths.mnt) || daemonAlive()) {
    progress(`unmounting ${paths.mnt}`);
    try {
      // Shorter than the final unmount's allowance: here the alternative is only a lost
      // throwaway vault, while a hung daemon would keep someone waiting at Ctrl-C.
      await coffer(['unmount', paths.mnt], { timeoutMs: 120_000, cleanup: true });
    } catch (err) {
      process.stderr.write(`bench: ${err.message}\n`);
    }
    if (isMounted(paths.mnt)) {
      progress(`the mount is still there; detaching it with umount -l ${paths.mnt}`);
      const r = await run('umount', ['-l', paths.mnt], { timeoutMs: 60_000, cleanup: true }).catch((err) => ({ code: -1, stderr: err.message }));
      if (r.code !== 0) process.stderr.write(`bench: umount -l ${paths.mnt} failed: ${r.stderr?.trim() || describeExit(r)}\n`);
    }
    // The daemon notices a vanished mount and stops by itself within seconds; one that
    // does not is hung, and it belongs to this run.
    for (const [signal, waitMs] of [[null, 10_000], ['SIGTERM', 10_000], ['SIGKILL', 5_000]]) {
      if (!daemonAlive()) break;
      if (signal) {
        progress(`daemon pid ${state.daemonPid} is still running; sending ${signal}`);
        try { process.kill(state.daemonPid, signal); } catch { /* already gone */ }
      }
      for (const until = Date.now() + waitMs; daemonAlive() && Date.now() < until; ) await sleep(100);
    }
    if (daemonAlive()) process.stderr.write(`bench: daemon pid ${state.daemonPid} would not stop\n`);
  }

  const leftovers = mountsUnder(paths.work);
  if (leftovers.length > 0) {
    process.stderr.write(
      `bench: NOT removing ${paths.work}: still mounted there: ${leftovers.map((m) => m.mountpoint).join(', ')}\n` +
        `bench: clean up by hand with: umount -l ${leftovers[0].mountpoint} && rm -rf ${paths.work}\n`,
    );
    return;
  }
  try {
    rmSync(paths.work, { recursive: true, force: true });
  } catch (err) {
    process.stderr.write(`bench: could not remove ${paths.work}: ${err.message}\n`);
  }
}

function onSignal(signal) {
  if (cleaningUp) {
    progress(`${signal} received; still cleaning up (unmounting), please wait`);
    return;
  }
  if (interrupted) {
    progress(`${signal} received; already stopping`);
    return;
  }
  interrupted = signal;
  for (const giveUp of [...liveChildren.values()]) giveUp();
}
process.on('SIGINT', onSignal);
process.on('SIGTERM', onSignal);
process.on('SIGHUP', onSignal);

main().then(
  (code) => process.exit(code),
  (err) => {
    process.stderr.write(`bench: unexpected error: ${err?.stack ?? err}\n`);
    process.exit(1);
  },
);
