/**
 * The behaviour every remote backend must show. Each backend's test file calls
 * `remoteConformance` with a factory for a fresh, empty remote.
 */
import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import type { RemoteBackend } from '../../src/remote/backend.js';
import { CofferError, RemoteError } from '../../src/errors.js';

async function codeOf(promise: Promise<unknown>): Promise<string | undefined> {
  try {
    await promise;
  } catch (err) {
    return err instanceof RemoteError ? err.code : `not a RemoteError: ${String(err)}`;
  }
  return undefined;
}

/** The Coffer error a call fails with; anything else (or success) fails the test. */
export async function failure(promise: Promise<unknown>): Promise<CofferError> {
  try {
    await promise;
  } catch (err) {
    if (err instanceof CofferError) return err;
    throw err;
  }
  throw new Error('expected a failure');
}

export function remoteConformance(name: string, open: () => Promise<RemoteBackend>): void {
  describe(`remote backend conformance: ${name}`, () => {
    it('puts, gets, heads and gets ranges', async () => {
      const remote = await open();
      const body = randomBytes(100_000);
      await remote.put('chunks/ab/abcd', body);
      expect((await remote.get('chunks/ab/abcd')).equals(body)).toBe(true);
      expect(await remote.head('chunks/ab/abcd')).toEqual({ key: 'chunks/ab/abcd', size: body.length });
      expect((await remote.get('chunks/ab/abcd', { range: { offset: 10, length: 20 } })).equals(body.subarray(10, 30))).toBe(true);
      const tail = await remote.get('chunks/ab/abcd', { range: { offset: body.length - 5, length: 20 } });
      expect(tail.equals(body.subarray(body.length - 5))).toBe(true);
    });

    it('reports missing objects as REMOTE_NOT_FOUND', async () => {
      const remote = await open();
      expect(await codeOf(remote.get('nope'))).toBe('REMOTE_NOT_FOUND');
      expect(await codeOf(remote.head('nope'))).toBe('REMOTE_NOT_FOUND');
    });

    it('creates exclusively once', async () => {
      const remote = await open();
      await remote.createExclusive('manifests/00000000000000000001', Buffer.from('first'));
      expect(await codeOf(remote.createExclusive('manifests/00000000000000000001', Buffer.from('second')))).toBe('REMOTE_EXISTS');
      expect((await remote.get('manifests/00000000000000000001')).toString()).toBe('first');
    });

    it('lists by prefix in key order and deletes', async () => {
      const remote = await open();
      for (const key of ['manifests/002', 'manifests/001', 'snapshots/x', 'chunks/aa/aa1', 'chunks/ab/ab1']) {
        await remote.put(key, Buffer.from(key));
      }
      expect((await remote.list('manifests/')).map((o) => o.key)).toEqual(['manifests/001', 'manifests/002']);
      expect((await remote.list('chunks/')).map((o) => o.key)).toEqual(['chunks/aa/aa1', 'chunks/ab/ab1']);
      expect((await remote.list('chunks/a')).map((o) => o.size)).toEqual([13, 13]);
      expect(await remote.list('nothing/')).toEqual([]);
      // `after` lists only what sorts after a whole key, whether that key exists or not.
      expect((await remote.list('manifests/', { after: 'manifests/001' })).map((o) => o.key)).toEqual(['manifests/002']);
      expect((await remote.list('manifests/', { after: 'manifests/0015' })).map((o) => o.key)).toEqual(['manifests/002']);
      expect((await remote.list('manifests/', { after: 'manifests/002' })).map((o) => o.key)).toEqual([]);
      expect((await remote.list('chunks/', { after: 'a' })).map((o) => o.key)).toEqual(['chunks/aa/aa1', 'chunks/ab/ab1']);
      expect((await remote.list('chunks/', { after: 'chunks/aa/aa1' })).map((o) => o.key)).toEqual(['chunks/ab/ab1']);
      await remote.delete('snapshots/x');
      expect(await codeOf(remote.head('snapshots/x'))).toBe('REMOTE_NOT_FOUND');
      await remote.delete('snapshots/x'); // deleting what is gone is not an error
    });

    it('honours an aborted signal', async () => {
      const remote = await open();
      const controller = new AbortController();
      controller.abort(new Error('stop'));
      await expect(remote.put('k', Buffer.from('v'), { signal: controller.signal })).rejects.toThrow('stop');
    });
  });
}
