/**
 * Model-based test of merging (fast-check): several devices, each a real index (SQLite in memory)
 * changed through the same calls the filesystem makes; random creates, writes, renames, moves
 * (including ones that would make cycles) and deletes; publishes and deliveries in random orders,
 * with partitions (a device delivered only part of another's journal). At the end every device
 * publishes and reads everything, twice, and then:
 * - all devices show the same tree (names, kinds, contents);
 * - the tree has no cycle: every node shown is reachable from the root exactly once per name;
 * - every write survives (under its name or as a conflicted copy) unless a device that saw it
 *   overwrote or deleted it;
 * - a device started from a checkpoint of another (taken after the operations, and again midway
 *   through the final rounds), then given the entries after it, shows the same tree too.
 * Failing sequences shrink; each one found is kept in REGRESSIONS below and replayed every run.
 * CI runs MODEL_RUNS sequences; `COFFER_MODEL_RUNS=5000 npx vitest run test/unit/merge-model.test.ts` runs more.
 */
import { createHash } from 'node:crypto';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { FsError } from '../../src/errors.js';
import type { NodeRecord } from '../../src/format/journal.js';
import { VaultIndex, isDir, S_IFDIR, S_IFREG } from '../../src/index/vault-index.js';
import { ROOT_INO } from '../../src/index/schema.js';
import { CheckpointLoader, IndexSnapshot } from '../../src/index/checkpoint.js';
import { CHECKPOINT_TABLES, type CheckpointTable } from '../../src/format/checkpoint.js';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const MODEL_RUNS = Number(process.env.COFFER_MODEL_RUNS ?? 300);
const NAMES = ['a', 'b', 'c', 'd'];

type Op =
  | { kind: 'create'; device: number; dir: number; name: number; dirNode: boolean }
  | { kind: 'write'; device: number; node: number }
  | { kind: 'move'; device: number; node: number; dir: number; name: number }
  | { kind: 'delete'; device: number; node: number }
  /**
   * `during`: entries of another device arrive while this publish is on its way (as the daemon's
   * merger may); `batch`: records per entry (a large publish is cut into entries as the publisher
   * cuts it, so a folder may come in a later entry than what it holds).
   */
  | { kind: 'publish'; device: number; during?: { from: number; upTo: number }; batch?: number }
  | { kind: 'deliver'; device: number; from: number; upTo: number };

interface Device {
  id: string;
  index: VaultIndex;
  clock: number;
  journal: { clock: number; records: NodeRecord[] }[];
  /** How many entries of each other device it has applied. */
  applied: number[];
}

let writes = 0;

const deviceId = (i: number) => createHash('sha256').update(`device-${i}`).digest('hex').slice(0, 32);

function makeDevice(i: number): Device {
  const index = new VaultIndex(':memory:', { create: { uid: 0, gid: 0, nowMs: 0 } });
  // Every device starts from the same empty vault: the root is the same node everywhere.
  index.replica.forgetLocalChanges();
  const id = deviceId(i);
  // As pullChanges does before any entry: every device's record is read, so every name is known.
  for (let other = 0; other < 3; other++) index.replica.setDeviceName(deviceId(other), `device-${other}`);
  index.replica.localDeviceName = `device-${i}`;
  return { id, index, clock: 0, journal: [], applied: [] };
}

/** Live inodes of a device, in a stable order, so an op's number picks one. */
function nodesOf(d: Device, dirsOnly: boolean): number[] {
  const rows = d.index.db.prepare<[], { ino: number; mode: number }>('SELECT ino, mode FROM inodes WHERE nlink > 0 ORDER BY ino').all();
  return rows.filter((r) => !dirsOnly || isDir(r.mode)).map((r) => r.ino);
}

function nameOf(d: Device, ino: number): { parent: number; name: string } | undefined {
  return d.index.db.prepare<[number], { parent: number; name: string }>('SELECT parent, name FROM entries WHERE ino = ? LIMIT 1').get(ino);
}

