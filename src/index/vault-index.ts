/**
 * The local index: inodes, directory entries, xattrs, each file's chunk map, the
 * chunk table with reference counts, and the upload queue, in one SQLite file (WAL).
 *
 * Invariants:
 * - No await inside a better-sqlite3 transaction: every method here is synchronous,
 *   and each mutating method is one transaction, so a crash leaves either all or none of it.
 * - The database is opened in EXCLUSIVE locking mode: the lock is held by the kernel
 *   for the life of the process, so a second daemon on the same vault cannot open it,
 *   and a killed daemon releases it.
 * - A chunk row exists while any file maps it (refs > 0) and for a grace period after
 *   (refs = 0, released_ms set) so that reads in flight finish before the local copy goes.
 * - Knows nothing of FUSE, files on disk or remotes: callers pass times and ids in.
 */
import Database from 'better-sqlite3';
import { FsError, CofferError } from '../errors.js';
import { createHash } from 'node:crypto';
import { closeSync, fsyncSync, openSync } from 'node:fs';
import { checkIndex } from './check.js';
import { INDEX_SCHEMA_VERSION, ROOT_INO, SCHEMA_BASE, SCHEMA_V2_ADDITIONS, UPGRADE_V1, MARKS_TABLE } from './schema.js';
import { Replica } from './replica.js';

export const S_IFMT = 0o170000;
export const S_IFDIR = 0o040000;
export const S_IFREG = 0o100000;
export const S_IFLNK = 0o120000;

export interface Inode {
  ino: number;
  mode: number;
  uid: number;
  gid: number;
  nlink: number;
  size: number;
  rdev: number;
  atimeMs: number;
  mtimeMs: number;
  ctimeMs: number;
  target: string | null;
}

export interface NewNode {
  mode: number;
  uid: number;
  gid: number;
  rdev?: number;
  target?: string;
}

export interface ChunkRef {
  id: Buffer;
  plainSize: number;
  sealedSize: number;
}

export interface IndexCounts {
  files: number;
  directories: number;
  symlinks: number;
  bytes: number;
  chunks: number;
  chunkBytes: number;
  pendingChunks: number;
  pendingBytes: number;
  failedChunks: number;
}

interface QueueTotals {
  chunks: number;
  bytes: number;
  failed: number;
}

export interface QueuedUpload {
  id: Buffer;
  attempts: number;
}

/** A row of the inodes table: an Inode whose times are in the table's snake_case columns. */
type InodeRow = Omit<Inode, 'atimeMs' | 'mtimeMs' | 'ctimeMs'> & { atime_ms: number; mtime_ms: number; ctime_ms: number };

function toInode(row: InodeRow): Inode {
  return {
    ino: row.ino,
    mode: row.mode,
    uid: row.uid,
    gid: row.gid,
    nlink: row.nlink,
    size: row.size,
    rdev: row.rdev,
    atimeMs: row.atime_ms,
    mtimeMs: row.mtime_ms,
    ctimeMs: row.ctime_ms,
    target: row.target,
  };
}

export const isDir = (mode: number) => (mode & S_IFMT) === S_IFDIR;

const ROOT_NID = Buffer.alloc(16);

export interface OpenIndexOptions {
  /** Create the schema and root directory if the file is new. */
  create?: { uid: number; gid: number; nowMs: number };
  readonly?: boolean;
  /** A version-1 index is upgraded to version 2 in place; node ids derive from the vault id (hex). */
  upgradeFrom1?: { vaultId: string };
  /**
   * A new index filled in one go by a caller that throws it away unless it finishes (a clone):
   * nothing is synced to disk until close(), which syncs it all. (Syncing at each of SQLite's WAL
   * checkpoints took a fifth of a 1,000,000-file clone.)
   */
  syncAtClose?: boolean;
}

export class VaultIndex {
  readonly db: Database.Database;
  /** Bumped on every change that a published snapshot should carry. */
  changeCount = 0;
  private purges = 0;
  private totals: (ReturnType<VaultIndex['scanTotals']> & { key: string }) | undefined;
  private queued: QueueTotals | undefined;
  private pendingFiles: { key: string; atMs: number; n: number } | undefined;

  private readonly st;
  /** What this device knows of the vault's versions, and the merge of other devices' changes. */
  readonly replica: Replica;

  private readonly syncAtClose: boolean;

