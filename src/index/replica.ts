/**
 * The index's side of format 2's journals: which nodes changed here and what they supersede, the
 * records a publish carries, and the merge of other devices' records into the local tree.
 *
 * The local tree (inodes, entries, xattrs, file_chunks) is what the mount shows: the merge of every
 * known version of every node (merge.ts), with this device's unpublished changes on top (a node in
 * `dirty`, or busy with unsaved writes, is merged as a version above every published one). What a
 * directory shows is decided from the merged places of its children alone, so every device that
 * knows the same versions shows the same names:
 * - two children with one name: the one placed first (lowest place stamp) keeps it, the others
 *   show `name (conflicted copy … from DEVICE)`;
 * - a deleted directory that still holds a live child stays (its added files survive);
 * - directories whose places form a cycle: the one placed last is shown at the root;
 * - a node whose parent is not known yet is not shown until the parent arrives.
 *
 * Invariants:
 * - No await inside a better-sqlite3 transaction: every method is synchronous; the public ones
 *   that write run in one transaction (or inside the caller's).
 * - Merging writes the local tree through its own statements, never through VaultIndex's
 *   mutations, so nothing a merge does is taken for a local change.
 */
import { randomBytes } from 'node:crypto';
import type Database from 'better-sqlite3';
import { ROOT_NODE_ID, makeStamp, stampDevice, type NodeBody, type NodeRecord, type Stamp } from '../format/journal.js';
import { PENDING_STAMP, bodyOf, conflictedName, copyNodeId, mergeVersions, type KnownVersion } from './merge.js';
import { ROOT_INO } from './schema.js';

const S_IFMT = 0o170000;
const S_IFDIR = 0o040000;
const isDirMode = (mode: number) => (mode & S_IFMT) === S_IFDIR;

export interface ReplicaHooks {
  /** An inode with writes not yet in the index: merged as a local change. */
  isBusy(ino: number): boolean;
  /** An inode some handle still has open: not purged when a merge deletes it. */
  isOpen(ino: number): boolean;
}

export interface MergeSummary {
  /** Nodes whose state changed here. */
  nodes: number;
  /** Conflicted copies that appeared. */
  conflicts: number;
}

/** A journal entry whose records the index now holds. */
export interface EntryMark {
  device: string;
  seq: number;
  hash: string;
}

interface NodeRow {
  names: string;
  place_stamp: string;
  displaced: number;
  deleted: number;
  live: number;
  is_dir: number;
  reflected: string;
}

const hex = (b: Buffer) => b.toString('hex');
const bin = (h: string) => Buffer.from(h, 'hex');

export class Replica {
  hooks: ReplicaHooks = { isBusy: () => false, isOpen: () => false };
  /** This device's name, for the conflicted copies of its own unpublished changes. */
  localDeviceName = 'this device';
  private readonly st;

