/**
 * The remote account's room, as the drive must see it before it acknowledges a write.
 *
 * The drive acknowledges writes locally and uploads later, so a full account would otherwise
 * show up only as uploads that keep failing while programs go on writing data that can never
 * reach the remote. This guard refuses a write up front (RemoteSpaceError, ENOSPC to the
 * program) when the account could not take it:
 *
 *   free = quotaBytes − used − unsent − reserve
 *
 * - `used` is what the server last said the account stores (`RemoteBackend.space`), plus what
 *   this drive uploaded since that question was asked (possibly counted twice, never missed).
 * - `unsent` is what this drive holds that the remote does not: sealed chunks in the upload
 *   queue and written data not yet sealed into chunks.
 * - `reserve` is a safety margin for what the figures above do not show: sealing overhead of
 *   the chunks not sealed yet (a header, nonce and tag each, and padding to 4 KiB for a partial
 *   chunk), and metadata: the next snapshot of the index (about the index's size) and manifests,
 *   which are uploaded on top of the two snapshots the remote keeps. Twice the index's size, as a
 *   publish may follow another before the usage is asked again. And a few writes' worth for
 *   writes admitted but not yet in their buffers when those are counted.
 *
 * Deletions (garbage chunks, old snapshots) are not subtracted until the server is asked
 * again, so between refreshes the guard errs on the side of refusing. An upload the server
 * refuses anyway (REMOTE_QUOTA: another device of the same account, an object quota) puts the
 * guard in "remote full" until a refresh shows more room than there was when it refused.
 *
 * Refreshes: at mount, every `refreshMs` while the account has a quota (or is full), seldom
 * otherwise, after an upload fails with REMOTE_QUOTA, and — at most once a second — before a
 * write that does not fit is refused (that write waits up to REFUSAL_WAIT_MS for the answer),
 * so that writes resume without a remount once room appears. Nothing here knows FUSE; the daemon wires it to FileData
 * (admitWrite), the filesystem (statfs) and the syncer (uploads).
 */
import type { CofferError } from '../errors.js';
import { RemoteSpaceError } from '../errors.js';
import { OBJECT_OVERHEAD, PAD_BLOCK } from '../crypto/objects.js';
import type { Log } from '../logging.js';
import type { RemoteSpace } from '../remote/backend.js';

/** Sealing adds at most this to a chunk: header, nonce, tag, and padding of a partial chunk. */
const CHUNK_OVERHEAD = PAD_BLOCK + OBJECT_OVERHEAD;
/** Manifests are small, padded to 4 KiB: room for a few publishes between refreshes. */
const MANIFEST_RESERVE = 16 * (PAD_BLOCK + OBJECT_OVERHEAD);
/**
 * Writes admitted but not yet in their buffers when the buffers are counted afresh (a write
 * that partly overwrites a chunk reads that chunk first): a few FUSE writes' worth.
 */
const WRITES_IN_FLIGHT = 4 * 128 * 1024;
/** Objects kept back under an object quota for snapshot parts and manifests, beyond the index's own parts. */
const OBJECT_RESERVE = 8;
/** How long a computed figure serves writes before the queue and buffers are counted again. */
const ESTIMATE_TTL_MS = 250;
/** Refreshes asked for by refused writes or refused uploads come at most this often. */
const MIN_REFRESH_GAP_MS = 1000;
/** How long a write that does not fit waits for the server's fresh figures before it is refused. */
const REFUSAL_WAIT_MS = 2000;

export interface Holding {
  chunks: number;
  bytes: number;
}

export interface RemoteSpaceOptions {
  /** Asks the remote; absent when the backend cannot tell (file://, s3://). */
  fetch?: (signal: AbortSignal) => Promise<RemoteSpace | undefined>;
  /** Chunks in the upload queue, sealed bytes. */
  queued: () => Holding;
  /** Written data not yet sealed into chunks, plaintext bytes. */
  uncommitted: () => Holding;
  /** Bytes of the index database: about what the next published snapshot takes. */
  metadataBytes: () => number;
  chunkSize: number;
  log: Log;
  /** Called when the account has room again after an upload was refused for lack of it. */
  onRoom?: () => void;
  /** Between refreshes while the account has a quota; default 15 s. */
  refreshMs?: number;
  /** Between refreshes while it has none (one may be set later); default 5 min. */
  idleRefreshMs?: number;
  /** Longest a refresh may take; default 10 s. */
  timeoutMs?: number;
  now?: () => number;
}

