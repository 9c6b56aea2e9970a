#!/usr/bin/env node
// Coffer's benchmark suite: the same workloads, in one run, against
//   plain      a plain directory on the workdir's filesystem (the disk),
//   ceiling    a do-nothing filesystem through Coffer's own FUSE binding (the stack's ceiling),
//   coffer     a Coffer vault,
//   gocryptfs, cryfs, rclone (crypt remote, --vfs-cache-mode full), when installed,
// reported as absolute figures, ratios to plain and to the ceiling, and the serving process's
// peak memory during each workload. See USAGE below, or --help.
//
// Design notes:
// - Every byte of I/O runs in a child (scripts/lib/bench-workload.mjs, tar, ls), never in this
//   process and never in a process that serves a mount: every target is driven by the same
//   code, a hung mount cannot freeze the benchmark, and this process stays free to watch the
//   serving processes' memory while a workload runs.
// - Each workload runs against every target before the next workload starts, so a change in
//   the machine's load over the run spreads over all targets instead of landing on one.
// - A filesystem that works in the background (Coffer uploading to its remote, rclone writing
//   back its VFS cache) is left to finish before the next clock starts; otherwise one
//   workload's work would be billed to the next. How long that took is reported as "settle".
// - The page cache is dropped before every read workload when running as root; the report
//   says whether it was. Rates use MB = 10^6 bytes; sizes on the command line are MiB.
// - Cleanup (in `finally`, also after a failure or Ctrl-C) unmounts everything this run
//   mounted and removes the workdir, never while something is still mounted in it.
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, statSync } from 'node:fs';
import os from 'node:os';
import { dirname, join, resolve } from 'node:path';
import {
  Interrupted, ROOT, UsageError, beginCleanup, commandLine, dropCaches, eachFlag, hostInfo, installSignalHandlers, integerArg, interruptedBy,
  keepDaemonLog, isMounted, mustRun, processAlive, progress, reapServers, releaseMount, removeDirUnlessMounted, runMain, sampleRss,
  setProgramName, sh, timestampForFile, warn,
} from './lib/harness.mjs';
import { TARGETS } from './lib/bench-targets.mjs';

setProgramName('bench');

const WORKLOAD = join(ROOT, 'scripts', 'lib', 'bench-workload.mjs');
const MiB = 1024 * 1024;
const SMALL_FILE_BYTES = 1024;

const FULL = { sizeMiB: 1024, files: 10_000, lsEntries: 100_000, randOps: 20_000, treeFiles: 0, runs: 3 };
const SMOKE = { sizeMiB: 8, files: 200, lsEntries: 1_000, randOps: 500, treeFiles: 200, runs: 1 };

const USAGE = `Usage: node scripts/bench.mjs [options]   (or: npm run bench -- [options])

Runs the same workloads against a plain directory, a do-nothing FUSE filesystem served through
Coffer's binding (the ceiling of the stack), Coffer, and gocryptfs, CryFS and rclone (crypt
remote over a local folder, --vfs-cache-mode full) where installed, and prints each figure
with its ratio to the plain directory and to the ceiling, and the serving process's peak RSS.

Workloads: seq-write (1 MiB writes + fsync), seq-read (cold cache), rand-read and rand-write
(4 KiB at random aligned offsets of the big file; fsync at the end), create / stat / delete of
many 1 KiB files, untar of a source tree and a cold re-read of it, ls -l of a big directory.

  --targets <list>   comma-separated subset of: ${TARGETS.map((t) => t.name).join(', ')} (default all)
  --runs <n>         repeat every workload n times, report the median and the spread
                     (default ${FULL.runs}; ${SMOKE.runs} with --smoke)
  --size-mib <n>     size of the big file in MiB (default ${FULL.sizeMiB})
  --files <n>        number of 1 KiB files to create, stat and delete (default ${FULL.files})
  --rand-ops <n>     number of random 4 KiB reads, and of writes (default ${FULL.randOps})
  --ls-entries <n>   entries in the directory listed with ls -l (default ${FULL.lsEntries})
  --tree <dir>       source tree to tar up and untar (default /usr/include)
  --tree-files <n>   use only the first n files of the tree; 0 = all (default 0)
  --smoke            tiny sizes, one run: checks that everything works, not how fast
                     (${SMOKE.sizeMiB} MiB, ${SMOKE.files} files, ${SMOKE.randOps} random ops, ${SMOKE.lsEntries} entries, ${SMOKE.treeFiles} tree files)
  --dir <path>       make the temporary workdir inside <path> (default ${os.tmpdir()});
                     "plain" is a directory there, and every other target keeps its data there
  --json             print one JSON object on stdout instead of tables
  -h, --help         show this help

Peers that are not installed are skipped with a note. On Debian 12 install them with:
  apt-get install gocryptfs cryfs rclone

Needs a built tree (npx tsc -p tsconfig.json), /dev/fuse, fusermount (Debian: fuse3), and
root to drop the page cache before reads (without it, read figures may come from memory).
At the default sizes one run (--runs 1) took about 30 minutes on a busy 2-core machine, most
of it spent making the 100,000-entry directory on CryFS (~15 min) and Coffer's random writes;
the directory is made once, so the default three runs take about an hour.
`;

