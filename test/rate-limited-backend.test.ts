/**
 * The bandwidth limit on its own: the token bucket's arithmetic on a fake clock, then the
 * wrapper around a backend in memory on the real clock — waits bounded from below, aborts
 * that end a wait at once and give the bytes back, no timer left behind.
 */
import { describe, expect, it } from 'vitest';
import { RemoteError } from '../src/errors.js';
import type { ByteRange, CallOptions, ObjectInfo, RemoteBackend, RemoteCapabilities } from '../src/remote/backend.js';
import { FaultyBackend } from '../src/remote/faulty-backend.js';
import { FileBackend } from '../src/remote/file-backend.js';
import { RateLimitedBackend, TokenBucket } from '../src/remote/rate-limited-backend.js';
import { RetryingBackend } from '../src/remote/retrying-backend.js';
import { openConfiguredBackend } from '../src/vault/config.js';

class MemoryBackend implements RemoteBackend {
  readonly description = 'memory';
  readonly objects = new Map<string, Buffer>();
  /** When each put reached the backend (ms since the test's start). */
  readonly putTimes: number[] = [];
  constructor(private readonly t0 = performance.now()) {}
  async capabilities(): Promise<RemoteCapabilities> {
    return { atomicExclusiveCreate: true };
  }
  async put(key: string, body: Buffer): Promise<void> {
    this.putTimes.push(performance.now() - this.t0);
    this.objects.set(key, body);
  }
  async createExclusive(key: string, body: Buffer): Promise<void> {
    if (this.objects.has(key)) throw new RemoteError('REMOTE_EXISTS', key);
    await this.put(key, body);
  }
  async get(key: string, options?: CallOptions & { range?: ByteRange }): Promise<Buffer> {
    const body = this.objects.get(key);
    if (!body) throw new RemoteError('REMOTE_NOT_FOUND', key);
    return options?.range ? body.subarray(options.range.offset, options.range.offset + options.range.length) : body;
  }
  async head(key: string): Promise<ObjectInfo> {
    return { key, size: (await this.get(key)).length };
  }
  async list(prefix: string): Promise<ObjectInfo[]> {
    return [...this.objects].filter(([k]) => k.startsWith(prefix)).map(([key, b]) => ({ key, size: b.length }));
  }
  async delete(key: string): Promise<void> {
    this.objects.delete(key);
  }
}

const KiB = 1024;
const timers = () => process.getActiveResourcesInfo().filter((r) => r === 'Timeout').length;

describe('TokenBucket', () => {
  it('starts empty, lets debt build up, refills at its rate up to one second\'s worth', () => {
    let now = 0;
    const bucket = new TokenBucket(1000, () => now);
    expect(bucket.take(500)).toBe(500);
    expect(bucket.take(500)).toBe(1000); // behind the first one's debt
    now = 1000;
    expect(bucket.take(0)).toBe(0); // paid off
    now = 10_000; // idle: at most one second's worth builds up
    expect(bucket.take(1000)).toBe(0);
    expect(bucket.take(1)).toBe(1);
    bucket.giveBack(1);
    expect(bucket.take(0)).toBe(0);
    expect(() => new TokenBucket(0)).toThrow(RangeError);
  });
});