  constructor(private readonly db: Database.Database) {
    this.st = {
      nidOf: db.prepare<[number], { nid: Buffer | null }>('SELECT nid FROM inodes WHERE ino = ?'),
      inoOf: db.prepare<[Buffer], { ino: number }>('SELECT ino FROM inodes WHERE nid = ?'),
      inode: db.prepare<[number], Record<string, number | string | null>>('SELECT * FROM inodes WHERE ino = ?'),
      names: db.prepare<[number], { pnid: Buffer; name: string }>('SELECT p.nid AS pnid, e.name FROM entries e JOIN inodes p ON p.ino = e.parent WHERE e.ino = ? ORDER BY p.nid, e.name'),
      chunks: db.prepare<[number], { idx: number; chunk: Buffer; plain_size: number; sealed_size: number }>(
        'SELECT f.idx, f.chunk, c.plain_size, c.sealed_size FROM file_chunks f JOIN chunks c ON c.id = f.chunk WHERE f.ino = ? ORDER BY f.idx',
      ),
      xattrs: db.prepare<[number], { name: string; value: Buffer }>('SELECT name, value FROM xattrs WHERE ino = ? ORDER BY name'),
      touch: db.prepare(
        "INSERT INTO dirty (nid, base, gen) SELECT i.nid, coalesce(n.reflected, '[]'), 1 FROM inodes i LEFT JOIN nodes n ON n.nid = i.nid WHERE i.ino = ? AND i.nid IS NOT NULL ON CONFLICT (nid) DO UPDATE SET gen = gen + 1",
      ),
      setGone: db.prepare('UPDATE dirty SET gone = ? WHERE nid = ?'),
      dirtyRow: db.prepare<[Buffer], { base: string; gen: number; gone: string | null }>('SELECT base, gen, gone FROM dirty WHERE nid = ?'),
      dirtyBatch: db.prepare<[number], { nid: Buffer; base: string; gen: number; gone: string | null }>('SELECT nid, base, gen, gone FROM dirty LIMIT ?'),
      dirtyCount: db.prepare<[], { n: number }>('SELECT count(*) AS n FROM dirty'),
      undirty: db.prepare('DELETE FROM dirty WHERE nid = ? AND gen = ?'),
      rebase: db.prepare('UPDATE dirty SET base = ? WHERE nid = ?'),
      node: db.prepare<[Buffer], NodeRow>('SELECT * FROM nodes WHERE nid = ?'),
      putNode: db.prepare(
        'INSERT INTO nodes (nid, names, place_stamp, displaced, deleted, live, is_dir, reflected) VALUES (@nid, @names, @place, 0, @deleted, @live, @isDir, @reflected) ' +
          'ON CONFLICT (nid) DO UPDATE SET names = excluded.names, place_stamp = excluded.place_stamp, deleted = excluded.deleted, live = excluded.live, is_dir = excluded.is_dir, reflected = excluded.reflected',
      ),
      setLive: db.prepare('UPDATE nodes SET live = ? WHERE nid = ?'),
      setDisplaced: db.prepare('UPDATE nodes SET displaced = ? WHERE nid = ?'),
      displaced: db.prepare<[], { nid: Buffer }>('SELECT nid FROM nodes WHERE displaced = 1'),
      dropPlacements: db.prepare('DELETE FROM placements WHERE nid = ?'),
      place: db.prepare('INSERT OR IGNORE INTO placements (parent, name, nid) VALUES (?, ?, ?)'),
      otherClaim: db.prepare<[Buffer, string, Buffer], { one: number }>('SELECT 1 AS one FROM placements WHERE parent = ? AND name = ? AND nid != ? LIMIT 1'),
      childPlacements: db.prepare<[Buffer], { name: string; nid: Buffer; place_stamp: string; live: number }>(
        'SELECT p.name, p.nid, n.place_stamp, n.live FROM placements p JOIN nodes n ON n.nid = p.nid WHERE p.parent = ? AND n.displaced = 0',
      ),
      displacedNodes: db.prepare<[], { nid: Buffer; names: string; place_stamp: string; live: number }>('SELECT nid, names, place_stamp, live FROM nodes WHERE displaced = 1'),
      liveChild: db.prepare<[Buffer], { one: number }>('SELECT 1 AS one FROM placements p JOIN nodes n ON n.nid = p.nid WHERE p.parent = ? AND n.live = 1 LIMIT 1'),
      localChildren: db.prepare<[number], { name: string; ino: number; nid: Buffer | null; mode: number; place_stamp: string | null }>(
        'SELECT e.name, e.ino, i.nid, i.mode, n.place_stamp FROM entries e JOIN inodes i ON i.ino = e.ino LEFT JOIN nodes n ON n.nid = i.nid WHERE e.parent = ?',
      ),
      heads: db.prepare<[Buffer], { stamp: string; prev: string; body: string; time: number }>('SELECT stamp, prev, body, time FROM versions WHERE nid = ? AND head = 1'),
      version: db.prepare<[Buffer, string], { stamp: string; prev: string; body: string; time: number }>('SELECT stamp, prev, body, time FROM versions WHERE nid = ? AND stamp = ?'),
      hasVersion: db.prepare<[Buffer, string], { one: number }>('SELECT 1 AS one FROM versions WHERE nid = ? AND stamp = ?'),
      anyVersion: db.prepare<[Buffer], { one: number }>('SELECT 1 AS one FROM versions WHERE nid = ? LIMIT 1'),
      isSuperseded: db.prepare<[Buffer, string], { one: number }>('SELECT 1 AS one FROM superseded WHERE nid = ? AND stamp = ?'),
      addVersion: db.prepare('INSERT INTO versions (nid, stamp, prev, time, body, head) VALUES (?, ?, ?, ?, ?, ?)'),
      supersede: db.prepare('INSERT OR IGNORE INTO superseded (nid, stamp) VALUES (?, ?)'),
      unhead: db.prepare('UPDATE versions SET head = 0 WHERE nid = ? AND stamp = ?'),
      derived: db.prepare<[Buffer], { source: Buffer; stamp: string }>('SELECT source, stamp FROM derived WHERE nid = ?'),
      copiesOf: db.prepare<[Buffer], { nid: Buffer }>('SELECT nid FROM derived WHERE source = ?'),
      dropNode: db.prepare('UPDATE nodes SET deleted = 1, live = 0 WHERE nid = ?'),
      putDerived: db.prepare('INSERT OR REPLACE INTO derived (nid, source, stamp) VALUES (?, ?, ?)'),
      dropDerived: db.prepare('DELETE FROM derived WHERE nid = ?'),
      deviceName: db.prepare<[string], { name: string }>('SELECT name FROM devices WHERE id = ?'),
      putMark: db.prepare('INSERT INTO marks (device, seq, hash) VALUES (?, ?, ?) ON CONFLICT (device) DO UPDATE SET seq = excluded.seq, hash = excluded.hash WHERE excluded.seq > marks.seq'),
      putDevice: db.prepare('INSERT INTO devices (id, name) VALUES (?, ?) ON CONFLICT (id) DO UPDATE SET name = excluded.name'),
      insertInode: db.prepare(
        'INSERT INTO inodes (nid, mode, uid, gid, nlink, size, rdev, atime_ms, mtime_ms, ctime_ms, target) VALUES (?, ?, ?, ?, 0, ?, ?, ?, ?, ?, ?)',
      ),
      updateInode: db.prepare('UPDATE inodes SET mode = ?, uid = ?, gid = ?, size = ?, rdev = ?, atime_ms = ?, mtime_ms = ?, ctime_ms = ?, target = ? WHERE ino = ?'),
      fileChunks: db.prepare<[number], { idx: number; chunk: Buffer }>('SELECT idx, chunk FROM file_chunks WHERE ino = ?'),
      putFileChunk: db.prepare('INSERT INTO file_chunks (ino, idx, chunk) VALUES (?, ?, ?) ON CONFLICT (ino, idx) DO UPDATE SET chunk = excluded.chunk'),
      deleteFileChunk: db.prepare('DELETE FROM file_chunks WHERE ino = ? AND idx = ?'),
      deleteFileChunks: db.prepare('DELETE FROM file_chunks WHERE ino = ?'),
      refChunk: db.prepare('UPDATE chunks SET refs = refs + 1, released_ms = NULL WHERE id = ?'),
      insertRemoteChunk: db.prepare('INSERT INTO chunks (id, plain_size, sealed_size, refs, uploaded) VALUES (?, ?, ?, 1, 1)'),
      keepRemoteCopy: db.prepare('DELETE FROM remote_garbage WHERE id = ?'),
      unrefChunk: db.prepare('UPDATE chunks SET refs = refs - 1, released_ms = CASE WHEN refs = 1 THEN ? ELSE released_ms END WHERE id = ?'),
      deleteXattrs: db.prepare('DELETE FROM xattrs WHERE ino = ?'),
      putXattr: db.prepare('INSERT INTO xattrs (ino, name, value) VALUES (?, ?, ?)'),
      insertEntry: db.prepare('INSERT INTO entries (parent, name, ino) VALUES (?, ?, ?)'),
      deleteEntry: db.prepare('DELETE FROM entries WHERE parent = ? AND name = ?'),
      renameEntry: db.prepare('UPDATE entries SET name = ? WHERE parent = ? AND name = ?'),
      entryCount: db.prepare<[number], { n: number }>('SELECT count(*) AS n FROM entries WHERE ino = ?'),
      subdirCount: db.prepare<[number], { n: number }>('SELECT count(*) AS n FROM entries e JOIN inodes i ON i.ino = e.ino WHERE e.parent = ? AND (i.mode & 61440) = 16384'),
      setNlink: db.prepare('UPDATE inodes SET nlink = ? WHERE ino = ?'),
      deleteInode: db.prepare('DELETE FROM inodes WHERE ino = ?'),
      parentOfIno: db.prepare<[number], { parent: number }>('SELECT parent FROM entries WHERE ino = ? LIMIT 1'),
    };
  }

