/**
 * Background sync: uploads queued chunks, publishes this device's changes to its journal
 * (publisher.ts) and merges other devices' journals (merger.ts) every poll interval.
 *
 * Ordering (docs/FORMAT.md, "Publishing"): an entry is published only after every chunk its
 * records name is on the remote. The upload queue lives in the index, so it survives restarts; a
 * failed upload is retried with backoff and its error stays visible in status until it succeeds.
 *
 * Refusals (errors.ts REFUSAL_CODES: a full account, a refused token, a request the server will
 * never take, another writer) are failures retrying cannot fix. Each is kept in `refused` with the
 * time of the last attempt it answered, so `sync --wait` can end on one that came after it asked;
 * a refused token also pauses all uploads and publishing (retried every AUTH_RETRY_MS, or at once
 * when a sync is asked for) instead of retrying them like an outage.
 *
 * Remote garbage (chunks no file names any more) is deleted only while this device is the vault's
 * only device: with several, another device may name the same chunk in a change not yet merged
 * here, and deleting stays for a maintenance step that all devices agree on.
 */
import { isCofferError, RemoteError, isRefusal, type CofferError, type CofferErrorCode } from '../errors.js';
import type { ChunkStore } from '../chunks/chunk-store.js';
import type { VaultIndex } from '../index/vault-index.js';
import { remoteKeys, type RemoteBackend } from '../remote/backend.js';
import type { ObjectContext } from '../crypto/objects.js';
import type { Log } from '../logging.js';
import type { DeviceState } from './device-state.js';
import { JournalContext } from './journal-context.js';
import { checkJournals, pullChanges } from './merger.js';
import { publishChanges } from './publisher.js';
import { checkpointIfDue, DEFAULT_CHECKPOINT_ENTRIES } from './checkpointer.js';

/** Told what reaches the remote and when it refuses for lack of room (the remote-space guard listens). */
export interface UploadObserver {
  /** One object of `bytes` is now stored on the remote. */
  uploaded(bytes: number): void;
  /** An upload failed with REMOTE_QUOTA. */
  quotaExceeded(err: CofferError): void;
  /** Objects were deleted from the remote: the account has more room. */
  freed(): void;
  /** Whether a chunk of `bytes` may go up now: false when it would take the room the index's next snapshot needs. */
  mayUpload(bytes: number): boolean;
}

/** A refusal by the remote (errors.ts REFUSAL_CODES) that still holds. */
export interface SyncRefusal {
  code: CofferErrorCode;
  message: string;
  /** When this kind of refusal was first met (epoch ms). */
  sinceMs: number;
  /** When the last attempt it refused was started (epoch ms). */
  atMs: number;
}

export interface SyncerOptions {
  index: VaultIndex;
  store: ChunkStore;
  backend: RemoteBackend;
  /** Context for journal entries and device records (the metadata key). */
  metadataContext: ObjectContext;
  /** Directory of the device state file. */
  stateDir: string;
  /** This device's state (device-state.ts), as read at mount. */
  deviceState: DeviceState;
  /** How often other devices' journals are looked at (default 5 s). */
  pollIntervalMs?: number;
  /** A checkpoint once the journals hold this many entries past the newest (checkpointer.ts). */
  checkpointEntries?: number;
  /** After a publish that left nothing unpublished: may change the device state (e.g. finish an upgrade). */
  onPublished?: (state: DeviceState) => Promise<DeviceState>;
  log: Log;
  concurrency?: number;
  /** Quiet time after the last change before changes are published. */
  publishDelayMs?: number;
  tickMs?: number;
  observer?: UploadObserver;
  /** Publish without waiting for quiet (the account is full: a delete should free room at once). */
  publishUrgently?: () => boolean;
}

/** Publishing after a failure waits this long at most before trying again. */
const MAX_PUBLISH_BACKOFF_MS = 60_000;
/** While the remote has not answered since the mount, it is asked this often. */
const OFFLINE_PROBE_MS = 5000;
/** After the remote refused the token, uploads and publishing pause this long before one more try. */
const AUTH_RETRY_MS = 60_000;

