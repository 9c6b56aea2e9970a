/**
 * Background sync: uploads queued chunks, then publishes the index.
 *
 * Ordering (docs/FORMAT.md, "Publishing"): a snapshot is published only after every
 * chunk it references is on the remote, and a manifest only after its snapshot parts.
 * The upload queue lives in the index, so it survives restarts; a failed upload is
 * retried with backoff and its error stays visible in status until it succeeds.
 *
 * Refusals (errors.ts REFUSAL_CODES: a full account, a refused token, a request the server will
 * never take, another writer) are failures retrying cannot fix. Each is kept in `refused` with the
 * time of the last attempt it answered, so `sync --wait` can end on one that came after it asked;
 * a refused token also pauses all uploads and publishing (retried every AUTH_RETRY_MS, or at once
 * when a sync is asked for) instead of retrying them like an outage.
 */
import { mkdir, readFile, rm, writeFile, rename } from 'node:fs/promises';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { Worker } from 'node:worker_threads';
import { CofferError, RemoteError, isCofferError, isRefusal, type CofferErrorCode } from '../errors.js';
import type { ChunkStore } from '../chunks/chunk-store.js';
import type { VaultIndex } from '../index/vault-index.js';
import { remoteKeys, type RemoteBackend } from '../remote/backend.js';
import { ObjectType, openObject, sealObject, type ObjectContext } from '../crypto/objects.js';
import { sodium } from '../crypto/sodium.js';
import { INDEX_SCHEMA_VERSION } from '../index/schema.js';
import type { Log } from '../logging.js';

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
  /** Context for snapshot parts and manifests (the metadata key). */
  metadataContext: ObjectContext;
  chunkSize: number;
  /** Directory for the sync state file and temporary snapshot copies. */
  stateDir: string;
  log: Log;
  concurrency?: number;
  /** Quiet time after the last change before the index is published. */
  publishDelayMs?: number;
  tickMs?: number;
  observer?: UploadObserver;
  /** Publish without waiting for quiet (the account is full: a delete should free room at once). */
  publishUrgently?: () => boolean;
}

export interface SyncState {
  /** Random id of this copy of the vault: a manifest it finds on the remote with its own id is its own. */
  writerId?: string;
  lastManifest: number;
  lastManifestHash: string | null;
  lastPublishMs: number | null;
  /** Snapshot parts of the last published manifests, newest first: older ones are deleted from the remote. */
  recentSnapshots?: { counter: number; parts: string[] }[];
}

/** How many published snapshots stay on the remote (the newest and a fallback). */
const KEPT_SNAPSHOTS = 2;
/** How many foreign objects in the way of the next manifest are skipped before publishing gives up. */
const MAX_SKIPPED_MANIFESTS = 16;
/** Publishing after a failure waits this long at most before trying again. */
const MAX_PUBLISH_BACKOFF_MS = 60_000;
/** While the remote has not answered since the mount, it is asked this often. */
const OFFLINE_PROBE_MS = 5000;
/** After the remote refused the token, uploads and publishing pause this long before one more try. */
const AUTH_RETRY_MS = 60_000;

export interface SyncStatus {
  /** Changes made so far in this run, and how many of them the remote has in a published snapshot. */
  changeCount: number;
  publishedChange: number;
  uploading: number;
  uploadedChunks: number;
  uploadedBytes: number;
  lastPublishMs: number | null;
  lastManifest: number;
  lastError: string | null;
  publishPending: boolean;
  /** Refusals by the remote that still hold: retrying cannot fix them (empty when there are none). */
  refused: SyncRefusal[];
  /** Uploads and publishing are paused until this time because the remote refused the token; null when not. */
  pausedUntilMs: number | null;
  /** The remote has not answered since the mount (why); null once it has. */
  offline: string | null;
}

export interface Manifest {
  format: 'coffer-manifest';
  version: 1;
  counter: number;
  /** The writerId of the vault copy that published it. */
  writer: string;
  previous: string | null;
  created: string;
  indexSchema: number;
  snapshot: { size: number; parts: string[] };
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
  private state: SyncState = { lastManifest: 0, lastManifestHash: null, lastPublishMs: null };
  private stats = { uploadedChunks: 0, uploadedBytes: 0, lastError: null as string | null };
  private readonly refusals = new Map<CofferErrorCode, SyncRefusal>();
  private pausedUntilMs = 0;
  /** Why the remote is taken to be unreachable since the mount, until it answers. */
  private offline: string | null = null;
  private probing = false;
  private nextProbeMs = 0;
  private readonly concurrency: number;
  private readonly publishDelayMs: number;