  // ---- local changes ----

  /** A new node id (random) for a node made on this device. */
  static newNodeId(): Buffer {
    return randomBytes(16);
  }

  /** Records that a node changed here (call inside the change's transaction). */
  touch(ino: number): void {
    this.st.touch.run(ino);
  }

  /** Records that a node is about to leave the local tree (its inode is purged), with where it was. */
  gone(ino: number, lastNames: [string, string][]): void {
    const nid = this.st.nidOf.get(ino)?.nid;
    if (!nid) return;
    const body = this.localBody(ino);
    if (!body) return;
    body.deleted = true;
    if (lastNames.length > 0) body.names = lastNames;
    else body.names = (JSON.parse(this.st.node.get(nid)?.names ?? '[]') as [string, string][]);
    this.st.touch.run(ino);
    this.st.setGone.run(JSON.stringify(body), nid);
  }

  /** The names of an inode as [parent node id, name] pairs (what `gone` wants before entries go). */
  namesOf(ino: number): [string, string][] {
    return this.st.names.all(ino).map((r) => [hex(r.pnid), r.name]);
  }

  nodeIdOf(ino: number): string | undefined {
    const nid = this.st.nidOf.get(ino)?.nid;
    return nid ? hex(nid) : undefined;
  }

  inoOf(nidHex: string): number | undefined {
    return this.st.inoOf.get(bin(nidHex))?.ino;
  }

  /** Drops every unpublished local change (a new index about to be filled from the journals). */
  forgetLocalChanges(): void {
    this.db.exec('DELETE FROM dirty');
  }

  /** How many nodes changed here wait to be published. */
  pendingCount(): number {
    return this.st.dirtyCount.get()!.n;
  }