export interface SyncStatus {
  /** Changes made so far in this run, and how many of them the remote has in a published entry. */
  changeCount: number;
  publishedChange: number;
  uploading: number;
  uploadedChunks: number;
  uploadedBytes: number;
  lastPublishMs: number | null;
  /** This device's last published journal entry (0: none yet). */
  publishedSeq: number;
  /** When other devices' journals were last read completely (epoch ms; null: not yet), and when that read started. */
  lastPollMs: number | null;
  lastPollStartMs: number;
  /** Conflicted copies that merges made during this run. */
  conflicts: number;
  /** Other devices whose journal cannot be applied now, and why. */
  stuck: { device: string; name: string; reason: string }[];
  /** This device. */
  device: { device: string; name: string };
  /** The vault's other devices: name, when they last published, what this device applied of them. */
  devices: { device: string; name: string; seq: number; publishedMs: number | null; heardMs: number | null }[];
  lastError: string | null;
  publishPending: boolean;
  /** Refusals by the remote that still hold: retrying cannot fix them (empty when there are none). */
  refused: SyncRefusal[];
  /** Uploads and publishing are paused until this time because the remote refused the token; null when not. */
  pausedUntilMs: number | null;
  /** The remote has not answered since the mount (why); null once it has. */
  offline: string | null;
}

const MAX_BACKOFF_MS = 5 * 60_000;

export class Syncer {
  private readonly inflight = new Set<string>();
  /** Chunks whose remote copy is being deleted: an upload of the same id waits for that. */
  private readonly deletingRemote = new Set<string>();
  private timer: NodeJS.Timeout | undefined;
  private readonly abort = new AbortController();
  private publishing: Promise<void> | undefined;
  private publishedChange = -1;
  /** A sync was asked for: publish as soon as uploads allow, without waiting for quiet. */
  private urgent = false;
  private publishFailures = 0;
  private nextPublishMs = 0;
  private lastChange = -1;
  private lastChangeAtMs = 0;
  private readonly ctx: JournalContext;
  private polling: Promise<void> | undefined;
  private checkpointing: Promise<void> | undefined;
  private nextCheckpointMs = 0;
  private nextPollMs = 0;
  /** When the last complete read of other devices' journals started (a sync waits for one that started after it). */
  private lastPollStartMs = 0;
  private lastPollMs: number | null = null;
  private syncRequestedMs = 0;
  private conflicts = 0;
  private stuck: SyncStatus['stuck'] = [];
  private lastPollError: string | null = null;
  private stats = { uploadedChunks: 0, uploadedBytes: 0, lastError: null as string | null };
  private readonly refusals = new Map<CofferErrorCode, SyncRefusal>();
  private pausedUntilMs = 0;
  /** Why the remote is taken to be unreachable since the mount, until it answers. */
  private offline: string | null = null;
  private probing = false;
  private nextProbeMs = 0;
  private readonly concurrency: number;
  private readonly publishDelayMs: number;

  private readonly pollIntervalMs: number;

  constructor(private readonly options: SyncerOptions) {
    this.concurrency = options.concurrency ?? 4;
    this.publishDelayMs = options.publishDelayMs ?? 2000;
    this.pollIntervalMs = options.pollIntervalMs ?? 5000;
    this.ctx = new JournalContext(options.index, options.backend, options.metadataContext, options.stateDir, options.log, options.deviceState);
  }

  async start(): Promise<void> {
    // A previous run may have stopped before publishing its last changes.
    this.publishedChange = this.options.index.replica.pendingCount() === 0 ? this.options.index.changeCount : -1;
    this.timer = setInterval(() => this.tick(), this.options.tickMs ?? 250);
    this.timer.unref();
  }

  /** Stops, and waits for uploads and a publish under way to end (they are aborted). */
  async stop(): Promise<void> {
    clearInterval(this.timer);
    this.abort.abort(new Error('sync stopped'));
    await this.publishing?.catch(() => {});
    await this.polling?.catch(() => {});
    await this.checkpointing?.catch(() => {});
    while (this.inflight.size > 0) await new Promise((r) => setTimeout(r, 10));
  }

