// The metadata half of scripts/bench-sync.mjs (--metadata SIZES): what publishing and merging
// cost as a vault grows, with two devices on one file:// remote.
//
// For each size N, a vault of N files is made straight through the index API (not through a
// mount: a million files through FUSE would take an hour here): N/200 folders of 200 files
// made folder by folder, each file one
// chunk of ~1 KB whose id is random. Chunks are marked uploaded without being uploaded: only
// metadata is measured, and nothing reads file contents. Its whole tree is published as this
// device's journal (timed), then:
//   checkpoint      a checkpoint of the whole vault written as the daemon writes one in the
//                   background (time, bytes uploaded);
//   one change      one file rewritten through the index API and published: metadata bytes
//                   uploaded (sealed, padded journal entries) and time;
//   clone           `coffer clone` of the remote as a second device, which reads the checkpoint
//                   and the one entry after it (wall time, peak RSS by GNU time);
//   seen after      both devices mounted; a file written on the first through its mount and
//                   `coffer sync --wait` returns; then the time until the second device's mount
//                   shows it (default poll interval), checked every 50 ms by a child process;
//   daemon RSS      VmRSS of both daemons after that, and their peak (VmHWM).
import { randomBytes } from 'node:crypto';
import { mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';
import { ROOT, coffer, mountVault, unmountVault, progress, daemonInfo } from './harness.mjs';

const dist = (path) => import(join(ROOT, 'dist', path));

function statusKiB(pid, field) {
  try {
    const m = new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) : null;
  } catch {
    return null;
  }
}

export async function benchMetadata({ sizes, work, passphrase }) {
  const { unlockVault } = await dist('vault/vault.js');
  const { VaultIndex, S_IFDIR, S_IFREG } = await dist('index/vault-index.js');
  const { readDeviceState } = await dist('sync/device-state.js');
  const { JournalContext } = await dist('sync/journal-context.js');
  const { publishChanges } = await dist('sync/publisher.js');
  const { writeCheckpoint } = await dist('sync/checkpointer.js');
  const { openConfiguredBackend } = await dist('vault/config.js');
  const quiet = { debug() {}, info() {}, warn() {}, error() {} };
  const results = [];
  for (const n of sizes) {
    const dir = join(work, `metadata-${n}`);
    mkdirSync(dir, { recursive: true });
    const remote = join(dir, 'remote');
    const a = join(dir, 'a');
    const b = join(dir, 'b');
    progress(`metadata, ${n} files: making the vault through the index API`);
    await coffer(['init', a, '--remote', `file://${remote}`]);
    const vault = await unlockVault(a, passphrase);
    const state = await readDeviceState(vault.paths.state);
    const index = new VaultIndex(vault.paths.index);
    const backend = openConfiguredBackend(vault.config);
    const ctx = new JournalContext(index, backend, vault.metadataContext, vault.paths.state, quiet, state);
    const hooks = {
      chunksUploaded: async (ids) => {
        for (const id of ids) if (index.chunkInfo(id)?.uploaded === false) index.markUploaded(id);
      },
      uploaded: () => {},
    };
    const now = Date.now();
    let started = performance.now();
    const dirs = [];
    const folders = Math.max(1, Math.round(n / 200));
    for (let i = 0; i < folders; i++) dirs.push(index.createNode(1, `folder-${i}`, { mode: S_IFDIR | 0o755, uid: 0, gid: 0 }, now).ino);
    let someFile = 0;
    // Folder by folder, as copying a tree in makes it; 10,000 files per transaction to go faster.
    const batch = index.db.transaction((from, to) => {
      for (let i = from; i < to; i++) {
        const ino = index.createNode(dirs[Math.min(folders - 1, Math.floor(i / 200))], `file-${i}.txt`, { mode: S_IFREG | 0o644, uid: 0, gid: 0 }, now).ino;
        index.commitChunk(ino, 0, { id: randomBytes(32), plainSize: 1000, sealedSize: 4148 }, 1000, now, now);
        someFile = ino;
      }
    });
    for (let from = 0; from < n; from += 10_000) batch(from, Math.min(n, from + 10_000));
    const buildSeconds = (performance.now() - started) / 1000;
    progress(`metadata, ${n} files: publishing the whole tree`);
    started = performance.now();
    const initial = await publishChanges(ctx, hooks, AbortSignal.timeout(3_600_000));
    const initialSeconds = (performance.now() - started) / 1000;
    progress(`metadata, ${n} files: writing a checkpoint`);
    started = performance.now();
    const checkpoint = await writeCheckpoint(ctx, AbortSignal.timeout(3_600_000));
    const checkpointSeconds = (performance.now() - started) / 1000;
    started = performance.now();
    index.commitChunk(someFile, 0, { id: randomBytes(32), plainSize: 1200, sealedSize: 4148 }, 1200, Date.now(), Date.now());
    const one = await publishChanges(ctx, hooks, AbortSignal.timeout(600_000));
    const oneSeconds = (performance.now() - started) / 1000;
    index.close();

    progress(`metadata, ${n} files: cloning as a second device`);
    const timed = spawnSync('/usr/bin/time', ['-f', '%e %M', process.execPath, join(ROOT, 'dist', 'cli', 'main.js'), 'clone', `file://${remote}`, b, '--device-name', 'bench-b'], {
      env: { ...process.env, COFFER_PASSPHRASE: passphrase },
      encoding: 'utf8',
      maxBuffer: 16 << 20,
    });
    if (timed.status !== 0) throw new Error(`clone failed: ${timed.stderr}`);
    const [cloneSeconds, clonePeakKiB] = timed.stderr.trim().split('\n').at(-1).split(' ').map(Number);

    progress(`metadata, ${n} files: how soon the second device sees a change`);
    const ma = join(dir, 'mnt-a');
    const mb = join(dir, 'mnt-b');
    mkdirSync(ma);
    mkdirSync(mb);
    await mountVault(a, ma);
    await mountVault(b, mb);
    let seenSeconds = null;
    let rss = {};
    try {
      await coffer(['sync', a, '--wait', '--timeout', '600']);
      await coffer(['sync', b, '--wait', '--timeout', '600']);
      spawnSync('sh', ['-c', `echo change > "${join(ma, 'folder-0', 'changed.txt')}"`]);
      await coffer(['sync', a, '--wait', '--timeout', '600']);
      const t0 = performance.now();
      for (let i = 0; i < 1200; i++) {
        if (spawnSync('test', ['-e', join(mb, 'folder-0', 'changed.txt')]).status === 0) {
          seenSeconds = (performance.now() - t0) / 1000;
          break;
        }
        await new Promise((r) => setTimeout(r, 50));
      }
      const pa = daemonInfo(a)?.pid;
      const pb = daemonInfo(b)?.pid;
      rss = { aRssKiB: statusKiB(pa, 'VmRSS'), aPeakKiB: statusKiB(pa, 'VmHWM'), bRssKiB: statusKiB(pb, 'VmRSS'), bPeakKiB: statusKiB(pb, 'VmHWM') };
    } finally {
      await unmountVault(ma);
      await unmountVault(mb);
    }
    const result = {
      files: n,
      buildSeconds,
      initialPublish: { seconds: initialSeconds, entries: initial.entries, bytes: initial.bytes },
      checkpoint: { seconds: checkpointSeconds, parts: checkpoint?.parts ?? 0, bytes: checkpoint?.bytes ?? 0 },
      oneChange: { seconds: oneSeconds, entries: one.entries, records: one.records, metadataBytes: one.bytes },
      clone: { seconds: cloneSeconds, peakRssKiB: clonePeakKiB },
      secondDeviceSeesChangeSeconds: seenSeconds,
      daemons: rss,
    };
    progress(`metadata, ${n} files: ${JSON.stringify(result)}`);
    results.push(result);
  }
  return results;
}