/** What status shows of the remote's space. Byte figures are the account's, not only this vault's. */
export interface RemoteSpaceStatus {
  usedBytes: number;
  usedObjects: number;
  /** 0: no limit. */
  quotaBytes: number;
  quotaObjects: number;
  /** Bytes this drive holds that the remote does not yet have (queued chunks and unsealed writes). */
  unsentBytes: number;
  /** Bytes of new data the drive still accepts; null without a byte quota. */
  freeBytes: number | null;
  /** Writes fail with ENOSPC: the last one was refused, or the server refused an upload for lack of room. */
  full: boolean;
  /** When the server last answered (epoch ms). */
  checkedAtMs: number;
  /** Why the last refresh failed, if it did. */
  lastError: string | null;
}

export class RemoteSpaceGuard {
  private space: RemoteSpace | undefined;
  private checkedAtMs = 0;
  private lastError: string | null = null;
  /** Uploads counted since `start` (bytes and objects), and their totals when the last answer was asked for. */
  private uploadedBytes = 0;
  private uploadedObjects = 0;
  private baseBytes = 0;
  private baseObjects = 0;
  /** The server refused an upload for lack of room; cleared by a refresh that shows more room than then. */
  private quotaRefused = false;
  /**
   * The server's figures when it refused: the first answer after the refusal. Only figures that
   * show more room than these (a higher quota, less used) end "remote full": the server knows
   * better than our estimate, and retrying on every refresh while nothing changed would only
   * fail again.
   */
  private refusalFigures: RemoteSpace | undefined;
  /** Bytes of the last refused write while writes are being refused; 0 when they are not. */
  private refusingBytes = 0;
  private estimate: { free: number; atMs: number } | undefined;
  private admittedSince = 0;
  private refreshing: Promise<void> | undefined;
  private lastRefreshMs = -Infinity;
  private timer: NodeJS.Timeout | undefined;
  private readonly abort = new AbortController();
  private readonly now: () => number;

  constructor(private readonly options: RemoteSpaceOptions) {
    this.now = options.now ?? Date.now;
  }

  /**
   * Asks the remote, then keeps asking in the background. Waits for the first answer at most
   * `waitMs`, so a slow or unreachable remote delays the mount only that much (the question
   * goes on; until it is answered no limit is known, as for a drive that works offline).
   */
  async start(waitMs = 3000): Promise<void> {
    let waited: NodeJS.Timeout | undefined;
    await Promise.race([this.refresh(), new Promise<void>((resolve) => (waited = setTimeout(resolve, waitMs)))]);
    clearTimeout(waited);
    if (!this.options.fetch) return;
    this.timer = setInterval(() => {
      const every = this.limited() || this.quotaRefused ? (this.options.refreshMs ?? 15_000) : (this.options.idleRefreshMs ?? 300_000);
      if (this.now() - this.lastRefreshMs >= every) void this.refresh();
    }, 1000);
    this.timer.unref();
  }

  async stop(): Promise<void> {
    clearInterval(this.timer);
    this.abort.abort(new Error('stopped'));
    await this.refreshing;
  }

  /** Asks the remote for its figures; concurrent calls share one request. Never rejects. */
  refresh(): Promise<void> {
    const fetch = this.options.fetch;
    if (!fetch || this.abort.signal.aborted) return Promise.resolve();
    if (this.refreshing) return this.refreshing;
    this.lastRefreshMs = this.now();
    // Uploads finished from here on may or may not be in the answer: they are counted on top.
    const bytesAtAsk = this.uploadedBytes;
    const objectsAtAsk = this.uploadedObjects;
    const signal = AbortSignal.any([this.abort.signal, AbortSignal.timeout(this.options.timeoutMs ?? 10_000)]);
    this.refreshing = (async () => {
      try {
        const space = await fetch(signal);
        this.space = space;
        this.baseBytes = bytesAtAsk;
        this.baseObjects = objectsAtAsk;
        this.checkedAtMs = this.now();
        this.lastError = null;
        this.estimate = undefined;
        this.reconsider();
      } catch (err) {
        if (this.abort.signal.aborted) return;
        const message = (err as Error)?.message ?? String(err);
        if (this.lastError === null) this.options.log.warn(`asking the remote how much room the account has: ${message}`, { op: 'space', err });
        this.lastError = message;
      } finally {
        this.refreshing = undefined;
      }
    })();
    return this.refreshing;
  }