// ---------------------------------------------------------------------------------------------
// Command line

function parseArgs(argv) {
  const given = {};
  let smoke = false;
  const opts = { dir: os.tmpdir(), json: false, tree: '/usr/include', targets: TARGETS.map((t) => t.name) };
  eachFlag(argv, (flag, value, arg) => {
    const path = () => {
      const v = value();
      if (!v) throw new UsageError(`${flag} needs a path`);
      return resolve(v);
    };
    switch (flag) {
      case '--size-mib': given.sizeMiB = integerArg(flag, value(), 1, 1024 * 1024); break;
      // The child holds every file's content in memory before it starts the clock.
      case '--files': given.files = integerArg(flag, value(), 1, 1_000_000); break;
      case '--rand-ops': given.randOps = integerArg(flag, value(), 1, 10_000_000); break;
      case '--ls-entries': given.lsEntries = integerArg(flag, value(), 1, 10_000_000); break;
      case '--tree-files': given.treeFiles = integerArg(flag, value(), 0, 10_000_000); break;
      case '--runs': given.runs = integerArg(flag, value(), 1, 100); break;
      case '--tree': opts.tree = path(); break;
      case '--dir': opts.dir = path(); break;
      case '--targets': opts.targets = parseTargets(value()); break;
      case '--smoke': smoke = true; break;
      case '--json': opts.json = true; break;
      case '-h': case '--help': opts.help = true; break;
      default: throw new UsageError(`unknown argument ${JSON.stringify(arg)}`);
    }
  });
  return { ...opts, ...(smoke ? SMOKE : FULL), ...given, smoke };
}

function parseTargets(list) {
  const names = (list ?? '').split(',').map((s) => s.trim()).filter(Boolean);
  const known = TARGETS.map((t) => t.name);
  const unknown = names.filter((n) => !known.includes(n));
  if (names.length === 0 || unknown.length > 0) {
    throw new UsageError(`--targets takes a comma-separated list of ${known.join(', ')}${unknown.length ? `; unknown: ${unknown.join(', ')}` : ''}`);
  }
  return known.filter((n) => names.includes(n));
}

// ---------------------------------------------------------------------------------------------
// Children

/** Runs one bench-workload.mjs command; returns its JSON answer or throws with the child's stderr. */
async function workload(what, args, timeoutMs) {
  const r = await mustRun(what, process.execPath, [WORKLOAD, ...args], timeoutMs);
  return JSON.parse(r.stdout.trim().split('\n').pop());
}

const removeTree = (path, timeoutMs) => mustRun(`removing ${path}`, 'rm', ['-rf', '--', path], timeoutMs);

// ---------------------------------------------------------------------------------------------
// Preparation (untimed, in the workdir)

/**
 * A tarball of the source tree (or of its first `limit` files in sorted order), and what it
 * holds: regular files, their bytes, and whether hard links make the byte count unreliable.
 */