  constructor(readonly path: string, options: OpenIndexOptions = {}) {
    this.syncAtClose = options.syncAtClose ?? false;
    try {
      // A busy index means another daemon holds it: fail at once instead of waiting.
      this.db = new Database(path, { readonly: options.readonly ?? false, fileMustExist: !options.create, timeout: 50 });
      if (!options.readonly) {
        this.db.pragma('locking_mode = EXCLUSIVE');
        this.db.pragma('journal_mode = WAL');
        this.db.pragma(options.syncAtClose ? 'synchronous = OFF' : 'synchronous = NORMAL');
        // 32 MiB of pages instead of SQLite's 2 MiB: merges and large listings touch many.
        this.db.pragma('cache_size = -32768');
        // Take the exclusive lock now rather than at the first write.
        this.db.exec('BEGIN IMMEDIATE; COMMIT');
      }
    } catch (err) {
      const code = (err as { code?: string }).code;
      if (code === 'SQLITE_BUSY' || code === 'SQLITE_LOCKED') {
        throw new CofferError('ALREADY_MOUNTED', 'the vault index is in use by another Coffer process', { cause: err });
      }
      if (code === 'SQLITE_CANTOPEN') {
        throw new CofferError('INDEX_DAMAGED', `the vault index ${path} is missing`, { cause: err });
      }
      if (code === 'SQLITE_NOTADB' || code === 'SQLITE_CORRUPT') {
        throw new CofferError('INDEX_DAMAGED', `the vault index ${path} is damaged (${(err as Error).message})`, { cause: err });
      }
      throw err;
    }
    const version = this.db.pragma('user_version', { simple: true }) as number;
    if (version === 0 && options.create) {
      this.initSchema(options.create);
    } else if (version === 1 && options.upgradeFrom1 && !options.readonly) {
      this.upgradeFrom1(options.upgradeFrom1.vaultId);
    } else if (version !== INDEX_SCHEMA_VERSION) {
      this.db.close();
      const hint = version === 1 ? ': it is a format-1 index; mount the vault (or run coffer upgrade) to upgrade it' : ` (expected ${INDEX_SCHEMA_VERSION})`;
      throw new CofferError('UNSUPPORTED_FORMAT', `index schema version ${version} is not supported${hint}`);
    }
    // Indexes added to schema 2 after its first vaults were made (no change to any table).
    if (!options.readonly && (this.db.pragma('user_version', { simple: true }) as number) === INDEX_SCHEMA_VERSION) {
      this.db.exec(`CREATE INDEX IF NOT EXISTS nodes_displaced ON nodes (nid) WHERE displaced = 1; CREATE INDEX IF NOT EXISTS derived_by_source ON derived (source); ${MARKS_TABLE}`);
    }
    this.st = this.prepare();
    this.replica = new Replica(this.db);
  }

  private initSchema(root: { uid: number; gid: number; nowMs: number }): void {
    this.db.transaction(() => {
      this.db.exec(SCHEMA_BASE + SCHEMA_V2_ADDITIONS);
      this.db
        .prepare('INSERT INTO inodes (ino, mode, uid, gid, nlink, atime_ms, mtime_ms, ctime_ms, nid) VALUES (?, ?, ?, ?, 2, ?, ?, ?, ?)')
        .run(ROOT_INO, S_IFDIR | 0o755, root.uid, root.gid, root.nowMs, root.nowMs, root.nowMs, ROOT_NID);
      this.db.prepare("INSERT INTO dirty (nid, base, gen) VALUES (?, '[]', 1)").run(ROOT_NID);
      this.db.pragma(`user_version = ${INDEX_SCHEMA_VERSION}`);
    })();
  }

  /**
   * Schema 1 → 2 in one transaction: every inode gets a node id derived from the vault id and its
   * inode number (so every copy of a format-1 vault upgrades to the same ids), and every node is a
   * local change to publish.
   */
  private upgradeFrom1(vaultId: string): void {
    this.db.transaction(() => {
      this.db.exec(UPGRADE_V1);
      const setNid = this.db.prepare('UPDATE inodes SET nid = ? WHERE ino = ?');
      for (const { ino } of this.db.prepare<[], { ino: number }>('SELECT ino FROM inodes').all()) {
        setNid.run(ino === ROOT_INO ? ROOT_NID : createHash('sha256').update(`coffer-v1-node:${vaultId}:${ino}`).digest().subarray(0, 16), ino);
      }
      this.db.exec("INSERT INTO dirty (nid, base, gen) SELECT nid, '[]', 1 FROM inodes");
      this.db.pragma(`user_version = ${INDEX_SCHEMA_VERSION}`);
    })();
  }