  status(): SyncStatus {
    return {
      changeCount: this.options.index.changeCount,
      publishedChange: this.publishedChange,
      uploading: this.inflight.size,
      uploadedChunks: this.stats.uploadedChunks,
      uploadedBytes: this.stats.uploadedBytes,
      lastPublishMs: this.ctx.state.lastPublishMs,
      publishedSeq: this.ctx.state.seq,
      lastPollMs: this.lastPollMs,
      lastPollStartMs: this.lastPollStartMs,
      conflicts: this.conflicts,
      stuck: this.stuck,
      device: { device: this.ctx.state.device, name: this.ctx.state.name },
      devices: Object.entries(this.ctx.state.seen).map(([device, seen]) => ({ device, name: this.options.index.replica.deviceName(device), ...seen })),
      lastError: this.stats.lastError ?? this.lastPollError ?? this.offline,
      publishPending: this.options.index.changeCount !== this.publishedChange || this.options.index.replica.pendingCount() > 0,
      refused: [...this.refusals.values()],
      pausedUntilMs: this.paused() ? this.pausedUntilMs : null,
      offline: this.offline,
    };
  }

  private paused(): boolean {
    return Date.now() < this.pausedUntilMs;
  }

  /**
   * The remote refused an attempt started at `attemptMs` for a reason retrying cannot fix.
   * Logged once per kind; a refused token pauses uploads and publishing.
   */
  noteRefusal(err: CofferError, attemptMs: number): void {
    const known = this.refusals.get(err.code);
    this.refusals.set(err.code, { code: err.code, message: err.message, sinceMs: known?.sinceMs ?? Date.now(), atMs: Math.max(attemptMs, known?.atMs ?? 0) });
    if (err.code === 'REMOTE_UNAUTHORIZED') this.pausedUntilMs = Date.now() + AUTH_RETRY_MS;
    if (!known) {
      const what =
        err.code === 'REMOTE_UNAUTHORIZED'
          ? `; uploads pause and are tried again every ${AUTH_RETRY_MS / 1000} s (or at coffer sync); nothing written is lost`
          : '; what is written stays queued';
      this.options.log.error(`the remote refuses this drive: ${err.message}${what}`, { op: 'sync', code: err.code });
    }
  }

  /** The remote accepted a request: refusals it disproves end (`kind`: what it accepted). */
  noteAccepted(kind: 'request' | 'upload' | 'publish'): void {
    if (this.offline !== null) {
      this.offline = null;
      this.options.log.info('the remote answers: back online', { op: 'sync' });
    }
    const ends: CofferErrorCode[] =
      kind === 'request' ? ['REMOTE_UNAUTHORIZED'] : kind === 'upload' ? ['REMOTE_UNAUTHORIZED', 'REMOTE_QUOTA'] : [...this.refusals.keys()];
    for (const code of ends) {
      if (!this.refusals.delete(code)) continue;
      this.options.log.info(`the remote accepts this drive again (${code} no longer holds)`, { op: 'sync', code });
      if (code === 'REMOTE_UNAUTHORIZED') this.pausedUntilMs = 0;
    }
  }

  /**
   * One authenticated request that changes nothing (the vault header's HEAD): says whether the
   * remote takes this drive's token now. Resolves on success, rejects as the backend does; a
   * refusal is noted, a success ends a token refusal.
   */
  async probe(signal: AbortSignal): Promise<void> {
    const started = Date.now();
    try {
      await this.options.backend.head(remoteKeys.header, { signal });
    } catch (err) {
      if (isCofferError(err, 'REMOTE_NOT_FOUND')) {
        this.noteAccepted('request'); // answered, so the token is good; the header's absence is fsck's business
        return;
      }
      if (isRefusal(err)) this.noteRefusal(err, started);
      throw err;
    }
    this.noteAccepted('request');
  }

