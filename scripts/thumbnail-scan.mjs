#!/usr/bin/env node
// Thumbnail storm: what a file manager's thumbnailer does to a folder of remote-only images,
// and what it does to the user's own reads meanwhile. A measurement, not a test.
//
//   node scripts/thumbnail-scan.mjs [--images 1000] [--readers 12,64] [--latency 80:40] [--json]
//
// 1. A vault (file:// remote) gets --images small PNGs (noise, --image-kib each: one chunk
//    apiece) in Pictures/ and --user-files documents of --user-mib each in Documents/; then
//    `coffer sync --wait`, unmount, and `coffer clone` of the remote into a fresh vault: a new
//    machine with nothing cached, so every image and document is remote-only. The clone is
//    mounted with COFFER_FAULTS="latency=<--latency>,ops=get": every remote GET waits that long
//    (milliseconds, plus a uniform 0..jitter), like a remote across a network.
// For each count in --readers, on its own fresh clone:
// 2. Baseline: a "user" child reads half of the documents whole, one at a time, with nothing
//    else going on. Each read is of a document never read before, so it comes from the remote.
// 3. Scan: a "thumbnailer" child lists Pictures/ and reads the first --read-kib KiB of every
//    image with --readers parallel readers (stat, open, read, close), while the user child,
//    starting --user-delay ms later, reads the other half of the documents (--user-gap ms
//    apart).
// 4. Reports: the user's read latency alone and during the scan (reads that started before the
//    scan ended), with the count of scan reads in flight when each user read started; the
//    scan's total time and per-image latency; and the remote GETs each phase caused, counted
//    two ways: chunk objects on the remote whose atime moved (the first read of an object
//    written once, whose atime is set back before each phase so that relatime updates it again)
//    and chunk files that appeared in the clone's local cache.
//
// Readers run in child processes (this process never touches the mount), with
// UV_THREADPOOL_SIZE raised so Node's 4-thread pool does not cap their concurrency. Times are
// measured inside the readers. Everything is unmounted and removed at the end, also on failure
// and Ctrl-C (--keep keeps the temp dir).
import { randomBytes, randomFillSync } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, statSync, utimesSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  CLI,
  ROOT,
  UsageError,
  eachFlag,
  integerArg,
  coffer,
  cofferEnv,
  mountVault,
  progress,
  mustRun,
  runScript,
  tempDir,
  unmountVault,
} from './lib/harness.mjs';
import { png } from './lib/sample-files.mjs';

const READER = join(ROOT, 'scripts', 'lib', 'scan-reader.mjs');
const MiB = 1024 * 1024;

const USAGE = `Usage: node scripts/thumbnail-scan.mjs [options]

Measures a thumbnail storm on a freshly cloned vault: a scan reading the head of every
remote-only image in a folder, and a user's reads of other files during it.

  --images <n>       images in the folder (default 1000)
  --image-kib <n>    size of each image in KiB (default 24)
  --readers <n,...>  parallel readers in the scan; a list measures each on its own fresh
                     clone (default 12,64: a modest thumbnailer, and many at once)
  --read-kib <n>     bytes the scan reads from the start of each image, KiB (default 16)
  --latency <ms[:jitter]>  added to every remote GET (default 80:40)
  --direct           the scan opens images with O_DIRECT (no page cache, no readahead): tells
                     a limit in the kernel's FUSE queue from one in the daemon
  --user-files <n>   documents the user reads, half alone and half during the scan (default 8)
  --user-mib <n>     size of each document in MiB (default 2)
  --user-delay <ms>  when the user's first read starts after the scan starts (default 500)
  --user-gap <ms>    pause between the user's reads (default 500)
  --json             print one JSON object on stdout instead of a table
  --keep             keep the temp dir
  -h, --help         show this help

Needs a built tree (npx tsc -p tsconfig.json) and /dev/fuse.
`;