  private prepare() {
    const db = this.db;
    return {
      getInode: db.prepare<[number], InodeRow>('SELECT * FROM inodes WHERE ino = ?'),
      lookup: db.prepare<[number, string], { ino: number }>('SELECT ino FROM entries WHERE parent = ? AND name = ?'),
      list: db.prepare<[number], { name: string; ino: number }>('SELECT name, ino FROM entries WHERE parent = ? ORDER BY name'),
      hasEntries: db.prepare<[number], { one: number }>('SELECT 1 AS one FROM entries WHERE parent = ? LIMIT 1'),
      parentOf: db.prepare<[number], { parent: number }>('SELECT parent FROM entries WHERE ino = ? LIMIT 1'),
      insertInode: db.prepare(
        'INSERT INTO inodes (nid, mode, uid, gid, nlink, size, rdev, atime_ms, mtime_ms, ctime_ms, target) VALUES (@nid, @mode, @uid, @gid, @nlink, @size, @rdev, @now, @now, @now, @target)',
      ),
      insertEntry: db.prepare('INSERT INTO entries (parent, name, ino) VALUES (?, ?, ?)'),
      deleteEntry: db.prepare('DELETE FROM entries WHERE parent = ? AND name = ?'),
      touchDir: db.prepare('UPDATE inodes SET mtime_ms = ?, ctime_ms = ? WHERE ino = ?'),
      addNlink: db.prepare('UPDATE inodes SET nlink = nlink + ?, ctime_ms = ? WHERE ino = ?'),
      deleteInode: db.prepare('DELETE FROM inodes WHERE ino = ?'),
      deleteXattrs: db.prepare('DELETE FROM xattrs WHERE ino = ?'),
      fileChunks: db.prepare<[number], { idx: number; chunk: Buffer }>('SELECT idx, chunk FROM file_chunks WHERE ino = ?'),
      fileChunksFrom: db.prepare<[number, number], { idx: number; chunk: Buffer }>('SELECT idx, chunk FROM file_chunks WHERE ino = ? AND idx >= ?'),
      deleteFileChunksFrom: db.prepare('DELETE FROM file_chunks WHERE ino = ? AND idx >= ?'),
      fileChunkStates: db.prepare<[number], { chunk: Buffer; uploaded: number; failing: number }>(
        'SELECT f.chunk, c.uploaded, coalesce(q.attempts > 0, 0) AS failing FROM file_chunks f JOIN chunks c ON c.id = f.chunk LEFT JOIN upload_queue q ON q.id = f.chunk WHERE f.ino = ?',
      ),
      getFileChunk: db.prepare<[number, number], { chunk: Buffer }>('SELECT chunk FROM file_chunks WHERE ino = ? AND idx = ?'),
      putFileChunk: db.prepare('INSERT INTO file_chunks (ino, idx, chunk) VALUES (?, ?, ?) ON CONFLICT (ino, idx) DO UPDATE SET chunk = excluded.chunk'),
      deleteFileChunk: db.prepare('DELETE FROM file_chunks WHERE ino = ? AND idx = ?'),
      getChunk: db.prepare<[Buffer], { id: Buffer; plain_size: number; sealed_size: number; refs: number; uploaded: number }>('SELECT * FROM chunks WHERE id = ?'),
      refChunk: db.prepare('UPDATE chunks SET refs = refs + 1, released_ms = NULL WHERE id = ?'),
      insertChunk: db.prepare('INSERT INTO chunks (id, plain_size, sealed_size, refs) VALUES (?, ?, ?, 1)'),
      queueChunk: db.prepare('INSERT OR IGNORE INTO upload_queue (id, queued_ms) VALUES (?, ?)'),
      unrefChunk: db.prepare('UPDATE chunks SET refs = refs - 1, released_ms = CASE WHEN refs = 1 THEN ? ELSE released_ms END WHERE id = ?'),
      releasedChunks: db.prepare<[number, number], { id: Buffer }>('SELECT id FROM chunks WHERE refs = 0 AND released_ms <= ? LIMIT ?'),
      deleteChunk: db.prepare('DELETE FROM chunks WHERE id = ? AND refs = 0'),
      unqueue: db.prepare('DELETE FROM upload_queue WHERE id = ?'),
      isQueued: db.prepare<[Buffer], { one: number }>('SELECT 1 AS one FROM upload_queue WHERE id = ?'),
      queuedAttempts: db.prepare<[Buffer], { attempts: number }>('SELECT attempts FROM upload_queue WHERE id = ?'),
      addRemoteGarbage: db.prepare('INSERT OR IGNORE INTO remote_garbage (id, since_ms) VALUES (?, ?)'),
      remoteGarbage: db.prepare<[number, number], { id: Buffer }>('SELECT id FROM remote_garbage WHERE since_ms <= ? LIMIT ?'),
      dropRemoteGarbage: db.prepare('DELETE FROM remote_garbage WHERE id = ?'),
      isRemoteGarbage: db.prepare<[Buffer], { one: number }>('SELECT 1 AS one FROM remote_garbage WHERE id = ?'),
      nextUploads: db.prepare<[number, number], { id: Buffer; attempts: number }>(
        'SELECT id, attempts FROM upload_queue WHERE next_try_ms <= ? ORDER BY next_try_ms, queued_ms LIMIT ?',
      ),
      markUploaded: db.prepare('UPDATE chunks SET uploaded = 1 WHERE id = ?'),
      retryNow: db.prepare('UPDATE upload_queue SET next_try_ms = 0 WHERE next_try_ms > 0'),
      markFailed: db.prepare('UPDATE upload_queue SET attempts = attempts + 1, next_try_ms = ?, last_error = ? WHERE id = ?'),
      setSize: db.prepare('UPDATE inodes SET size = ?, mtime_ms = ?, ctime_ms = ? WHERE ino = ?'),
      getXattr: db.prepare<[number, string], { value: Buffer }>('SELECT value FROM xattrs WHERE ino = ? AND name = ?'),
      listXattrs: db.prepare<[number], { name: string }>('SELECT name FROM xattrs WHERE ino = ? ORDER BY name'),
      putXattr: db.prepare('INSERT INTO xattrs (ino, name, value) VALUES (?, ?, ?) ON CONFLICT (ino, name) DO UPDATE SET value = excluded.value'),
      deleteXattr: db.prepare('DELETE FROM xattrs WHERE ino = ? AND name = ?'),
      touchCtime: db.prepare('UPDATE inodes SET ctime_ms = ? WHERE ino = ?'),
      getState: db.prepare<[string], { value: unknown }>('SELECT value FROM vault_state WHERE key = ?'),
      setState: db.prepare('INSERT INTO vault_state (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value'),
      orphans: db.prepare<[], { ino: number }>('SELECT ino FROM inodes WHERE nlink = 0'),
    };
  }