  /** What the local tree holds for an inode, as a record body. */
  localBody(ino: number): NodeBody | undefined {
    const row = this.st.inode.get(ino);
    if (!row) return undefined;
    return {
      mode: row.mode as number,
      uid: row.uid as number,
      gid: row.gid as number,
      rdev: row.rdev as number,
      atimeMs: row.atime_ms as number,
      mtimeMs: row.mtime_ms as number,
      ctimeMs: row.ctime_ms as number,
      target: (row.target as string | null) ?? null,
      size: row.size as number,
      chunks: this.st.chunks.all(ino).map((c) => [c.idx, hex(c.chunk), c.plain_size, c.sealed_size]),
      xattrs: this.st.xattrs.all(ino).map((x) => [x.name, x.value.toString('base64')]),
      names: this.namesOf(ino),
      deleted: false,
      placed: PENDING_STAMP,
    };
  }

  /**
   * Up to `limit` records of local changes, stamped `clock` by `deviceHex`, with the generation of
   * each (markPublished forgets a change only if no newer one came meanwhile).
   */
  pendingRecords(clock: number, deviceHex: string, nowMs: number, limit: number): { records: NodeRecord[]; gens: Map<string, number> } {
    const stamp = makeStamp(clock, deviceHex);
    const records: NodeRecord[] = [];
    const gens = new Map<string, number>();
    for (const row of this.st.dirtyBatch.all(limit)) {
      const id = hex(row.nid);
      const ino = this.st.inoOf.get(row.nid)?.ino;
      const body = ino !== undefined ? this.localBody(ino) : row.gone ? (JSON.parse(row.gone) as NodeBody) : undefined;
      gens.set(id, row.gen);
      if (!body) continue;
      // Still where it was last placed: it keeps that stamp (and its claim to its name).
      const node = this.st.node.get(row.nid);
      const unmoved = node && node.place_stamp !== PENDING_STAMP && node.names === JSON.stringify(body.names) && node.deleted === (body.deleted ? 1 : 0);
      body.placed = unmoved ? node.place_stamp : stamp;
      const derived = this.st.derived.get(row.nid);
      const record: NodeRecord = { id, stamp, prev: derived ? [] : (JSON.parse(row.base) as Stamp[]), time: nowMs, ...body };
      if (derived) record.retires = [hex(derived.source), derived.stamp];
      records.push(record);
    }
    return { records, gens };
  }

  /** The records of one published entry (`mark`: which) are now versions like any other. */
  markPublished(records: NodeRecord[], gens: Map<string, number>, mark?: EntryMark): void {
    this.db.transaction(() => {
      if (mark) this.st.putMark.run(mark.device, mark.seq, mark.hash);
      for (const [id, gen] of gens) {
        if (!records.some((r) => r.id === id)) this.st.undirty.run(bin(id), gen);
      }
      const reshow = new Set<string>();
      for (const record of records) {
        const nid = bin(record.id);
        const old = this.st.node.get(nid);
        const names = JSON.stringify(record.names);
        // Shown anew below: a directory placed anew (it may close a cycle with others' moves), a
        // node a merge placed as a local change (its place now has a stamp), a name another node
        // also claims (it may change hands now that this one has its stamp).
        const placedAnew = !old || old.names !== names || old.deleted !== (record.deleted ? 1 : 0) || old.place_stamp !== record.placed;
        if (isDirMode(record.mode) ? placedAnew : old?.place_stamp === PENDING_STAMP) reshow.add(record.id);
        else if (record.names.some(([parent, name]) => this.st.otherClaim.get(bin(parent), name, nid))) reshow.add(record.id);
        this.addVersion(record);
        this.st.putNode.run({
          nid,
          names,
          place: record.placed,
          deleted: record.deleted ? 1 : 0,
          live: record.deleted ? 0 : 1,
          isDir: isDirMode(record.mode) ? 1 : 0,
          reflected: JSON.stringify([record.stamp]),
        });
        this.st.dropPlacements.run(nid);
        for (const [parent, name] of record.names) this.st.place.run(bin(parent), name, nid);
        if (this.st.undirty.run(nid, gens.get(record.id)!).changes === 0) this.st.rebase.run(JSON.stringify([record.stamp]), nid);
        this.st.dropDerived.run(nid);
      }
      // Published, these nodes are placed by their records now, not by local entries: show them
      // as every other device will.
      if (reshow.size > 0) this.materialize(reshow, Date.now());
    })();
  }

  /** This device's own records found published (adopted): its unpublished changes now supersede them. */
  rebaseOnOwn(records: NodeRecord[]): void {
    this.db.transaction(() => {
      for (const record of records) {
        if (this.st.dirtyRow.get(bin(record.id))) this.st.rebase.run(JSON.stringify([record.stamp]), bin(record.id));
      }
    })();
  }

  private addVersion(record: NodeRecord): boolean {
    const nid = bin(record.id);
    if (this.st.hasVersion.get(nid, record.stamp)) return false;
    const head = this.st.isSuperseded.get(nid, record.stamp) ? 0 : 1;
    this.st.addVersion.run(nid, record.stamp, JSON.stringify(record.prev), record.time, JSON.stringify(bodyOf(record)), head);
    for (const p of record.prev) {
      this.st.supersede.run(nid, p);
      this.st.unhead.run(nid, p);
    }
    if (record.retires) {
      const source = bin(record.retires[0]);
      this.st.supersede.run(source, record.retires[1]);
      this.st.unhead.run(source, record.retires[1]);
    }
    return true;
  }

