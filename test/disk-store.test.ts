/** The data-directory store of `coffer serve`: listing pages in key order across folders. */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DiskObjectStore } from '../src/server/disk-store.js';

const ACCOUNT = '0123456789abcdef0123456789abcdef';
// Folders and files whose names sort differently from their keys ("a-c" < "a.b" < "a/b" < "a0").
const KEYS = ['a-c', 'a.b', 'a/b', 'a/b-c', 'a/c/d', 'a/c/e', 'a/c-d', 'a0', 'ab/c', 'b-x', 'b/x/y', 'b/x/z', 'b/y', 'c'];
let dir: string;
let store: DiskObjectStore;

async function* bytes(text: string): AsyncGenerator<Buffer> {
  yield Buffer.from(text);
}

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'coffer-disk-store-'));
  store = new DiskObjectStore(dir);
  await store.open();
  for (const key of [...KEYS].reverse()) await store.put(ACCOUNT, key, bytes(key), { exclusive: true });
});

afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('disk store listing', () => {
  it('pages through every prefix in key order, whatever the page size', async () => {
    for (const prefix of ['', 'a', 'a/', 'a/c', 'a/c/', 'b', 'b/x/', 'ab/', 'zz']) {
      const expected = KEYS.filter((k) => k.startsWith(prefix)).sort();
      for (const limit of [1, 2, 3, 100]) {
        const seen: string[] = [];
        let after = '';
        for (let pages = 0; pages < 50; pages++) {
          const page = await store.list(ACCOUNT, { prefix, after, limit });
          expect(page.objects.length).toBeLessThanOrEqual(limit);
          seen.push(...page.objects.map((o) => o.key));
          if (!page.truncated) break;
          after = page.objects.at(-1)!.key;
        }
        expect({ prefix, limit, seen }).toEqual({ prefix, limit, seen: expected });
      }
    }
    expect((await store.listAll(ACCOUNT)).map((o) => [o.key, o.size])).toEqual([...KEYS].sort().map((k) => [k, k.length]));
  });
});