  /** SQLite's quick structural check; throws INDEX_DAMAGED when it finds anything. */
  verify(): void {
    let result: unknown;
    try {
      result = this.db.pragma('quick_check', { simple: true });
    } catch (err) {
      throw new CofferError('INDEX_DAMAGED', `the vault index ${this.path} is damaged (${(err as Error).message})`, { cause: err });
    }
    if (result !== 'ok') throw new CofferError('INDEX_DAMAGED', `the vault index ${this.path} is damaged (${String(result)})`);
  }

  close(): void {
    if (!this.db.open) return;
    if (!this.db.readonly) this.db.pragma('wal_checkpoint(TRUNCATE)');
    this.db.close();
    if (this.syncAtClose) {
      const fd = openSync(this.path, 'r+');
      try {
        fsyncSync(fd);
      } finally {
        closeSync(fd);
      }
    }
  }

  // ---- reads ----

  getInode(ino: number): Inode | undefined {
    const row = this.st.getInode.get(ino);
    return row && toInode(row);
  }

  lookup(parent: number, name: string): number | undefined {
    return this.st.lookup.get(parent, name)?.ino;
  }

  listEntries(parent: number): { name: string; ino: number }[] {
    return this.st.list.all(parent);
  }

  hasEntries(dirIno: number): boolean {
    return this.st.hasEntries.get(dirIno) !== undefined;
  }

  /** The directory that holds a directory (directories have exactly one entry). */
  parentOf(dirIno: number): number | undefined {
    return this.st.parentOf.get(dirIno)?.parent;
  }

  chunkAt(ino: number, idx: number): Buffer | undefined {
    return this.st.getFileChunk.get(ino, idx)?.chunk;
  }

  hasChunk(id: Buffer): boolean {
    return this.st.getChunk.get(id) !== undefined;
  }

  chunkInfo(id: Buffer): { plainSize: number; sealedSize: number; refs: number; uploaded: boolean } | undefined {
    const row = this.st.getChunk.get(id);
    return row && { plainSize: row.plain_size, sealedSize: row.sealed_size, refs: row.refs, uploaded: row.uploaded === 1 };
  }

  /** Each chunk of a file with whether the remote has it and whether its upload is failing. */
  fileChunkStates(ino: number): { id: Buffer; uploaded: boolean; failing: boolean }[] {
    return this.st.fileChunkStates.all(ino).map((r) => ({ id: r.chunk, uploaded: r.uploaded === 1, failing: r.failing === 1 }));
  }

  getXattr(ino: number, name: string): Buffer | undefined {
    return this.st.getXattr.get(ino, name)?.value;
  }

  listXattrs(ino: number): string[] {
    return this.st.listXattrs.all(ino).map((r) => r.name);
  }

  getState(key: string): unknown {
    return this.st.getState.get(key)?.value;
  }

  /**
   * Files, directories and chunk totals: full scans of the inode and chunk tables (tens of ms
   * at 200,000 files, on the thread that serves FUSE), so they are kept until the index changes.
   * Every change to inodes or chunk references bumps changeCount, except a purge after the last
   * close of an unlinked file, which bumps `purges`. The upload queue is small and always read.
   */
  counts(): IndexCounts {
    const key = `${this.changeCount}:${this.purges}`;
    if (this.totals?.key !== key) this.totals = { key, ...this.scanTotals() };
    const { key: _key, ...totals } = this.totals;
    const pending = this.queueTotals();
    return { ...totals, pendingChunks: pending.chunks, pendingBytes: pending.bytes, failedChunks: pending.failed };
  }

  /**
   * The upload queue's size: counted once, then kept up to date by the methods that change the
   * queue (a scan of it takes ~150 ms with 200,000 chunks queued, and `sync --wait` asks four
   * times a second). Each of those methods is one transaction and applies its delta only after
   * the transaction committed, so a rollback cannot skew the totals.
   */
  private queueTotals(): QueueTotals {
    this.queued ??= this.db
      .prepare<[], QueueTotals>(
        'SELECT count(*) AS chunks, coalesce(sum(c.sealed_size), 0) AS bytes, coalesce(sum(q.attempts > 0), 0) AS failed FROM upload_queue q JOIN chunks c ON c.id = q.id',
      )
      .get()!;
    return { ...this.queued };
  }

