#!/usr/bin/env node
// Coffer's sync benchmark: how fast written data reaches the remote, and how fast a vault
// cloned from the remote alone becomes usable.
//
//   node scripts/bench-sync.mjs [--files 10000] [--upload-mib 512] [--remote file|s3|both] [--json]
//   node scripts/bench-sync.mjs --metadata 10000,100000,1000000 [--json]
//
// --metadata runs only the metadata benchmark (scripts/lib/bench-metadata.mjs): for vaults of
// each size, the metadata bytes and time of publishing one change, `clone` time and peak RSS,
// how soon a second device sees a change, and the daemons' RSS.
//
// For each remote (file:// in a plain directory, s3:// on a local Ceph RADOS Gateway that
// scripts/rgw.sh starts and stops for this run):
//
// 1. Upload. A fresh vault on the remote; --upload-mib MiB of random data in a few large files
//    is prepared in a plain directory (not timed), copied into the mount by `dd bs=1M`, and
//    `coffer sync --wait` is timed from the end of that copy. The daemon uploads while the copy
//    runs, so two rates are reported: copy + sync (from the first byte written until the
//    remote holds the chunks and a published index: Coffer's upload rate), and the sync's own
//    (the bytes it still had to upload over its time). The baseline, measured in the same run
//    on the same machine:
//      file://  the same files copied to a plain directory with `dd bs=1M conv=fsync`;
//      s3://    raw PUTs of 4 MiB objects, 4 at a time, straight to the gateway through
//               Coffer's own S3 backend (dist/remote/s3-backend.js): the rate the store
//               and the HTTP/signing path allow without any of Coffer's work.
// 2. Clone. A vault of --files small files (1-4 KiB, over ~100 directories) plus one 8 MiB
//    file is written, synced and unmounted; the page cache is dropped; then each of these is
//    timed: `coffer clone` into a new directory, `coffer mount` of the clone, the first
//    `ls -lR`, the first `cat` of one small file, the first full read of the 8 MiB file, and
//    `cat` of every small file. File contents download lazily, so the reads are what fetch
//    chunks from the remote. For s3:// the raw latency of one small GET is measured too: the
//    floor under every first read of a small file. Finally (not timed) the clone's tree is
//    compared with the source by sha256.
//
// Design notes:
// - Every filesystem operation on a mount runs in a child process (dd, cat, ls, find, cp,
//   sh), never in this process: a request stuck in a FUSE daemon would otherwise freeze the
//   benchmark itself, including its cleanup. Children get their own process group, so a
//   Ctrl-C reaches only this process, which then decides what to stop.
// - coffer CLI commands that change state (init, mount, clone, unmount) are not killed on
//   Ctrl-C: a `mount` cut short could bring a daemon up after the cleanup has looked for one.
//   They finish (seconds) and the interrupt takes effect then. `sync --wait` only watches the
//   daemon, so it is stopped at once.
// - Cleanup (in `finally`, also after a failure or an interrupt): `coffer unmount` for every
//   mount this run made, `umount -l` where that fails, the daemon stopped if it lingers, the
//   gateway stopped, and the temp dirs removed — never while something is still mounted in
//   them.
// - The run uses a private copy of dist/ taken at its start (with package.json, and a symlink
//   to node_modules): in a shared checkout dist/ may be rebuilt while the run goes on, and a
//   daemon started after that would run another build than the ones before it.
// - Times are wall-clock times of the whole child process (its start-up included); the
//   coffer CLI's own start-up is measured once and printed, as it is part of every coffer
//   step. MiB = 2^20 bytes throughout.
import { randomBytes, randomFillSync, randomInt } from 'node:crypto';
import { createHash } from 'node:crypto';
import { closeSync, copyFileSync, cpSync, existsSync, fsyncSync, mkdirSync, mkdtempSync, openSync, readFileSync, readdirSync, rmSync, statSync, symlinkSync, writeSync } from 'node:fs';
import os from 'node:os';
import { dirname, join } from 'node:path';
import { pathToFileURL } from 'node:url';
import {
  Interrupted, ROOT, UsageError, beginCleanup, checkInterrupt, coffer, commandLine, describeExit, dropCaches as dropPageCache, eachFlag,
  installSignalHandlers, integerArg, interruptedBy, keepDaemonLog, lastJson, mountVault, ownedMounts, processAlive, progress,
  releaseOwnedMounts, removeDirUnlessMounted, run, runMain, setProgramName, sh, sleep, tailOf, timestampForFile, unmountVault, useCoffer, warn,
  yieldToSignals,
} from './lib/harness.mjs';
import { benchMetadata, metadataTable } from './lib/bench-metadata.mjs';

setProgramName('bench-sync');

// Set by snapshotBuild(): the modules of this run's private copy of dist/ (coffer() runs its CLI).
let DIST = join(ROOT, 'dist');
const RGW = join(ROOT, 'scripts', 'rgw.sh');
const MiB = 1024 * 1024;
const UPLOAD_FILES = 4;
const BIG_FILE_BYTES = 8 * MiB;
const SMALL_MIN = 1024;
const SMALL_MAX = 4096;
const DIRS = 100;
const BASELINE_OBJECT = 4 * MiB;
const BASELINE_CONCURRENCY = 4;

const USAGE = `Usage: node scripts/bench-sync.mjs [options]

Measures how fast Coffer gets written data onto its remote (against a plain copy or raw S3
PUTs), and how fast a vault cloned from the remote alone can be listed and read.

  --files <n>        small files in the clone benchmark (default 10000)
  --upload-mib <n>   MiB written for the upload benchmark (default 512)
  --remote <which>   file, s3 or both (default both); s3 starts a local Ceph RADOS Gateway
                     with scripts/rgw.sh (installing Ceph from Debian if it is missing)
  --metadata <sizes> only the metadata benchmark, for vaults of these file counts (comma-
                     separated, e.g. 10000,100000,1000000; made through the index API)
  --json             print one JSON object on stdout instead of a table
  -h, --help         show this help

Needs a built tree (npx tsc -p tsconfig.json), /dev/fuse, and root to drop the page cache.
`;