  constructor(private readonly options: SyncerOptions) {
    this.concurrency = options.concurrency ?? 4;
    this.publishDelayMs = options.publishDelayMs ?? 2000;
  }

  private get statePath(): string {
    return syncStatePath(this.options.stateDir);
  }

  async start(): Promise<void> {
    await mkdir(this.options.stateDir, { recursive: true });
    try {
      this.state = JSON.parse(await readFile(this.statePath, 'utf8')) as SyncState;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    }
    if (!this.state.writerId) {
      this.state.writerId = randomBytes(16).toString('hex');
      await writeJsonAtomic(this.statePath, this.state);
    }
    // A previous run may have stopped before publishing its last changes.
    this.publishedChange = this.options.index.getState('published') === 1 ? this.options.index.changeCount : -1;
    this.timer = setInterval(() => this.tick(), this.options.tickMs ?? 250);
    this.timer.unref();
  }

  /** Stops, and waits for uploads and a publish under way to end (they are aborted). */
  async stop(): Promise<void> {
    clearInterval(this.timer);
    this.abort.abort(new Error('sync stopped'));
    await this.publishing?.catch(() => {});
    while (this.inflight.size > 0) await new Promise((r) => setTimeout(r, 10));
  }

  status(): SyncStatus {
    return {
      changeCount: this.options.index.changeCount,
      publishedChange: this.publishedChange,
      uploading: this.inflight.size,
      uploadedChunks: this.stats.uploadedChunks,
      uploadedBytes: this.stats.uploadedBytes,
      lastPublishMs: this.state.lastPublishMs,
      lastManifest: this.state.lastManifest,
      lastError: this.stats.lastError ?? this.offline,
      publishPending: this.options.index.changeCount !== this.publishedChange,
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
    const quiet = this.urgent || this.options.publishUrgently?.() === true || Date.now() - this.lastChangeAtMs >= this.publishDelayMs;
    const due = Date.now() >= this.nextPublishMs;
    if (!this.publishing && quiet && due && this.inflight.size === 0 && index.changeCount !== this.publishedChange) {
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
          this.stats.lastError = `publishing the index: ${(err as Error).message}`;
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
   * Creates the next manifest with an exclusive create. A key already taken by an object
   * that does not authenticate (injected, or left by another vault) is skipped; one taken
   * by a real manifest of this vault means another writer published: that is refused.
   */
  private async createManifest(size: number, parts: string[], signal: AbortSignal): Promise<{ counter: number; sealedManifest: Buffer }> {
    const { backend, metadataContext } = this.options;
    for (let counter = this.state.lastManifest + 1; ; counter++) {
      const manifest: Manifest = {
        format: 'coffer-manifest',
        version: 1,
        counter,
        writer: this.state.writerId!,
        previous: this.state.lastManifestHash,
        created: new Date().toISOString(),
        indexSchema: INDEX_SCHEMA_VERSION,
        snapshot: { size, parts },
      };
      const sealedManifest = sealObject(metadataContext, ObjectType.Manifest, manifestObjectId(counter), Buffer.from(JSON.stringify(manifest)), { pad: true });
      try {
        await backend.createExclusive(remoteKeys.manifest(counter), sealedManifest, { signal });
        return { counter, sealedManifest };
      } catch (err) {
        if (!isCofferError(err, 'REMOTE_EXISTS') || counter - this.state.lastManifest >= MAX_SKIPPED_MANIFESTS) throw err;
        const existing = await backend.get(remoteKeys.manifest(counter), { signal });
        let found: Manifest | undefined;
        try {
          found = JSON.parse(openObject(metadataContext, ObjectType.Manifest, manifestObjectId(counter), existing).toString('utf8')) as Manifest;
        } catch {
          this.options.log.warn(`manifest ${counter} on the remote does not authenticate (not written by this vault); publishing as ${counter + 1}`, { op: 'publish', manifest: counter });
          continue;
        }
        if (found.writer === this.state.writerId && found.previous === this.state.lastManifestHash) {
          // Our own earlier attempt, whose answer was lost: it is published. Build on it.
          this.options.log.info(`manifest ${counter} on the remote is this vault's own earlier publish; continuing after it`, { op: 'publish', manifest: counter });
          this.state = {
            ...this.state,
            lastManifest: counter,
            lastManifestHash: manifestHash(existing),
            recentSnapshots: [{ counter, parts: found.snapshot.parts }, ...(this.state.recentSnapshots ?? [])],
          };
          await writeJsonAtomic(this.statePath, this.state);
          continue;
        }
        throw new CofferError('REMOTE_CONFLICT', `manifest ${counter} was already published by another writer to this vault; one device may write to a vault at a time`);
      }
    }
  }

  /**
   * After a publish: deletes chunks no published snapshot names any more, and the
   * parts of snapshots older than the ones kept. A failure is only logged: the rows
   * stay, and the next publish tries again.
   */
  private async deleteRemoteGarbage(cutoffMs: number, expired: { parts: string[] }[]): Promise<void> {
    const { index, backend } = this.options;
    const signal = this.abort.signal;
    let deleted = 0;
    try {
      for (const { parts } of expired) {
        for (const part of parts) {
          await backend.delete(remoteKeys.snapshotPart(part), { signal });
          deleted++;
        }
      }
      for (let batch = index.remoteGarbage(cutoffMs, 256); batch.length > 0; batch = index.remoteGarbage(cutoffMs, 256)) {
        for (const id of batch) {
          // Written again meanwhile? Then it is queued for upload and must not be deleted.
          if (!index.isRemoteGarbage(id)) continue;
          const hex = id.toString('hex');
          this.deletingRemote.add(hex);
          try {
            await backend.delete(remoteKeys.chunk(hex), { signal });
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
   * Starts a sync now: failed uploads are retried at once and the index is published as
   * soon as its chunks are up. Returns the change count that `isSynced` waits for.
   */
  requestSync(): number {
    this.pausedUntilMs = 0; // one more try, even after a refused token
    this.options.index.retryUploadsNow();
    this.urgent = true;
    this.nextPublishMs = 0;
    this.tick();
    return this.options.index.changeCount;
  }

  isSynced(target: number): boolean {
    return this.publishedChange >= target;
  }

  /**
   * Compares the remote's newest manifest with the high-water mark kept here. A remote
   * whose newest manifest is older than one this vault already published or saw — or one
   * that replaced it — is serving a rollback and is refused.
   */
  async checkRemote(signal?: AbortSignal): Promise<void> {
    const { backend } = this.options;
    if (this.state.lastManifest === 0) return;
    const manifests = await backend.list(remoteKeys.manifestPrefix, { signal });
    const newest = manifests.map((m) => Number(m.key.slice(remoteKeys.manifestPrefix.length))).filter(Number.isSafeInteger).reduce((a, b) => Math.max(a, b), 0);
    if (newest < this.state.lastManifest) {
      throw new CofferError(
        'REMOTE_ROLLBACK',
        `the remote ${backend.description} offers manifest ${newest} but this vault already published manifest ${this.state.lastManifest}: the remote was rolled back or is withholding data; refusing to use it`,
      );
    }
    if (newest === this.state.lastManifest && this.state.lastManifestHash) {
      // A body cut in transit is not a rollback: ask again before concluding.
      for (let attempt = 1; ; attempt++) {
        const sealed = await backend.get(remoteKeys.manifest(newest), { signal });
        if (manifestHash(sealed) === this.state.lastManifestHash) break;
        if (attempt >= 3) {
          throw new CofferError('REMOTE_ROLLBACK', `manifest ${newest} on the remote ${backend.description} is not the one this vault published; refusing to use it`);
        }
      }
    }
  }

  private async publish(): Promise<void> {
    const { index, backend, stateDir, chunkSize, metadataContext } = this.options;
    const signal = this.abort.signal;
    const change = index.changeCount;
    const copyPath = join(stateDir, `snapshot-${randomBytes(6).toString('hex')}.db`);
    // Chunks released before the copy is taken are named by no snapshot from here on.
    const garbageCutoffMs = Date.now();
    const parts: string[] = [];
    let published = false;
    try {
      await index.backupTo(copyPath);
      const pending = await prepareSnapshot(copyPath);
      // Data before metadata: wait until every chunk the copy names is on the remote.
      for (const hex of pending) {
        while (true) {
          signal.throwIfAborted();
          const info = index.chunkInfo(Buffer.from(hex, 'hex'));
          if (!info || info.uploaded) break;
          this.pumpUploads();
          await new Promise((resolve) => setTimeout(resolve, 100));
        }
      }
      const snapshot = await readFile(copyPath);
      for (let at = 0; at < snapshot.length || at === 0; at += chunkSize) {
        const part = snapshot.subarray(at, Math.min(at + chunkSize, snapshot.length));
        const id = randomBytes(32);
        const sealed = sealObject(metadataContext, ObjectType.SnapshotPart, id, part, { pad: true });
        const key = remoteKeys.snapshotPart(id.toString('hex'));
        try {
          await backend.put(key, sealed, { signal });
        } catch (err) {
          // A full account: the fallback snapshot makes way for the new one (the newest stays).
          if (!isCofferError(err, 'REMOTE_QUOTA') || !(await this.dropFallbackSnapshots(signal))) throw err;
          await backend.put(key, sealed, { signal });
        }
        this.options.observer?.uploaded(sealed.length);
        parts.push(id.toString('hex'));
        if (snapshot.length === 0) break;
      }
      const { counter, sealedManifest } = await this.createManifest(snapshot.length, parts, signal);
      published = true;
      this.options.observer?.uploaded(sealedManifest.length);
      this.state = {
        writerId: this.state.writerId,
        lastManifest: counter,
        lastManifestHash: manifestHash(sealedManifest),
        lastPublishMs: Date.now(),
        recentSnapshots: [{ counter, parts }, ...(this.state.recentSnapshots ?? [])],
      };
      const expired = this.state.recentSnapshots!.splice(KEPT_SNAPSHOTS);
      await writeJsonAtomic(this.statePath, this.state);
      this.publishedChange = change;
      this.options.log.debug(`published manifest ${counter}`, { op: 'publish', manifest: counter, snapshotBytes: snapshot.length, parts: parts.length });
      if (index.changeCount === change) this.urgent = false;
      if (index.changeCount === change) index.setState('published', 1);
      this.stats.lastError = null;
      await this.deleteRemoteGarbage(garbageCutoffMs, expired);
    } finally {
      await rm(copyPath, { force: true });
      // Parts of a publish that failed would stay on the remote for good, taking room: remove them.
      if (!published && parts.length > 0) {
        const cleanup = AbortSignal.any([signal, AbortSignal.timeout(30_000)]);
        await Promise.all(parts.map((part) => backend.delete(remoteKeys.snapshotPart(part), { signal: cleanup }).catch(() => {})));
      }
    }
  }

  /**
   * Deletes the parts of every published snapshot but the newest, to make room for the next one
   * on a full account. Answers whether there was any to delete.
   */
  private async dropFallbackSnapshots(signal: AbortSignal): Promise<boolean> {
    const older = (this.state.recentSnapshots ?? []).slice(1);
    if (older.length === 0) return false;
    for (const { parts } of older) {
      for (const part of parts) await this.options.backend.delete(remoteKeys.snapshotPart(part), { signal });
    }
    this.state = { ...this.state, recentSnapshots: this.state.recentSnapshots!.slice(0, 1) };
    await writeJsonAtomic(this.statePath, this.state);
    this.options.log.info(`the remote account is full: deleted ${older.length} older snapshot(s) of the index to make room for the next`, { op: 'publish' });
    this.options.observer?.freed();
    return true;
  }
}

/** Where the manifest high-water mark lives (outside the index, so an index restored from the remote cannot lower it). */
export function syncStatePath(stateDir: string): string {
  return join(stateDir, 'sync-state.json');
}

export async function writeSyncState(stateDir: string, state: SyncState): Promise<void> {
  await writeJsonAtomic(syncStatePath(stateDir), state);
}

/** BLAKE2b-256 of a sealed manifest: what the next manifest names as `previous`. */
export function manifestHash(sealed: Uint8Array): string {
  return Buffer.from(sodium().crypto_generichash(32, sealed, null)).toString('hex');
}

/** The 32-byte object id of manifest `counter`: the counter, big-endian, in the last 8 bytes. */
export function manifestObjectId(counter: number): Buffer {
  const id = Buffer.alloc(32);
  id.writeBigUInt64BE(BigInt(counter), 24);
  return id;
}

function prepareSnapshot(copyPath: string): Promise<string[]> {
  return new Promise((resolve, reject) => {
    const worker = new Worker(new URL('./snapshot-worker.js', import.meta.url), { workerData: copyPath });
    worker.once('message', (message: { pending: string[] }) => resolve(message.pending));
    worker.once('error', reject);
    worker.once('exit', (code) => {
      if (code !== 0) reject(new Error(`snapshot worker exited with code ${code}`));
    });
  });
}

async function writeJsonAtomic(path: string, value: unknown): Promise<void> {
  const temp = `${path}.tmp`;
  await writeFile(temp, JSON.stringify(value, null, 2) + '\n');
  await rename(temp, path);
}