  private tick(): void {
    if (this.abort.signal.aborted) return;
    try {
      this.step();
    } catch (err) {
      // e.g. SQLITE_FULL on a full disk: try again at the next tick, never take the daemon down.
      this.stats.lastError = `sync: ${(err as Error).message}`;
    }
  }

  private step(): void {
    const index = this.options.index;
    if (index.changeCount !== this.lastChange) {
      if (this.lastChange !== -1) index.setState('published', 0);
      this.lastChange = index.changeCount;
      this.lastChangeAtMs = Date.now();
    }
    this.probeWhileOffline();
    if (this.paused()) return;
    this.pumpUploads();
    this.pollWhenDue();
    const quiet = this.urgent || this.options.publishUrgently?.() === true || Date.now() - this.lastChangeAtMs >= this.publishDelayMs;
    const due = Date.now() >= this.nextPublishMs;
    const pending = index.changeCount !== this.publishedChange || index.replica.pendingCount() > 0;
    if (!this.publishing && quiet && due && pending) {
      const started = Date.now();
      this.publishing = this.publish()
        .then(() => {
          this.publishFailures = 0;
          this.noteAccepted('publish');
        })
        .catch((err) => {
          if (this.abort.signal.aborted) return;
          if (isCofferError(err, 'REMOTE_QUOTA')) this.options.observer?.quotaExceeded(err);
          if (isRefusal(err)) this.noteRefusal(err, started);
          this.publishFailures++;
          this.nextPublishMs = Date.now() + Math.min(MAX_PUBLISH_BACKOFF_MS, 500 * 2 ** this.publishFailures);
          this.stats.lastError = `publishing changes: ${(err as Error).message}`;
          this.options.log.warn(this.stats.lastError, { op: 'publish', err });
        })
        .finally(() => (this.publishing = undefined));
    }
  }

  private pumpUploads(): void {
    const free = this.concurrency - this.inflight.size;
    if (free <= 0 || this.paused()) return;
    const candidates = this.options.index.nextUploads(Date.now(), free + this.inflight.size);
    for (const { id, attempts } of candidates) {
      const hex = id.toString('hex');
      if (this.inflight.has(hex) || this.deletingRemote.has(hex) || this.inflight.size >= this.concurrency) continue;
      this.inflight.add(hex);
      this.upload(id, attempts)
        .catch((err) => this.options.log.error(`upload of chunk ${hex} failed unexpectedly: ${(err as Error).message}`, { op: 'upload', chunk: hex, err }))
        .finally(() => {
          this.inflight.delete(hex);
          // Keep the pipe full: start the next upload now, not at the next tick.
          if (!this.abort.signal.aborted) this.tick();
        });
    }
  }

  private async upload(id: Buffer, attempts: number): Promise<void> {
    const hex = id.toString('hex');
    const { index, store, backend } = this.options;
    let sealed: Buffer;
    try {
      sealed = await store.readSealed(id);
    } catch (err) {
      if (!index.isQueued(id)) return; // released and collected meanwhile
      this.failed(id, attempts, `reading the local copy: ${(err as Error).message}`);
      return;
    }
    const started = Date.now();
    if (this.options.observer && !this.options.observer.mayUpload(sealed.length)) {
      // The account's last room is kept for the index: without a publish, no delete can free any.
      const err = new RemoteError('REMOTE_QUOTA', `the account's quota has no room for chunk ${hex} once room for the index's next snapshot is kept`);
      this.noteRefusal(err, started);
      this.failed(id, attempts, err.message);
      return;
    }
    try {
      await backend.put(remoteKeys.chunk(hex), sealed, { signal: this.abort.signal });
      index.markUploaded(id);
      this.noteAccepted('upload');
      this.options.observer?.uploaded(sealed.length);
      this.options.log.debug('uploaded chunk', { op: 'upload', chunk: hex, bytes: sealed.length, ms: Date.now() - started });
      store.scheduleEviction(); // an uploaded chunk may now leave a full cache
      this.stats.uploadedChunks++;
      this.stats.uploadedBytes += sealed.length;
      this.stats.lastError = null;
    } catch (err) {
      if (this.abort.signal.aborted) return;
      if (isCofferError(err, 'REMOTE_QUOTA')) this.options.observer?.quotaExceeded(err);
      if (isRefusal(err)) this.noteRefusal(err, started);
      this.failed(id, attempts, (err as Error).message);
    }
  }

