/** The index on a real SQLite file: namespace rules, reference counts, the upload queue, locking. */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { S_IFDIR, S_IFLNK, S_IFREG, VaultIndex } from '../src/index/vault-index.js';
import { ROOT_INO } from '../src/index/schema.js';
import { FsError } from '../src/errors.js';

let dir: string;
let index: VaultIndex;
const never = () => false;

function code(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (err) {
    return err instanceof FsError ? err.posix : String(err);
  }
  return undefined;
}

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'coffer-index-'));
  index = new VaultIndex(join(dir, 'index.db'), { create: { uid: 0, gid: 0, nowMs: 1000 } });
});

afterEach(() => {
  index.close();
  rmSync(dir, { recursive: true, force: true });
});

const file = (name: string, parent = ROOT_INO) => index.createNode(parent, name, { mode: S_IFREG | 0o644, uid: 0, gid: 0 }, 2000);
const mkdir = (name: string, parent = ROOT_INO) => index.createNode(parent, name, { mode: S_IFDIR | 0o755, uid: 0, gid: 0 }, 2000);
const chunk = (fill: number) => ({ id: Buffer.alloc(32, fill), plainSize: 10, sealedSize: 4148 });

describe('namespace', () => {
  it('creates entries, refuses duplicates and keeps directory link counts', () => {
    const d = mkdir('d');
    expect(index.getInode(ROOT_INO)!.nlink).toBe(3);
    file('f', d.ino);
    expect(code(() => file('f', d.ino))).toBe('EEXIST');
    expect(index.listEntries(d.ino).map((e) => e.name)).toEqual(['f']);
    expect(code(() => index.rmdir(ROOT_INO, 'd', 3000))).toBe('ENOTEMPTY');
    index.unlink(d.ino, 'f', 3000, never);
    index.rmdir(ROOT_INO, 'd', 3000);
    expect(index.getInode(ROOT_INO)!.nlink).toBe(2);
  });

  it('renames with replacement and refuses moving a directory into itself', () => {
    const a = mkdir('a');
    const b = mkdir('b', a.ino);
    expect(code(() => index.rename(ROOT_INO, 'a', b.ino, 'x', 3000, never))).toBe('EINVAL');
    const f = file('f');
    const g = file('g');
    index.rename(ROOT_INO, 'f', ROOT_INO, 'g', 3000, never);
    expect(index.lookup(ROOT_INO, 'g')).toBe(f.ino);
    expect(index.getInode(g.ino)).toBeUndefined();
    index.rename(ROOT_INO, 'a', ROOT_INO, 'moved', 3000, never);
    expect(index.lookup(ROOT_INO, 'moved')).toBe(a.ino);
  });

  it('keeps an unlinked open inode until it is released', () => {
    const f = file('f');
    index.commitChunk(f.ino, 0, chunk(1), 10, 2000, 2000);
    index.unlink(ROOT_INO, 'f', 3000, (ino) => ino === f.ino);
    expect(index.getInode(f.ino)!.nlink).toBe(0);
    expect(index.chunkInfo(chunk(1).id)!.refs).toBe(1);
    index.purgeIfUnlinked(f.ino, 4000);
    expect(index.getInode(f.ino)).toBeUndefined();
    expect(index.chunkInfo(chunk(1).id)!.refs).toBe(0);
  });

  it('purges orphans left by a crash', () => {
    const f = file('f');
    index.unlink(ROOT_INO, 'f', 3000, () => true);
    expect(index.purgeOrphans(5000)).toBe(1);
    expect(index.getInode(f.ino)).toBeUndefined();
  });
});