function contentOf(d: Device, ino: number): string | undefined {
  return d.index.chunkAt(ino, 0)?.toString('hex');
}

interface Outcome {
  /** Contents some device overwrote or deleted while it showed them. */
  dropped: Set<string>;
  written: Set<string>;
}

function apply(devices: Device[], op: Op, outcome: Outcome): void {
  const d = devices[op.device % devices.length]!;
  const now = 1_000_000 + writes;
  const isOpen = () => false;
  try {
    switch (op.kind) {
      case 'create': {
        const dirs = nodesOf(d, true);
        const dir = dirs[op.dir % dirs.length]!;
        d.index.createNode(dir, NAMES[op.name % NAMES.length]!, { mode: (op.dirNode ? S_IFDIR : S_IFREG) | 0o755, uid: 0, gid: 0 }, now);
        break;
      }
      case 'write': {
        const files = nodesOf(d, false).filter((ino) => !isDir(d.index.getInode(ino)!.mode));
        if (files.length === 0) return;
        const ino = files[op.node % files.length]!;
        const before = contentOf(d, ino);
        const content = `write-${writes++}`;
        const id = createHash('sha256').update(content).digest();
        d.index.commitChunk(ino, 0, { id, plainSize: content.length, sealedSize: content.length + 52 }, content.length, now, now);
        if (before) outcome.dropped.add(before);
        outcome.written.add(id.toString('hex'));
        break;
      }
      case 'move': {
        const all = nodesOf(d, false).filter((ino) => ino !== ROOT_INO);
        const dirs = nodesOf(d, true);
        if (all.length === 0) return;
        const ino = all[op.node % all.length]!;
        const from = nameOf(d, ino);
        if (!from) return;
        const to = dirs[op.dir % dirs.length]!;
        const toName = NAMES[op.name % NAMES.length]!;
        const replaced = d.index.lookup(to, toName);
        const replacedContent = replaced !== undefined && replaced !== ino ? contentOf(d, replaced) : undefined;
        d.index.rename(from.parent, from.name, to, toName, now, isOpen);
        if (replacedContent) outcome.dropped.add(replacedContent);
        break;
      }
      case 'delete': {
        const all = nodesOf(d, false).filter((ino) => ino !== ROOT_INO);
        if (all.length === 0) return;
        const ino = all[op.node % all.length]!;
        const at = nameOf(d, ino);
        if (!at) return;
        const content = contentOf(d, ino);
        if (isDir(d.index.getInode(ino)!.mode)) d.index.rmdir(at.parent, at.name, now);
        else d.index.unlink(at.parent, at.name, now, isOpen);
        if (content) outcome.dropped.add(content);
        break;
      }
      case 'publish': {
        const from = op.during ? devices[op.during.from % devices.length]! : undefined;
        publish(d, from && from !== d ? () => deliver(d, devices.indexOf(from), from, op.during!.upTo) : undefined, op.batch);
        break;
      }
      case 'deliver': {
        const from = devices[op.from % devices.length]!;
        if (from === d) return;
        deliver(d, devices.indexOf(from), from, op.upTo);
        break;
      }
    }
  } catch (err) {
    // The filesystem's own refusals (EEXIST, ENOTEMPTY, EINVAL for a move into itself…) change nothing.
    if (!(err instanceof FsError)) throw err;
  }
}

function publish(d: Device, meanwhile?: () => void, batch = 10_000): void {
  for (let guard = 0; d.index.replica.pendingCount() > 0 && guard < 1000; guard++) {
    const clock = d.clock + 1;
    const { records, gens } = d.index.replica.pendingRecords(clock, d.id, 1_000_000 + writes, batch);
    if (guard === 0) meanwhile?.();
    const seq = d.journal.length + (records.length > 0 ? 1 : 0);
    d.index.replica.markPublished(records, gens, records.length > 0 ? { device: d.id, seq, hash: `hash-${seq}` } : undefined);
    d.clock = Math.max(d.clock, clock);
    if (records.length > 0) d.journal.push({ clock, records });
  }
}