  /**
   * After a publish: deletes chunks no published entry names any more, while this device is the
   * vault's only one (see the top of the file). A failure is only logged: the rows stay, and the
   * next publish tries again.
   */
  private async deleteRemoteGarbage(cutoffMs: number): Promise<void> {
    const { index, backend } = this.options;
    const signal = this.abort.signal;
    let deleted = 0;
    try {
      if (index.remoteGarbage(cutoffMs, 1).length === 0) return;
      const devices = await this.ctx.listDevices(signal);
      if (devices.some((d) => d !== this.ctx.state.device)) return;
      for (let batch = index.remoteGarbage(cutoffMs, 256); batch.length > 0; batch = index.remoteGarbage(cutoffMs, 256)) {
        for (const id of batch) {
          // Written again meanwhile? Then it is queued for upload and must not be deleted.
          if (!index.isRemoteGarbage(id)) continue;
          const hex = id.toString('hex');
          this.deletingRemote.add(hex);
          try {
            await backend.delete(remoteKeys.chunk(hex), { signal }).catch((err: unknown) => {
              if (!isCofferError(err, 'REMOTE_NOT_FOUND')) throw err; // a put that never landed
            });
          } finally {
            this.deletingRemote.delete(hex);
          }
          index.dropRemoteGarbage(id);
          deleted++;
        }
      }
    } catch (err) {
      if (!signal.aborted) this.options.log.warn(`deleting unreferenced objects from the remote: ${(err as Error).message}`, { op: 'delete', err });
    } finally {
      if (deleted > 0) this.options.observer?.freed();
    }
  }

  private failed(id: Buffer, attempts: number, message: string): void {
    const delay = Math.min(MAX_BACKOFF_MS, 1000 * 2 ** attempts) * (0.5 + Math.random() / 2);
    this.options.index.markUploadFailed(id, message, Math.round(Date.now() + delay));
    this.stats.lastError = `uploading chunk ${id.toString('hex')}: ${message}`;
    const fields = { op: 'upload', chunk: id.toString('hex'), attempts: attempts + 1, retryInMs: Math.round(delay) };
    if (attempts === 0 || attempts % 5 === 4) this.options.log.warn(this.stats.lastError, fields);
    else this.options.log.debug(this.stats.lastError, fields);
  }

  /**
   * The remote could not be reached at mount: status says so, and the remote is asked again every
   * OFFLINE_PROBE_MS until it answers (or an upload gets through).
   */
  noteOffline(message: string): void {
    this.offline = message;
    this.nextProbeMs = Date.now() + OFFLINE_PROBE_MS;
  }

  private probeWhileOffline(): void {
    if (this.offline === null || this.probing || Date.now() < this.nextProbeMs) return;
    this.probing = true;
    this.probe(AbortSignal.any([this.abort.signal, AbortSignal.timeout(OFFLINE_PROBE_MS)]))
      .catch(() => {})
      .finally(() => {
        this.probing = false;
        this.nextProbeMs = Date.now() + OFFLINE_PROBE_MS;
      });
  }

  isUploading(id: Buffer): boolean {
    return this.inflight.has(id.toString('hex'));
  }

  /**
   * Starts a sync now: failed uploads are retried at once, changes are published as soon as
   * their chunks are up, and other devices' journals are read. Returns the change count that
   * `isSynced` waits for.
   */
  requestSync(): number {
    this.pausedUntilMs = 0; // one more try, even after a refused token
    this.options.index.retryUploadsNow();
    this.urgent = true;
    this.nextPublishMs = 0;
    this.nextPollMs = 0;
    this.syncRequestedMs = Date.now();
    this.tick();
    return this.options.index.changeCount;
  }

  /** Everything changed before the request is published, and other devices' journals were read since. */
  isSynced(target: number): boolean {
    return this.publishedChange >= target && this.options.index.replica.pendingCount() === 0 && this.lastPollStartMs >= this.syncRequestedMs;
  }

