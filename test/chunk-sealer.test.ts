// The worker-thread sealer must produce exactly what sealing inline produces, survive a dead
// worker without failing a write, and release its threads on close. It is loaded from dist/
// (built by `npm test`) because its worker is a compiled file.
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it, expect, beforeAll } from 'vitest';

// The compiled modules, typed as their sources.
const compiled = <T>(path: string): Promise<T> => import(new URL(`../dist/${path}`, import.meta.url).href) as Promise<T>;
const { loadSodium } = await compiled<typeof import('../src/crypto/sodium.js')>('crypto/sodium.js');
const { chunkId, deriveVaultKeys } = await compiled<typeof import('../src/crypto/keys.js')>('crypto/keys.js');
const { OBJECT_OVERHEAD, ObjectType, openObject } = await compiled<typeof import('../src/crypto/objects.js')>('crypto/objects.js');
const { InlineSealer, WorkerSealer } = await compiled<typeof import('../src/chunks/chunk-sealer.js')>('chunks/chunk-sealer.js');
const { ChunkStore } = await compiled<typeof import('../src/chunks/chunk-store.js')>('chunks/chunk-store.js');

const CHUNK = 64 * 1024;

beforeAll(async () => {
  await loadSodium();
});

function sealerKeys() {
  const keys = deriveVaultKeys(randomBytes(32));
  return { keys, context: { vaultId: randomBytes(16), keyEpoch: 3, key: keys.chunk }, chunkSize: CHUNK };
}

describe('WorkerSealer', () => {
  it('gives the same ids as sealing inline, and objects that open to the plaintext', async () => {
    const k = sealerKeys();
    const sealer = new WorkerSealer(k, 2);
    try {
      const shared = Buffer.from(new SharedArrayBuffer(CHUNK));
      randomBytes(CHUNK).copy(shared);
      const inputs = [shared, randomBytes(100), randomBytes(CHUNK - 1), Buffer.alloc(0)];
      const results = await Promise.all(inputs.map((p) => sealer.seal(p)));
      for (const [i, plaintext] of inputs.entries()) {
        const { id, sealed } = results[i];
        expect(id.equals(chunkId(k.keys, plaintext))).toBe(true);
        expect((await new InlineSealer(k).seal(plaintext)).id.equals(id)).toBe(true);
        expect(Buffer.from(openObject(k.context, ObjectType.DataChunk, id, sealed)).equals(plaintext)).toBe(true);
        // Short chunks are padded so their exact length does not show.
        if (plaintext.length < CHUNK) expect(sealed.length % 4096).toBe(OBJECT_OVERHEAD);
      }
    } finally {
      await sealer.close();
    }
  });

  it('seals on the calling thread once its workers are gone, and fails nothing in flight', async () => {
    const k = sealerKeys();
    const logged: string[] = [];
    const sealer = new WorkerSealer(k, 1, (m) => logged.push(m));
    try {
      const worker = (sealer as unknown as { workers: { worker: { terminate(): Promise<number> } }[] }).workers[0].worker;
      const plaintexts = Array.from({ length: 8 }, () => randomBytes(CHUNK)); // large enough to go to the worker
      const sealing = plaintexts.map((p) => sealer.seal(p));
      await worker.terminate();
      const results = await Promise.all(sealing);
      const after = await sealer.seal(plaintexts[0]);
      for (const [i, p] of plaintexts.entries()) expect(results[i].id.equals(chunkId(k.keys, p))).toBe(true);
      expect(after.id.equals(results[0].id)).toBe(true);
      expect(logged.join('\n')).toMatch(/sealing worker stopped/);
    } finally {
      await sealer.close();
    }
  });

  it('writes the sealed chunk into a cache directory when asked, and says so only when it did', async () => {
    const k = sealerKeys();
    const sealer = new WorkerSealer(k, 1);
    const dir = mkdtempSync(join(tmpdir(), 'coffer-sealer-'));
    try {
      const small = randomBytes(1000); // small chunks go to the worker too when it writes them
      const { id, sealed, stored } = await sealer.seal(small, { storeIn: dir });
      expect(stored).toBe(true);
      const hex = id.toString('hex');
      expect(readFileSync(join(dir, hex.slice(0, 2), hex)).equals(sealed)).toBe(true);
      expect(readdirSync(join(dir, hex.slice(0, 2)))).toEqual([hex]); // no temporary file left
      // Where it cannot write (a file where the directory should be), the caller is told to write it.
      const blocked = join(dir, 'blocked');
      writeFileSync(blocked, '');
      const refused = await sealer.seal(small, { storeIn: blocked });
      expect(refused.stored).toBe(false);
      expect(refused.id.equals(id)).toBe(true);
    } finally {
      await sealer.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });


  it('rewrites a chunk the sealer stored if its file went away before the cache took it in', async () => {
    const k = sealerKeys();
    const sealer = new WorkerSealer(k, 1);
    const dir = mkdtempSync(join(tmpdir(), 'coffer-sealer-'));
    try {
      const store = new ChunkStore({ dir, chunkSize: CHUNK, keys: k.keys, context: k.context, memoryCacheBytes: 0, sealer });
      const plaintext = randomBytes(CHUNK);
      const chunk = await store.sealChunk(plaintext);
      expect(chunk.stored).toBe(true);
      // A collection of the same id, between the sealer's write and the commit taking the lock.
      rmSync(store.pathOf(chunk.id));
      await store.fileLock.run(chunk.id.toString('hex'), () => store.keepSealed(chunk));
      expect(readFileSync(store.pathOf(chunk.id)).equals(chunk.sealed)).toBe(true);
      expect(Buffer.from(await store.read(chunk.id)).equals(plaintext)).toBe(true);
    } finally {
      await sealer.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });

});