  private queueChanged(delta: QueueTotals | undefined): void {
    if (!delta || !this.queued) return;
    this.queued.chunks += delta.chunks;
    this.queued.bytes += delta.bytes;
    this.queued.failed += delta.failed;
  }

  /** The delta that removing `id` from the queue makes, if it is queued. */
  private unqueueDelta(id: Buffer, sealedSize: number): QueueTotals | undefined {
    const row = this.st.queuedAttempts.get(id);
    return row && { chunks: -1, bytes: -sealedSize, failed: row.attempts > 0 ? -1 : 0 };
  }

  private scanTotals(): Omit<IndexCounts, 'pendingChunks' | 'pendingBytes' | 'failedChunks'> {
    const files = this.db
      .prepare<[], { files: number; bytes: number }>(
        `SELECT count(*) AS files, coalesce(sum(size), 0) AS bytes FROM inodes WHERE (mode & ${S_IFMT}) = ${S_IFREG} AND nlink > 0`,
      )
      .get()!;
    const kinds = this.db
      .prepare<[], { dirs: number; links: number }>(
        `SELECT sum((mode & ${S_IFMT}) = ${S_IFDIR}) AS dirs, sum((mode & ${S_IFMT}) = ${S_IFLNK}) AS links FROM inodes`,
      )
      .get()!;
    const chunks = this.db
      .prepare<[], { n: number; bytes: number }>('SELECT count(*) AS n, coalesce(sum(sealed_size), 0) AS bytes FROM chunks WHERE refs > 0')
      .get()!;
    return {
      files: files.files,
      directories: kinds.dirs ?? 0,
      symlinks: kinds.links ?? 0,
      bytes: files.bytes,
      chunks: chunks.n,
      chunkBytes: chunks.bytes,
    };
  }

  // ---- namespace changes ----

  createNode(parent: number, name: string, node: NewNode, nowMs: number): Inode {
    return this.db.transaction(() => {
      if (this.lookup(parent, name) !== undefined) throw new FsError('EEXIST');
      const dir = isDir(node.mode);
      const info = this.st.insertInode.run({
        nid: Replica.newNodeId(),
        mode: node.mode,
        uid: node.uid,
        gid: node.gid,
        nlink: dir ? 2 : 1,
        size: node.target !== undefined ? Buffer.byteLength(node.target) : 0,
        rdev: node.rdev ?? 0,
        now: nowMs,
        target: node.target ?? null,
      });
      const ino = Number(info.lastInsertRowid);
      this.st.insertEntry.run(parent, name, ino);
      this.st.touchDir.run(nowMs, nowMs, parent);
      if (dir) this.st.addNlink.run(1, nowMs, parent);
      this.replica.touch(ino);
      this.replica.touch(parent);
      this.changeCount++;
      return this.getInode(ino)!;
    })();
  }

  link(ino: number, parent: number, name: string, nowMs: number): Inode {
    return this.db.transaction(() => {
      if (this.lookup(parent, name) !== undefined) throw new FsError('EEXIST');
      this.st.insertEntry.run(parent, name, ino);
      this.st.addNlink.run(1, nowMs, ino);
      this.st.touchDir.run(nowMs, nowMs, parent);
      this.replica.touch(ino);
      this.replica.touch(parent);
      this.changeCount++;
      return this.getInode(ino)!;
    })();
  }

  /**
   * Removes a name. The inode goes with its last name unless `isOpen` says a handle
   * still uses it; then it stays with nlink 0 until `purgeIfUnlinked` at release.
   */
  unlink(parent: number, name: string, nowMs: number, isOpen: (ino: number) => boolean): void {
    this.db.transaction(() => {
      const ino = this.lookup(parent, name);
      if (ino === undefined) throw new FsError('ENOENT');
      this.dropName(parent, name, ino, nowMs, isOpen);
      this.st.touchDir.run(nowMs, nowMs, parent);
      this.replica.touch(parent);
      this.changeCount++;
    })();
  }

  rmdir(parent: number, name: string, nowMs: number): void {
    this.db.transaction(() => {
      const ino = this.lookup(parent, name);
      if (ino === undefined) throw new FsError('ENOENT');
      const inode = this.getInode(ino)!;
      if (!isDir(inode.mode)) throw new FsError('ENOTDIR');
      if (this.hasEntries(ino)) throw new FsError('ENOTEMPTY');
      const names = this.replica.namesOf(ino);
      this.st.deleteEntry.run(parent, name);
      this.purge(ino, nowMs, names);
      this.st.addNlink.run(-1, nowMs, parent);
      this.st.touchDir.run(nowMs, nowMs, parent);
      this.replica.touch(parent);
      this.changeCount++;
    })();
  }