// ---------------------------------------------------------------------------------------------
// Command line

function parseArgs(argv) {
  const opts = { files: 10000, uploadMiB: 512, remotes: ['file', 's3'], json: false };
  const integer = integerArg;
  eachFlag(argv, (flag, value, arg) => {
    switch (flag) {
      case '--files': opts.files = integer(flag, value(), 1, 1_000_000); break;
      // The RGW store is 4 GiB of RAM and holds the vault's chunks and the baseline's objects.
      case '--upload-mib': opts.uploadMiB = integer(flag, value(), 1, 1536); break;
      case '--remote': {
        const v = value();
        if (v === 'both') opts.remotes = ['file', 's3'];
        else if (v === 'file' || v === 's3') opts.remotes = [v];
        else throw new UsageError(`--remote must be file, s3 or both, got ${JSON.stringify(v ?? '')}`);
        break;
      }
      case '--metadata': opts.metadata = String(value() ?? '').split(',').map((v) => integer(flag, v, 1, 5_000_000)); break;
      case '--json': opts.json = true; break;
      case '-h': case '--help': opts.help = true; break;
      default: throw new UsageError(`unknown argument ${JSON.stringify(arg)}`);
    }
  });
  return opts;
}

// ---------------------------------------------------------------------------------------------
// Observing the system

/** Coffer daemons of other users of this machine: their work competes with ours for 2 CPUs. */
function otherDaemons(ours) {
  const found = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const pid = Number(entry);
    if (ours.has(pid)) continue;
    try {
      const cmd = readFileSync(`/proc/${pid}/cmdline`, 'utf8').replace(/\0/g, ' ').trim();
      if (cmd.startsWith('coffer-daemon') && processAlive(pid)) found.push(pid);
    } catch {
      // Gone already.
    }
  }
  return found;
}

// The daemon's control socket, through Coffer's own module (loaded by snapshotBuild()): a
// status answer in milliseconds, where `coffer status` would first spend a node start-up.
let callDaemon;

/**
 * Copies dist/ into `dir` with package.json (for "type": "module") and a node_modules
 * symlink, points CLI there, and returns the build's identity: the newest file's time and a
 * sha256 over every file's path and content.
 */
async function snapshotBuild(dir) {
  const source = join(ROOT, 'dist');
  mkdirSync(dir, { recursive: true });
  cpSync(source, join(dir, 'dist'), { recursive: true, preserveTimestamps: true });
  copyFileSync(join(ROOT, 'package.json'), join(dir, 'package.json'));
  symlinkSync(join(ROOT, 'node_modules'), join(dir, 'node_modules'));
  DIST = join(dir, 'dist');
  useCoffer({ cli: join(DIST, 'cli', 'main.js') });
  ({ callDaemon } = await import(pathToFileURL(join(DIST, 'daemon', 'control.js')).href));
  const hash = createHash('sha256');
  let newest = 0;
  const walk = (d) => {
    for (const entry of readdirSync(d, { withFileTypes: true }).sort((a, b) => (a.name < b.name ? -1 : 1))) {
      const path = join(d, entry.name);
      if (entry.isDirectory()) walk(path);
      else {
        hash.update(path.slice(DIST.length) + '\0').update(readFileSync(path));
        newest = Math.max(newest, statSync(path).mtimeMs);
      }
    }
  };
  walk(DIST);
  return { builtAt: newest, sha256: hash.digest('hex') };
}

/** The newest modification time of the files named *`ext` under `dir`. */
function newestMtime(dir, ext) {
  let newest = 0;
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) newest = Math.max(newest, newestMtime(path, ext));
    else if (entry.name.endsWith(ext)) newest = Math.max(newest, statSync(path).mtimeMs);
  }
  return newest;
}

/** The checkout's commit and whether src/ has uncommitted changes (read-only git calls). */
async function sourceVersion() {
  const git = (args) => run('git', ['--no-optional-locks', '-C', ROOT, ...args], { timeoutMs: 30_000 }).catch(() => ({ code: -1, stdout: '' }));
  const head = await git(['rev-parse', '--short', 'HEAD']);
  if (head.code !== 0) return { commit: null, srcDirty: null };
  const status = await git(['status', '--porcelain', '--', 'src']);
  return { commit: head.stdout.trim(), srcDirty: status.code === 0 ? status.stdout.trim() !== '' : null };
}

// ---------------------------------------------------------------------------------------------
// What this run owns, for the cleanup

// (and the vaults mounted with mountVault(): ownedMounts())
const owned = {
  rgwDir: undefined,
  rgwPids: [],
  dirs: [],
};

// ---------------------------------------------------------------------------------------------
// Test data, made in plain directories by this process (nothing here touches a mount)