describe('RateLimitedBackend', () => {
  it('holds uploads back so that, from a fresh start, n bytes take at least n / rate', async () => {
    const inner = new MemoryBackend();
    const limited = new RateLimitedBackend(inner, { uploadBytesPerSecond: 100 * KiB });
    const started = performance.now();
    await Promise.all([0, 1, 2, 3].map((i) => limited.put(`k${i}`, Buffer.alloc(20 * KiB))));
    await limited.createExclusive('m', Buffer.alloc(20 * KiB));
    const elapsed = performance.now() - started;
    // 100 KiB at 100 KiB/s: a second at least; the n-th 20 KiB went no earlier than n × 200 ms.
    expect(elapsed).toBeGreaterThanOrEqual(1000);
    const sorted = [...inner.putTimes].sort((a, b) => a - b);
    sorted.forEach((t, n) => expect(t).toBeGreaterThanOrEqual((n + 1) * 200));
    expect(inner.objects.size).toBe(5);
  });

  it('hands a download back only once the bucket has paid for it; small calls pass at once', async () => {
    const inner = new MemoryBackend();
    inner.objects.set('big', Buffer.alloc(50 * KiB, 7));
    const limited = new RateLimitedBackend(inner, { downloadBytesPerSecond: 100 * KiB, uploadBytesPerSecond: 1 });
    let started = performance.now();
    const body = await limited.get('big');
    expect(performance.now() - started).toBeGreaterThanOrEqual(500);
    expect(body.equals(Buffer.alloc(50 * KiB, 7))).toBe(true);
    started = performance.now();
    await limited.head('big');
    await limited.list('');
    await limited.capabilities();
    await limited.delete('nothing');
    expect(performance.now() - started).toBeLessThan(200);
    expect(limited.description).toBe('memory (limited: upload 1 B/s, download 100 KiB/s)');
  });

  it('ends a wait at once when the call is aborted, gives the bytes back, and leaves no timer', async () => {
    const inner = new MemoryBackend();
    const limited = new RateLimitedBackend(inner, { uploadBytesPerSecond: 10 * KiB, downloadBytesPerSecond: 10 * KiB });
    const before = timers();
    const abort = new AbortController();
    const reason = new Error('no longer wanted');
    setTimeout(() => abort.abort(reason), 50);
    const started = performance.now();
    // 1 MiB at 10 KiB/s would wait 100 s.
    await expect(limited.put('huge', Buffer.alloc(1024 * KiB), { signal: abort.signal })).rejects.toBe(reason);
    expect(performance.now() - started).toBeLessThan(1000);
    expect(inner.objects.has('huge')).toBe(false);
    expect(timers()).toBeLessThanOrEqual(before);
    // The aborted upload's bytes came back: a small one goes after its own share only.
    const small = performance.now();
    await limited.put('small', Buffer.alloc(KiB));
    expect(performance.now() - small).toBeLessThan(1000);
    // A download aborted while it waits rejects with the reason too.
    inner.objects.set('big', Buffer.alloc(100 * KiB));
    await expect(limited.get('big', { signal: AbortSignal.timeout(50) })).rejects.toMatchObject({ name: 'TimeoutError' });
    expect(timers()).toBeLessThanOrEqual(before);
    // An already aborted signal stops before anything is taken.
    await expect(limited.put('x', Buffer.alloc(1), { signal: AbortSignal.abort(reason) })).rejects.toBe(reason);
  });

  it('is what the config asks for: beneath the retries, above injected faults, absent without limits', () => {
    const file = openConfiguredBackend({ remote: 'file:///tmp/coffer-rate-x', uploadLimit: 1024 * KiB, downloadLimit: 0 });
    expect(file).toBeInstanceOf(RateLimitedBackend);
    expect((file as RateLimitedBackend).inner).toBeInstanceOf(FileBackend);
    expect(file.description).toBe('file:///tmp/coffer-rate-x (limited: upload 1 MiB/s)');
    expect(openConfiguredBackend({ remote: 'file:///tmp/coffer-rate-x', uploadLimit: 0, downloadLimit: 0 })).toBeInstanceOf(FileBackend);
    const saved = { ...process.env };
    try {
      Object.assign(process.env, { COFFER_FAULTS: 'fail=0.1', AWS_ACCESS_KEY_ID: 'a', AWS_SECRET_ACCESS_KEY: 'b' });
      const s3 = openConfiguredBackend({ remote: 's3://bucket/p', downloadLimit: 512 * KiB });
      expect(s3).toBeInstanceOf(RetryingBackend);
      const limited = (s3 as RetryingBackend).inner as RateLimitedBackend;
      expect(limited).toBeInstanceOf(RateLimitedBackend);
      expect(limited.inner).toBeInstanceOf(FaultyBackend);
    } finally {
      for (const key of ['COFFER_FAULTS', 'AWS_ACCESS_KEY_ID', 'AWS_SECRET_ACCESS_KEY']) {
        if (saved[key] === undefined) delete process.env[key];
        else process.env[key] = saved[key];
      }
    }
  });
});