  /** The syncer stored an object of `bytes` on the remote. */
  uploaded(bytes: number): void {
    this.uploadedBytes += bytes;
    this.uploadedObjects += 1;
    // A remote that cannot tell its space shows room only by taking uploads again.
    if (this.quotaRefused && (!this.options.fetch || this.space === undefined)) {
      this.quotaRefused = false;
      this.estimate = undefined;
      this.options.log.info('the remote takes uploads again: writes are accepted again');
    }
  }

  /** The server refused an upload for lack of room (REMOTE_QUOTA). */
  quotaExceeded(err: CofferError): void {
    if (!this.quotaRefused) {
      this.options.log.warn(`the remote account is full (${err.message}): new writes fail with ENOSPC until space is freed or the quota raised; what is written stays queued`, {
        op: 'space',
      });
    }
    this.quotaRefused = true;
    this.refusalFigures = undefined;
    this.estimate = undefined;
    this.refreshSoon();
  }

  /**
   * Admits `bytes` more, or refuses them with RemoteSpaceError; called before a write is
   * acknowledged. A write that fits is answered at once. One that does not fit, on figures a
   * second old or more, first asks the server again and waits for the answer (at most
   * REFUSAL_WAIT_MS; concurrent writes share the question): so the first write after a quota
   * was raised or space freed succeeds. Within a second of the last question it is refused at once.
   */
  admit(bytes: number): void | Promise<void> {
    if (bytes <= 0 || (!this.limited() && !this.quotaRefused)) return;
    if (this.fits(bytes)) return;
    if (this.options.fetch && this.now() - this.lastRefreshMs >= MIN_REFRESH_GAP_MS) {
      let waited: NodeJS.Timeout | undefined;
      const answerOrTimeout = Promise.race([this.refresh(), new Promise<void>((resolve) => (waited = setTimeout(resolve, REFUSAL_WAIT_MS)))]);
      return answerOrTimeout.then(() => {
        clearTimeout(waited);
        if (!this.fits(bytes)) this.refuse(bytes);
      });
    }
    this.refuse(bytes);
  }

  private fits(bytes: number): boolean {
    let free = this.estimatedFree(false);
    if (free < bytes) free = this.estimatedFree(true); // fresh local figures before refusing
    if (bytes > free) return false;
    this.admittedSince += bytes;
    if (this.refusingBytes > 0) {
      this.refusingBytes = 0;
      this.options.log.info(`writes are accepted again: ${free} bytes free for new data on the remote account`, { op: 'space' });
    }
    return true;
  }

  private refuse(bytes: number): never {
    const free = Math.max(0, this.estimatedFree(false));
    if (this.refusingBytes === 0) {
      this.options.log.warn(
        `refusing writes with ENOSPC: the remote account has ${free} bytes free for new data once what is not uploaded yet is counted` +
          `${this.space?.quotaBytes ? ` (quota ${this.space.quotaBytes} bytes)` : ''}`,
        { op: 'space', neededBytes: bytes },
      );
    }
    this.refusingBytes = bytes;
    this.refreshSoon();
    throw new RemoteSpaceError(`the remote account is full: ${bytes} bytes do not fit in the ${free} bytes left for new data`, bytes, free);
  }

  /** For statfs: the byte quota as the size and what writes may still add as free; undefined without a byte quota. */
  capacity(): { totalBytes: number; freeBytes: number } | undefined {
    const quota = this.space?.quotaBytes ?? 0;
    if (quota <= 0) return undefined;
    return { totalBytes: quota, freeBytes: Math.max(0, Math.min(quota, this.estimatedFree(false))) };
  }

