/**
 * The index's side of checkpoints (docs/FORMAT.md, "Checkpoints"): a copy of the index taken at
 * one moment and dumped table by table as checkpoint rows, and a new index filled from them.
 *
 * Invariants:
 * - The dump reads a private copy made with SQLite's online backup, never the live index: the
 *   daemon holds its index with an exclusive lock, and one long read on its connection would
 *   hold the thread that serves FUSE. The backup copies pages a step at a time between requests.
 * - Only a copy without local changes is a checkpoint (`publishedOnly`): what it holds is then
 *   the merge of published versions alone, which every device computes alike.
 * - No await inside a better-sqlite3 transaction: each loaded part is one synchronous transaction.
 * - Loading appends in key order wherever the checkpoint's order allows. The two tables keyed in
 *   an order no part follows (chunks by id, placements by parent) are built at the end, each by
 *   one sorted INSERT … SELECT: a million random inserts into tables larger than the page cache
 *   cost several times as much.
 */
import { rm } from 'node:fs/promises';
import Database from 'better-sqlite3';
import { CofferError } from '../errors.js';
import { ROOT_NODE_ID } from '../format/journal.js';
import type { CheckpointTable, JournalMark } from '../format/checkpoint.js';
import { PENDING_STAMP } from './merge.js';
import { ROOT_INO } from './schema.js';
import type { VaultIndex } from './vault-index.js';

type Row = (string | number | null)[];

const hex = (b: Buffer) => b.toString('hex');

/** Per table: the rows after a key, in key order, as checkpoint rows; the key of a row. */
interface TableReader {
  sql: string;
  key: (r: Record<string, unknown>) => unknown[];
  start: unknown[];
  row: (r: Record<string, unknown>) => Row;
}

const READERS: Record<CheckpointTable, TableReader> = {
  devices: {
    sql: 'SELECT id, name FROM devices WHERE id > ? ORDER BY id LIMIT ?',
    start: [''],
    key: (r) => [r.id],
    row: (r) => [r.id as string, r.name as string],
  },
  inodes: {
    sql: 'SELECT * FROM inodes WHERE ino > ? AND nid IS NOT NULL AND (nlink > 0 OR ino = 1) ORDER BY ino LIMIT ?',
    start: [0],
    key: (r) => [r.ino],
    row: (r) => [hex(r.nid as Buffer), r.mode as number, r.uid as number, r.gid as number, r.nlink as number, r.size as number, r.rdev as number, r.atime_ms as number, r.mtime_ms as number, r.ctime_ms as number, r.target as string | null],
  },
  entries: {
    sql: 'SELECT e.parent, e.name, p.nid AS pnid, c.nid AS cnid FROM entries e JOIN inodes p ON p.ino = e.parent JOIN inodes c ON c.ino = e.ino WHERE (e.parent, e.name) > (?, ?) ORDER BY e.parent, e.name LIMIT ?',
    start: [0, ''],
    key: (r) => [r.parent, r.name],
    row: (r) => [hex(r.pnid as Buffer), r.name as string, hex(r.cnid as Buffer)],
  },
  file_chunks: {
    sql:
      'SELECT f.ino, f.idx, i.nid, f.chunk, c.plain_size, c.sealed_size FROM file_chunks f JOIN inodes i ON i.ino = f.ino JOIN chunks c ON c.id = f.chunk ' +
      'WHERE (f.ino, f.idx) > (?, ?) AND i.nlink > 0 ORDER BY f.ino, f.idx LIMIT ?',
    start: [0, -1],
    key: (r) => [r.ino, r.idx],
    row: (r) => [hex(r.nid as Buffer), r.idx as number, hex(r.chunk as Buffer), r.plain_size as number, r.sealed_size as number],
  },
  xattrs: {
    sql: 'SELECT x.ino, x.name, i.nid, x.value FROM xattrs x JOIN inodes i ON i.ino = x.ino WHERE (x.ino, x.name) > (?, ?) AND i.nlink > 0 ORDER BY x.ino, x.name LIMIT ?',
    start: [0, ''],
    key: (r) => [r.ino, r.name],
    row: (r) => [hex(r.nid as Buffer), r.name as string, (r.value as Buffer).toString('base64')],
  },
  nodes: {
    sql: 'SELECT * FROM nodes WHERE nid > ? ORDER BY nid LIMIT ?',
    start: [Buffer.alloc(0)],
    key: (r) => [r.nid],
    row: (r) => [hex(r.nid as Buffer), r.names as string, r.place_stamp as string, r.displaced as number, r.deleted as number, r.live as number, r.is_dir as number, r.reflected as string],
  },
  derived: {
    sql: 'SELECT * FROM derived WHERE nid > ? ORDER BY nid LIMIT ?',
    start: [Buffer.alloc(0)],
    key: (r) => [r.nid],
    row: (r) => [hex(r.nid as Buffer), hex(r.source as Buffer), r.stamp as string],
  },
  versions: {
    sql: 'SELECT * FROM versions WHERE (nid, stamp) > (?, ?) ORDER BY nid, stamp LIMIT ?',
    start: [Buffer.alloc(0), ''],
    key: (r) => [r.nid, r.stamp],
    row: (r) => [hex(r.nid as Buffer), r.stamp as string, r.prev as string, r.time as number, r.body as string, r.head as number],
  },
  superseded: {
    sql: 'SELECT * FROM superseded WHERE (nid, stamp) > (?, ?) ORDER BY nid, stamp LIMIT ?',
    start: [Buffer.alloc(0), ''],
    key: (r) => [r.nid, r.stamp],
    row: (r) => [hex(r.nid as Buffer), r.stamp as string],
  },
};