  /** rename(2): atomically replaces an existing target of a compatible type. */
  rename(srcParent: number, srcName: string, dstParent: number, dstName: string, nowMs: number, isOpen: (ino: number) => boolean): void {
    this.db.transaction(() => {
      const ino = this.lookup(srcParent, srcName);
      if (ino === undefined) throw new FsError('ENOENT');
      const inode = this.getInode(ino)!;
      const movingDir = isDir(inode.mode);
      if (movingDir && srcParent !== dstParent) {
        // Moving a directory below itself would cut it off from the tree.
        for (let at: number | undefined = dstParent; at !== undefined && at !== 1; at = this.parentOf(at)) {
          if (at === ino) throw new FsError('EINVAL');
        }
        if (dstParent === ino) throw new FsError('EINVAL');
      }
      const existing = this.lookup(dstParent, dstName);
      if (existing === ino) return; // same file under both names: nothing to do
      if (existing !== undefined) {
        const target = this.getInode(existing)!;
        if (isDir(target.mode)) {
          if (!movingDir) throw new FsError('EISDIR');
          if (this.hasEntries(existing)) throw new FsError('ENOTEMPTY');
          const names = this.replica.namesOf(existing);
          this.st.deleteEntry.run(dstParent, dstName);
          this.purge(existing, nowMs, names);
          this.st.addNlink.run(-1, nowMs, dstParent);
        } else {
          if (movingDir) throw new FsError('ENOTDIR');
          this.dropName(dstParent, dstName, existing, nowMs, isOpen);
        }
      }
      this.st.deleteEntry.run(srcParent, srcName);
      this.st.insertEntry.run(dstParent, dstName, ino);
      if (movingDir && srcParent !== dstParent) {
        this.st.addNlink.run(-1, nowMs, srcParent);
        this.st.addNlink.run(1, nowMs, dstParent);
      }
      this.st.touchCtime.run(nowMs, ino);
      this.st.touchDir.run(nowMs, nowMs, srcParent);
      this.st.touchDir.run(nowMs, nowMs, dstParent);
      this.replica.touch(ino);
      this.replica.touch(srcParent);
      this.replica.touch(dstParent);
      this.changeCount++;
    })();
  }

  private dropName(parent: number, name: string, ino: number, nowMs: number, isOpen: (ino: number) => boolean): void {
    const names = this.replica.namesOf(ino);
    this.st.deleteEntry.run(parent, name);
    this.st.addNlink.run(-1, nowMs, ino);
    this.replica.touch(ino);
    const inode = this.getInode(ino)!;
    if (inode.nlink <= 0 && !isOpen(ino)) this.purge(ino, nowMs, names);
  }

  /** Called when the last handle of an inode closes. */
  purgeIfUnlinked(ino: number, nowMs: number): void {
    const inode = this.getInode(ino);
    if (inode && inode.nlink <= 0) {
      this.db.transaction(() => this.purge(ino, nowMs))();
    }
  }

  /** Inodes left with no name by a crash while they were open. */
  purgeOrphans(nowMs: number): number {
    const orphans = this.st.orphans.all();
    this.db.transaction(() => {
      for (const { ino } of orphans) this.purge(ino, nowMs);
    })();
    return orphans.length;
  }

  /** Removes an inode the user deleted; `lastNames` say where it was (default: where it was last published). */
  private purge(ino: number, nowMs: number, lastNames: [string, string][] = []): void {
    this.replica.gone(ino, lastNames);
    this.purges++;
    for (const { chunk } of this.st.fileChunks.all(ino)) this.st.unrefChunk.run(nowMs, chunk);
    this.st.deleteFileChunksFrom.run(ino, 0);
    this.st.deleteXattrs.run(ino);
    this.st.deleteInode.run(ino);
  }

  // ---- attributes ----

  setAttributes(ino: number, attrs: Partial<Pick<Inode, 'mode' | 'uid' | 'gid' | 'atimeMs' | 'mtimeMs' | 'ctimeMs'>>): Inode {
    const columns: string[] = [];
    const values: number[] = [];
    const map: Record<string, string> = { mode: 'mode', uid: 'uid', gid: 'gid', atimeMs: 'atime_ms', mtimeMs: 'mtime_ms', ctimeMs: 'ctime_ms' };
    for (const [key, column] of Object.entries(map)) {
      const value = attrs[key as keyof typeof attrs];
      if (value !== undefined) {
        columns.push(`${column} = ?`);
        values.push(value);
      }
    }
    if (columns.length > 0) {
      this.db.transaction(() => {
        this.db.prepare(`UPDATE inodes SET ${columns.join(', ')} WHERE ino = ?`).run(...values, ino);
        this.replica.touch(ino);
      })();
      this.changeCount++;
    }
    const inode = this.getInode(ino);
    if (!inode) throw new FsError('ENOENT');
    return inode;
  }

  setXattr(ino: number, name: string, value: Buffer, mode: 'create' | 'replace' | 'either', nowMs: number): void {
    this.db.transaction(() => {
      const exists = this.st.getXattr.get(ino, name) !== undefined;
      if (mode === 'create' && exists) throw new FsError('EEXIST');
      if (mode === 'replace' && !exists) throw new FsError('ENODATA');
      this.st.putXattr.run(ino, name, value);
      this.st.touchCtime.run(nowMs, ino);
      this.replica.touch(ino);
      this.changeCount++;
    })();
  }