  private pollWhenDue(): void {
    if (this.polling || Date.now() < this.nextPollMs || this.offline !== null) return;
    const started = Date.now();
    this.polling = pullChanges(this.ctx, this.abort.signal)
      .then((result) => {
        this.lastPollStartMs = started;
        this.lastPollMs = Date.now();
        this.lastPollError = null;
        this.conflicts += result.conflicts;
        this.stuck = result.stuck.map((s) => ({ ...s, name: this.options.index.replica.deviceName(s.device) }));
        this.refusals.delete('REMOTE_ROLLBACK');
        if (result.entries > 0) {
          this.options.log.info(`merged ${result.entries} journal entr${result.entries === 1 ? 'y' : 'ies'} from other devices (${result.nodes} nodes${result.conflicts > 0 ? `, ${result.conflicts} conflicted copies` : ''})`, { op: 'merge', ...result, stuck: undefined });
        }
        this.noteAccepted('request');
        this.checkpointWhenDue();
      })
      .catch((err) => {
        if (this.abort.signal.aborted) return;
        if (isRefusal(err) || isCofferError(err, 'REMOTE_ROLLBACK')) this.noteRefusal(err as CofferError, started);
        this.lastPollError = `reading other devices' changes: ${(err as Error).message}`;
        if (isCofferError(err, 'REMOTE_ROLLBACK')) this.options.log.error(this.lastPollError, { op: 'merge', err });
        else this.options.log.warn(this.lastPollError, { op: 'merge', err });
      })
      .finally(() => {
        this.polling = undefined;
        this.nextPollMs = Date.now() + this.pollIntervalMs;
      });
  }

  /**
   * After a poll that went through: a checkpoint if one is due (checkpointer.ts). Not more often
   * than every ten poll intervals, and never two at once.
   */
  private checkpointWhenDue(): void {
    if (this.checkpointing || Date.now() < this.nextCheckpointMs || this.offline !== null || this.paused()) return;
    this.nextCheckpointMs = Date.now() + 10 * this.pollIntervalMs;
    this.checkpointing = checkpointIfDue(this.ctx, this.options.checkpointEntries ?? DEFAULT_CHECKPOINT_ENTRIES, this.abort.signal)
      .then(() => {})
      .catch((err) => {
        if (this.abort.signal.aborted) return;
        this.options.log.warn(`writing a checkpoint: ${(err as Error).message}`, { op: 'checkpoint', err });
      })
      .finally(() => (this.checkpointing = undefined));
  }

  /**
   * At mount: this device's journal and every device's applied entries are on the remote as this
   * device left them; a rollback or a swap is refused (REMOTE_ROLLBACK) before anything merges.
   */
  async checkRemote(signal?: AbortSignal): Promise<void> {
    await checkJournals(this.ctx, signal);
  }

  private async publish(): Promise<void> {
    const { index } = this.options;
    const signal = this.abort.signal;
    const change = index.changeCount;
    // Chunks released before this publish are named by no entry published from here on.
    const garbageCutoffMs = Date.now();
    await publishChanges(
      this.ctx,
      {
        chunksUploaded: (ids, s) => this.waitUploaded(ids, s),
        uploaded: (bytes) => this.options.observer?.uploaded(bytes),
      },
      signal,
    );
    this.publishedChange = change;
    if (index.changeCount === change) this.urgent = false;
    this.stats.lastError = null;
    if (this.options.onPublished && index.replica.pendingCount() === 0) this.ctx.state = await this.options.onPublished(this.ctx.state);
    await this.deleteRemoteGarbage(garbageCutoffMs);
  }

  /** Data before metadata: resolves once every chunk named is on the remote. */
  private async waitUploaded(ids: Buffer[], signal: AbortSignal): Promise<void> {
    for (const id of ids) {
      for (;;) {
        signal.throwIfAborted();
        const info = this.options.index.chunkInfo(id);
        if (!info || info.uploaded) break;
        this.pumpUploads();
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
    }
  }
}