/** A private copy of the index at one moment, read in short steps. */
export class IndexSnapshot {
  private constructor(
    private readonly db: Database.Database,
    private readonly path: string,
  ) {}

  /** Copies `index` to `path` (replaced) without holding its connection for long. */
  static async take(index: VaultIndex, path: string): Promise<IndexSnapshot> {
    await rm(path, { force: true });
    await rm(`${path}-journal`, { force: true });
    await index.db.backup(path, { progress: () => 2000 });
    const db = new Database(path);
    db.pragma('journal_mode = DELETE');
    return new IndexSnapshot(db, path);
  }

  /** No local change is waiting in the copy, and no node is placed by one. */
  publishedOnly(): boolean {
    if (this.db.prepare('SELECT 1 FROM dirty LIMIT 1').get()) return false;
    return true;
  }

  /** For each device, the last entry the copy holds. */
  marks(): Record<string, JournalMark> {
    const rows = this.db.prepare<[], { device: string; seq: number; hash: string }>('SELECT device, seq, hash FROM marks').all();
    return Object.fromEntries(rows.map((r) => [r.device, { seq: r.seq, hash: r.hash }]));
  }

  /**
   * The rows of `table` as JSON texts, `batch` at a time (each batch one short query): the caller
   * may await between batches. Throws NOT_PUBLISHED if a node is placed by a local change.
   */
  *rows(table: CheckpointTable, batch = 2000): Generator<string[]> {
    const reader = READERS[table];
    const stmt = this.db.prepare(reader.sql);
    let after = reader.start;
    for (;;) {
      const got = stmt.all(...after, batch) as Record<string, unknown>[];
      if (got.length === 0) return;
      if (table === 'nodes' && got.some((r) => r.place_stamp === PENDING_STAMP)) {
        throw new CofferError('CORRUPT_FORMAT', 'the index holds a node placed by a change not yet published: no checkpoint now');
      }
      yield got.map((r) => JSON.stringify(reader.row(r)));
      after = reader.key(got.at(-1)!);
    }
  }

  async close(): Promise<void> {
    this.db.close();
    await rm(this.path, { force: true });
  }
}

function bad(where: string, what: string): never {
  throw new CofferError('CORRUPT_FORMAT', `${where}: ${what}`);
}

const isInt = (v: unknown): v is number => typeof v === 'number' && Number.isSafeInteger(v);
const isStr = (v: unknown): v is string => typeof v === 'string';
const isHex = (v: unknown, digits: number): v is string => typeof v === 'string' && v.length === digits && /^[0-9a-f]+$/.test(v);

/**
 * Fills a new index (made with its root, no local change) from checkpoint rows, one part per call,
 * in the order the checkpoint holds them. `where` names the part in errors.
 */