  setDeviceName(deviceHex: string, name: string): void {
    this.st.putDevice.run(deviceHex, name);
  }

  deviceName(deviceHex: string): string {
    return this.st.deviceName.get(deviceHex)?.name ?? deviceHex.slice(0, 8);
  }

  // ---- merging ----

  /**
   * Adds other devices' records (or this device's own, read back) and shows the result in the
   * local tree, in one transaction. Records already known change nothing. `mark`: the entry they
   * came from.
   */
  applyRecords(records: NodeRecord[], nowMs: number, mark?: EntryMark): MergeSummary {
    return this.db.transaction(() => {
      if (mark) this.st.putMark.run(mark.device, mark.seq, mark.hash);
      const changed = new Set<string>();
      for (const record of records) {
        if (!this.addVersion(record)) continue;
        changed.add(record.id);
        if (record.retires) changed.add(record.retires[0]);
        this.st.dropDerived.run(bin(record.id));
      }
      return this.materialize(changed, nowMs);
    })();
  }

  private knownVersion(nid: Buffer, stamp: Stamp): KnownVersion | undefined {
    const row = this.st.version.get(nid, stamp);
    return row && { stamp: row.stamp, prev: JSON.parse(row.prev) as Stamp[], body: JSON.parse(row.body) as NodeBody };
  }

  private materialize(changed: Set<string>, nowMs: number): MergeSummary {
    const dirs = new Set<string>();
    const recheck = new Set<string>();
    const summary: MergeSummary = { nodes: 0, conflicts: 0 };
    // mergeNode may add to `changed` (what a directory new here holds): a Set's loop visits those too.
    for (const id of changed) this.mergeNode(id, changed, dirs, recheck, summary, nowMs);
    this.reviveDirectories(recheck, dirs);
    this.breakCycles(changed, dirs);
    const touchedInos = new Set<number>();
    // Parents before children does not matter: a directory shows what is placed in it by node id.
    for (const dir of dirs) this.showDirectory(dir, touchedInos);
    for (const ino of touchedInos) this.fixLinkCount(ino);
    for (const id of changed) this.purgeIfGone(id, nowMs);
    for (const ino of touchedInos) {
      const nid = this.st.nidOf.get(ino)?.nid;
      if (nid && !changed.has(hex(nid))) this.purgeIfGone(hex(nid), nowMs);
    }
    return summary;
  }