async function makeTarball(tree, limit, work) {
  if (!existsSync(tree) || !statSync(tree).isDirectory()) throw new Error(`--tree ${tree} is not a directory`);
  const tarball = join(work, 'tree.tar');
  const parent = dirname(tree);
  const name = tree.slice(parent.length).replace(/^\//, '') || '.';
  // Symlinks are stored as the files they point to, and files seen twice as copies rather than
  // hard links: rclone's mount can make neither, and a tree it cannot untar would leave it out
  // of the comparison.
  if (limit > 0) {
    const list = join(work, 'tree.list');
    await sh('listing the source tree', 'cd "$1" && find "$2" -type f | LC_ALL=C sort | head -n "$3" > "$4"', [parent, name, String(limit), list], 300_000);
    await mustRun('making the tarball', 'tar', ['--dereference', '--hard-dereference', '-cf', tarball, '-C', parent, '-T', list], 600_000);
  } else {
    await mustRun('making the tarball', 'tar', ['--dereference', '--hard-dereference', '-cf', tarball, '-C', parent, name], 600_000);
  }
  const listing = await mustRun('listing the tarball', 'tar', ['-tvf', tarball, '--numeric-owner'], 300_000);
  let files = 0;
  let bytes = 0;
  let hardLinks = 0;
  for (const line of listing.stdout.split('\n')) {
    const m = /^([-h])\S*\s+\S+\s+(\d+)\s/.exec(line);
    if (!m) continue;
    files++;
    if (m[1] === 'h') hardLinks++;
    else bytes += Number(m[2]);
  }
  if (files === 0) throw new Error(`the tarball of ${tree} holds no regular files`);
  return { path: tarball, source: tree, files, bytes, hardLinks, tarballBytes: statSync(tarball).size };
}

// ---------------------------------------------------------------------------------------------
// Workloads

/**
 * Each workload: id, a label, the unit of its figure (always "more is better"), and
 * measure(step) returning { value, seconds, ... } for one target in one run. `step` carries the
 * target instance, the run number and helpers; see runStep().
 */
function defineWorkloads(opts, source, tarball) {
  const sizeBytes = opts.sizeMiB * MiB;
  const t = {
    big: 120_000 + opts.sizeMiB * 1000, // deadlines only catch a hang: 1 MiB/s
    files: 120_000 + opts.files * 50,
    // Coffer rewrites a whole 1 MiB chunk per random write once they spread past its write
    // buffers (~25 ms each on a busy 2-core machine): room for 10x that.
    rand: 120_000 + opts.randOps * 250,
    tree: 120_000 + tarball.files * 100,
    ls: 120_000 + opts.lsEntries * 20,
  };
  const mbps = (r) => r.bytes / r.seconds / 1e6;
  const perSecond = (count) => (r) => ({ ...r, value: count(r) / r.seconds });
  const big = (s) => join(s.target.root, 'big.bin');
  const small = (s) => join(s.target.root, `small-${s.run}`);
  const tree = (s) => join(s.target.root, `tree-${s.run}`);
  const entries = (s) => join(s.target.root, 'entries');

  return [
    {
      id: 'seq-write',
      label: `sequential write, ${opts.sizeMiB} MiB in 1 MiB writes + fsync`,
      unit: 'MB/s',
      async before(s) {
        // The previous run's file goes first, so every run writes into the same free space.
        if (s.run > 1) await removeTree(big(s), t.big);
        // The source must come from memory, so only the destination is measured.
        await workload('reading the source into the page cache', ['warm', source.path], t.big);
      },
      measure: async (s) => {
        const r = await s.timed(() => workload('sequential write', ['write', source.path, big(s)], t.big));
        return { ...r, value: mbps(r) };
      },
      settle: true,
    },
    {
      id: 'seq-read',
      label: `sequential read, ${opts.sizeMiB} MiB in 1 MiB reads, cold cache`,
      unit: 'MB/s',
      coldCache: true,
      measure: async (s) => {
        const r = await s.timed(() => workload('sequential read', ['read', big(s)], t.big));
        if (r.bytes !== sizeBytes) throw new Error(`the sequential read returned ${r.bytes} bytes, expected ${sizeBytes}`);
        if (!s.target.discardsData) {
          // Not timed: the data read back must be the data written.
          const h = await workload('hashing the big file', ['hash', big(s)], t.big);
          if (h.sha256 !== source.sha256) throw new Error(`DATA MISMATCH: ${big(s)} has sha256 ${h.sha256}, the source ${source.sha256}`);
        }
        return { ...r, value: mbps(r), verified: !s.target.discardsData };
      },
      settle: true,
    },
    {
      id: 'rand-read',
      label: `random read, ${opts.randOps} x 4 KiB at aligned offsets of the big file, cold cache`,
      unit: 'IOPS',
      coldCache: true,
      measure: async (s) => perSecond((r) => r.ops)(await s.timed(() => workload('random reads', ['randread', big(s), String(opts.randOps), String(s.run)], t.rand))),
    },
    {
      id: 'rand-write',
      label: `random write, ${opts.randOps} x 4 KiB at aligned offsets of the big file + fsync`,
      unit: 'IOPS',
      measure: async (s) => perSecond((r) => r.ops)(await s.timed(() => workload('random writes', ['randwrite', big(s), String(opts.randOps), String(1000 + s.run)], t.rand))),
      settle: true,
    },
    {
      id: 'create',
      label: `create ${opts.files} files of 1 KiB`,
      unit: 'files/s',
      measure: async (s) => perSecond((r) => r.files)(await s.timed(() => workload('creating files', ['files', small(s), String(opts.files), String(SMALL_FILE_BYTES)], t.files))),
      settle: true,
    },
    {
      id: 'stat',
      label: `stat: list and lstat the ${opts.files} files, cold cache`,
      unit: 'files/s',
      coldCache: true,
      measure: async (s) => perSecond((r) => r.files)(await s.timed(() => workload('stat of every file', ['stat', small(s), String(opts.files)], t.files))),
    },
    {
      id: 'delete',
      label: `delete the ${opts.files} files`,
      unit: 'files/s',
      measure: async (s) => perSecond((r) => r.files)(await s.timed(() => workload('deleting files', ['delete', small(s), String(opts.files)], t.files))),
      settle: true,
    },
    {
      id: 'untar',
      label: `untar ${tarball.files} files (${(tarball.bytes / 1e6).toFixed(1)} MB) of ${tarball.source}, links dereferenced, with tar -xf`,
      unit: 'files/s',
      async before(s) {
        await mustRun(`creating ${tree(s)}`, 'mkdir', [tree(s)], t.tree);
      },
      measure: async (s) => {
        const r = await s.timed(() => mustRun('tar -xf', 'tar', ['-xf', tarball.path, '-C', tree(s)], t.tree));
        return { seconds: r.seconds, files: tarball.files, value: tarball.files / r.seconds };
      },
      settle: true,
    },
    {
      id: 'reread',
      label: 're-read every file of the untarred tree, cold cache',
      unit: 'files/s',
      coldCache: true,
      measure: async (s) => {
        const r = await s.timed(() => workload('re-reading the tree', ['readtree', tree(s)], t.tree));
        if (r.files !== tarball.files || (tarball.hardLinks === 0 && r.bytes !== tarball.bytes)) {
          throw new Error(`re-reading ${tree(s)} found ${r.files} files and ${r.bytes} bytes; the tarball holds ${tarball.files} files and ${tarball.bytes} bytes`);
        }
        return { ...r, value: r.files / r.seconds };
      },
      // The next run untars again into a fresh directory.
      async after(s) {
        await removeTree(tree(s), t.tree);
      },
      settle: true,
    },
    {
      id: 'ls-l',
      label: `ls -l of a directory with ${opts.lsEntries} entries, cold cache`,
      unit: 'entries/s',
      async before(s) {
        if (s.run > 1) return;
        progress(`  ${s.target.name}: creating ${opts.lsEntries} empty files to list (not timed)`);
        await workload('creating the entries to list', ['files', entries(s), String(opts.lsEntries), '0'], t.ls);
        await s.settle();
      },
      coldCache: true,
      measure: async (s) => {
        const r = await s.timed(() => sh('ls -l', 'ls -l "$1" > /dev/null', [entries(s)], t.ls));
        return { seconds: r.seconds, entries: opts.lsEntries, value: opts.lsEntries / r.seconds };
      },
    },
  ];
}

// ---------------------------------------------------------------------------------------------
// Running

/** The run's state: what it mounted (for the cleanup), and what it found out. */
const state = {
  owned: [], // { mountpoint, pid, gracefulStop, daemonLog }
  notes: [],
  cachesDropped: undefined, // true only if every drop succeeded
};

function noteOnce(note) {
  if (!state.notes.includes(note)) state.notes.push(note);
}

async function dropCachesOrNote() {
  const r = await dropCaches();
  if (!r.dropped) noteOnce(`could not drop the page cache (${r.reason}): "cold cache" figures may come from memory. Run as root for cold-cache figures.`);
  state.cachesDropped = (state.cachesDropped ?? true) && r.dropped;
}

/**
 * Starts every available target, all at once: their set-up is not measured, and some of it is
 * slow on purpose (CryFS derives its key with scrypt for ~15 CPU-seconds, Coffer with
 * Argon2id). Unavailable targets are skipped, failed starts recorded.
 */
async function startTargets(opts, work) {
  // One throwaway passphrase for the peers' volumes (Coffer's vault makes its own).
  const passphrase = randomBytes(24).toString('hex');
  const workdirFilesystem = hostInfo(work).workdirFilesystem;
  const entries = TARGETS.filter((d) => opts.targets.includes(d.name)).map((def) => ({ def, name: def.name, what: def.what }));
  const startOne = async (entry) => {
    const missing = await entry.def.missing();
    if (missing) {
      entry.status = 'skipped';
      entry.reason = missing;
      progress(`${entry.name}: skipped: ${missing}`);
      return;
    }
    const dir = join(work, entry.name);
    mkdirSync(dir);
    const ctx = {
      dir,
      passphrase,
      smoke: opts.smoke,
      notes: state.notes,
      workdirFilesystem,
      own: (mount) => {
        state.owned.push(mount);
        entry.owned = mount;
        return mount;
      },
    };
    progress(`${entry.name}: starting`);
    const started = Date.now();
    try {
      entry.instance = await entry.def.start(ctx);
      entry.status = 'ok';
      entry.version = entry.instance.version;
      entry.startSeconds = (Date.now() - started) / 1000;
      progress(`${entry.name}: ready after ${entry.startSeconds.toFixed(1)} s`);
    } catch (err) {
      if (err instanceof Interrupted) throw err;
      await failTarget(entry, err, 'start');
    }
  };
  // All of them settle before an interrupt is acted on: a start cut loose could bring a mount
  // up after the cleanup has looked for one.
  const outcomes = await Promise.allSettled(entries.map(startOne));
  const failure = outcomes.find((o) => o.status === 'rejected');
  if (failure) throw failure.reason;
  return entries;
}

/** Whether a target's mount and serving process are still there after a workload failed. */
function stillServing(entry) {
  if (entry.instance?.pid !== undefined && !processAlive(entry.instance.pid)) return false;
  return !entry.owned || isMounted(entry.owned.mountpoint);
}

/** Marks a target failed, keeps its daemon log, and releases its mount; the others go on. */
async function failTarget(entry, err, during) {
  entry.status = 'failed';
  entry.reason = `${during}: ${err.message}`;
  warn(`${entry.name}: FAILED during ${during}: ${err.message}`);
  if (entry.owned?.daemonLog) keepDaemonLog(entry.owned.daemonLog, join(os.tmpdir(), `coffer-bench-${timestampForFile()}.daemon.log`));
  if (entry.owned) await releaseMount(entry.owned);
}

/** One workload for one target in one run: the untimed preparation, the clock, the settling. */
async function runStep(w, entry, run, limits) {
  const target = entry.instance;
  const settle = async () => (target.settle ? target.settle(limits.settleMs) : 0);
  let peakRssBytes;
  const step = {
    target: { ...target, name: entry.name },
    run,
    settle,
    // Only the workload's own child is inside the clock and the memory watch.
    async timed(fn) {
      const rss = target.pid ? sampleRss(target.pid) : undefined;
      try {
        return await fn();
      } finally {
        peakRssBytes = await rss?.stop();
        if (rss) entry.rssMethod = rss.method;
      }
    },
  };
  if (w.before) await w.before(step);
  // Writeback of earlier workloads (any target's) must not land inside this clock.
  if (w.coldCache) await dropCachesOrNote();
  else await mustRun('sync', 'sync', [], 300_000);
  const result = await w.measure(step);
  const settleSeconds = w.settle ? await settle() : 0;
  if (w.after) await w.after(step);
  if (target.pid && !processAlive(target.pid)) {
    throw new Error(`the serving process (pid ${target.pid}) died during ${w.id}`);
  }
  return { ...result, peakRssBytes, settleSeconds };
}

function median(values) {
  const v = values.filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  if (v.length === 0) return undefined;
  const mid = v.length >> 1;
  return v.length % 2 ? v[mid] : (v[mid - 1] + v[mid]) / 2;
}

/** Figures for one workload and target over all runs: median, spread, peak RSS, settle time. */
function summarize(runs) {
  const values = runs.map((r) => r.value);
  const rss = runs.map((r) => r.peakRssBytes).filter((x) => x !== undefined);
  return {
    median: median(values),
    min: Math.min(...values),
    max: Math.max(...values),
    peakRssBytes: rss.length ? Math.max(...rss) : null,
    settleSeconds: median(runs.map((r) => r.settleSeconds)) ?? 0,
    runs,
  };
}

// ---------------------------------------------------------------------------------------------
// Output

const ratio = (a, b) => (Number.isFinite(a) && Number.isFinite(b) && b > 0 ? a / b : null);

function formatFigure(v) {
  if (!Number.isFinite(v)) return '-';
  if (v >= 100) return String(Math.round(v));
  return v >= 10 ? v.toFixed(1) : v.toFixed(2);
}
function formatRatio(r) {
  if (r === null || r === undefined) return '-';
  // Two significant digits at least: a ratio of 0.0003 must not print as 0.000.
  return `${r >= 10 ? r.toFixed(1) : r >= 0.1 ? r.toFixed(2) : r.toPrecision(2)}x`;
}
const formatMiB = (bytes) => (bytes ? `${(bytes / MiB).toFixed(1)} MiB` : '-');

function table(rows) {
  const widths = rows[0].map((_, c) => Math.max(...rows.map((r) => r[c].length)));
  const line = (r) => `  ${r.map((cell, c) => (c === 0 ? cell.padEnd(widths[c]) : cell.padStart(widths[c]))).join('   ').trimEnd()}`;
  return [line(rows[0]), line(widths.map((w) => '-'.repeat(w))), ...rows.slice(1).map(line)];
}

function renderText(report) {
  const h = report.host;
  const p = report.parameters;
  const out = [
    `Coffer benchmark suite, ${report.timestamp}${p.smoke ? ' (smoke: tiny sizes, checks that it works, not how fast)' : ''}`,
    `host: ${h.cpus} CPUs (${h.cpuModel}), ${(h.memoryBytes / 2 ** 30).toFixed(0)} GiB RAM, Linux ${h.kernel}, node ${h.node}, load ${h.loadAverage1m.toFixed(2)} at the start`,
    `workdir: ${h.workdirFilesystem}; page cache dropped before cold-cache workloads: ${h.cachesDropped ? 'yes' : 'NO'}; ${p.runs === 1 ? '1 run' : `median of ${p.runs} runs, spread = min-max`}`,
    '',
    'targets:',
  ];
  for (const [name, t] of Object.entries(report.targets)) {
    // A failure's first line only; the details follow the tables.
    out.push(`  ${name.padEnd(10)} ${t.status === 'ok' ? `${t.version ?? ''}: ${t.what}` : `${t.status.toUpperCase()}: ${t.reason.split('\n')[0]}`}`);
  }
  const ran = Object.entries(report.targets).filter(([, t]) => t.status !== 'skipped').map(([n]) => n);
  for (const w of Object.values(report.workloads)) {
    out.push('', `${w.id}: ${w.label} (${w.unit})`);
    const rows = [['target', w.unit, 'spread', 'vs plain', 'vs ceiling', 'peak RSS', 'settle']];
    for (const name of ran) {
      const r = w.results[name];
      if (!r) {
        rows.push([name, 'FAILED', '', '', '', '', '']);
        continue;
      }
      rows.push([
        name,
        formatFigure(r.median),
        p.runs > 1 ? `${formatFigure(r.min)}-${formatFigure(r.max)}` : '-',
        formatRatio(r.ratioToPlain),
        formatRatio(r.ratioToCeiling),
        formatMiB(r.peakRssBytes),
        r.settleSeconds > 0.05 ? `${r.settleSeconds.toFixed(1)} s` : '-',
      ]);
    }
    out.push(...table(rows));
  }
  out.push(
    '',
    'vs plain / vs ceiling: this target\'s figure over the plain directory\'s / the do-nothing FUSE filesystem\'s (more is better).',
    'peak RSS: of the process serving the mount, during the timed part. settle: time its background work took afterwards.',
  );
  for (const w of Object.values(report.workloads)) {
    for (const [name, reasons] of Object.entries(w.failures)) out.push(`FAILED: ${w.id} on ${name}: ${reasons[0].split('\n').slice(0, 4).join(' / ')}`);
  }
  for (const [name, t] of Object.entries(report.targets)) {
    if (t.status === 'failed') out.push(`FAILED: ${name}: ${t.reason.split('\n').slice(0, 4).join(' / ')}`);
  }
  for (const note of report.notes) out.push(`note: ${note}`);
  return out.join('\n') + '\n';
}

// ---------------------------------------------------------------------------------------------
// Main

async function main() {
  const opts = commandLine(parseArgs, USAGE);
  if (typeof opts === 'number') return opts;
  if (!existsSync(opts.dir) || !statSync(opts.dir).isDirectory()) {
    process.stderr.write(`bench: --dir ${opts.dir} is not an existing directory\n`);
    return 1;
  }

  const work = mkdtempSync(join(opts.dir, 'coffer-bench-'));
  const host = hostInfo(work);
  let failed = false;
  let targets = [];
  let report;
  try {
    progress(`workdir ${work} (${host.workdirFilesystem})`);
    progress(`preparing ${opts.sizeMiB} MiB of random data and a tarball of ${opts.tree} (not timed)`);
    const source = { path: join(work, 'source.bin') };
    Object.assign(source, await workload('generating the source file', ['source', source.path, String(opts.sizeMiB * MiB)], 120_000 + opts.sizeMiB * 1000));
    const tarball = await makeTarball(opts.tree, opts.treeFiles, work);
    const workloads = defineWorkloads(opts, source, tarball);
    // Background work gets more room than the timed part: for a remote it is bounded by the
    // upload pump rather than by the disk, and its duration is one of the findings.
    const limits = { settleMs: 300_000 + opts.sizeMiB * 1000 + opts.files * 200 + opts.lsEntries * 20 };

    targets = await startTargets(opts, work);
    const results = Object.fromEntries(workloads.map((w) => [w.id, {}]));
    const failures = Object.fromEntries(workloads.map((w) => [w.id, {}]));
    for (let run = 1; run <= opts.runs; run++) {
      for (const w of workloads) {
        for (const entry of targets.filter((e) => e.status === 'ok')) {
          progress(`${w.id}${opts.runs > 1 ? ` (run ${run}/${opts.runs})` : ''}, ${entry.name}`);
          try {
            const r = await runStep(w, entry, run, limits);
            (results[w.id][entry.name] ??= []).push(r);
            progress(`  ${formatFigure(r.value)} ${w.unit}${r.peakRssBytes ? `, peak RSS ${formatMiB(r.peakRssBytes)}` : ''}${r.settleSeconds > 0.05 ? `, settled in ${r.settleSeconds.toFixed(1)} s` : ''}`);
          } catch (err) {
            if (err instanceof Interrupted) throw err;
            if (!stillServing(entry)) {
              await failTarget(entry, err, `${w.id}, run ${run}`);
              continue;
            }
            // One workload the filesystem cannot do is a finding, not a reason to drop it.
            (failures[w.id][entry.name] ??= []).push(`run ${run}: ${err.message}`);
            warn(`${entry.name}: ${w.id} FAILED (its mount is still up; going on): ${err.message.split('\n').slice(0, 3).join(' / ')}`);
          }
        }
      }
    }

    for (const entry of targets.filter((e) => e.status === 'ok')) {
      progress(`${entry.name}: stopping`);
      const started = Date.now();
      try {
        await entry.instance.stop();
        entry.stopSeconds = (Date.now() - started) / 1000;
      } catch (err) {
        if (err instanceof Interrupted) throw err;
        await failTarget(entry, err, 'unmount');
      }
    }

    report = buildReport(opts, host, source, tarball, workloads, targets, results, failures);
  } catch (err) {
    failed = true;
    if (err instanceof Interrupted) progress(`${err.message}; cleaning up`);
    else process.stderr.write(`bench: FAILED: ${err.message}\n`);
  } finally {
    beginCleanup();
    for (const mount of state.owned) await releaseMount(mount);
    await reapServers();
    removeDirUnlessMounted(work);
  }

  if (interruptedBy()) return 130;
  if (failed) return 1;
  process.stdout.write(opts.json ? JSON.stringify(report, null, 2) + '\n' : renderText(report));
  const anyWorkloadFailed = Object.values(report.workloads).some((w) => Object.keys(w.failures).length > 0);
  return targets.some((t) => t.status === 'failed') || anyWorkloadFailed ? 1 : 0;
}

function buildReport(opts, host, source, tarball, workloads, targets, results, failures) {
  const byWorkload = {};
  for (const w of workloads) {
    const summaries = Object.fromEntries(
      targets.filter((e) => results[w.id][e.name]?.length === opts.runs).map((e) => [e.name, summarize(results[w.id][e.name])]),
    );
    for (const s of Object.values(summaries)) {
      s.ratioToPlain = ratio(s.median, summaries.plain?.median);
      s.ratioToCeiling = ratio(s.median, summaries.ceiling?.median);
    }
    byWorkload[w.id] = { id: w.id, label: w.label, unit: w.unit, coldCache: !!w.coldCache, results: summaries, failures: failures[w.id] };
  }
  const parameters = {
    smoke: opts.smoke,
    runs: opts.runs,
    sizeMiB: opts.sizeMiB,
    blockBytes: MiB,
    randOps: opts.randOps,
    randBlockBytes: 4096,
    files: opts.files,
    fileBytes: SMALL_FILE_BYTES,
    lsEntries: opts.lsEntries,
    tree: { source: tarball.source, filesLimit: opts.treeFiles, files: tarball.files, bytes: tarball.bytes, tarballBytes: tarball.tarballBytes },
    dir: opts.dir,
  };
  return {
    suite: 'coffer-bench',
    formatVersion: 1,
    timestamp: new Date().toISOString(),
    host: { ...host, cachesDropped: state.cachesDropped ?? false },
    parameters,
    targets: Object.fromEntries(targets.map((e) => [e.name, {
      status: e.status,
      ...(e.reason ? { reason: e.reason } : {}),
      ...(e.def.install ? { install: `apt-get install ${e.def.install}` } : {}),
      what: e.what,
      version: e.version ?? null,
      servingPid: e.instance?.pid ?? null,
      rssMethod: e.rssMethod ?? null,
      startSeconds: e.startSeconds ?? null,
      unmountSeconds: e.stopSeconds ?? null,
    }])),
    workloads: byWorkload,
    sourceSha256: source.sha256,
    notes: state.notes,
  };
}

installSignalHandlers({
  onInterrupt: (signal) => progress(`${signal} received; stopping (a mount or unmount under way is let finish), then cleaning up`),
});

runMain(main);