  /** Undefined while the remote has never said (it cannot, or has not answered yet). */
  status(): RemoteSpaceStatus | undefined {
    if (!this.space) return undefined;
    const queued = this.options.queued();
    const uncommitted = this.options.uncommitted();
    const free = this.computeFree();
    return {
      usedBytes: this.space.usedBytes + this.uploadedBytes - this.baseBytes,
      usedObjects: this.space.usedObjects + this.uploadedObjects - this.baseObjects,
      quotaBytes: this.space.quotaBytes,
      quotaObjects: this.space.quotaObjects,
      unsentBytes: queued.bytes + uncommitted.bytes,
      freeBytes: this.space.quotaBytes > 0 ? Math.max(0, free) : null,
      full: this.isFull(),
      checkedAtMs: this.checkedAtMs,
      lastError: this.lastError,
    };
  }

  isFull(): boolean {
    return this.quotaRefused || this.refusingBytes > 0;
  }

  private limited(): boolean {
    return (this.space?.quotaBytes ?? 0) > 0 || (this.space?.quotaObjects ?? 0) > 0;
  }

  private refreshSoon(): void {
    if (this.now() - this.lastRefreshMs >= MIN_REFRESH_GAP_MS) void this.refresh();
  }

  /** After new figures: leave "full" states the account now has room for. */
  private reconsider(): void {
    const free = this.computeFree(false);
    if (this.quotaRefused && this.space && !this.refusalFigures) this.refusalFigures = this.space;
    else if (this.quotaRefused && free > 0 && moreRoom(this.space, this.refusalFigures)) {
      this.quotaRefused = false;
      this.options.log.info(`the remote account has room again (${free} bytes free for new data): queued uploads are retried now`, { op: 'space' });
      this.refusalFigures = undefined;
      this.options.onRoom?.();
    }
    if (this.refusingBytes > 0 && free >= this.refusingBytes) {
      this.refusingBytes = 0;
      this.options.log.info(`writes are accepted again: ${free} bytes free for new data on the remote account`, { op: 'space' });
    }
  }

  private estimatedFree(fresh: boolean): number {
    const now = this.now();
    if (fresh || !this.estimate || now - this.estimate.atMs > ESTIMATE_TTL_MS) {
      this.estimate = { free: this.computeFree(), atMs: now };
      this.admittedSince = 0;
    }
    return this.estimate.free - this.admittedSince;
  }

  /** Bytes of new data the account can still take (may be negative); Infinity without a limit. */
  private computeFree(honourRefusal = true): number {
    if (honourRefusal && this.quotaRefused) return 0;
    const space = this.space;
    if (!space || (space.quotaBytes <= 0 && space.quotaObjects <= 0)) return Infinity;
    const queued = this.options.queued();
    const uncommitted = this.options.uncommitted();
    const metadata = this.options.metadataBytes();
    if (space.quotaObjects > 0) {
      const metadataParts = 2 * (Math.ceil(metadata / this.options.chunkSize) + 1);
      const objects = space.usedObjects + this.uploadedObjects - this.baseObjects + queued.chunks + uncommitted.chunks + metadataParts + OBJECT_RESERVE;
      if (objects >= space.quotaObjects) return 0;
    }
    if (space.quotaBytes <= 0) return Infinity;
    const used = space.usedBytes + this.uploadedBytes - this.baseBytes;
    const reserve = uncommitted.chunks * CHUNK_OVERHEAD + 2 * (metadata + CHUNK_OVERHEAD) + MANIFEST_RESERVE + WRITES_IN_FLIGHT;
    return space.quotaBytes - used - queued.bytes - uncommitted.bytes - reserve;
  }
}

/** Whether `now` leaves the account more room than `then`: a quota raised or lifted, or less stored. */
function moreRoom(now: RemoteSpace | undefined, then: RemoteSpace | undefined): boolean {
  if (!now || !then) return false;
  const raised = (quota: number, before: number) => (quota === 0 && before > 0) || (before > 0 && quota > before);
  return raised(now.quotaBytes, then.quotaBytes) || raised(now.quotaObjects, then.quotaObjects) || now.usedBytes < then.usedBytes || now.usedObjects < then.usedObjects;
}