  private mergeNode(id: string, work: Set<string>, dirs: Set<string>, recheck: Set<string>, summary: MergeSummary, nowMs: number): void {
    const nid = bin(id);
    const heads: KnownVersion[] = this.st.heads.all(nid).map((r) => ({ stamp: r.stamp, prev: JSON.parse(r.prev) as Stamp[], body: JSON.parse(r.body) as NodeBody }));
    if (heads.length === 0) return;
    const ino = this.st.inoOf.get(nid)?.ino;
    const dirty = this.st.dirtyRow.get(nid);
    const old = this.st.node.get(nid);
    let pending: KnownVersion | undefined;
    if (dirty || (ino !== undefined && this.hooks.isBusy(ino))) {
      const body = ino !== undefined ? this.localBody(ino) : dirty?.gone ? (JSON.parse(dirty.gone) as NodeBody) : undefined;
      const base = dirty ? (JSON.parse(dirty.base) as Stamp[]) : (JSON.parse(old?.reflected ?? '[]') as Stamp[]);
      if (body) pending = { stamp: PENDING_STAMP, prev: base, body };
    }
    const merged = mergeVersions(pending ? [...heads, pending] : heads, (s) => this.knownVersion(nid, s));
    const body = merged.body;
    summary.nodes++;
    for (const [parent] of JSON.parse(old?.names ?? '[]') as [string, string][]) dirs.add(parent);
    for (const [parent] of body.names) dirs.add(parent);
    const placeStamp = merged.placeStamp === PENDING_STAMP ? PENDING_STAMP : merged.placeStamp;
    this.st.putNode.run({
      nid,
      names: JSON.stringify(body.names),
      place: placeStamp,
      deleted: body.deleted ? 1 : 0,
      live: body.deleted ? 0 : 1,
      isDir: isDirMode(body.mode) ? 1 : 0,
      reflected: pending ? (old?.reflected ?? '[]') : JSON.stringify(merged.absorbed),
    });
    this.st.dropPlacements.run(nid);
    for (const [parent, name] of body.names) this.st.place.run(bin(parent), name, nid);
    if (body.deleted) {
      if (isDirMode(body.mode)) recheck.add(id);
    } else {
      const target = ino ?? this.createInode(nid, body);
      if (ino === undefined && isDirMode(body.mode)) {
        // A directory new here: what was placed in it before it was shown (children that came in
        // an earlier entry, or a subtree hidden with it) has no inode yet; merged now, shown below.
        dirs.add(id);
        for (const child of this.st.childPlacements.all(nid)) {
          if (child.live !== 1 || this.st.inoOf.get(child.nid)) continue;
          work.add(hex(this.st.derived.get(child.nid)?.source ?? child.nid));
        }
      }
      this.applyBody(target, body, nowMs);
      if (dirty) this.st.touch.run(target); // what the merge took from others joins the pending change
    }
    for (const [parent] of body.names) recheck.add(parent);
    // Conflicted copies are what the current versions make them: a copy of a version that is no
    // longer a losing head (superseded since, or the winner now) goes, unless a change made it real.
    const wanted = new Set(merged.copies.map((c) => copyNodeId(id, c.stamp)));
    for (const { nid: copyNid } of this.st.copiesOf.all(nid)) {
      if (wanted.has(hex(copyNid)) || this.isMadeReal(copyNid)) continue;
      this.st.dropDerived.run(copyNid);
      this.st.dropNode.run(copyNid);
      for (const [parent] of JSON.parse(this.st.node.get(copyNid)?.names ?? '[]') as [string, string][]) dirs.add(parent);
      this.st.dropPlacements.run(copyNid);
    }
    for (const copy of merged.copies) {
      const copyId = copyNodeId(id, copy.stamp);
      const copyNid = bin(copyId);
      if (this.st.anyVersion.get(copyNid)) continue; // made real by a change of its own
      if (this.st.derived.get(copyNid) && this.st.inoOf.get(copyNid)) continue;
      const time = this.versionTime(nid, copy.stamp);
      const device = this.deviceName(stampDevice(copy.stamp));
      const names: [string, string][] = copy.body.names.slice(0, 1).map(([parent, name]) => [parent, conflictedName(name, time, device)]);
      const copyBody: NodeBody = { ...copy.body, names, deleted: false, placed: copy.stamp };
      this.st.putDerived.run(copyNid, nid, copy.stamp);
      this.st.putNode.run({ nid: copyNid, names: JSON.stringify(names), place: copy.stamp, deleted: 0, live: 1, isDir: isDirMode(copyBody.mode) ? 1 : 0, reflected: '[]' });
      this.st.dropPlacements.run(copyNid);
      for (const [parent, name] of names) {
        this.st.place.run(bin(parent), name, copyNid);
        dirs.add(parent);
        recheck.add(parent);
      }
      const existing = this.st.inoOf.get(copyNid)?.ino;
      this.applyBody(existing ?? this.createInode(copyNid, copyBody), copyBody, nowMs);
      summary.conflicts++;
    }
  }

  /** A conflicted copy changed here (edited, moved, deleted, or being written): no longer derived. */
  private isMadeReal(copyNid: Buffer): boolean {
    if (this.st.dirtyRow.get(copyNid) || this.st.anyVersion.get(copyNid)) return true;
    const ino = this.st.inoOf.get(copyNid)?.ino;
    return ino !== undefined && this.hooks.isBusy(ino);
  }

  /** When a version was made (names its conflicted copies); a copy's version is its source's. */
  private versionTime(nid: Buffer, stamp: Stamp): number {
    const own = this.st.version.get(nid, stamp)?.time;
    if (own !== undefined) return own;
    const derived = this.st.derived.get(nid);
    return (derived && this.st.version.get(derived.source, derived.stamp)?.time) ?? 0;
  }

  private createInode(nid: Buffer, body: NodeBody): number {
    const info = this.st.insertInode.run(nid, body.mode, body.uid, body.gid, body.size, body.rdev, body.atimeMs, body.mtimeMs, body.ctimeMs, body.target);
    return Number(info.lastInsertRowid);
  }

  private applyBody(ino: number, body: NodeBody, nowMs: number): void {
    this.st.updateInode.run(body.mode, body.uid, body.gid, body.size, body.rdev, body.atimeMs, body.mtimeMs, body.ctimeMs, body.target, ino);
    const current = new Map(this.st.fileChunks.all(ino).map((r) => [r.idx, r.chunk]));
    const wanted = new Map(body.chunks.map(([idx, id, plain, sealed]) => [idx, { id: bin(id), plain, sealed }]));
    for (const [idx, chunk] of current) {
      const want = wanted.get(idx);
      if (want && want.id.equals(chunk)) continue;
      this.st.unrefChunk.run(nowMs, chunk);
      if (!want) this.st.deleteFileChunk.run(ino, idx);
    }
    for (const [idx, want] of wanted) {
      const have = current.get(idx);
      if (have && have.equals(want.id)) continue;
      if (this.st.refChunk.run(want.id).changes === 0) this.st.insertRemoteChunk.run(want.id, want.plain, want.sealed);
      this.st.keepRemoteCopy.run(want.id);
      this.st.putFileChunk.run(ino, idx, want.id);
    }
    this.st.deleteXattrs.run(ino);
    for (const [name, value] of body.xattrs) this.st.putXattr.run(ino, name, Buffer.from(value, 'base64'));
  }