function parseArgs(argv) {
  const opts = { images: 1000, imageKiB: 24, readers: [12, 64], readKiB: 16, latency: '80:40', userFiles: 8, userMiB: 2, userDelayMs: 500, userGapMs: 500, direct: false, json: false, keep: false };
  const integer = integerArg;
  eachFlag(argv, (flag, value, arg) => {
    switch (flag) {
      case '--images': opts.images = integer(flag, value(), 1, 100_000); break;
      case '--image-kib': opts.imageKiB = integer(flag, value(), 1, 16_384); break;
      case '--readers': opts.readers = String(value() ?? '').split(',').map((v) => integer(flag, v, 1, 256)); break;
      case '--read-kib': opts.readKiB = integer(flag, value(), 1, 1024); break;
      case '--latency': {
        const v = value();
        if (!/^\d+(:\d+)?$/.test(v ?? '')) throw new UsageError(`--latency must look like 80 or 80:40, got ${JSON.stringify(v ?? '')}`);
        opts.latency = v;
        break;
      }
      case '--user-files': opts.userFiles = integer(flag, value(), 2, 100); break;
      case '--user-mib': opts.userMiB = integer(flag, value(), 1, 256); break;
      case '--user-delay': opts.userDelayMs = integer(flag, value(), 0, 600_000); break;
      case '--user-gap': opts.userGapMs = integer(flag, value(), 0, 600_000); break;
      case '--direct': opts.direct = true; break;
      case '--json': opts.json = true; break;
      case '--keep': opts.keep = true; break;
      case '-h': case '--help': opts.help = true; break;
      default: throw new UsageError(`unknown argument ${JSON.stringify(arg)}\n\n${USAGE}`);
    }
  });
  return opts;
}

// ---------------------------------------------------------------------------------------------

function listFiles(dir) {
  if (!existsSync(dir)) return [];
  return readdirSync(dir, { withFileTypes: true, recursive: true })
    .filter((e) => e.isFile())
    .map((e) => join(e.parentPath, e.name));
}

/**
 * What the remote and the local cache hold now: to count what a phase fetched. Each remote
 * chunk's atime is first set back to before its mtime, so that under relatime the next read of
 * it moves the atime again even if an earlier phase read it already.
 */
function storageState(remote, cache, { resetAtimes = false } = {}) {
  const chunks = listFiles(remote).filter((f) => f.includes('/chunks/'));
  if (resetAtimes) {
    for (const f of chunks) {
      const { mtime } = statSync(f);
      utimesSync(f, new Date(mtime.getTime() - 60_000), mtime);
    }
  }
  const cached = listFiles(cache);
  return {
    atimes: new Map(chunks.map((f) => [f, statSync(f).atimeMs])),
    cached: new Set(cached),
    cachedBytes: cached.reduce((n, f) => n + statSync(f).size, 0),
  };
}

/** Remote chunk objects read since `before` (atime moved), and cache files added. */
function fetchedSince(before, remote, cache) {
  const after = storageState(remote, cache);
  let gets = 0;
  for (const [f, atime] of after.atimes) if (atime > (before.atimes.get(f) ?? -Infinity)) gets++;
  let added = 0;
  for (const f of after.cached) if (!before.cached.has(f)) added++;
  return { remoteGets: gets, cacheAdded: added, cacheBytesAdded: after.cachedBytes - before.cachedBytes };
}

async function reader(args, { threads = 4 } = {}) {
  const r = await mustRun(`reader ${args[0]}`, process.execPath, [READER, ...args], 1_800_000, {
    env: { ...process.env, UV_THREADPOOL_SIZE: String(Math.min(1024, Math.max(4, threads + 2))) },
  });
  return JSON.parse(r.stdout.trim().split('\n').pop());
}

function stats(values) {
  if (values.length === 0) return { n: 0 };
  const v = [...values].sort((a, b) => a - b);
  const q = (p) => v[Math.min(v.length - 1, Math.max(0, Math.ceil(p * v.length) - 1))];
  return { n: v.length, min: v[0], median: q(0.5), p95: q(0.95), max: v[v.length - 1], mean: v.reduce((a, b) => a + b, 0) / v.length };
}

const ms = (x) => (x === undefined ? '-' : x >= 10_000 ? `${(x / 1000).toFixed(1)} s` : `${Math.round(x)} ms`);

// ---------------------------------------------------------------------------------------------

