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
 * Everything follows the server's latest answer; nothing latches. An upload the server refuses
 * for lack of room (REMOTE_QUOTA) holds writes back only until the server has answered a
 * question asked after it, which is asked at once. From then on the figures decide: room shows
 * (space freed, the quota raised) and writes are accepted and the refused uploads retried now.
 * Only a server that refuses an upload although its own figures, asked after an earlier
 * refusal, showed room (its disk is full, not the quota) is taken at its word instead: writes
 * stay refused until it accepts an upload again.
 *
 * Questions: at mount; every LIMITED_REFRESH_MS while the account has a quota; every
 * UNKNOWN_REFRESH_MS while the server has not answered (a drive mounted offline learns the quota
 * as soon as the server is back); every IDLE_REFRESH_MS otherwise (a quota may be set later, a
 * token revoked); at once after a refused upload and after this drive deleted objects; before a
 * write that does not fit is refused (at most once a second; the write waits up to
 * REFUSAL_WAIT_MS for the answer); and after every ASK_EVERY_BYTES of admitted writes.
 *
 * Overshoot after a quota is lowered (docs: README "When the account is full"): writes admitted
 * on the old figures are bounded in bytes, not only in time. After ASK_EVERY_BYTES admitted
 * since the last question a new one is sent, and once ASK_EVERY_BYTES more are admitted while it
 * is unanswered, writes wait for its answer (up to REFUSAL_WAIT_MS). So once the server applies a
 * lower quota, at most 2 × ASK_EVERY_BYTES + WRITES_IN_FLIGHT (OVERSHOOT_BOUND_BYTES) are
 * acknowledged past it while the server answers within REFUSAL_WAIT_MS; a server that does not
 * answer leaves the drive working as offline, with no bound. What overshoots stays queued.
 *
 * Nothing here knows FUSE; the daemon wires it to FileData (admitWrite), the filesystem
 * (statfs) and the syncer (uploads, refusals).
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
/** Refreshes asked for by refused writes come at most this often. */
const MIN_REFRESH_GAP_MS = 1000;
/** How long a write waits for the server's fresh figures before it is decided on the old ones. */
const REFUSAL_WAIT_MS = 2000;
/** Bytes of writes admitted on one answer before the server is asked again (see the overshoot bound above). */
export const ASK_EVERY_BYTES = 8 * 1024 * 1024;
/** The most a drive acknowledges past a quota the server has lowered, while the server answers. */
export const OVERSHOOT_BOUND_BYTES = 2 * ASK_EVERY_BYTES + WRITES_IN_FLIGHT;
/** How often uploads are retried on a server whose figures showed room while it refused them. */
const UNTRUSTED_RETRY_MS = 30_000;
/** Between questions while the account has a quota. */
const LIMITED_REFRESH_MS = 5000;
/** Between questions while the server has not answered yet, or the last question failed. */
const UNKNOWN_REFRESH_MS = 2000;
/** Between questions while the account has no quota. */
const IDLE_REFRESH_MS = 15_000;

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
  /** Told how each question ended (`askedAtMs`: when it was sent): the syncer shows a refused token. */
  onAnswer?: (outcome: { ok: true } | { ok: false; err: unknown }, askedAtMs: number) => void;
  /** Longest a refresh may take; default 10 s. */
  timeoutMs?: number;
  now?: () => number;
}