  /** Deleted directories that still hold a live child are shown (and so are their deleted parents). */
  private reviveDirectories(recheck: Set<string>, dirs: Set<string>): void {
    const queue = [...recheck];
    const seen = new Set<string>();
    while (queue.length > 0) {
      const id = queue.pop()!;
      if (seen.has(id) || id === ROOT_NODE_ID) continue;
      seen.add(id);
      const nid = bin(id);
      const node = this.st.node.get(nid);
      if (!node || node.deleted === 0 || node.is_dir === 0) continue;
      const ino = this.st.inoOf.get(nid)?.ino;
      const localChild = ino !== undefined && this.st.localChildren.all(ino).some((c) => !c.nid || this.isLocallyPlaced(c.nid, c.place_stamp));
      const live = this.st.liveChild.get(nid) !== undefined || localChild ? 1 : 0;
      if (live !== node.live) {
        this.st.setLive.run(live, nid);
        for (const [parent] of JSON.parse(node.names) as [string, string][]) {
          dirs.add(parent);
          queue.push(parent);
          seen.delete(parent);
        }
        if (live === 1 && ino === undefined) {
          const version = this.st.heads.all(nid).map((r) => JSON.parse(r.body) as NodeBody)[0];
          if (version) this.createInode(nid, version);
        }
        if (live === 1) dirs.add(id);
      }
    }
  }

  /** Directories whose merged places form a cycle: the one placed last is shown at the root. */
  private breakCycles(changed: Set<string>, dirs: Set<string>): void {
    const candidates = new Set<string>([...changed, ...this.st.displaced.all().map((r) => hex(r.nid))]);
    for (const id of candidates) {
      const start = this.st.node.get(bin(id));
      if (!start || start.is_dir === 0) continue;
      const path: { id: string; stamp: string }[] = [];
      const onPath = new Set<string>();
      let at: string | undefined = id;
      let cycleFrom = -1;
      for (let depth = 0; at !== undefined && at !== ROOT_NODE_ID && depth < 100_000; depth++) {
        if (onPath.has(at)) {
          cycleFrom = path.findIndex((p) => p.id === at);
          break;
        }
        const node = this.st.node.get(bin(at));
        if (!node) break;
        onPath.add(at);
        path.push({ id: at, stamp: node.place_stamp });
        at = (JSON.parse(node.names) as [string, string][])[0]?.[0];
      }
      const cycle = cycleFrom >= 0 ? path.slice(cycleFrom) : [];
      const loser = cycle.reduce<{ id: string; stamp: string } | undefined>((best, p) => (!best || p.stamp > best.stamp || (p.stamp === best.stamp && p.id > best.id) ? p : best), undefined);
      for (const p of cycleFrom >= 0 ? cycle : [{ id, stamp: '' }]) {
        const displaced = loser?.id === p.id ? 1 : 0;
        const node = this.st.node.get(bin(p.id))!;
        if (node.displaced !== displaced) this.st.setDisplaced.run(displaced, bin(p.id));
        // Shown at the root, or back in its parent: both folders show it anew (also when the flag
        // stays but the node changed, e.g. a local move of it was just published).
        if (node.displaced !== displaced || displaced === 1 || changed.has(p.id)) {
          dirs.add(ROOT_NODE_ID);
          for (const [parent] of JSON.parse(node.names) as [string, string][]) dirs.add(parent);
        }
      }
    }
  }

  /**
   * A node whose local entries are what it shows: changed here, unpublished, and placed by that
   * change. `placeStamp`: its nodes.place_stamp when the caller has it (null: no nodes row).
   */
  private isLocallyPlaced(nid: Buffer, placeStamp?: string | null): boolean {
    const place = placeStamp !== undefined ? placeStamp : (this.st.node.get(nid)?.place_stamp ?? null);
    if (place === null) return true; // made here and never published
    if (place !== PENDING_STAMP) return false;
    const ino = this.st.inoOf.get(nid)?.ino;
    return this.st.dirtyRow.get(nid) !== undefined || (ino !== undefined && this.hooks.isBusy(ino));
  }

