/**
 * Retries around any backend: backends make one attempt and say whether a failure is worth
 * another (REMOTE_UNAVAILABLE); this wrapper decides how often and how long to wait, so
 * every backend gets the same policy and none hides sleeps inside.
 *
 * Waits are exponential with full jitter (a random delay between 0 and
 * min(maxDelayMs, baseDelayMs * 2^n)), so clients that failed together do not come back
 * together. An aborted signal ends everything at once, a wait included.
 */
import { RemoteError } from '../errors.js';
import type { ByteRange, CallOptions, ListOptions, ObjectInfo, RemoteBackend, RemoteCapabilities, RemoteSpace } from './backend.js';
import { sleep } from './sleep.js';

export interface RetryOptions {
  /** Attempts in all, the first included. */
  attempts?: number;
  baseDelayMs?: number;
  maxDelayMs?: number;
  /** Told about every failed attempt that will be retried (`attempt` counts from 1); for logs. */
  onRetry?: (op: string, key: string, attempt: number, err: RemoteError) => void;
  /** Source of jitter in [0, 1); replaceable so tests need not wait at random. */
  random?: () => number;
}

export class RetryingBackend implements RemoteBackend {
  private readonly attempts: number;
  private readonly baseDelayMs: number;
  private readonly maxDelayMs: number;
  private readonly onRetry: RetryOptions['onRetry'];
  private readonly random: () => number;

  constructor(
    readonly inner: RemoteBackend,
    options: RetryOptions = {},
  ) {
    this.attempts = Math.max(1, Math.floor(options.attempts ?? 5));
    this.baseDelayMs = Math.max(0, options.baseDelayMs ?? 200);
    this.maxDelayMs = Math.max(0, options.maxDelayMs ?? 10_000);
    this.onRetry = options.onRetry;
    this.random = options.random ?? Math.random;
  }

  get description(): string {
    return this.inner.description;
  }

  capabilities(options?: CallOptions): Promise<RemoteCapabilities> {
    return this.retry('capabilities', '', options?.signal, () => this.inner.capabilities(options));
  }

  put(key: string, body: Buffer, options?: CallOptions): Promise<void> {
    return this.retry('put', key, options?.signal, () => this.inner.put(key, body, options));
  }

  /**
   * A failed attempt may still have written the object (the answer was lost, or the
   * connection dropped after the server committed). Retrying then finds our own object and
   * says REMOTE_EXISTS, which would make the caller believe someone else won.
   *
   * So once an attempt has failed ambiguously, REMOTE_EXISTS is checked: if the object holds
   * exactly the bytes we were writing, the create counts as ours and succeeds. Byte equality
   * is the right test for Coffer: everything it creates exclusively is sealed with a fresh
   * random nonce, so another writer cannot produce the same bytes; and even if one did, the
   * key would hold precisely what we meant to store. A REMOTE_EXISTS on the first attempt
   * is never second-guessed: nothing of ours can be there yet.
   */
  createExclusive(key: string, body: Buffer, options?: CallOptions): Promise<void> {
    let ambiguous = false;
    return this.retry('createExclusive', key, options?.signal, async () => {
      try {
        await this.inner.createExclusive(key, body, options);
      } catch (err) {
        if (err instanceof RemoteError && err.code === 'REMOTE_UNAVAILABLE') ambiguous = true;
        if (!(ambiguous && err instanceof RemoteError && err.code === 'REMOTE_EXISTS')) throw err;
        const stored = await this.inner.get(key, options).catch((readErr: unknown) => {
          // Gone again (deleted meanwhile): try creating once more rather than guess.
          if (readErr instanceof RemoteError && readErr.code === 'REMOTE_NOT_FOUND') {
            throw new RemoteError('REMOTE_UNAVAILABLE', `object ${key} vanished while checking who created it`);
          }
          throw readErr;
        });
        if (!stored.equals(body)) throw err;
      }
    });
  }

  get(key: string, options?: CallOptions & { range?: ByteRange }): Promise<Buffer> {
    return this.retry('get', key, options?.signal, () => this.inner.get(key, options));
  }

  head(key: string, options?: CallOptions): Promise<ObjectInfo> {
    return this.retry('head', key, options?.signal, () => this.inner.head(key, options));
  }

  list(prefix: string, options?: ListOptions): Promise<ObjectInfo[]> {
    return this.retry('list', prefix, options?.signal, () => this.inner.list(prefix, options));
  }

  delete(key: string, options?: CallOptions): Promise<void> {
    return this.retry('delete', key, options?.signal, () => this.inner.delete(key, options));
  }

  async space(options?: CallOptions): Promise<RemoteSpace | undefined> {
    const inner = this.inner;
    if (!inner.space) return undefined;
    return this.retry('space', '', options?.signal, () => inner.space!(options));
  }

  private async retry<T>(op: string, key: string, signal: AbortSignal | undefined, attempt: () => Promise<T>): Promise<T> {
    for (let n = 1; ; n++) {
      signal?.throwIfAborted();
      try {
        return await attempt();
      } catch (err) {
        if (signal?.aborted) throw signal.reason;
        if (!(err instanceof RemoteError) || err.code !== 'REMOTE_UNAVAILABLE' || n >= this.attempts) throw err;
        this.onRetry?.(op, key, n, err);
        const ceiling = Math.min(this.maxDelayMs, this.baseDelayMs * 2 ** (n - 1));
        await sleep(Math.floor(this.random() * ceiling), signal);
      }
    }
  }
}