function writeRandomFile(path, bytes, block) {
  const fd = openSync(path, 'w');
  try {
    for (let done = 0; done < bytes; ) {
      const n = Math.min(block.length, bytes - done);
      randomFillSync(block, 0, n);
      for (let off = 0; off < n; ) off += writeSync(fd, block, off, n - off);
      done += n;
    }
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

/** A few large files adding up to `totalMiB`: the upload workload. */
async function makeUploadSource(dir, totalMiB) {
  mkdirSync(dir, { recursive: true });
  const count = Math.min(UPLOAD_FILES, totalMiB);
  const block = Buffer.allocUnsafe(MiB);
  const files = [];
  for (let i = 0; i < count; i++) {
    await yieldToSignals();
    const mib = Math.floor(totalMiB / count) + (i < totalMiB % count ? 1 : 0);
    const path = join(dir, `upload-${i}.bin`);
    writeRandomFile(path, mib * MiB, block);
    files.push({ path, bytes: mib * MiB });
  }
  return files;
}

/** small/dNNN/fNNNNNN.bin (1-4 KiB each, round-robin over the directories) and big.bin. */
async function makeTreeSource(dir, fileCount) {
  const dirs = Math.min(DIRS, fileCount);
  const small = join(dir, 'small');
  for (let d = 0; d < dirs; d++) mkdirSync(join(small, `d${String(d).padStart(3, '0')}`), { recursive: true });
  const buf = Buffer.allocUnsafe(SMALL_MAX);
  let bytes = 0;
  let first;
  for (let i = 0; i < fileCount; i++) {
    if (i % 1000 === 0) await yieldToSignals();
    const size = randomInt(SMALL_MIN, SMALL_MAX + 1);
    randomFillSync(buf, 0, size);
    const rel = join('small', `d${String(i % dirs).padStart(3, '0')}`, `f${String(i).padStart(6, '0')}.bin`);
    const fd = openSync(join(dir, rel), 'w');
    try {
      for (let off = 0; off < size; ) off += writeSync(fd, buf, off, size - off);
    } finally {
      closeSync(fd);
    }
    bytes += size;
    first ??= rel;
  }
  writeRandomFile(join(dir, 'big.bin'), BIG_FILE_BYTES, Buffer.allocUnsafe(MiB));
  return { dirs, smallBytes: bytes, firstSmall: first };
}

/** One digest over every file's path and sha256 under a directory, computed by a child. */
async function treeDigest(dir, timeoutMs) {
  const r = await sh(
    `hashing ${dir}`,
    'cd "$1" && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 -r sha256sum | sha256sum',
    [dir],
    timeoutMs,
  );
  return r.stdout.trim().split(/\s+/)[0];
}

// ---------------------------------------------------------------------------------------------
// The gateway

async function startRgw(dir) {
  const have = async (cmd) => (await run('sh', ['-c', `command -v ${cmd}`], { timeoutMs: 10_000 })).code === 0;
  if (!(await have('ceph-mon')) || !(await have('radosgw'))) {
    progress('Ceph is missing; installing it with scripts/rgw.sh install (apt-get)');
    const inst = await run('bash', [RGW, 'install'], { timeoutMs: 1_200_000 });
    if (inst.code !== 0) throw new Error(`scripts/rgw.sh install failed: ${describeExit(inst)}${tailOf(inst.stderr)}`);
  }
  owned.rgwDir = dir;
  const r = await run('bash', [RGW, 'up', dir], { timeoutMs: 180_000, killOnInterrupt: false });
  owned.rgwPids = readPidFiles(dir);
  if (r.code !== 0) throw new Error(`scripts/rgw.sh up ${dir} failed: ${describeExit(r)}${tailOf(r.stderr)}`);
  const env = {};
  for (const m of r.stdout.matchAll(/^export (COFFER_TEST_S3_[A-Z_]+)=(.*)$/gm)) env[m[1]] = m[2].trim();
  for (const key of ['ENDPOINT', 'ACCESS_KEY_ID', 'SECRET_ACCESS_KEY', 'BUCKET', 'REGION']) {
    if (!env[`COFFER_TEST_S3_${key}`]) throw new Error(`scripts/rgw.sh up printed no COFFER_TEST_S3_${key}:\n${r.stdout}`);
  }
  return {
    endpoint: env.COFFER_TEST_S3_ENDPOINT,
    accessKeyId: env.COFFER_TEST_S3_ACCESS_KEY_ID,
    secretAccessKey: env.COFFER_TEST_S3_SECRET_ACCESS_KEY,
    bucket: env.COFFER_TEST_S3_BUCKET,
    region: env.COFFER_TEST_S3_REGION,
    startSeconds: r.seconds,
  };
}

function readPidFiles(dir) {
  const pids = [];
  try {
    for (const f of readdirSync(join(dir, 'run'))) {
      if (!f.endsWith('.pid')) continue;
      const pid = Number(readFileSync(join(dir, 'run', f), 'utf8').trim());
      if (Number.isInteger(pid) && pid > 0) pids.push(pid);
    }
  } catch {
    // Nothing started yet.
  }
  return pids;
}

// ---------------------------------------------------------------------------------------------
// Baselines

/** The same files copied to a plain directory with dd, fsynced: what the disk does alone. */
async function plainCopyBaseline(files, destDir, timeoutMs) {
  mkdirSync(destDir, { recursive: true });
  const r = await sh(
    'plain copy with dd conv=fsync',
    'dest=$1; shift; for f in "$@"; do dd if="$f" of="$dest/${f##*/}" bs=1M conv=fsync status=none || exit 1; done',
    [destDir, ...files.map((f) => f.path)],
    timeoutMs,
  );
  rmSync(destDir, { recursive: true, force: true });
  return { seconds: r.seconds };
}

/** Raw PUTs of 4 MiB objects, 4 in flight, through Coffer's S3 backend: what the store does alone. */
async function s3PutBaseline(s3, prefix, totalBytes) {
  const { S3Backend } = await import(pathToFileURL(join(DIST, 'remote', 's3-backend.js')).href);
  const backend = new S3Backend({
    bucket: s3.bucket,
    prefix,
    endpoint: s3.endpoint,
    region: s3.region,
    accessKeyId: s3.accessKeyId,
    secretAccessKey: s3.secretAccessKey,
    forcePathStyle: true,
  });
  const count = Math.max(1, Math.ceil(totalBytes / BASELINE_OBJECT));
  // Distinct random bodies, made before the clock starts (the store does not deduplicate,
  // but nothing should depend on that).
  const bodies = Array.from({ length: Math.min(count, 16) }, () => randomBytes(BASELINE_OBJECT));
  await backend.put('warm-up', bodies[0]); // connection set-up, not counted
  let next = 0;
  const started = process.hrtime.bigint();
  const worker = async () => {
    for (;;) {
      checkInterrupt();
      const i = next++;
      if (i >= count) return;
      await backend.put(`obj-${String(i).padStart(6, '0')}`, bodies[i % bodies.length]);
    }
  };
  await Promise.all(Array.from({ length: BASELINE_CONCURRENCY }, worker));
  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  // Free the gateway's memory store for the vaults that follow (not timed).
  const keys = ['warm-up', ...Array.from({ length: count }, (_, i) => `obj-${String(i).padStart(6, '0')}`)];
  let k = 0;
  await Promise.all(
    Array.from({ length: BASELINE_CONCURRENCY }, async () => {
      while (k < keys.length) await backend.delete(keys[k++]).catch(() => {});
    }),
  );
  return { seconds, objects: count, bytes: count * BASELINE_OBJECT };
}

/**
 * Sequential GETs of small objects like one small file's chunk, through the same backend: the
 * store's own latency, the floor under every first read of a small file.
 */
async function s3GetBaseline(s3, prefix) {
  const { S3Backend } = await import(pathToFileURL(join(DIST, 'remote', 's3-backend.js')).href);
  const backend = new S3Backend({ bucket: s3.bucket, prefix, endpoint: s3.endpoint, region: s3.region, accessKeyId: s3.accessKeyId, secretAccessKey: s3.secretAccessKey, forcePathStyle: true });
  const count = 20;
  const keys = Array.from({ length: count }, (_, i) => `small-${i}`);
  for (const key of keys) await backend.put(key, randomBytes(SMALL_MAX));
  await backend.get(keys[0]); // connection set-up, not counted
  const times = [];
  for (const key of keys) {
    checkInterrupt();
    const started = process.hrtime.bigint();
    await backend.get(key);
    times.push(Number(process.hrtime.bigint() - started) / 1e9);
  }
  for (const key of keys) await backend.delete(key).catch(() => {});
  times.sort((a, b) => a - b);
  return { what: `raw S3 GET of a ${SMALL_MAX / 1024} KiB object, median of ${count} in sequence`, seconds: times[count >> 1] };
}

// ---------------------------------------------------------------------------------------------
// The two benchmarks

const mibps = (bytes, seconds) => bytes / MiB / seconds;
const fmtS = (s) => `${s.toFixed(s < 10 ? 2 : 1)} s`;
const fmtMs = (s) => `${Math.round(s * 1000)} ms`;
const fmtRate = (r) => `${r.toFixed(r < 10 ? 2 : 1)} MiB/s`;

async function dropCaches(notes) {
  const r = await dropPageCache();
  if (r.dropped) return true;
  const note = `could not drop the page cache (${r.reason}): first reads may be served from memory`;
  if (!notes.includes(note)) notes.push(note);
  return false;
}

async function benchUpload(ctx, source, opts) {
  const { work, remote, notes } = ctx;
  const totalBytes = source.reduce((n, f) => n + f.bytes, 0);
  const copyTimeout = 120_000 + opts.uploadMiB * 2000;
  const syncTimeout = 300_000 + opts.uploadMiB * 4000;
  const result = { bytes: totalBytes, files: source.length };

  // Sources come from the page cache in every measurement, so only the destination counts.
  await sh('reading the sources into the page cache', 'cat "$@" > /dev/null', source.map((f) => f.path), copyTimeout);

  if (remote.kind === 'file') {
    progress(`[file] baseline: dd bs=1M conv=fsync of ${opts.uploadMiB} MiB to a plain dir`);
    const b = await plainCopyBaseline(source, join(work, 'plain-copy'), copyTimeout);
    result.baseline = { what: 'dd bs=1M conv=fsync to a plain dir on the same disk', seconds: b.seconds, mibPerSecond: mibps(totalBytes, b.seconds) };
  } else {
    progress(`[s3] baseline: raw PUTs of ${opts.uploadMiB} MiB in 4 MiB objects, ${BASELINE_CONCURRENCY} at a time`);
    const b = await s3PutBaseline(remote.s3, `${remote.runPrefix}/baseline`, totalBytes);
    result.baseline = {
      what: `raw S3 PUT of ${b.objects} x 4 MiB objects, ${BASELINE_CONCURRENCY} concurrent (dist/remote/s3-backend.js)`,
      seconds: b.seconds,
      mibPerSecond: mibps(b.bytes, b.seconds),
    };
  }
  progress(`  ${fmtRate(result.baseline.mibPerSecond)}`);

  const vault = join(work, 'upload-vault');
  const mnt = join(work, 'upload-mnt');
  mkdirSync(mnt);
  ctx.vaults.push(vault);
  await coffer(['init', vault, '--remote', remote.url('upload'), ...remote.cliArgs]);
  const m = await mountVault(vault, mnt);
  progress(`[${remote.kind}] copying ${opts.uploadMiB} MiB into the mount (dd bs=1M), then coffer sync --wait`);

  const copy = await sh(
    'copying into the mount with dd',
    'dest=$1; shift; for f in "$@"; do dd if="$f" of="$dest/${f##*/}" bs=1M status=none || exit 1; done',
    [mnt, ...source.map((f) => f.path)],
    copyTimeout,
  );
  const copyEnd = process.hrtime.bigint();
  // What the daemon had already uploaded when the copy ended, and what was left.
  let atCopyEnd;
  atCopyEnd = await callDaemon(m.socket, { op: 'status' }, 30_000).catch(() => undefined);
  const syncRun = await coffer(['sync', mnt, '--wait', '--json'], { timeoutMs: syncTimeout });
  const syncSeconds = Number(process.hrtime.bigint() - copyEnd) / 1e9;
  const final = lastJson(syncRun.stdout, 'coffer sync --wait --json');
  if (final.pendingChunks !== 0 || final.sync?.publishPending) {
    throw new Error(`coffer sync --wait returned with ${final.pendingChunks} chunks pending / publishPending ${final.sync?.publishPending}: ${JSON.stringify(final)}`);
  }
  result.copy = { seconds: copy.seconds, mibPerSecond: mibps(totalBytes, copy.seconds) };
  const uploadedTotal = final.sync.uploadedBytes;
  const uploadedBefore = atCopyEnd?.sync?.uploadedBytes;
  const duringSync = uploadedBefore === undefined ? uploadedTotal : uploadedTotal - uploadedBefore;
  result.sync = {
    seconds: syncSeconds,
    uploadedBytesTotal: uploadedTotal,
    uploadedBytesDuringCopy: uploadedBefore ?? null,
    pendingBytesAtCopyEnd: atCopyEnd?.pendingBytes ?? null,
    bufferedBytesAtCopyEnd: atCopyEnd?.bufferedBytes ?? null,
    uploadedBytesDuringSync: duringSync,
    // The upload rate of the sync itself: sealed bytes it moved over its wall time.
    mibPerSecond: mibps(duringSync, syncSeconds),
  };
  if (uploadedBefore === undefined) notes.push(`[${remote.kind}] no status at the end of the copy; the sync rate counts every byte uploaded this session`);
  result.writeAndSync = { seconds: copy.seconds + syncSeconds, mibPerSecond: mibps(totalBytes, copy.seconds + syncSeconds) };
  result.ratioSyncToBaseline = result.sync.mibPerSecond / result.baseline.mibPerSecond;
  result.ratioWriteAndSyncToBaseline = result.writeAndSync.mibPerSecond / result.baseline.mibPerSecond;
  progress(
    `  copy ${fmtS(copy.seconds)}, sync ${fmtS(syncSeconds)} (${fmtRate(result.sync.mibPerSecond)}), ` +
      `write+sync ${fmtS(result.writeAndSync.seconds)} (${fmtRate(result.writeAndSync.mibPerSecond)})`,
  );

  // The data in the mount must be the data written (not timed; from the local cache).
  const check = await sh(
    'hashing the copies in the mount',
    'src=$1; mnt=$2; shift 2; for f in "$@"; do a=$(sha256sum < "$src/$f") && b=$(sha256sum < "$mnt/$f") || exit 1; [ "$a" = "$b" ] || echo "$f"; done',
    [dirname(source[0].path), mnt, ...source.map((f) => f.path.split('/').pop())],
    copyTimeout * 2,
  );
  if (check.stdout.trim()) throw new Error(`DATA MISMATCH: these files in ${mnt} differ from their sources: ${check.stdout.trim().split('\n').join(', ')}`);
  result.verified = true;

  progress(`[${remote.kind}] unmounting the upload vault`);
  await unmountVault(mnt, { timeoutMs: 600_000 });
  return result;
}

async function benchClone(ctx, tree, opts) {
  const { work, remote, notes } = ctx;
  const n = opts.files;
  const t = (what) => 120_000 + n * 200 + (what ?? 0);
  const result = { files: n, directories: tree.dirs, smallBytes: tree.smallBytes, bigBytes: BIG_FILE_BYTES };

  const vault = join(work, 'tree-vault');
  const mnt = join(work, 'tree-mnt');
  mkdirSync(mnt);
  progress(`[${remote.kind}] writing ${n} small files in ${tree.dirs} dirs + 8 MiB into a fresh vault, then sync --wait`);
  ctx.vaults.push(vault);
  await coffer(['init', vault, '--remote', remote.url('tree'), ...remote.cliArgs]);
  await mountVault(vault, mnt);
  const populate = await sh('copying the tree into the mount', 'cp -R "$1/." "$2/"', [tree.dir, mnt], t());
  const sync = await coffer(['sync', mnt, '--wait', '--json'], { timeoutMs: t(600_000) });
  const synced = lastJson(sync.stdout, 'coffer sync --wait --json');
  if (synced.files !== n + 1) throw new Error(`the vault should hold ${n + 1} files after the copy, coffer status says ${synced.files}`);
  result.prepare = { copySeconds: populate.seconds, syncSeconds: sync.seconds, chunks: synced.chunks, uploadedChunks: synced.sync.uploadedChunks };
  progress(`  copy ${fmtS(populate.seconds)}, sync ${fmtS(sync.seconds)} (${synced.sync.uploadedChunks} chunks uploaded); unmounting`);
  await unmountVault(mnt, { timeoutMs: 600_000 });

  result.coldCache = await dropCaches(notes);

  const cloneVault = join(work, 'clone-vault');
  const cloneMnt = join(work, 'clone-mnt');
  mkdirSync(cloneMnt);
  progress(`[${remote.kind}] (a) coffer clone`);
  ctx.vaults.push(cloneVault);
  const clone = await coffer(['clone', remote.url('tree'), cloneVault, ...remote.cliArgs], { timeoutMs: t(600_000) });
  result.clone = { seconds: clone.seconds };
  progress(`  ${fmtMs(clone.seconds)}; (b) coffer mount of the clone`);
  const m = await mountVault(cloneVault, cloneMnt);
  result.mount = { seconds: m.seconds };

  progress(`  ${fmtMs(m.seconds)}; (c) first ls -lR`);
  const entries = n + 1 + tree.dirs + 1; // files, big.bin, the directories and small/
  const ls = await sh('ls -lR of the clone', 'ls -lR "$1" > /dev/null', [cloneMnt], t());
  result.lsR = { seconds: ls.seconds, entries, entriesPerSecond: entries / ls.seconds };

  progress(`  ${fmtMs(ls.seconds)}; (d) first cat of one small file`);
  const one = await sh('cat of one small file', 'cat "$1" > /dev/null', [join(cloneMnt, tree.firstSmall)], 120_000);
  result.catOne = { seconds: one.seconds, file: tree.firstSmall };

  progress(`  ${fmtMs(one.seconds)}; (e) first full read of the 8 MiB file`);
  const big = await sh('reading the 8 MiB file', 'dd if="$1" of=/dev/null bs=1M status=none', [join(cloneMnt, 'big.bin')], 300_000);
  result.readBig = { seconds: big.seconds, mibPerSecond: mibps(BIG_FILE_BYTES, big.seconds) };

  progress(`  ${fmtMs(big.seconds)}; (f) cat of all ${n} small files`);
  const all = await sh('cat of every small file', 'find "$1" -type f -exec cat {} + > /dev/null', [join(cloneMnt, 'small')], t(n * 1000));
  result.catAll = { seconds: all.seconds, filesPerSecond: n / all.seconds };
  if (remote.kind === 's3') result.smallGetBaseline = await s3GetBaseline(remote.s3, `${remote.runPrefix}/get-baseline`);
  progress(`  ${fmtS(all.seconds)} (${Math.round(n / all.seconds)} files/s); comparing the clone with the source (not timed)`);

  const [want, got] = [await treeDigest(tree.dir, t()), await treeDigest(cloneMnt, t())];
  if (want !== got) throw new Error(`DATA MISMATCH: the clone at ${cloneMnt} differs from the source tree ${tree.dir} (sha256 over all files: ${got} vs ${want})`);
  result.verified = true;

  await unmountVault(cloneMnt, { timeoutMs: 600_000 });
  return result;
}

// ---------------------------------------------------------------------------------------------
// Output

function renderTable(report) {
  const kinds = Object.keys(report.remotes);
  const label = { file: 'file://', s3: 's3:// (RGW)' };
  const rows = [['', ...kinds.map((k) => label[k])]];
  const section = (title) => rows.push([title, ...kinds.map(() => '')]);
  const row = (name, cell) => rows.push([`  ${name}`, ...kinds.map((k) => {
    try {
      return cell(report.remotes[k]) ?? '-';
    } catch {
      return '-';
    }
  })]);
  const p = report.parameters;
  const ratio = (r) => `${r.toFixed(r >= 10 ? 1 : r >= 0.1 ? 2 : 3)}x`;

  section(`Upload: ${p.uploadMiB} MiB of random data in ${report.remotes[kinds[0]].upload.files} files`);
  row('copy into the mount (dd bs=1M)', (r) => `${fmtS(r.upload.copy.seconds)}  ${fmtRate(r.upload.copy.mibPerSecond)}`);
  row('already uploaded when the copy ended', (r) => (r.upload.sync.uploadedBytesDuringCopy === null ? '-' : `${(r.upload.sync.uploadedBytesDuringCopy / MiB).toFixed(1)} MiB`));
  row('coffer sync --wait after the copy', (r) => fmtS(r.upload.sync.seconds));
  row('  MiB it uploaded, rate', (r) => `${(r.upload.sync.uploadedBytesDuringSync / MiB).toFixed(1)} MiB  ${fmtRate(r.upload.sync.mibPerSecond)}`);
  row('write + sync (all on the remote)', (r) => `${fmtS(r.upload.writeAndSync.seconds)}  ${fmtRate(r.upload.writeAndSync.mibPerSecond)}`);
  row('baseline (see below)', (r) => `${fmtS(r.upload.baseline.seconds)}  ${fmtRate(r.upload.baseline.mibPerSecond)}`);
  row('write+sync rate / baseline', (r) => ratio(r.upload.ratioWriteAndSyncToBaseline));
  row('sync --wait rate / baseline', (r) => ratio(r.upload.ratioSyncToBaseline));
  row('data in the mount verified', (r) => (r.upload.verified ? 'yes' : 'NO'));

  section(`Clone: ${p.files} files of 1-4 KiB in ${report.remotes[kinds[0]].clone.directories} dirs + one 8 MiB file`);
  row('(setup: cp -R into a vault + sync)', (r) => `${fmtS(r.clone.prepare.copySeconds)} + ${fmtS(r.clone.prepare.syncSeconds)}`);
  row('(setup: chunks uploaded / total time)', (r) => `${r.clone.prepare.uploadedChunks} chunks  ${Math.round(r.clone.prepare.uploadedChunks / (r.clone.prepare.copySeconds + r.clone.prepare.syncSeconds))}/s`);
  row('(a) coffer clone', (r) => fmtMs(r.clone.clone.seconds));
  row('(b) coffer mount of the clone', (r) => fmtMs(r.clone.mount.seconds));
  row('(c) first ls -lR', (r) => `${fmtMs(r.clone.lsR.seconds)}  ${Math.round(r.clone.lsR.entriesPerSecond)} entries/s`);
  row('(d) first cat of one small file', (r) => fmtMs(r.clone.catOne.seconds));
  row('(e) first read of the 8 MiB file', (r) => `${fmtMs(r.clone.readBig.seconds)}  ${fmtRate(r.clone.readBig.mibPerSecond)}`);
  row(`(f) cat of all ${p.files} small files`, (r) => `${fmtMs(r.clone.catAll.seconds)}  ${Math.round(r.clone.catAll.filesPerSecond)} files/s`);
  row('    per file', (r) => `${(r.clone.catAll.seconds / r.clone.files * 1000).toFixed(1)} ms`);
  row('baseline: one small GET, raw', (r) => (r.clone.smallGetBaseline ? `${(r.clone.smallGetBaseline.seconds * 1000).toFixed(1)} ms` : undefined));
  row('page cache dropped before (a)', (r) => (r.clone.coldCache ? 'yes' : 'no'));
  row('clone verified against the source', (r) => (r.clone.verified ? 'yes' : 'NO'));

  const widths = rows[0].map((_, c) => Math.max(...rows.map((r) => r[c].length)));
  const line = (r) => r.map((cell, c) => (c === 0 ? cell.padEnd(widths[c]) : cell.padStart(widths[c]))).join('   ').trimEnd();
  const e = report.environment;
  const out = [
    `Coffer ${report.coffer.version} sync benchmark, ${report.timestamp}`,
    `build: a copy of dist/ of ${report.coffer.distBuiltAt} (sha256 ${report.coffer.distSha256.slice(0, 12)}), checkout at ${report.coffer.commit ?? '?'}${report.coffer.srcDirty ? ' with uncommitted changes in src/' : ''}`,
    `node ${e.node}, ${e.cpus} CPUs (${e.cpuModel}), ${(e.memoryBytes / 2 ** 30).toFixed(0)} GiB RAM; load average ${e.loadAverage1m.start.toFixed(2)} at the start, ${e.loadAverage1m.end.toFixed(2)} at the end`,
    `coffer CLI start-up ~${fmtMs(report.cliStartupSeconds)} (part of every coffer step's time)`,
    '',
    line(rows[0]),
    line(widths.map((w) => '-'.repeat(w))),
    ...rows.slice(1).map(line),
    '',
  ];
  for (const k of kinds) out.push(`baseline ${label[k]}: ${report.remotes[k].upload.baseline.what}`);
  if (report.remotes.s3?.clone.smallGetBaseline) out.push(`baseline one small GET: ${report.remotes.s3.clone.smallGetBaseline.what} (dist/remote/s3-backend.js)`);
  if (report.remotes.s3) out.push(`RGW: single-node Ceph (memstore) on 127.0.0.1, started by scripts/rgw.sh in ${fmtS(report.remotes.s3.rgwStartSeconds)}`);
  out.push('write + sync: from the start of the copy until `coffer sync --wait` returned (chunks and index on the remote): Coffer\'s upload rate');
  out.push('sync --wait rate: sealed bytes the daemon uploaded between the end of the copy and the return of `coffer sync --wait`, over that');
  out.push('  time (which includes the CLI start-up and the index publish): low when the daemon had uploaded most of it during the copy');
  for (const note of report.notes) out.push(`note: ${note}`);
  return out.join('\n') + '\n';
}

// ---------------------------------------------------------------------------------------------
// Main

async function main() {
  const opts = commandLine(parseArgs, USAGE);
  if (typeof opts === 'number') return opts;

  const work = mkdtempSync(join(os.tmpdir(), 'coffer-bench-sync-'));
  owned.dirs.push(work);
  // A throwaway passphrase, handed only to the coffer CLI children.
  let cofferEnv = { ...process.env, COFFER_PASSPHRASE: randomBytes(24).toString('hex') };
  delete cofferEnv.COFFER_S3_ENDPOINT;
  useCoffer({ env: cofferEnv });
  const notes = [];
  const vaultsSeen = [];
  let failed = false;
  let report;

  if (opts.metadata) {
    try {
      const results = await benchMetadata({ sizes: opts.metadata, work, passphrase: cofferEnv.COFFER_PASSPHRASE });
      process.stdout.write(opts.json ? JSON.stringify({ metadata: results }) + '\n' : metadataTable(results) + '\n');
      return 0;
    } finally {
      await releaseOwnedMounts();
      removeDirUnlessMounted(work);
    }
  }

  try {
    progress(`workdir ${work}`);
    const loadAtStart = os.loadavg()[0];
    const othersAtStart = otherDaemons(new Set());

    const source = await sourceVersion();
    const build = await snapshotBuild(join(work, 'coffer'));
    const newestSource = newestMtime(join(ROOT, 'src'), '.ts');
    if (newestSource > build.builtAt) {
      notes.push(`src/ has changes newer than the build (${new Date(newestSource).toISOString()} vs dist/ of ${new Date(build.builtAt).toISOString()}): this run measures the build, not the checkout; rebuild with npx tsc -p tsconfig.json`);
    }
    const help = await coffer(['--help']);
    const cliStartupSeconds = help.seconds;

    progress(`preparing ${opts.uploadMiB} MiB of random data and a tree of ${opts.files} files + 8 MiB in plain dirs (not timed)`);
    const uploadSource = await makeUploadSource(join(work, 'source-upload'), opts.uploadMiB);
    const treeDir = join(work, 'source-tree');
    const tree = { dir: treeDir, ...(await makeTreeSource(treeDir, opts.files)) };

    const remotes = {};
    for (const kind of opts.remotes) {
      checkInterrupt();
      const kindWork = join(work, kind);
      mkdirSync(kindWork);
      let remote;
      const entry = {};
      if (kind === 'file') {
        const remotesDir = join(kindWork, 'remotes');
        mkdirSync(remotesDir);
        remote = { kind, url: (name) => pathToFileURL(join(remotesDir, name)).href, cliArgs: [] };
      } else {
        const rgwDir = mkdtempSync('/tmp/coffer-rgw-');
        owned.dirs.push(rgwDir);
        progress(`starting the RADOS Gateway in ${rgwDir}`);
        const s3 = await startRgw(rgwDir);
        entry.rgwStartSeconds = s3.startSeconds;
        const runPrefix = `bench-sync-${randomBytes(4).toString('hex')}`;
        remote = { kind, s3, runPrefix, url: (name) => `s3://${s3.bucket}/${runPrefix}/${name}`, cliArgs: ['--s3-endpoint', s3.endpoint] };
        cofferEnv = { ...cofferEnv, AWS_ACCESS_KEY_ID: s3.accessKeyId, AWS_SECRET_ACCESS_KEY: s3.secretAccessKey, AWS_REGION: s3.region };
        delete cofferEnv.AWS_SESSION_TOKEN;
        useCoffer({ env: cofferEnv });
      }
      const ctx = { work: kindWork, remote, notes, vaults: vaultsSeen };
      entry.upload = await benchUpload(ctx, uploadSource, opts);
      entry.clone = await benchClone(ctx, tree, opts);
      remotes[kind] = entry;
      if (kind === 's3') {
        await stopRgw();
      }
      // The next remote starts from a disk without this one's vaults.
      rmSync(kindWork, { recursive: true, force: true });
    }

    // Whatever else ran on the machine competed for the same CPUs and disk.
    const othersAtEnd = otherDaemons(new Set());
    if (othersAtStart.length || othersAtEnd.length) {
      notes.push(`Coffer daemons not started by this run were running (pids ${othersAtStart.join(', ') || 'none'} at the start, ${othersAtEnd.join(', ') || 'none'} at the end): they compete for the same ${os.cpus().length} CPUs and disk`);
    }
    const loadAtEnd = os.loadavg()[0];
    report = {
      timestamp: new Date().toISOString(),
      parameters: {
        files: opts.files,
        uploadMiB: opts.uploadMiB,
        uploadFiles: uploadSource.length,
        smallFileBytes: [SMALL_MIN, SMALL_MAX],
        bigFileBytes: BIG_FILE_BYTES,
        remotes: opts.remotes,
      },
      coffer: {
        version: JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')).version,
        commit: source.commit,
        srcDirty: source.srcDirty,
        distBuiltAt: new Date(build.builtAt).toISOString(),
        distSha256: build.sha256,
      },
      environment: {
        node: process.version,
        platform: `${os.type()} ${os.release()} ${os.arch()}`,
        cpus: os.cpus().length,
        cpuModel: os.cpus()[0]?.model,
        memoryBytes: os.totalmem(),
        loadAverage1m: { start: loadAtStart, end: loadAtEnd },
      },
      cliStartupSeconds,
      remotes,
      notes,
    };
  } catch (err) {
    failed = true;
    if (err instanceof Interrupted) progress(`${err.message}; cleaning up`);
    else process.stderr.write(`bench-sync: FAILED: ${err.message}\n`);
  } finally {
    beginCleanup();
    if (failed && !interruptedBy()) {
      // The daemons this run still had mounted, and the vault it touched last.
      for (const [mnt, { pid }] of ownedMounts()) {
        if (pid && !processAlive(pid)) warn(`the daemon for ${mnt} (pid ${pid}) is no longer running`);
      }
      const vaults = new Set([...[...ownedMounts().values()].map((m) => m.vault), ...vaultsSeen.slice(-1)]);
      for (const vault of vaults) reportDaemonLog(vault);
    }
    await cleanup();
  }

  if (interruptedBy()) return 130;
  if (failed) return 1;
  process.stdout.write(opts.json ? JSON.stringify(report, null, 2) + '\n' : renderTable(report));
  return 0;
}

/** Shows the end of a vault's daemon log and keeps a copy, since the workdir is about to go. */
function reportDaemonLog(vault) {
  const kept = join(os.tmpdir(), `coffer-bench-sync-${timestampForFile()}-${vault.split('/').slice(-2).join('-')}.daemon.log`);
  keepDaemonLog(join(vault, 'logs', 'daemon.log'), kept);
}

async function stopRgw() {
  if (!owned.rgwDir) return;
  const dir = owned.rgwDir;
  const pids = [...new Set([...owned.rgwPids, ...readPidFiles(dir)])];
  progress(`stopping the RADOS Gateway (${dir})`);
  const r = await run('bash', [RGW, 'down', dir], { timeoutMs: 60_000, cleanup: true }).catch((err) => ({ code: -1, stderr: err.message }));
  if (r.code !== 0) warn(`scripts/rgw.sh down ${dir} failed: ${r.stderr?.trim() || describeExit(r)}`);
  // Killed daemons linger as zombies until init reaps them.
  for (const until = Date.now() + 10_000; Date.now() < until; ) {
    if (!pids.some((pid) => existsSync(`/proc/${pid}`))) break;
    await sleep(100);
  }
  owned.rgwDir = undefined;
}

/**
 * Unmounts everything this run mounted (`coffer unmount`, else `umount -l`, then the daemon
 * is stopped if it lingers), stops the gateway, and removes the temp dirs unless something
 * is still mounted in them.
 */
async function cleanup() {
  await releaseOwnedMounts();
  await stopRgw();
  for (const dir of owned.dirs) removeDirUnlessMounted(dir);
}

installSignalHandlers({
  onInterrupt: (signal) => progress(`${signal} received; stopping (a coffer init/mount/clone/unmount under way is let finish), then cleaning up`),
});

runMain(main);
