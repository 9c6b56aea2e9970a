/**
 * The remote-space guard's arithmetic and states, with the remote's answers and the drive's
 * unsent bytes supplied by the test (the drive end to end: remote-quota.test.ts).
 */
import { describe, expect, it } from 'vitest';
import { RemoteError, RemoteSpaceError } from '../src/errors.js';
import type { RemoteSpace } from '../src/remote/backend.js';
import { OVERSHOOT_BOUND_BYTES, RemoteSpaceGuard, type Holding } from '../src/sync/remote-space.js';

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

  it('after a refused upload, holds writes only until the server answers a question asked after it', async () => {
    const { guard, world } = setup({ usedBytes: 90 * MiB, usedObjects: 90, quotaBytes: 100 * MiB, quotaObjects: 0 });
    await guard.refresh();
    world.queued = { chunks: 3, bytes: 3 * MiB };
    world.answer = { ...world.answer!, usedBytes: 99 * MiB }; // another device filled the account
    guard.quotaExceeded(new RemoteError('REMOTE_QUOTA', '507 QUOTA_EXCEEDED'));
    expect(() => guard.admit(1)).toThrow(RemoteSpaceError); // until the server has answered
    await guard.refresh(); // asked at once; the figures now say full
    expect(() => guard.admit(1)).toThrow(RemoteSpaceError);
    expect(guard.status()).toMatchObject({ full: true, freeBytes: 0 });
    expect(world.rooms).toBe(0);
    // Files deleted elsewhere: the next answer shows room, whatever the figures were when it refused.
    world.answer = { ...world.answer!, usedBytes: 50 * MiB };
    world.clock += 5000;
    await guard.refresh();
    expect(world.rooms).toBe(1); // the refused uploads are retried now
    guard.admit(MiB);
    expect(guard.status()!.full).toBe(false);
    // Refused again after that (room for one chunk, not all): asked again, and the figures decide again.
    world.answer = { ...world.answer!, usedBytes: 99 * MiB };
    guard.quotaExceeded(new RemoteError('REMOTE_QUOTA', '507 QUOTA_EXCEEDED'));
    await guard.refresh();
    expect(() => guard.admit(MiB)).toThrow(RemoteSpaceError);
    world.answer = { ...world.answer!, quotaBytes: 200 * MiB };
    world.clock += 5000;
    await guard.refresh();
    expect(world.rooms).toBe(2);
    guard.admit(MiB);
  });

  it('takes the server at its word when it refuses uploads its own figures have room for', async () => {
    const { guard, world } = setup({ usedBytes: MiB, usedObjects: 1, quotaBytes: 100 * MiB, quotaObjects: 0 });
    await guard.refresh();
    world.queued = { chunks: 1, bytes: MiB };
    guard.quotaExceeded(new RemoteError('REMOTE_QUOTA', '507 QUOTA_EXCEEDED'));
    await guard.refresh();
    expect(world.rooms).toBe(1); // its figures show room: retried
    guard.admit(1);
    guard.quotaExceeded(new RemoteError('REMOTE_QUOTA', '507 QUOTA_EXCEEDED')); // refused again: its disk, not the quota
    await guard.refresh();
    expect(() => guard.admit(1)).toThrow(RemoteSpaceError);
    expect(guard.status()!.full).toBe(true);
    expect(world.rooms).toBe(1); // not retried on every answer
    world.clock += 30_000;
    await guard.refresh();
    expect(world.rooms).toBe(2); // but now and then
    guard.uploaded(MiB); // and its acceptance ends it
    guard.admit(1);
    expect(guard.status()!.full).toBe(false);
  });

  it('never shows more used than the quota, even with uploads counted on top of an answer', async () => {
    const { guard, world } = setup({ usedBytes: 9 * MiB, usedObjects: 9, quotaBytes: 10 * MiB, quotaObjects: 0 });
    await guard.refresh();
    guard.uploaded(3 * MiB); // already in the answer: counted twice until the next one
    const status = guard.status()!;
    expect(status.usedBytes).toBeLessThanOrEqual(status.quotaBytes);
    expect(status.freeBytes).toBe(0);
    expect(status.full).toBe(true);
    expect(guard.capacity()!.freeBytes).toBe(0);
    world.answer = { ...world.answer!, usedBytes: 12 * MiB }; // the server itself says it is past a lowered quota
    await guard.refresh();
    expect(guard.status()!.usedBytes).toBe(12 * MiB);
  });

  it('asks again after every few MiB admitted, and waits for that answer rather than run past a lowered quota', async () => {
    const { guard, world } = setup({ usedBytes: 0, usedObjects: 0, quotaBytes: 1024 * MiB, quotaObjects: 0 });
    await guard.refresh();
    const asked = world.asked;
    let admitted = 0;
    for (let i = 0; i < 8; i++) {
      await guard.admit(MiB);
      admitted += MiB;
    }
    world.uncommitted = { chunks: 8, bytes: admitted };
    world.answer = { ...world.answer!, quotaBytes: 4 * MiB }; // lowered on the server
    // The next write sends a question; writes go on until another ASK_EVERY_BYTES, then wait for it.
    let refused = 0;
    for (let i = 0; i < 40; i++) {
      try {
        await guard.admit(MiB);
        admitted += MiB;
        world.uncommitted = { chunks: world.uncommitted.chunks + 1, bytes: admitted };
      } catch (err) {
        if (!(err instanceof RemoteSpaceError)) throw err;
        refused++;
      }
    }
    expect(world.asked).toBeGreaterThan(asked);
    expect(refused).toBeGreaterThan(0);
    // Past the lowered quota by no more than the stated bound.
    expect(admitted - 4 * MiB).toBeLessThanOrEqual(8 * MiB + OVERSHOOT_BOUND_BYTES);
  });

  it('keeps the last room for the index: chunks that would take it wait, and are retried once room appears', async () => {
    const { guard, world } = setup({ usedBytes: 8 * MiB, usedObjects: 8, quotaBytes: 10 * MiB, quotaObjects: 0 });
    await guard.refresh();
    world.queued = { chunks: 2, bytes: 2 * MiB };
    expect(guard.mayUpload(MiB)).toBe(true); // 1 MiB left after it: more than two snapshots of a 64 KiB index
    guard.uploaded(MiB);
    world.queued = { chunks: 1, bytes: MiB };
    expect(guard.mayUpload(MiB)).toBe(false); // it would take the index's room
    world.answer = { ...world.answer!, usedBytes: 5 * MiB }; // a published delete freed room
    world.clock += 5000;
    await guard.refresh();
    expect(world.rooms).toBe(1);
    expect(guard.mayUpload(MiB)).toBe(true);
    // Without a quota, or before the server answered, nothing is held back.
    expect(setup(undefined).guard.mayUpload(1 << 40)).toBe(true);
  });

  it('learns the quota when a server that was unreachable at mount answers', async () => {
    const { guard, world } = setup({ usedBytes: 0, usedObjects: 0, quotaBytes: 10 * MiB, quotaObjects: 0 });
    const real = (guard as unknown as { options: { fetch: (s: AbortSignal) => Promise<RemoteSpace | undefined> } }).options;
    const answer = real.fetch;
    real.fetch = () => Promise.reject(new RemoteError('REMOTE_UNAVAILABLE', 'ECONNREFUSED'));
    await guard.refresh();
    guard.admit(100 * MiB); // offline: no limit known
    expect(guard.status()).toBeUndefined();
    real.fetch = answer;
    await guard.refresh();
    expect(world.asked).toBe(1);
    expect(() => guard.admit(20 * MiB)).toThrow(RemoteSpaceError);
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