function deliver(d: Device, fromIndex: number, from: Device, upTo: number): void {
  const done = d.applied[fromIndex] ?? 0;
  const until = Math.min(from.journal.length, done + 1 + (upTo % Math.max(1, from.journal.length - done)));
  for (let seq = done; seq < until; seq++) {
    const entry = from.journal[seq]!;
    d.index.replica.applyRecords(entry.records, 1_000_000 + writes, { device: from.id, seq: seq + 1, hash: `hash-${seq + 1}` });
    d.clock = Math.max(d.clock, entry.clock);
  }
  d.applied[fromIndex] = until;
}

let snapshots = 0;

/**
 * A device that starts from a checkpoint of `d` (when `d` has nothing unpublished), as a clone
 * does: the checkpoint's rows loaded into a new index, then the entries after what it covers.
 */
async function fromCheckpoint(d: Device, devices: Device[], id: number): Promise<Device | undefined> {
  if (d.index.replica.pendingCount() > 0) return undefined;
  const snapshot = await IndexSnapshot.take(d.index, join(tmpdir(), `coffer-model-${process.pid}-${snapshots++}.db`));
  try {
    if (!snapshot.publishedOnly()) return undefined;
    const clone = makeDevice(id);
    const loader = new CheckpointLoader(clone.index);
    const rows: Partial<Record<CheckpointTable, number>> = {};
    for (const table of CHECKPOINT_TABLES) {
      for (const batch of snapshot.rows(table, 7)) {
        loader.load(table, batch.map((text) => JSON.parse(text) as unknown[]), table);
        rows[table] = (rows[table] ?? 0) + batch.length;
      }
    }
    const covers = snapshot.marks();
    loader.finish(rows, covers, 'model checkpoint');
    clone.clock = d.clock;
    clone.applied = devices.map((x) => covers[x.id]?.seq ?? 0);
    return clone;
  } finally {
    await snapshot.close();
  }
}

/** path → "dir" or the content id, walking from the root; throws on a cycle. */
function treeOf(d: Device): Record<string, string> {
  const tree: Record<string, string> = {};
  const walk = (ino: number, path: string, depth: number) => {
    if (depth > 64) throw new Error(`a cycle on device ${d.id} at ${path}`);
    for (const { name, ino: child } of d.index.listEntries(ino)) {
      const inode = d.index.getInode(child)!;
      const p = `${path}/${name}`;
      tree[p] = isDir(inode.mode) ? 'dir' : (contentOf(d, child) ?? 'empty');
      if (isDir(inode.mode)) walk(child, p, depth + 1);
    }
  };
  walk(ROOT_INO, '', 0);
  return tree;
}

async function run(ops: Op[], deviceCount: number): Promise<void> {
  writes = 0;
  const devices = Array.from({ length: deviceCount }, (_, i) => makeDevice(i));
  const clones: Device[] = [];
  const outcome: Outcome = { dropped: new Set(), written: new Set() };
  try {
    for (const op of ops) apply(devices, op, outcome);
    const pick = devices[ops.length % deviceCount]!;
    const early = await fromCheckpoint(pick, devices, deviceCount);
    if (early) clones.push(early);
    for (let round = 0; round < 3; round++) {
      for (const d of devices) publish(d);
      if (round === 0) {
        const late = await fromCheckpoint(pick, devices, deviceCount + 1);
        if (late) clones.push(late);
      }
      for (const [i, d] of [...devices, ...clones].entries()) {
        for (const [j, from] of devices.entries()) if (i !== j) deliver(d, j, from, Number.MAX_SAFE_INTEGER);
      }
    }
    const trees = devices.map(treeOf);
    for (const tree of trees.slice(1)) expect(tree).toEqual(trees[0]);
    for (const clone of clones) expect(treeOf(clone), 'a device started from a checkpoint').toEqual(trees[0]);
    const shown = new Set(Object.values(trees[0]!));
    for (const content of outcome.written) {
      if (!outcome.dropped.has(content)) expect(shown.has(content), `write ${content.slice(0, 8)} was lost`).toBe(true);
    }
  } finally {
    for (const d of [...devices, ...clones]) d.index.close();
  }
}