describe('chunks', () => {
  it('counts references across files and queues new chunks once', () => {
    const f = file('f');
    const g = file('g');
    index.commitChunk(f.ino, 0, chunk(1), 10, 2000, 2000);
    index.commitChunk(g.ino, 0, chunk(1), 10, 2000, 2000);
    expect(index.chunkInfo(chunk(1).id)!.refs).toBe(2);
    expect(index.nextUploads(Date.now(), 10)).toHaveLength(1);
    index.commitChunk(f.ino, 0, chunk(2), 10, 2000, 2000);
    expect(index.chunkInfo(chunk(1).id)!.refs).toBe(1);
    index.commitChunk(g.ino, 0, null, 10, 2000, 2000);
    expect(index.chunkInfo(chunk(1).id)!.refs).toBe(0);
    expect(index.releasedChunks(Date.now(), 10).map((b) => b.toString('hex'))).toEqual([chunk(1).id.toString('hex')]);
    expect(index.forgetChunk(chunk(1).id, Date.now())).toBe(true);
    expect(index.isQueued(chunk(1).id)).toBe(false);
    expect(index.chunkInfo(chunk(1).id)).toBeUndefined();
  });

  it('does not forget a chunk that was referenced again', () => {
    const f = file('f');
    index.commitChunk(f.ino, 0, chunk(3), 10, 2000, 2000);
    index.commitChunk(f.ino, 0, null, 10, 2000, 2000);
    index.commitChunk(f.ino, 1, chunk(3), 20, 2000, 2000);
    expect(index.forgetChunk(chunk(3).id, Date.now())).toBe(false);
    expect(index.chunkInfo(chunk(3).id)!.refs).toBe(1);
  });

  it('remembers for deletion a remote copy whose upload ended after its chunk was forgotten', () => {
    const f = file('f');
    const ids = [chunk(20), chunk(21), chunk(22)].map((c) => c.id);
    for (const [i, c] of [chunk(20), chunk(21), chunk(22)].entries()) index.commitChunk(f.ino, i, c, (i + 1) * 10, 2000, 2000);
    index.truncate(f.ino, 0, 0, 3000);
    // 20: its put was under way when it was forgotten, and succeeded after.
    expect(index.forgetChunk(ids[0]!, 4000)).toBe(true);
    index.markUploaded(ids[0]!);
    // 21: a put failed (it may still have landed on the remote), then it was forgotten.
    index.markUploadFailed(ids[1]!, 'timed out', 0);
    expect(index.forgetChunk(ids[1]!, 4000)).toBe(true);
    // 22: its put failed after it was forgotten.
    expect(index.forgetChunk(ids[2]!, 4000)).toBe(true);
    index.markUploadFailed(ids[2]!, 'timed out', 0);
    // A publish that starts in the same millisecond as the forget carries the release: it may delete.
    expect(index.remoteGarbage(3999, 10)).toHaveLength(0);
    expect(index.remoteGarbage(4000, 10)).toEqual([ids[1]]);
    const garbage = index.remoteGarbage(Date.now(), 10).map((b) => b.toString('hex'));
    expect(garbage.sort()).toEqual(ids.map((b) => b.toString('hex')).sort());
    expect(index.chunkInfo(ids[0]!)).toBeUndefined();
    expect(index.isQueued(ids[2]!)).toBe(false);
  });

  it('truncation drops whole chunks past the end', () => {
    const f = file('f');
    for (let i = 0; i < 4; i++) index.commitChunk(f.ino, i, chunk(10 + i), (i + 1) * 10, 2000, 2000);
    index.truncate(f.ino, 15, 2, 3000);
    expect(index.chunkAt(f.ino, 1)).toBeDefined();
    expect(index.chunkAt(f.ino, 2)).toBeUndefined();
    expect(index.chunkInfo(chunk(13).id)!.refs).toBe(0);
    expect(index.getInode(f.ino)!.size).toBe(15);
  });

  it('records uploads and failures', () => {
    const f = file('f');
    index.commitChunk(f.ino, 0, chunk(5), 10, 2000, 2000);
    index.markUploadFailed(chunk(5).id, 'network down', Date.now() + 60_000);
    expect(index.nextUploads(Date.now(), 10)).toHaveLength(0);
    expect(index.counts().failedChunks).toBe(1);
    expect(index.lastUploadErrors(5)[0]!.error).toBe('network down');
    index.markUploaded(chunk(5).id);
    expect(index.counts().pendingChunks).toBe(0);
    expect(index.chunkInfo(chunk(5).id)!.uploaded).toBe(true);
  });
});