export function metadataTable(results) {
  const mib = (kib) => (kib === null || kib === undefined ? '-' : `${(kib / 1024).toFixed(0)} MiB`);
  const rows = [
    ['files', 'publish all', 'checkpoint', 'one change: metadata', 'one change: time', 'clone', 'clone peak RSS', 'seen by 2nd device', 'daemon RSS (peak)'],
    ...results.map((r) => [
      r.files.toLocaleString('en'),
      `${r.initialPublish.seconds.toFixed(1)} s, ${(r.initialPublish.bytes / 1048576).toFixed(1)} MiB`,
      `${r.checkpoint.seconds.toFixed(1)} s, ${(r.checkpoint.bytes / 1048576).toFixed(1)} MiB`,
      `${(r.oneChange.metadataBytes / 1024).toFixed(1)} KiB in ${r.oneChange.entries} entr${r.oneChange.entries === 1 ? 'y' : 'ies'}`,
      `${(r.oneChange.seconds * 1000).toFixed(0)} ms`,
      `${r.clone.seconds.toFixed(1)} s`,
      mib(r.clone.peakRssKiB),
      r.secondDeviceSeesChangeSeconds === null ? 'not within 60 s' : `${r.secondDeviceSeesChangeSeconds.toFixed(1)} s`,
      `${mib(r.daemons.aRssKiB)} (${mib(r.daemons.aPeakKiB)}) / ${mib(r.daemons.bRssKiB)} (${mib(r.daemons.bPeakKiB)})`,
    ]),
  ];
  const widths = rows[0].map((_, i) => Math.max(...rows.map((r) => r[i].length)));
  return rows.map((r) => r.map((c, i) => c.padEnd(widths[i])).join('  ')).join('\n');
}