const opArb: fc.Arbitrary<Op> = fc.oneof(
  fc.record({ kind: fc.constant('create' as const), device: fc.nat(3), dir: fc.nat(8), name: fc.nat(4), dirNode: fc.boolean() }),
  fc.record({ kind: fc.constant('write' as const), device: fc.nat(3), node: fc.nat(8) }),
  fc.record({ kind: fc.constant('move' as const), device: fc.nat(3), node: fc.nat(8), dir: fc.nat(8), name: fc.nat(4) }),
  fc.record({ kind: fc.constant('delete' as const), device: fc.nat(3), node: fc.nat(8) }),
  fc.record({
    kind: fc.constant('publish' as const),
    device: fc.nat(3),
    during: fc.option(fc.record({ from: fc.nat(3), upTo: fc.nat(4) }), { nil: undefined, freq: 3 }),
    batch: fc.option(fc.integer({ min: 1, max: 3 }), { nil: undefined, freq: 2 }),
  }),
  fc.record({ kind: fc.constant('deliver' as const), device: fc.nat(3), from: fc.nat(3), upTo: fc.nat(4) }),
);

/** Sequences fast-check once found failing, kept so they never fail again unnoticed. */
const REGRESSIONS: { devices: number; ops: Op[] }[] = [
  // A file made where a folder of the same name was just published with a child deleted.
  {
    devices: 2,
    ops: [
      { kind: 'create', device: 1, dir: 0, name: 0, dirNode: true },
      { kind: 'create', device: 1, dir: 3, name: 0, dirNode: false },
      { kind: 'publish', device: 1 },
      { kind: 'delete', device: 1, node: 0 },
      { kind: 'create', device: 0, dir: 0, name: 0, dirNode: false },
    ],
  },
  // A file made in another device's folder reaches a third device before the folder's own entry does.
  {
    devices: 3,
    ops: [
      { kind: 'create', device: 0, dir: 0, name: 0, dirNode: true },
      { kind: 'publish', device: 0 },
      { kind: 'deliver', device: 2, from: 0, upTo: 0 },
      { kind: 'create', device: 2, dir: 1, name: 1, dirNode: false },
      { kind: 'write', device: 2, node: 0 },
      { kind: 'publish', device: 2 },
      { kind: 'deliver', device: 1, from: 2, upTo: 0 },
    ],
  },
  // A version that lost (and so was shown as a conflicted copy) is superseded by a later one of
  // its device: the copy of the old version goes, the new one's copy replaces it.
  {
    devices: 2,
    ops: [
      { kind: 'create', device: 0, dir: 0, name: 0, dirNode: false },
      { kind: 'write', device: 0, node: 0 },
      { kind: 'publish', device: 0 },
      { kind: 'deliver', device: 1, from: 0, upTo: 0 },
      { kind: 'write', device: 1, node: 0 },
      { kind: 'publish', device: 1 },
      { kind: 'write', device: 1, node: 0 },
      { kind: 'publish', device: 1 },
      { kind: 'create', device: 0, dir: 0, name: 1, dirNode: false },
      { kind: 'publish', device: 0 },
      { kind: 'write', device: 0, node: 0 },
      { kind: 'publish', device: 0 },
      { kind: 'deliver', device: 0, from: 1, upTo: 0 },
    ],
  },
  // Another device's version arrives while this device's edit is being published with a clock
  // taken before it: the pending edit won while pending, the published one may lose.
  {
    devices: 2,
    ops: [
      { kind: 'create', device: 0, dir: 0, name: 0, dirNode: false },
      { kind: 'write', device: 0, node: 0 },
      { kind: 'publish', device: 0 },
      { kind: 'deliver', device: 1, from: 0, upTo: 0 },
      { kind: 'create', device: 0, dir: 0, name: 1, dirNode: false },
      { kind: 'publish', device: 0 },
      { kind: 'write', device: 0, node: 0 },
      { kind: 'publish', device: 0 },
      { kind: 'write', device: 1, node: 0 },
      { kind: 'publish', device: 1, during: { from: 0, upTo: 3 } },
    ],
  },
  // Two folders moved into each other on two devices; one device's move is merged with the
  // other's while it is being published (node ids are random: which folder is which on the
  // second device varies, so this one is replayed several times).
  ...Array.from({ length: 8 }, () => ({
    devices: 2,
    ops: [
      { kind: 'create', device: 0, dir: 0, name: 0, dirNode: true },
      { kind: 'create', device: 0, dir: 0, name: 1, dirNode: true },
      { kind: 'publish', device: 0 },
      { kind: 'deliver', device: 1, from: 0, upTo: 0 },
      { kind: 'move', device: 0, node: 0, dir: 2, name: 0 },
      { kind: 'move', device: 1, node: 1, dir: 1, name: 1 },
      { kind: 'publish', device: 1 },
      { kind: 'publish', device: 0, during: { from: 1, upTo: 0 } },
    ] as Op[],
  })),
  // A file published in an entry before the one holding its new folder (a publish cut into
  // entries of one record): the folder's arrival must show it. Which record comes first follows
  // the random node ids, so this one is replayed several times.
  ...Array.from({ length: 8 }, () => ({
    devices: 2,
    ops: [
      { kind: 'create', device: 0, dir: 0, name: 0, dirNode: true },
      { kind: 'create', device: 0, dir: 1, name: 0, dirNode: false },
      { kind: 'create', device: 0, dir: 1, name: 1, dirNode: true },
      { kind: 'create', device: 0, dir: 2, name: 2, dirNode: false },
      { kind: 'publish', device: 0, batch: 1 },
    ] as Op[],
  })),
];

