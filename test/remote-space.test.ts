/**
 * The remote-space guard's arithmetic and states, with the remote's answers and the drive's
 * unsent bytes supplied by the test (the drive end to end: remote-quota.test.ts).
 */
import { describe, expect, it } from 'vitest';
import { RemoteError, RemoteSpaceError } from '../src/errors.js';
import type { RemoteSpace } from '../src/remote/backend.js';
import { RemoteSpaceGuard, type Holding } from '../src/sync/remote-space.js';

const MiB = 1024 * 1024;
const quiet = { debug: () => {}, info: () => {}, warn: () => {}, error: () => {} };

function setup(answer: RemoteSpace | undefined) {
  const world = {
    answer,
    asked: 0,
    queued: { chunks: 0, bytes: 0 } as Holding,
    uncommitted: { chunks: 0, bytes: 0 } as Holding,
    clock: 1_000_000,
    rooms: 0,
  };
  const guard = new RemoteSpaceGuard({
    fetch: async () => {
      world.asked++;
      return world.answer && { ...world.answer };
    },
    queued: () => world.queued,
    uncommitted: () => world.uncommitted,
    metadataBytes: () => 64 * 1024,
    chunkSize: MiB,
    log: quiet,
    onRoom: () => world.rooms++,
    now: () => world.clock,
  });
  return { guard, world };
}

function refusal(run: () => void): RemoteSpaceError {
  try {
    run();
  } catch (err) {
    if (err instanceof RemoteSpaceError) return err;
    throw err;
  }
  throw new Error('expected the write to be refused');
}

describe('RemoteSpaceGuard', () => {
  it('admits writes up to the quota less used, unsent and the margin, then refuses', async () => {
    const { guard, world } = setup({ usedBytes: MiB, usedObjects: 1, quotaBytes: 10 * MiB, quotaObjects: 0 });
    await guard.refresh();
    world.queued = { chunks: 2, bytes: 2 * MiB };
    const free = guard.capacity()!.freeBytes;
    // 10 − 1 used − 2 queued, less a margin of well under a MiB.
    expect(free).toBeLessThan(7 * MiB);
    expect(free).toBeGreaterThan(6 * MiB);
    guard.admit(free - 1000);
    world.uncommitted = { chunks: 7, bytes: free - 1000 }; // the data is in its buffers
    const err = refusal(() => guard.admit(2000));
    expect(err.code).toBe('REMOTE_QUOTA');
    expect(guard.status()).toMatchObject({ full: true, quotaBytes: 10 * MiB, usedBytes: MiB, unsentBytes: 2 * MiB + free - 1000, freeBytes: 0 });
    // Uploads move bytes from unsent to used: no new room.
    world.queued = { chunks: 0, bytes: 0 };
    guard.uploaded(2 * MiB);
    world.answer = { ...world.answer!, usedBytes: 3 * MiB, usedObjects: 3 }; // the server has them too
    world.clock += 1000;
    await expect(guard.admit(2000)).rejects.toThrow(RemoteSpaceError); // asked again first: still no room
  });

  it('has no limit without a quota, or without an answer', async () => {
    const none = setup({ usedBytes: 5 * MiB, usedObjects: 5, quotaBytes: 0, quotaObjects: 0 });
    await none.guard.refresh();
    none.guard.admit(1 << 40);
    expect(none.guard.capacity()).toBeUndefined();
    expect(none.guard.status()).toMatchObject({ freeBytes: null, full: false });
    const silent = setup(undefined);
    await silent.guard.refresh();
    silent.guard.admit(1 << 40);
    expect(silent.guard.status()).toBeUndefined();
  });

  it('refuses every write after the server refused an upload, until it reports more room than then', async () => {
    const { guard, world } = setup({ usedBytes: MiB, usedObjects: 1, quotaBytes: 100 * MiB, quotaObjects: 0 });
    await guard.refresh();
    guard.admit(MiB);
    guard.quotaExceeded(new RemoteError('REMOTE_QUOTA', '507 QUOTA_EXCEEDED'));
    expect(() => guard.admit(1)).toThrow(RemoteSpaceError);
    await guard.refresh(); // the figures when it refused: plenty of room by our count, but the server said no
    world.clock += 20_000;
    await guard.refresh();
    expect(() => guard.admit(1)).toThrow(RemoteSpaceError);
    expect(world.rooms).toBe(0);
    world.answer = { ...world.answer!, quotaBytes: 200 * MiB };
    world.clock += 20_000;
    await guard.refresh();
    expect(world.rooms).toBe(1);
    guard.admit(MiB);
    expect(guard.status()!.full).toBe(false);
  });

  it('asks again before refusing a write, at most once a second, so the first write after room appears succeeds', async () => {
    const { guard, world } = setup({ usedBytes: 9 * MiB, usedObjects: 9, quotaBytes: 10 * MiB, quotaObjects: 0 });
    await guard.refresh();
    const asked = world.asked;
    expect(() => guard.admit(2 * MiB)).toThrow(RemoteSpaceError);
    expect(() => guard.admit(2 * MiB)).toThrow(RemoteSpaceError);
    expect(world.asked).toBe(asked); // within a second of the last question: refused at once
    expect(guard.status()!.full).toBe(true);
    world.answer = { ...world.answer!, quotaBytes: 20 * MiB };
    world.clock += 1000;
    await guard.admit(2 * MiB); // waited for the fresh figures, which have room
    expect(world.asked).toBe(asked + 1);
    expect(guard.status()!.full).toBe(false);
  });

  it('refuses after a bounded wait when the server does not answer', async () => {
    const { guard, world } = setup({ usedBytes: 9 * MiB, usedObjects: 9, quotaBytes: 10 * MiB, quotaObjects: 0 });
    await guard.refresh();
    world.clock += 1000;
    (guard as unknown as { options: { fetch: () => Promise<never> } }).options.fetch = () => new Promise<never>(() => {});
    const started = Date.now();
    await expect(guard.admit(2 * MiB)).rejects.toThrow(RemoteSpaceError);
    expect(Date.now() - started).toBeLessThan(5000);
  });

  it('refuses writes when the object quota leaves no room', async () => {
    const { guard } = setup({ usedBytes: 0, usedObjects: 95, quotaBytes: 0, quotaObjects: 100 });
    await guard.refresh();
    expect(() => guard.admit(1)).toThrow(RemoteSpaceError);
  });
});