export class CheckpointLoader {
  private readonly st;
  private readonly counts: Partial<Record<CheckpointTable, number>> = {};

  constructor(private readonly index: VaultIndex) {
    const db = index.db;
    // The chunk sizes file_chunks rows carry, until finish() builds the chunks table from them.
    db.exec('DROP TABLE IF EXISTS temp.load_chunks; CREATE TEMP TABLE load_chunks (id BLOB NOT NULL, plain_size INTEGER NOT NULL, sealed_size INTEGER NOT NULL)');
    this.st = {
      device: db.prepare('INSERT INTO devices (id, name) VALUES (?, ?) ON CONFLICT (id) DO UPDATE SET name = excluded.name'),
      root: db.prepare('UPDATE inodes SET mode = ?, uid = ?, gid = ?, nlink = ?, size = ?, rdev = ?, atime_ms = ?, mtime_ms = ?, ctime_ms = ?, target = ? WHERE ino = ?'),
      inode: db.prepare('INSERT INTO inodes (nid, mode, uid, gid, nlink, size, rdev, atime_ms, mtime_ms, ctime_ms, target) VALUES (unhex(?), ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)'),
      entry: db.prepare('INSERT INTO entries (parent, name, ino) SELECT p.ino, ?, c.ino FROM inodes p, inodes c WHERE p.nid = unhex(?) AND c.nid = unhex(?)'),
      loadChunk: db.prepare('INSERT INTO load_chunks (id, plain_size, sealed_size) VALUES (unhex(?), ?, ?)'),
      chunks: db.prepare(
        'INSERT INTO chunks (id, plain_size, sealed_size, refs, uploaded) SELECT id, min(plain_size), min(sealed_size), count(*), 1 FROM load_chunks GROUP BY id ORDER BY id',
      ),
      fileChunk: db.prepare('INSERT INTO file_chunks (ino, idx, chunk) SELECT ino, ?, unhex(?) FROM inodes WHERE nid = unhex(?)'),
      xattr: db.prepare('INSERT INTO xattrs (ino, name, value) SELECT ino, ?, ? FROM inodes WHERE nid = unhex(?)'),
      node: db.prepare('INSERT INTO nodes (nid, names, place_stamp, displaced, deleted, live, is_dir, reflected) VALUES (unhex(?), ?, ?, ?, ?, ?, ?, ?)'),
      placements: db.prepare(
        "INSERT OR IGNORE INTO placements (parent, name, nid) SELECT unhex(p.value ->> 0), p.value ->> 1, n.nid FROM nodes n, json_each(n.names) p ORDER BY 1, 2, 3",
      ),
      derived: db.prepare('INSERT INTO derived (nid, source, stamp) VALUES (unhex(?), unhex(?), ?)'),
      version: db.prepare('INSERT INTO versions (nid, stamp, prev, time, body, head) VALUES (unhex(?), ?, ?, ?, ?, ?)'),
      superseded: db.prepare('INSERT INTO superseded (nid, stamp) VALUES (unhex(?), ?)'),
      mark: db.prepare('INSERT INTO marks (device, seq, hash) VALUES (?, ?, ?) ON CONFLICT (device) DO UPDATE SET seq = excluded.seq, hash = excluded.hash'),
    };
  }

  load(table: CheckpointTable, rows: unknown[][], where: string): void {
    this.index.db.transaction(() => {
      for (const [i, r] of rows.entries()) {
        const at = `${where}, row ${i}`;
        try {
          this.loadRow(table, r, at);
        } catch (err) {
          if (err instanceof CofferError) throw err;
          bad(at, (err as Error).message); // a row SQLite refuses (a duplicate, a broken reference)
        }
      }
    })();
    this.counts[table] = (this.counts[table] ?? 0) + rows.length;
  }

