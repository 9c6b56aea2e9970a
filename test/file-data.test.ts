/**
 * File contents without FUSE: write buffers, chunk commits, truncation and the
 * memory bound, on a real index file and a real chunk store.
 */
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { loadSodium } from '../src/crypto/sodium.js';
import { deriveVaultKeys } from '../src/crypto/keys.js';
import { ChunkStore } from '../src/chunks/chunk-store.js';
import { FileData } from '../src/fs/file-data.js';
import { S_IFREG, VaultIndex } from '../src/index/vault-index.js';
import { ROOT_INO } from '../src/index/schema.js';

const CS = 64 * 1024; // small chunks make boundaries cheap to test
let dir: string;
let index: VaultIndex;
let store: ChunkStore;
let data: FileData;
const logged: string[] = [];

beforeAll(async () => {
  await loadSodium();
});

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'coffer-data-'));
  index = new VaultIndex(join(dir, 'index.db'), { create: { uid: 0, gid: 0, nowMs: 1 } });
  const keys = deriveVaultKeys(randomBytes(32));
  store = new ChunkStore({
    dir: join(dir, 'cache'),
    chunkSize: CS,
    keys,
    context: { vaultId: randomBytes(16), keyEpoch: 1, key: keys.chunk },
    memoryCacheBytes: 4 * CS,
  });
  data = new FileData(index, store, { chunkSize: CS, bufferBytes: 4 * CS, idleCommitMs: 60_000, log: (m) => logged.push(m) });
});

afterEach(() => {
  index.close();
  rmSync(dir, { recursive: true, force: true });
});

function newFile(name = 'f'): number {
  return index.createNode(ROOT_INO, name, { mode: S_IFREG | 0o644, uid: 0, gid: 0 }, 1).ino;
}

async function readAll(ino: number, size: number): Promise<Buffer> {
  const out = Buffer.alloc(size + 10);
  const n = await data.read(ino, out, out.length, 0);
  return out.subarray(0, n);
}

describe('FileData', () => {
  it('round-trips writes at arbitrary offsets through commit and a cold read', async () => {
    const ino = newFile();
    const expected = Buffer.alloc(5 * CS + 123);
    data.opened(ino);
    for (let i = 0; i < 40; i++) {
      const at = Math.floor(Math.random() * (expected.length - 5000));
      const piece = randomBytes(1 + Math.floor(Math.random() * 4999));
      piece.copy(expected, at);
      await data.write(ino, piece, at);
    }
    await data.write(ino, Buffer.from('end'), expected.length - 3);
    Buffer.from('end').copy(expected, expected.length - 3);
    expect((await readAll(ino, expected.length)).equals(expected)).toBe(true);
    await data.closed(ino);
    expect(index.getInode(ino)!.size).toBe(expected.length);
    // A fresh FileData sees only what was committed.
    const cold = new FileData(index, store, { chunkSize: CS, bufferBytes: 4 * CS, idleCommitMs: 60_000, log: () => {} });
    const out = Buffer.alloc(expected.length);
    await cold.read(ino, out, out.length, 0);
    expect(out.equals(expected)).toBe(true);
  });

  it('bounds buffered memory while writing far more than the bound', async () => {
    const ino = newFile();
    data.opened(ino);
    let peak = 0;
    for (let at = 0; at < 40 * CS; at += 7000) {
      await data.write(ino, randomBytes(7000), at);
      peak = Math.max(peak, data.bufferedByteCount);
    }
    expect(peak).toBeLessThanOrEqual(4 * CS + 2 * CS);
    await data.closed(ino);
    expect(data.bufferedByteCount).toBe(0);
  });

  it('stores all-zero chunks as holes and dedups identical chunks', async () => {
    const a = newFile('a');
    const b = newFile('b');
    const block = randomBytes(CS);
    data.opened(a);
    data.opened(b);
    await data.write(a, Buffer.alloc(CS), 0);
    await data.write(a, block, CS);
    await data.write(b, block, 0);
    await data.closed(a);
    await data.closed(b);
    expect(index.chunkAt(a, 0)).toBeUndefined();
    expect(index.chunkAt(a, 1)!.equals(index.chunkAt(b, 0)!)).toBe(true);
    expect(index.counts().chunks).toBe(1);
  });

  it('zeroes the tail of a chunk cut by truncate before the file grows again', async () => {
    const ino = newFile();
    const content = randomBytes(2 * CS);
    data.opened(ino);
    await data.write(ino, content, 0);
    await data.flush(ino);
    await data.truncate(ino, CS + 100);
    await data.truncate(ino, 2 * CS);
    const out = await readAll(ino, 2 * CS);
    expect(out.subarray(0, CS + 100).equals(content.subarray(0, CS + 100))).toBe(true);
    expect(out.subarray(CS + 100).equals(Buffer.alloc(CS - 100))).toBe(true);
    await data.closed(ino);
  });

  it('reports a commit failure on the next flush instead of dropping data silently', async () => {
    const ino = newFile();
    data.opened(ino);
    rmSync(join(dir, 'cache'), { recursive: true, force: true });
    // Make the cache unwritable: a file where its directory should be.
    const { writeFileSync } = await import('node:fs');
    writeFileSync(join(dir, 'cache'), 'not a directory');
    await data.write(ino, randomBytes(100), 0);
    await expect(data.flush(ino)).rejects.toThrow();
    rmSync(join(dir, 'cache'));
    await data.flush(ino);
    expect(index.getInode(ino)!.size).toBe(100);
    expect(readdirSync(join(dir, 'cache'))).toHaveLength(1);
    await data.closed(ino);
  });

  it('reads ahead for a sequential reader only, and not for one that reads just the head', async () => {
    const ino = newFile();
    data.opened(ino);
    await data.write(ino, randomBytes(12 * CS), 0);
    await data.closed(ino);
    // A fresh store (nothing opened in memory) whose loads are counted.
    const asked = new Set<string>();
    const fresh = new ChunkStore({ dir: join(dir, 'cache'), chunkSize: CS, keys: store['options'].keys, context: store['options'].context, memoryCacheBytes: 16 * CS });
    const read = fresh.read.bind(fresh);
    fresh.read = (id: Buffer) => {
      asked.add(id.toString('hex'));
      return read(id);
    };
    const reader = new FileData(index, fresh, { chunkSize: CS, bufferBytes: 4 * CS, idleCommitMs: 60_000, log: () => {} });
    const out = Buffer.alloc(CS / 8);
    reader.opened(ino);
    // The head of the file, as a thumbnailer reads it: one chunk, nothing ahead.
    await reader.read(ino, out, out.length, 0);
    await reader.read(ino, out, out.length, out.length);
    expect(asked.size).toBe(1);
    // Carry on sequentially through two chunks: chunks beyond them are opened ahead.
    for (let at = 2 * out.length; at < 2 * CS; at += out.length) await reader.read(ino, out, out.length, at);
    expect(asked.size).toBeGreaterThanOrEqual(4);
    expect(asked.size).toBeLessThanOrEqual(2 + 4);
    // A random read far away starts no read-ahead of its own.
    asked.clear();
    await reader.read(ino, out, out.length, 10 * CS);
    expect(asked.size).toBe(1);
    await reader.closed(ino);
  });

});