  /** Makes a directory's entries what its children's merged places say (see the top of the file). */
  private showDirectory(dirId: string, touchedInos: Set<number>): void {
    const dirNid = bin(dirId);
    const dirIno = dirId === ROOT_NODE_ID ? ROOT_INO : this.st.inoOf.get(dirNid)?.ino;
    if (dirIno === undefined) return;
    const dirNode = dirId === ROOT_NODE_ID ? undefined : this.st.node.get(dirNid);
    const dirShown = dirId === ROOT_NODE_ID || (dirNode ? dirNode.live === 1 : true);
    interface Candidate {
      nid: string;
      name: string;
      stamp: string;
      local: boolean;
    }
    const candidates: Candidate[] = [];
    const current = this.st.localChildren.all(dirIno);
    if (dirShown) {
      for (const row of this.st.childPlacements.all(dirNid)) {
        if (row.live !== 1 || this.isLocallyPlaced(row.nid, row.place_stamp)) continue;
        candidates.push({ nid: hex(row.nid), name: row.name, stamp: row.place_stamp, local: false });
      }
      if (dirId === ROOT_NODE_ID) {
        for (const row of this.st.displacedNodes.all()) {
          const name = (JSON.parse(row.names) as [string, string][])[0]?.[1];
          if (row.live === 1 && name !== undefined && !this.isLocallyPlaced(row.nid, row.place_stamp)) candidates.push({ nid: hex(row.nid), name, stamp: row.place_stamp, local: false });
        }
      }
      for (const entry of current) {
        if (!entry.nid || this.isLocallyPlaced(entry.nid, entry.place_stamp)) candidates.push({ nid: entry.nid ? hex(entry.nid) : `ino:${entry.ino}`, name: entry.name, stamp: PENDING_STAMP, local: true });
      }
    }
    // Who keeps each name: placed first, then by node id.
    candidates.sort((a, b) => (a.stamp < b.stamp ? -1 : a.stamp > b.stamp ? 1 : a.nid < b.nid ? -1 : a.nid > b.nid ? 1 : 0));
    const used = new Set<string>();
    const wanted = new Map<string, Candidate>(); // shown name → candidate
    const firstTaken = new Set(candidates.map((c) => c.name));
    for (const c of candidates) {
      let shown = c.name;
      if (used.has(shown)) {
        const time = c.local ? Date.now() : this.versionTime(bin(c.nid), c.stamp);
        const device = c.local ? this.localDeviceName : this.deviceName(stampDevice(c.stamp));
        for (let attempt = 1; used.has(shown) || (attempt > 1 && firstTaken.has(shown)); attempt++) shown = conflictedName(c.name, time, device, attempt);
      }
      used.add(shown);
      wanted.set(shown, c);
    }
    const currentByName = new Map(current.map((e) => [e.name, e]));
    // Remove what should not be here, then rename and add.
    for (const entry of current) {
      const want = wanted.get(entry.name);
      const entryId = entry.nid ? hex(entry.nid) : `ino:${entry.ino}`;
      if (want && want.nid === entryId) continue;
      this.st.deleteEntry.run(dirIno, entry.name);
      currentByName.delete(entry.name);
      touchedInos.add(entry.ino);
      touchedInos.add(dirIno);
    }
    for (const [shown, c] of wanted) {
      if (currentByName.has(shown)) continue;
      const ino = c.nid.startsWith('ino:') ? Number(c.nid.slice(4)) : this.st.inoOf.get(bin(c.nid))?.ino;
      if (ino === undefined) continue;
      this.st.insertEntry.run(dirIno, shown, ino);
      // A local change renamed by the merge (it lost its name) is a new change of its own: an
      // entry being published meanwhile with the old name must not count as publishing it.
      if (c.local) this.st.touch.run(ino);
      touchedInos.add(ino);
      touchedInos.add(dirIno);
    }
  }

  private fixLinkCount(ino: number): void {
    const row = this.st.inode.get(ino);
    if (!row) return;
    const dir = isDirMode(row.mode as number);
    const names = this.st.entryCount.get(ino)!.n;
    const nlink = dir ? (names > 0 || ino === ROOT_INO ? 2 + this.st.subdirCount.get(ino)!.n : 0) : names;
    if (nlink !== row.nlink) this.st.setNlink.run(nlink, ino);
  }

  /** A node no longer shown anywhere leaves the local tree, unless a handle has it open. */
  private purgeIfGone(id: string, nowMs: number): void {
    if (id === ROOT_NODE_ID) return;
    const nid = bin(id);
    const ino = this.st.inoOf.get(nid)?.ino;
    if (ino === undefined || this.st.entryCount.get(ino)!.n > 0) return;
    if (this.isLocallyPlaced(nid)) return;
    if (this.hooks.isOpen(ino)) {
      this.st.setNlink.run(0, ino);
      return;
    }
    // A directory that goes takes what it shows with it (shown again when it is: mergeNode), but
    // stays, unshown, while it holds a change of this device's.
    const children = this.st.localChildren.all(ino);
    if (children.some((c) => !c.nid || this.isLocallyPlaced(c.nid, c.place_stamp))) {
      this.st.setNlink.run(0, ino);
      return;
    }
    for (const child of children) {
      this.st.deleteEntry.run(ino, child.name);
      this.fixLinkCount(child.ino);
      this.purgeIfGone(hex(child.nid!), nowMs);
    }
    for (const { chunk } of this.st.fileChunks.all(ino)) this.st.unrefChunk.run(nowMs, chunk);
    this.st.deleteFileChunks.run(ino);
    this.st.deleteXattrs.run(ino);
    this.st.deleteInode.run(ino);
  }
}