async function main(opts) {
  if (opts.help) {
    process.stdout.write(USAGE);
    return 0;
  }
  if (!existsSync(CLI)) throw new Error('dist/ is missing: build first (npx tsc -p tsconfig.json)');
  const ws = tempDir('coffer-scan-');
  const source = join(ws, 'source');
  const remote = join(ws, 'remote');
  const origin = join(ws, 'origin');
  const originMnt = join(ws, 'origin-mnt');
  for (const d of [source, originMnt, join(source, 'Pictures'), join(source, 'Documents')]) mkdirSync(d, { recursive: true });

  progress(`writing ${opts.images} images of ${opts.imageKiB} KiB and ${opts.userFiles} documents of ${opts.userMiB} MiB`);
  // Noise pixels stored uncompressed: every image is a distinct chunk of about --image-kib.
  const side = Math.max(8, Math.round(Math.sqrt((opts.imageKiB * 1024) / 3)));
  const noise = Buffer.alloc(side * side * 3);
  for (let i = 1; i <= opts.images; i++) {
    randomFillSync(noise);
    writeFileSync(join(source, 'Pictures', `IMG_${String(i).padStart(5, '0')}.png`), png(side, side, noise, { level: 0 }));
  }
  const docs = [];
  for (let i = 1; i <= opts.userFiles; i++) {
    const path = join(source, 'Documents', `report-${i}.bin`);
    writeFileSync(path, randomBytes(opts.userMiB * MiB));
    docs.push(`Documents/report-${i}.bin`);
  }

  progress('making the vault, copying the files in and syncing them to the remote');
  await coffer(['init', origin, '--remote', `file://${remote}`]);
  await mountVault(origin, originMnt);
  await mustRun('copying the files into the mount', 'cp', ['-r', join(source, 'Pictures'), join(source, 'Documents'), originMnt], 600_000);
  await coffer(['sync', originMnt, '--wait'], { timeoutMs: 1_800_000 });
  await unmountVault(originMnt);

  const faults = `latency=${opts.latency},ops=get`;
  const setup = {
    images: opts.images,
    imageBytes: statSync(join(source, 'Pictures', 'IMG_00001.png')).size,
    readBytes: opts.readKiB * 1024,
    direct: opts.direct,
    userFiles: opts.userFiles,
    userBytes: opts.userMiB * MiB,
    faults,
  };
  const runs = [];
  for (const readers of opts.readers) {
    runs.push(await measure({ ws, remote, docs, faults, readers, opts, tag: `${readers}` }));
    setup.remote = runs.at(-1).remote;
  }
  const result = { setup, runs };
  if (opts.json) process.stdout.write(JSON.stringify(result, null, 2) + '\n');
  else process.stdout.write(table(result, opts));
  return 0;
}

/** One scan with `readers` parallel readers, on a fresh clone of the remote. */
async function measure({ ws, remote, docs, faults, readers, opts, tag }) {
  const fresh = join(ws, `fresh-${tag}`);
  const mnt = join(ws, `mnt-${tag}`);
  mkdirSync(mnt);
  progress(`[${readers} readers] cloning the remote (nothing cached) and mounting it with COFFER_FAULTS=${faults}`);
  await coffer(['clone', `file://${remote}`, fresh]);
  await mountVault(fresh, mnt, { env: cofferEnv({ COFFER_FAULTS: faults }) });
  const status = JSON.parse((await coffer(['status', mnt, '--json'])).stdout);
  if (!/fault/.test(String(status.remote))) throw new Error(`the mount does not report injected faults (remote: ${status.remote})`);
  const cache = join(fresh, 'cache');

  const half = Math.floor(opts.userFiles / 2);
  const aloneDocs = docs.slice(0, half).map((d) => join(mnt, d));
  const duringDocs = docs.slice(half).map((d) => join(mnt, d));

  progress(`[${readers} readers] baseline: the user reads ${aloneDocs.length} documents with nothing else going on`);
  let before = storageState(remote, cache, { resetAtimes: true });
  const alone = await reader(['user', '0', String(opts.userGapMs), ...aloneDocs]);
  const aloneFetched = fetchedSince(before, remote, cache);

  progress(`[${readers} readers] scan: read the first ${opts.readKiB} KiB of every image; the user reads ${duringDocs.length} other documents meanwhile`);
  before = storageState(remote, cache, { resetAtimes: true });
  const [scan, during] = await Promise.all([
    reader(['scan', join(mnt, 'Pictures'), String(readers), String(opts.readKiB * 1024), ...(opts.direct ? ['direct'] : [])], { threads: readers }),
    reader(['user', String(opts.userDelayMs), String(opts.userGapMs), ...duringDocs]),
  ]);
  const scanFetched = fetchedSince(before, remote, cache);
  await unmountVault(mnt);

  // The scan's reads in flight when each user read started, and whether it overlapped the scan.
  const all = [...scan.reads, ...scan.errors];
  const inFlight = (t) => all.filter((r) => r.start <= t && r.start + r.ms > t).length;
  const duringReads = during.reads.map((r) => ({ ...r, duringScan: r.start < scan.endedAt, scanReadsInFlight: inFlight(r.start) }));
  const userChunks = (n) => n * opts.userMiB; // one chunk per MiB
  return {
    readers,
    remote: status.remote,
    userAlone: { ...stats(alone.reads.filter((r) => !r.error).map((r) => r.ms)), errors: alone.reads.filter((r) => r.error).length, reads: alone.reads },
    userDuringScan: {
      ...stats(duringReads.filter((r) => r.duringScan && !r.error).map((r) => r.ms)),
      errors: duringReads.filter((r) => r.error).length,
      afterScan: stats(duringReads.filter((r) => !r.duringScan && !r.error).map((r) => r.ms)),
      reads: duringReads,
    },
    scan: {
      totalMs: scan.endedAt - scan.startedAt,
      listMs: scan.listMs,
      files: scan.files,
      imagesPerSecond: scan.files / ((scan.endedAt - scan.startedAt) / 1000),
      perImage: stats(scan.reads.map((r) => r.ms)),
      errors: scan.errors.length,
      errorKinds: [...new Set(scan.errors.map((e) => e.error))],
    },
    fetched: {
      userAlone: aloneFetched,
      scanPhase: scanFetched,
      scanOnly: { remoteGets: scanFetched.remoteGets - userChunks(duringDocs.length), cacheAdded: scanFetched.cacheAdded - userChunks(duringDocs.length) },
    },
  };
}