/** What status shows of the remote's space. Byte figures are the account's, not only this vault's. */
export interface RemoteSpaceStatus {
  /** Never more than the quota unless the server itself says so (uploads since the answer are counted on top, up to the quota). */
  usedBytes: number;
  usedObjects: number;
  /** 0: no limit. */
  quotaBytes: number;
  quotaObjects: number;
  /** Bytes this drive holds that the remote does not yet have (queued chunks and unsealed writes). */
  unsentBytes: number;
  /** Bytes of new data the drive still accepts (at most quota − used); null without a byte quota. */
  freeBytes: number | null;
  /** Writes fail with ENOSPC: no room is left, the last refused write still does not fit, or the server refused an upload. */
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
  /** When the server last refused an upload for lack of room, until an answer asked after it arrives. */
  private refusedAtMs: number | null = null;
  /** Uploads were refused and have not been retried since: retry them as soon as an answer shows room. */
  private uploadsWaiting = false;
  /** The answer to the question after the last refusal showed room: another refusal means the figures cannot be trusted. */
  private roomShownAfterRefusal = false;
  /** The server refused uploads although its figures showed room: refuse writes until it accepts one again. */
  private figuresUntrusted = false;
  /** When refused uploads were last retried because an answer showed room. */
  private lastRetryMs = -Infinity;
  /** Bytes of the last refused write, while it would still not fit; 0 otherwise. */
  private refusingBytes = 0;
  private estimate: { free: number; atMs: number } | undefined;
  private admittedSinceEstimate = 0;
  /** Bytes admitted since the last question was sent (bounds what a lowered quota lets through). */
  private admittedSinceAsk = 0;
  private refreshing: Promise<void> | undefined;
  /** A question must be sent after the one in flight (something happened after it was asked). */
  private askAgain = false;
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
      if (this.now() - this.lastRefreshMs >= this.refreshInterval()) void this.refresh();
    }, 500);
    this.timer.unref();
  }

  async stop(): Promise<void> {
    clearInterval(this.timer);
    this.abort.abort(new Error('stopped'));
    await this.refreshing;
  }

  private refreshInterval(): number {
    if (this.space === undefined || this.lastError !== null) return UNKNOWN_REFRESH_MS;
    return this.limited() || this.refusedAtMs !== null || this.figuresUntrusted ? LIMITED_REFRESH_MS : IDLE_REFRESH_MS;
  }

  /**
   * Asks the remote for its figures; concurrent calls share one request, except that
   * `{ after: true }` (something changed after the question in flight was sent) asks once more
   * when it returns. Never rejects.
   */
  refresh(options: { after?: boolean } = {}): Promise<void> {
    if (!this.options.fetch || this.abort.signal.aborted) return Promise.resolve();
    if (this.refreshing) {
      if (options.after) this.askAgain = true;
      return this.refreshing;
    }
    this.refreshing = (async () => {
      do {
        this.askAgain = false;
        await this.askOnce();
      } while (this.askAgain && !this.abort.signal.aborted);
    })().finally(() => (this.refreshing = undefined));
    return this.refreshing;
  }

  private async askOnce(): Promise<void> {
    const askedAtMs = this.now();
    this.lastRefreshMs = askedAtMs;
    this.admittedSinceAsk = 0;
    // Uploads finished from here on may or may not be in the answer: they are counted on top.
    const bytesAtAsk = this.uploadedBytes;
    const objectsAtAsk = this.uploadedObjects;
    const signal = AbortSignal.any([this.abort.signal, AbortSignal.timeout(this.options.timeoutMs ?? 10_000)]);
    let space: RemoteSpace | undefined;
    try {
      space = await this.options.fetch!(signal);
    } catch (err) {
      if (this.abort.signal.aborted) return;
      const message = (err as Error)?.message ?? String(err);
      if (this.lastError === null) this.options.log.warn(`asking the remote how much room the account has: ${message}`, { op: 'space', err });
      this.lastError = message;
      this.options.onAnswer?.({ ok: false, err }, askedAtMs);
      return;
    }
    if (this.lastError !== null) this.options.log.info('the remote answers again', { op: 'space' });
    this.space = space;
    this.baseBytes = bytesAtAsk;
    this.baseObjects = objectsAtAsk;
    this.checkedAtMs = this.now();
    this.lastError = null;
    this.estimate = undefined;
    // A server that cannot tell its figures (no usage endpoint) shows room only by taking an upload.
    const afterRefusal = this.refusedAtMs !== null && askedAtMs >= this.refusedAtMs && space !== undefined;
    if (afterRefusal) this.refusedAtMs = null;
    this.reconsider(afterRefusal);
    this.options.onAnswer?.({ ok: true }, askedAtMs);
  }

  /** The syncer stored an object of `bytes` on the remote. */
  uploaded(bytes: number): void {
    this.uploadedBytes += bytes;
    this.uploadedObjects += 1;
    if (this.figuresUntrusted || (this.refusedAtMs !== null && this.space === undefined)) {
      // The server takes uploads again: its word, which is what held writes back.
      this.figuresUntrusted = false;
      this.refusedAtMs = null;
      this.estimate = undefined;
      this.options.log.info('the remote takes uploads again: writes are accepted again', { op: 'space' });
    }
    this.roomShownAfterRefusal = false;
  }

  /**
   * Whether a chunk of `bytes` may go up now. On an account with a byte quota, the last room is
   * kept for the index's next snapshots: a full account can then still publish a delete, which is
   * the only way room comes back. True while no quota is known.
   */
  mayUpload(bytes: number): boolean {
    const space = this.space;
    if (!space || space.quotaBytes <= 0) return true;
    const used = space.usedBytes + this.uploadedBytes - this.baseBytes;
    if (space.quotaBytes - used - bytes >= this.metadataReserve()) return true;
    this.uploadsWaiting = true;
    return false;
  }

  /** Room kept for metadata: the next two snapshots of the index, and a few manifests. */
  private metadataReserve(): number {
    return 2 * (this.options.metadataBytes() + CHUNK_OVERHEAD) + MANIFEST_RESERVE;
  }

  /** This drive deleted objects from the remote: the server's figures now show more room. */
  freed(): void {
    void this.refresh({ after: true });
  }

  /** The server refused an upload for lack of room (REMOTE_QUOTA). */
  quotaExceeded(err: CofferError): void {
    if (this.refusedAtMs === null && !this.figuresUntrusted) {
      this.options.log.warn(`the remote account is full (${err.message}): new writes fail with ENOSPC while it has no room; what is written stays queued`, {
        op: 'space',
      });
    }
    this.refusedAtMs = this.now();
    this.uploadsWaiting = true;
    this.estimate = undefined;
    void this.refresh({ after: true });
  }

  /**
   * Admits `bytes` more, or refuses them with RemoteSpaceError; called before a write is
   * acknowledged. A write that fits is answered at once, unless ASK_EVERY_BYTES were admitted
   * since the question still unanswered: then it waits for that answer (the overshoot bound). One
   * that does not fit, on figures a second old or more, first asks the server again and waits for
   * the answer (at most REFUSAL_WAIT_MS; concurrent writes share the question): so the first write
   * after a quota was raised or space freed succeeds. Within a second of the last question it is
   * refused at once.
   */
  admit(bytes: number): void | Promise<void> {
    if (bytes <= 0 || (!this.limited() && !this.refusing())) return;
    if (this.options.fetch && this.limited() && this.admittedSinceAsk >= ASK_EVERY_BYTES) {
      const asking = this.refreshing;
      void this.refresh();
      if (asking) return this.boundedWait(asking).then(() => this.decide(bytes));
    }
    return this.decide(bytes);
  }

  private decide(bytes: number): void | Promise<void> {
    if (this.fits(bytes)) return;
    if (this.options.fetch && this.now() - this.lastRefreshMs >= MIN_REFRESH_GAP_MS) {
      return this.boundedWait(this.refresh()).then(() => {
        if (!this.fits(bytes)) this.refuse(bytes);
      });
    }
    this.refuse(bytes);
  }

  private async boundedWait(answer: Promise<void>): Promise<void> {
    let waited: NodeJS.Timeout | undefined;
    await Promise.race([answer, new Promise<void>((resolve) => (waited = setTimeout(resolve, REFUSAL_WAIT_MS)))]);
    clearTimeout(waited);
  }

  private fits(bytes: number): boolean {
    let free = this.estimatedFree(false);
    if (free < bytes) free = this.estimatedFree(true); // fresh local figures before refusing
    if (bytes > free) return false;
    this.admittedSinceEstimate += bytes;
    this.admittedSinceAsk += bytes;
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
    if (this.now() - this.lastRefreshMs >= MIN_REFRESH_GAP_MS) void this.refresh();
    throw new RemoteSpaceError(`the remote account is full: ${bytes} bytes do not fit in the ${free} bytes left for new data`, bytes, free);
  }

  /** For statfs: the byte quota as the size and what writes may still add as free; undefined without a byte quota. */
  capacity(): { totalBytes: number; freeBytes: number } | undefined {
    const quota = this.space?.quotaBytes ?? 0;
    if (quota <= 0) return undefined;
    return { totalBytes: quota, freeBytes: this.shownFree(quota, this.shownUsed(), this.estimatedFree(false)) };
  }

  /** Undefined while the remote has never said (it cannot, or has not answered yet). */
  status(): RemoteSpaceStatus | undefined {
    if (!this.space) return undefined;
    const queued = this.options.queued();
    const uncommitted = this.options.uncommitted();
    const free = this.computeFree();
    const quota = this.space.quotaBytes;
    const used = this.shownUsed();
    return {
      usedBytes: used,
      usedObjects: this.space.usedObjects + this.uploadedObjects - this.baseObjects,
      quotaBytes: quota,
      quotaObjects: this.space.quotaObjects,
      unsentBytes: queued.bytes + uncommitted.bytes,
      freeBytes: quota > 0 ? this.shownFree(quota, used, free) : null,
      full: this.isFull(free),
      checkedAtMs: this.checkedAtMs,
      lastError: this.lastError,
    };
  }

  /** Writes are refused now: no room, the last refused write would still not fit, or the server refused uploads. */
  isFull(free = this.computeFree()): boolean {
    if (this.refusing()) return true;
    if (!this.limited()) return false;
    return free <= 0 || (this.refusingBytes > 0 && free < this.refusingBytes);
  }

  private refusing(): boolean {
    return this.refusedAtMs !== null || this.figuresUntrusted;
  }

  private limited(): boolean {
    return (this.space?.quotaBytes ?? 0) > 0 || (this.space?.quotaObjects ?? 0) > 0;
  }

  /**
   * What the account stores: the server's figure plus what this drive uploaded since it was
   * asked. Uploads in flight when the question was asked may be in both, so the sum is capped at
   * the quota (or at the server's own figure, if that is already past a lowered quota).
   */
  private shownUsed(): number {
    const space = this.space!;
    const used = space.usedBytes + this.uploadedBytes - this.baseBytes;
    return space.quotaBytes > 0 ? Math.min(used, Math.max(space.quotaBytes, space.usedBytes)) : used;
  }

  private shownFree(quota: number, used: number, free: number): number {
    return Math.max(0, Math.min(quota - used, free));
  }

  /**
   * After new figures: retry refused uploads once there is room, and end refusals the room now
   * covers. `afterRefusal`: the question was asked after an upload was refused for lack of room;
   * a second such answer in a row that shows room (no upload taken between) means the server's
   * figures cannot be trusted.
   */
  private reconsider(afterRefusal = false): void {
    const space = this.space;
    if (afterRefusal && space !== undefined) {
      const room = this.roomForOneChunk(space);
      if (room && this.roomShownAfterRefusal && !this.figuresUntrusted) {
        this.figuresUntrusted = true;
        this.options.log.warn('the server refuses uploads although its figures show room: writes fail with ENOSPC until it accepts an upload again', { op: 'space' });
      }
      this.roomShownAfterRefusal = room;
    }
    const free = this.computeFree();
    // Room for at least one more chunk: uploads refused for lack of room are worth retrying now.
    // A server whose figures proved wrong is tried again only now and then.
    const due = !this.figuresUntrusted || this.now() - this.lastRetryMs >= UNTRUSTED_RETRY_MS;
    if (this.uploadsWaiting && due && space !== undefined && this.roomForOneChunk(space)) {
      this.uploadsWaiting = false;
      this.lastRetryMs = this.now();
      this.options.log.info(`the remote account has room again (${Math.max(0, free)} bytes free for new data): queued uploads are retried now`, { op: 'space' });
      this.options.onRoom?.();
    }
    if (this.refusingBytes > 0 && free >= this.refusingBytes) {
      this.refusingBytes = 0;
      this.options.log.info(`writes are accepted again: ${free} bytes free for new data on the remote account`, { op: 'space' });
    }
  }

  private roomForOneChunk(space: RemoteSpace): boolean {
    const used = space.usedBytes + this.uploadedBytes - this.baseBytes;
    const objects = space.usedObjects + this.uploadedObjects - this.baseObjects;
    const smallest = Math.min(this.options.chunkSize + CHUNK_OVERHEAD, this.options.queued().bytes);
    const bytesOk = space.quotaBytes <= 0 || space.quotaBytes - used - this.metadataReserve() >= smallest;
    const objectsOk = space.quotaObjects <= 0 || objects < space.quotaObjects;
    return bytesOk && objectsOk;
  }

  private estimatedFree(fresh: boolean): number {
    const now = this.now();
    if (fresh || !this.estimate || now - this.estimate.atMs > ESTIMATE_TTL_MS) {
      this.estimate = { free: this.computeFree(), atMs: now };
      this.admittedSinceEstimate = 0;
    }
    return this.estimate.free - this.admittedSinceEstimate;
  }

  /** Bytes of new data the account can still take (may be negative); Infinity without a limit. */
  private computeFree(): number {
    if (this.refusing()) return 0;
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
    const reserve = uncommitted.chunks * CHUNK_OVERHEAD + this.metadataReserve() + WRITES_IN_FLIGHT;
    return space.quotaBytes - used - queued.bytes - uncommitted.bytes - reserve;
  }
}