  private loadRow(table: CheckpointTable, r: unknown[], at: string): void {
    const st = this.st;
    switch (table) {
      case 'devices':
        if (r.length !== 2 || !isHex(r[0], 32) || !isStr(r[1])) bad(at, 'a device row must be [id, name]');
        st.device.run(r[0], r[1]);
        return;
      case 'inodes': {
        if (r.length !== 11 || !isHex(r[0], 32) || !r.slice(1, 10).every(isInt) || !(r[10] === null || isStr(r[10]))) bad(at, 'an inode row is malformed');
        const values = r.slice(1);
        if (r[0] === ROOT_NODE_ID) st.root.run(...values, ROOT_INO);
        else st.inode.run(r[0], ...values);
        return;
      }
      case 'entries':
        if (r.length !== 3 || !isHex(r[0], 32) || !isStr(r[1]) || r[1] === '' || r[1].includes('/') || !isHex(r[2], 32)) bad(at, 'an entry row is malformed');
        if (st.entry.run(r[1], r[0], r[2]).changes !== 1) bad(at, `entry ${JSON.stringify(r[1])} names a node the checkpoint does not hold`);
        return;
      case 'file_chunks': {
        if (r.length !== 5 || !isHex(r[0], 32) || !isInt(r[1]) || !isHex(r[2], 64) || !isInt(r[3]) || !isInt(r[4])) bad(at, 'a chunk row is malformed');
        if (st.fileChunk.run(r[1], r[2], r[0]).changes !== 1) bad(at, 'a chunk row names a node the checkpoint does not hold');
        st.loadChunk.run(r[2], r[3], r[4]);
        return;
      }
      case 'xattrs':
        if (r.length !== 3 || !isHex(r[0], 32) || !isStr(r[1]) || !isStr(r[2])) bad(at, 'an xattr row is malformed');
        if (st.xattr.run(r[1], Buffer.from(r[2], 'base64'), r[0]).changes !== 1) bad(at, 'an xattr row names a node the checkpoint does not hold');
        return;
      case 'nodes': {
        if (r.length !== 8 || !isHex(r[0], 32) || !isStr(r[1]) || !isStr(r[2]) || !r.slice(3, 7).every(isInt) || !isStr(r[7])) bad(at, 'a node row is malformed');
        const names = JSON.parse(r[1]) as unknown;
        if (!Array.isArray(names) || !names.every((n) => Array.isArray(n) && n.length === 2 && isHex(n[0], 32) && isStr(n[1]))) bad(at, 'a node row names its places wrongly');
        st.node.run(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7]); // its placements are built by finish()
        return;
      }
      case 'derived':
        if (r.length !== 3 || !isHex(r[0], 32) || !isHex(r[1], 32) || !isStr(r[2])) bad(at, 'a derived row is malformed');
        st.derived.run(r[0], r[1], r[2]);
        return;
      case 'versions':
        if (r.length !== 6 || !isHex(r[0], 32) || !isStr(r[1]) || !isStr(r[2]) || !isInt(r[3]) || !isStr(r[4]) || !isInt(r[5])) bad(at, 'a version row is malformed');
        st.version.run(r[0], r[1], r[2], r[3], r[4], r[5]);
        return;
      case 'superseded':
        if (r.length !== 2 || !isHex(r[0], 32) || !isStr(r[1])) bad(at, 'a superseded row is malformed');
        st.superseded.run(r[0], r[1]);
        return;
    }
  }

  /**
   * After the last part: the row counts match the head's; then the chunks and placements tables
   * are built, and the marks are what the checkpoint covers.
   */
  finish(expected: Partial<Record<CheckpointTable, number>>, covers: Record<string, JournalMark>, where: string): void {
    for (const [table, n] of Object.entries(expected)) {
      if ((this.counts[table as CheckpointTable] ?? 0) !== n) bad(where, `it lists ${n} ${table} rows but its parts hold ${this.counts[table as CheckpointTable] ?? 0}`);
    }
    // SQLite lets each sort take as much memory as the page cache: 4 MiB for these, then spill.
    const cache = this.index.db.pragma('cache_size', { simple: true }) as number;
    this.index.db.pragma('cache_size = -4096');
    try {
      this.index.db.transaction(() => {
        this.st.chunks.run();
        this.st.placements.run();
        for (const [device, mark] of Object.entries(covers)) this.st.mark.run(device, mark.seq, mark.hash);
      })();
    } finally {
      this.index.db.pragma(`cache_size = ${cache}`);
    }
    this.index.db.exec('DROP TABLE load_chunks');
  }
}