function table(r, opts) {
  const s = r.setup;
  let out = '';
  out += `Thumbnail scan: ${s.images} remote-only images of ${(s.imageBytes / 1024).toFixed(0)} KiB in one folder of a fresh clone; the scan reads the first ${opts.readKiB} KiB of each${opts.direct ? ' with O_DIRECT' : ''}.\n`;
  out += `Remote: ${s.remote}. The user reads documents of ${opts.userMiB} MiB whole (${Math.floor(s.userFiles / 2)} alone, then ${s.userFiles - Math.floor(s.userFiles / 2)} starting ${opts.userDelayMs} ms into the scan, ${opts.userGapMs} ms apart).\n\n`;
  const cols = [
    ['readers', 7],
    ['scan time', 9],
    ['images/s', 8],
    ['image p50', 9],
    ['image p95', 9],
    ['user alone p50', 14],
    ['user in scan p50', 16],
    ['max', 8],
    ['slowdown', 8],
    ['in flight', 9],
    ['scan GETs', 9],
    ['MiB', 6],
    ['errors', 6],
  ];
  out += cols.map(([h, w]) => h.padStart(w)).join('  ') + '\n';
  for (const run of r.runs) {
    const during = run.userDuringScan.reads.filter((x) => x.duringScan);
    const slowdown = run.userAlone.median && run.userDuringScan.median ? `${(run.userDuringScan.median / run.userAlone.median).toFixed(1)}x` : '-';
    const inFlight = during.length ? `${Math.min(...during.map((x) => x.scanReadsInFlight))}-${Math.max(...during.map((x) => x.scanReadsInFlight))}` : '-';
    const values = [
      String(run.readers),
      ms(run.scan.totalMs),
      run.scan.imagesPerSecond.toFixed(1),
      ms(run.scan.perImage.median),
      ms(run.scan.perImage.p95),
      `${ms(run.userAlone.median)} (n=${run.userAlone.n})`,
      `${ms(run.userDuringScan.median)} (n=${run.userDuringScan.n})`,
      ms(run.userDuringScan.max),
      slowdown,
      inFlight,
      String(run.fetched.scanOnly.remoteGets),
      (run.fetched.scanPhase.cacheBytesAdded / MiB).toFixed(1),
      String(run.scan.errors + run.userAlone.errors + run.userDuringScan.errors),
    ];
    out += values.map((v, i) => v.padStart(cols[i][1])).join('  ') + '\n';
  }
  out += `\nscan time: listing plus every image's stat/open/read/close; image p50/p95: one image's read latency in the scan;\n`;
  out += `user in scan: reads that started before the scan ended (after it: ${r.runs.map((x) => `${x.userDuringScan.afterScan.n} reads`).join(', ')});\n`;
  out += `slowdown: median in scan / median alone; in flight: scan reads under way when each user read started;\n`;
  out += `scan GETs: remote chunk objects first read during the scan phase, minus the user's documents' chunks (cache files added agree: ${r.runs.map((x) => x.fetched.scanOnly.cacheAdded).join(', ')});\n`;
  out += `MiB: cache growth in the scan phase, user documents included.\n`;
  return out;
}

let opts;
try {
  opts = parseArgs(process.argv.slice(2));
} catch (err) {
  process.stderr.write(`thumbnail-scan: ${err.message}\n`);
  process.exit(2);
}
runScript('thumbnail-scan', () => main(opts), { keep: () => opts.keep });