  removeXattr(ino: number, name: string, nowMs: number): void {
    this.db.transaction(() => {
      if (this.st.deleteXattr.run(ino, name).changes === 0) throw new FsError('ENODATA');
      this.st.touchCtime.run(nowMs, ino);
      this.replica.touch(ino);
      this.changeCount++;
    })();
  }

  // ---- file data ----

  /**
   * Points chunk `idx` of a file at `chunk` (null: a hole), and records the file's
   * size and times, in one transaction. A chunk not yet known is inserted and queued
   * for upload; the one it replaces loses a reference.
   */
  commitChunk(ino: number, idx: number, chunk: ChunkRef | null, size: number, mtimeMs: number, nowMs: number): void {
    let queued: QueueTotals | undefined;
    this.db.transaction(() => {
      if (!this.st.getInode.get(ino)) return; // purged while the chunk was being sealed
      const previous = this.st.getFileChunk.get(ino, idx)?.chunk;
      if (chunk) {
        if (previous && previous.equals(chunk.id)) {
          // unchanged
        } else {
          if (this.st.refChunk.run(chunk.id).changes === 0) {
            this.st.insertChunk.run(chunk.id, chunk.plainSize, chunk.sealedSize);
            if (this.st.queueChunk.run(chunk.id, nowMs).changes > 0) queued = { chunks: 1, bytes: chunk.sealedSize, failed: 0 };
            // Content written again after it was released: its remote copy must stay.
            this.st.dropRemoteGarbage.run(chunk.id);
          }
          this.st.putFileChunk.run(ino, idx, chunk.id);
          if (previous) this.st.unrefChunk.run(nowMs, previous);
        }
      } else if (previous) {
        this.st.deleteFileChunk.run(ino, idx);
        this.st.unrefChunk.run(nowMs, previous);
      }
      this.st.setSize.run(size, mtimeMs, nowMs, ino);
      this.replica.touch(ino);
      this.changeCount++;
    })();
    this.queueChanged(queued);
  }

  /** Sets the size; drops every chunk wholly at or past `keepChunks`. */
  truncate(ino: number, size: number, keepChunks: number, nowMs: number): void {
    this.db.transaction(() => {
      for (const { chunk } of this.st.fileChunksFrom.all(ino, keepChunks)) this.st.unrefChunk.run(nowMs, chunk);
      this.st.deleteFileChunksFrom.run(ino, keepChunks);
      this.st.setSize.run(size, nowMs, nowMs, ino);
      this.replica.touch(ino);
      this.changeCount++;
    })();
  }

  setSizeAndTimes(ino: number, size: number, mtimeMs: number, nowMs: number): void {
    this.db.transaction(() => {
      this.st.setSize.run(size, mtimeMs, nowMs, ino);
      this.replica.touch(ino);
    })();
    this.changeCount++;
  }

  // ---- chunk lifecycle ----

  /** Chunks whose last reference went before `cutoffMs`. */
  releasedChunks(cutoffMs: number, limit: number): Buffer[] {
    return this.st.releasedChunks.all(cutoffMs, limit).map((r) => r.id);
  }

  /**
   * Forgets a chunk nobody references. Returns false if it was referenced again
   * meanwhile. An uploaded chunk is remembered for deletion from the remote.
   */
  forgetChunk(id: Buffer, nowMs: number): boolean {
    let unqueued: QueueTotals | undefined;
    const forgotten = this.db.transaction(() => {
      const row = this.st.getChunk.get(id);
      if (!row || row.refs > 0) return false;
      // A put that failed may still have landed on the remote: its copy is deleted too.
      if (row.uploaded || (this.st.queuedAttempts.get(id)?.attempts ?? 0) > 0) this.st.addRemoteGarbage.run(id, nowMs);
      unqueued = this.unqueueDelta(id, row.sealed_size);
      this.st.deleteChunk.run(id);
      this.st.unqueue.run(id);
      this.changeCount++; // the next snapshot no longer names it, and publishing it frees the remote copy
      return true;
    })();
    this.queueChanged(unqueued);
    return forgotten;
  }

  /**
   * Remote copies of chunks forgotten at or before `cutoffMs`. A chunk is forgotten a grace period
   * after the change that released it, so a publish that starts at `cutoffMs` or later carries that
   * change, and no entry published from then on names the chunk.
   */
  remoteGarbage(cutoffMs: number, limit: number): Buffer[] {
    return this.st.remoteGarbage.all(cutoffMs, limit).map((r) => r.id);
  }

  isRemoteGarbage(id: Buffer): boolean {
    return this.st.isRemoteGarbage.get(id) !== undefined;
  }

  dropRemoteGarbage(id: Buffer): void {
    this.st.dropRemoteGarbage.run(id);
  }

  nextUploads(nowMs: number, limit: number): QueuedUpload[] {
    return this.st.nextUploads.all(nowMs, limit);
  }