describe('merging, model-based', () => {
  it('replays every kept regression', async () => {
    for (const { devices, ops } of REGRESSIONS) await run(ops, devices);
  });

  it('shows what came in an entry before its folder once the folder comes, a subtree too', () => {
    const [a, b] = [makeDevice(0), makeDevice(1)];
    try {
      const now = 1_000;
      const top = a.index.createNode(ROOT_INO, 'top', { mode: S_IFDIR | 0o755, uid: 0, gid: 0 }, now).ino;
      a.index.createNode(top, 'file', { mode: S_IFREG | 0o644, uid: 0, gid: 0 }, now);
      const sub = a.index.createNode(top, 'sub', { mode: S_IFDIR | 0o755, uid: 0, gid: 0 }, now).ino;
      a.index.createNode(sub, 'deep', { mode: S_IFREG | 0o644, uid: 0, gid: 0 }, now);
      const { records } = a.index.replica.pendingRecords(1, a.id, now, 100);
      const topId = a.index.db.prepare<[number], { nid: Buffer }>('SELECT nid FROM inodes WHERE ino = ?').get(top)!.nid.toString('hex');
      // Everything but the top folder first, as a publish cut into entries may send it.
      b.index.replica.applyRecords(records.filter((r) => r.id !== topId), now, { device: a.id, seq: 1, hash: 'h1' });
      expect(treeOf(b)).toEqual({});
      b.index.replica.applyRecords(records.filter((r) => r.id === topId), now, { device: a.id, seq: 2, hash: 'h2' });
      expect(treeOf(b)).toEqual({ '/top': 'dir', '/top/file': 'empty', '/top/sub': 'dir', '/top/sub/deep': 'empty' });
    } finally {
      a.index.close();
      b.index.close();
    }
  });

  it(`converges and loses no write, over ${MODEL_RUNS} random histories of 2 and 3 devices`, async () => {
    await fc.assert(
      fc.asyncProperty(fc.integer({ min: 2, max: 3 }), fc.array(opArb, { maxLength: Number(process.env.COFFER_MODEL_OPS ?? 40) }), (deviceCount, ops) => run(ops, deviceCount)),
      { numRuns: MODEL_RUNS },
    );
  }, 600_000);
});