describe('counts', () => {
  it('follow every kind of change, also when they are asked for between changes', () => {
    const totals = () => {
      const { files, directories, symlinks, bytes, chunks, chunkBytes, pendingChunks } = index.counts();
      return { files, directories, symlinks, bytes, chunks, chunkBytes, pendingChunks };
    };
    const base = totals();
    const f = file('f');
    expect(totals()).toMatchObject({ files: base.files + 1, bytes: 0, chunks: 0 });
    index.commitChunk(f.ino, 0, chunk(1), 10, 2000, 2000);
    expect(totals()).toMatchObject({ bytes: 10, chunks: 1, chunkBytes: 4148, pendingChunks: 1 });
    index.markUploaded(chunk(1).id);
    expect(totals()).toMatchObject({ chunks: 1, pendingChunks: 0 });
    const d = mkdir('d');
    index.createNode(d.ino, 'l', { mode: S_IFLNK | 0o777, uid: 0, gid: 0, target: 'f' }, 2000);
    expect(totals()).toMatchObject({ directories: base.directories + 1, symlinks: 1 });
    index.rename(ROOT_INO, 'f', d.ino, 'g', 3000, () => false);
    expect(totals()).toMatchObject({ files: base.files + 1, bytes: 10 });
    // Unlinked while open: gone from the files at once, its chunk only when the last handle closes.
    index.unlink(d.ino, 'g', 3000, () => true);
    expect(totals()).toMatchObject({ files: base.files, bytes: 0, chunks: 1 });
    index.purgeIfUnlinked(f.ino, 4000);
    expect(totals()).toMatchObject({ chunks: 0, chunkBytes: 0 });
  });

  it('keep the upload queue totals equal to a scan through random commits, uploads, failures and forgets', () => {
    const truth = () =>
      index.db
        .prepare('SELECT count(*) AS pendingChunks, coalesce(sum(c.sealed_size), 0) AS pendingBytes, coalesce(sum(q.attempts > 0), 0) AS failedChunks FROM upload_queue q JOIN chunks c ON c.id = q.id')
        .get();
    const files = Array.from({ length: 4 }, (_, i) => file(`q${i}`));
    let seed = 7;
    const rand = (n: number) => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) % n);
    index.counts(); // from here on the totals are kept, not rescanned
    for (let step = 0; step < 400; step++) {
      const id = chunk(rand(12)).id;
      switch (rand(5)) {
        case 0:
        case 1:
          index.commitChunk(files[rand(4)]!.ino, rand(3), rand(6) === 0 ? null : { id, plainSize: 10, sealedSize: 100 + id[0]! }, 30, 2000, 2000);
          break;
        case 2:
          if (index.isQueued(id)) index.markUploadFailed(id, 'down', Date.now() + 1000);
          break;
        case 3:
          if (index.isQueued(id)) index.markUploaded(id);
          break;
        case 4:
          index.forgetChunk(id, 3000);
          break;
      }
      const { pendingChunks, pendingBytes, failedChunks } = index.counts();
      expect({ step, pendingChunks, pendingBytes, failedChunks }).toEqual({ step, ...(truth() as object) });
    }
  });
});

describe('locking and durability', () => {
  it('refuses a second writer on the same index file', () => {
    expect(() => new VaultIndex(join(dir, 'index.db'))).toThrow(/in use by another Coffer process/);
  });

  it('keeps xattrs with create/replace semantics', () => {
    const f = file('f');
    index.setXattr(f.ino, 'user.a', Buffer.from('1'), 'create', 1);
    expect(code(() => index.setXattr(f.ino, 'user.a', Buffer.from('2'), 'create', 1))).toBe('EEXIST');
    expect(code(() => index.setXattr(f.ino, 'user.b', Buffer.from('2'), 'replace', 1))).toBe('ENODATA');
    index.setXattr(f.ino, 'user.a', randomBytes(100), 'replace', 1);
    expect(index.listXattrs(f.ino)).toEqual(['user.a']);
    index.removeXattr(f.ino, 'user.a', 1);
    expect(code(() => index.removeXattr(f.ino, 'user.a', 1))).toBe('ENODATA');
  });

  it('survives close and reopen', () => {
    const f = file('persist');
    index.makeDurable(5000);
    index.close();
    index = new VaultIndex(join(dir, 'index.db'));
    expect(index.lookup(ROOT_INO, 'persist')).toBe(f.ino);
  });
});