  markUploaded(id: Buffer): void {
    let unqueued: QueueTotals | undefined;
    this.db.transaction(() => {
      const row = this.st.getChunk.get(id);
      // Forgotten while its put was under way: the copy that just landed is named by nothing.
      if (!row) return void this.st.addRemoteGarbage.run(id, Date.now());
      unqueued = this.unqueueDelta(id, row.sealed_size);
      this.st.markUploaded.run(id);
      this.st.unqueue.run(id);
    })();
    this.queueChanged(unqueued);
  }

  /** Lets every queued upload, including ones backing off after failures, go now. */
  /** How many files name a chunk that is not on the remote yet. */
  /** A path of the inode inside the mount (the first name if it has several), or a note that it has none. */
  pathOf(ino: number): string {
    const parts: string[] = [];
    let at = ino;
    for (let depth = 0; at !== ROOT_INO && depth < 4096; depth++) {
      const entry = this.db.prepare<[number], { parent: number; name: string }>('SELECT parent, name FROM entries WHERE ino = ? LIMIT 1').get(at);
      if (!entry) return `(inode ${ino}, unlinked)`;
      parts.unshift(entry.name);
      at = entry.parent;
    }
    return '/' + parts.join('/');
  }

  /** The files whose contents include a chunk, with the index of that chunk in each. */
  /** The index's consistency (check.ts), for fsck. */
  check(): { problems: string[]; inodes: number } {
    return checkIndex(this.db);
  }

  /** Every chunk some file names, and whether it is on the remote. */
  referencedChunks(): { id: Buffer; uploaded: boolean }[] {
    return this.db.prepare<[], { id: Buffer; uploaded: number }>('SELECT id, uploaded FROM chunks WHERE refs > 0').all().map((r) => ({ id: r.id, uploaded: r.uploaded === 1 }));
  }

  filesOfChunk(id: Buffer, limit = 100): { ino: number; idx: number }[] {
    return this.db.prepare<[Buffer, number], { ino: number; idx: number }>('SELECT ino, idx FROM file_chunks WHERE chunk = ? LIMIT ?').all(id, limit);
  }

  /** Chunks queued for upload and their sealed bytes: counts()'s pending figures alone, for callers that ask often. */
  pendingUploads(): { chunks: number; bytes: number } {
    const { chunks, bytes } = this.queueTotals();
    return { chunks, bytes };
  }

  /** Bytes of the index database (page count × page size): about what one published snapshot of it takes. */
  databaseBytes(): number {
    return (this.db.pragma('page_count', { simple: true }) as number) * (this.db.pragma('page_size', { simple: true }) as number);
  }

  /**
   * A scan of file_chunks (~70 ms with 200,000 files pending). While nothing but uploads
   * happens the number can only fall, so it is reused for up to two seconds then; any other
   * change to the index counts again at once.
   */
  pendingFileCount(): number {
    const key = `${this.changeCount}:${this.purges}`;
    const now = Date.now();
    if (this.pendingFiles?.key !== key || now - this.pendingFiles.atMs > 2000) {
      const n = this.db
        .prepare<[], { n: number }>('SELECT count(DISTINCT f.ino) AS n FROM file_chunks f WHERE f.chunk IN (SELECT id FROM upload_queue)')
        .get()!.n;
      this.pendingFiles = { key, atMs: now, n };
    }
    return this.queueTotals().chunks === 0 ? 0 : this.pendingFiles.n;
  }

  retryUploadsNow(): void {
    this.st.retryNow.run();
  }

  markUploadFailed(id: Buffer, error: string, nextTryMs: number): void {
    // Forgotten while its put was under way: the put may have landed before it failed.
    if (!this.st.getChunk.get(id)) return void this.st.addRemoteGarbage.run(id, Date.now());
    const firstFailure = this.st.queuedAttempts.get(id)?.attempts === 0;
    this.st.markFailed.run(nextTryMs, error, id);
    if (firstFailure) this.queueChanged({ chunks: 0, bytes: 0, failed: 1 });
  }

  isQueued(id: Buffer): boolean {
    return this.st.isQueued.get(id) !== undefined;
  }

  lastUploadErrors(limit: number): { id: string; attempts: number; error: string }[] {
    return this.db
      .prepare<[number], { id: Buffer; attempts: number; last_error: string }>(
        'SELECT id, attempts, last_error FROM upload_queue WHERE last_error IS NOT NULL ORDER BY attempts DESC LIMIT ?',
      )
      .all(limit)
      .map((r) => ({ id: r.id.toString('hex'), attempts: r.attempts, error: r.last_error }));
  }

  setState(key: string, value: string | number | Buffer): void {
    this.st.setState.run(key, value);
  }

  /**
   * Makes every committed transaction durable: one commit with synchronous=FULL
   * syncs the WAL, which carries all earlier NORMAL commits with it.
   */
  makeDurable(nowMs: number): void {
    this.db.pragma('synchronous = FULL');
    try {
      this.st.setState.run('last_sync_ms', nowMs);
    } finally {
      this.db.pragma('synchronous = NORMAL');
    }
  }

  /** Copies the database to `destPath` without stopping writers (SQLite online backup). */
  async backupTo(destPath: string): Promise<void> {
    await this.db.backup(destPath);
  }
}
