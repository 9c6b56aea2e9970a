/**
 * A bandwidth limit around any backend: object bodies sent (put, createExclusive) and received
 * (get) pass through a token bucket per direction, so over time no more than the configured
 * bytes per second go each way. Like RetryingBackend it is a wrapper, so every backend gets the
 * same limit; it sits beneath the retries, because every attempt spends bandwidth.
 *
 * The bucket fills at `rate` bytes per second up to one second's worth and starts empty. A call
 * takes the bytes it moves and, when that leaves the bucket in debt, waits until the debt is
 * paid: so an object larger than the bucket still passes (it just waits longer), and concurrent
 * calls queue up behind each other's debt. Sends wait *before* the request (the bytes have not
 * gone yet); receives learn their size only from the answer, so they wait *after* it, before
 * handing the body back — the next transfer is held back instead. Over any interval of t
 * seconds, at most `rate × (t + 1)` bytes are sent, and from a fresh start at most `rate × t`.
 *
 * Waits end at once when the call's AbortSignal aborts (rejecting with its reason, as every
 * backend call must); an upload that never went gives its bytes back. No timer outlives the
 * call that set it. Listing, head, delete, capabilities and space move little and are not counted.
 */
import type { ByteRange, CallOptions, ListOptions, ObjectInfo, RemoteBackend, RemoteCapabilities, RemoteSpace } from './backend.js';
import { sleep } from './sleep.js';

export interface RateLimits {
  /** Bytes per second sent to the remote; 0 or absent is no limit. */
  uploadBytesPerSecond?: number;
  /** Bytes per second taken from the remote; 0 or absent is no limit. */
  downloadBytesPerSecond?: number;
  /** Milliseconds of a monotonic clock; replaceable in tests. */
  now?: () => number;
}

/** Tokens are bytes. Debt is allowed: `take` says how long the caller must wait for it to be paid. */
export class TokenBucket {
  private tokens = 0;
  private last: number;
  /** The most the bucket holds: one second's worth. */
  readonly capacity: number;

  constructor(
    readonly bytesPerSecond: number,
    private readonly now: () => number = () => performance.now(),
  ) {
    if (!(bytesPerSecond > 0) || !Number.isFinite(bytesPerSecond)) throw new RangeError(`a rate must be a positive number of bytes per second, not ${bytesPerSecond}`);
    this.capacity = bytesPerSecond;
    this.last = this.now();
  }

  private refill(): void {
    const now = this.now();
    if (now > this.last) this.tokens = Math.min(this.capacity, this.tokens + ((now - this.last) * this.bytesPerSecond) / 1000);
    this.last = now;
  }

  /** Takes `bytes`; returns the milliseconds to wait until they are paid for (0: at once). */
  take(bytes: number): number {
    this.refill();
    this.tokens -= bytes;
    return this.tokens >= 0 ? 0 : Math.ceil((-this.tokens * 1000) / this.bytesPerSecond);
  }

  /** Returns bytes taken for a transfer that did not happen. */
  giveBack(bytes: number): void {
    this.refill();
    this.tokens = Math.min(this.capacity, this.tokens + bytes);
  }
}

export class RateLimitedBackend implements RemoteBackend {
  private readonly upload: TokenBucket | undefined;
  private readonly download: TokenBucket | undefined;
  private readonly now: () => number;

  constructor(
    readonly inner: RemoteBackend,
    readonly limits: RateLimits,
  ) {
    const now = limits.now ?? (() => performance.now());
    this.now = now;
    this.upload = limits.uploadBytesPerSecond ? new TokenBucket(limits.uploadBytesPerSecond, now) : undefined;
    this.download = limits.downloadBytesPerSecond ? new TokenBucket(limits.downloadBytesPerSecond, now) : undefined;
  }

  /** Names the limits wherever the remote is named (status, the daemon log). */
  get description(): string {
    const parts: string[] = [];
    if (this.upload) parts.push(`upload ${formatRate(this.upload.bytesPerSecond)}`);
    if (this.download) parts.push(`download ${formatRate(this.download.bytesPerSecond)}`);
    return parts.length ? `${this.inner.description} (limited: ${parts.join(', ')})` : this.inner.description;
  }

  capabilities(options?: CallOptions): Promise<RemoteCapabilities> {
    return this.inner.capabilities(options);
  }

  async put(key: string, body: Buffer, options?: CallOptions): Promise<void> {
    await this.beforeSending(body.length, options?.signal);
    return this.inner.put(key, body, options);
  }

  async createExclusive(key: string, body: Buffer, options?: CallOptions): Promise<void> {
    await this.beforeSending(body.length, options?.signal);
    return this.inner.createExclusive(key, body, options);
  }

  async get(key: string, options?: CallOptions & { range?: ByteRange }): Promise<Buffer> {
    const body = await this.inner.get(key, options);
    if (this.download) {
      await this.pause(this.download.take(body.length), options?.signal);
    }
    return body;
  }

  head(key: string, options?: CallOptions): Promise<ObjectInfo> {
    return this.inner.head(key, options);
  }

  list(prefix: string, options?: ListOptions): Promise<ObjectInfo[]> {
    return this.inner.list(prefix, options);
  }

  delete(key: string, options?: CallOptions): Promise<void> {
    return this.inner.delete(key, options);
  }

  async space(options?: CallOptions): Promise<RemoteSpace | undefined> {
    return this.inner.space ? this.inner.space(options) : undefined;
  }

  /**
   * Waits `ms` by this backend's clock. A timer may fire a little early (libuv measures from
   * the start of the loop's turn), so the wait is checked against the clock and topped up.
   */
  private async pause(ms: number, signal: AbortSignal | undefined): Promise<void> {
    if (ms <= 0) return;
    const until = this.now() + ms;
    // A few rounds at most: only a clock that stands still (a test's) would need more.
    for (let left = ms, round = 0; left > 0 && round < 4; left = until - this.now(), round++) await sleep(Math.ceil(left), signal);
  }

  private async beforeSending(bytes: number, signal: AbortSignal | undefined): Promise<void> {
    signal?.throwIfAborted();
    if (!this.upload) return;
    try {
      await this.pause(this.upload.take(bytes), signal);
    } catch (err) {
      this.upload.giveBack(bytes);
      throw err;
    }
  }
}

function formatRate(bytesPerSecond: number): string {
  const units = ['B/s', 'KiB/s', 'MiB/s', 'GiB/s'];
  let value = bytesPerSecond;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return `${Number.isInteger(value) ? value : value.toFixed(1)} ${units[unit]}`;
}
