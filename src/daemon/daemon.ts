/**
 * One process per mounted vault: opens the index (taking its lock), wires the chunk
 * store, file data, filesystem, sync and control socket together, mounts, and on
 * unmount or a signal commits every buffer before it lets go. After a signal it keeps
 * uploading for at most `shutdownDrainMs`; what is left stays queued for the next mount.
 *
 * The daemon never touches its own mount (that would deadlock the FUSE thread).
 */
import { resolve } from 'node:path';
import { stat } from 'node:fs/promises';
import type { Server } from 'node:net';
import { CofferError, RemoteError, isCofferError, isRefusal } from '../errors.js';
import { ChunkStore } from '../chunks/chunk-store.js';
import { WorkerSealer } from '../chunks/chunk-sealer.js';
import { ChunkCollector } from '../chunks/collector.js';
import { VaultIndex, type IndexCounts } from '../index/vault-index.js';
import { FileData, PREFETCH_CHUNKS } from '../fs/file-data.js';
import { Filesystem } from '../fs/filesystem.js';
import { mountFuse, type FuseSession } from '../fs/fuse.js';
import { OpStats, type OpSummary } from '../fs/op-stats.js';
import { vaultMountOptions } from '../fs/mount-options.js';
import { findMount, isStaleMount, forceUnmount } from '../fs/mountinfo.js';
import { remoteKeys, type RemoteBackend } from '../remote/backend.js';
import { Syncer, type SyncRefusal, type SyncStatus } from '../sync/syncer.js';
import type { DeviceState } from '../sync/device-state.js';
import { ENTRY_TARGET_BYTES } from '../format/journal.js';
import { finishUpgrade, prepareDevice } from '../vault/device.js';
import { RemoteSpaceGuard, type RemoteSpaceStatus } from '../sync/remote-space.js';
import { openConfiguredBackend, volumeName } from '../vault/config.js';
import { restrictToOwner } from '../vault/permissions.js';
import type { UnlockedVault } from '../vault/vault.js';
import { serveControl, type ControlRequest } from './control.js';
import { removeDaemonInfo, writeDaemonInfo, type DaemonInfo } from './registry.js';
import type { LogFn } from '../logging.js';
import type { Logger } from './log.js';

export interface DaemonOptions {
  vault: UnlockedVault;
  mountpoint: string;
  log: Logger;
  /** Called once the mountpoint is live. */
  onReady?: () => void;
}

export interface DaemonStatus extends IndexCounts {
  mounted: true;
  pid: number;
  /** The volume name the mount shows. */
  name: string;
  vault: string;
  mountpoint: string;
  remote: string;
  bufferedBytes: number;
  cacheBytes: number;
  cacheLimitBytes: number;
  sync: SyncStatus;
  /** How long the drive takes to answer each kind of FUSE request since the mount. */
  fuseOps: Record<string, OpSummary>;
  /** The mount is gone and the daemon is uploading what it can before it exits (bounded). */
  stopping: boolean;
  /** Chunks whose upload keeps failing, with the last error (they are retried with backoff). */
  uploadErrors: { id: string; attempts: number; error: string; paths: string[] }[];
  /** Files that name at least one chunk not yet uploaded. */
  pendingFiles: number;
  /** Bytes per second uploaded over the last few seconds; null before there is a measurement. */
  uploadRate: number | null;
  /** Seconds until the pending bytes are uploaded at that rate; null when nothing moves. */
  uploadEtaSeconds: number | null;
  /** The remote account's usage and quota, and the room left for this drive; null while the remote has not said. */
  remoteSpace: RemoteSpaceStatus | null;
}

export interface SyncStarted {
  /** The sync is complete once status.sync.publishedChange reaches this. */
  target: number;
  /** When the sync was asked for (the daemon's clock): a refusal in status.sync.refused at or after it ends the wait. */
  requestedAtMs: number;
}

/** What is not on the remote yet: it stays queued in the vault and uploads at the next mount. */
export interface PendingUploads {
  /** Files that name at least one chunk not yet uploaded. */
  pendingFiles: number;
  pendingChunks: number;
  /** Sealed bytes of those chunks. */
  pendingBytes: number;
  /** Changes (names, folders, attributes) not yet in an index published to the remote. */
  unpublished: boolean;
  /** Why the remote does not take them now, if it refuses (a revoked token, a full account). */
  refused: SyncRefusal[];
}

export interface UnmountResult extends PendingUploads {
  unmounted: true;
}

/**
 * What `user.coffer.state` says of a file: error (an upload of its data keeps failing),
 * uploading, pending (written, not yet on the remote), synced (on the remote and all in the
 * local cache), cached (on the remote, partly cached), remote-only (on the remote, nothing cached).
 */
function fileSyncState(ino: number, index: VaultIndex, data: FileData, store: ChunkStore, syncer: Syncer): string {
  if (data.hasUncommitted(ino)) return 'pending';
  const chunks = index.fileChunkStates(ino);
  if (chunks.some((c) => c.failing)) return 'error';
  if (chunks.some((c) => !c.uploaded && syncer.isUploading(c.id))) return 'uploading';
  if (chunks.some((c) => !c.uploaded)) return 'pending';
  const local = chunks.filter((c) => store.isLocal(c.id)).length;
  return local === chunks.length ? 'synced' : local === 0 ? 'remote-only' : 'cached';
}

/** A chunk's sealed bytes from the remote, or undefined if it has none; bounded in time. */
async function fetchChunk(backend: RemoteBackend, id: Buffer, timeoutMs: number): Promise<Buffer | undefined> {
  const key = remoteKeys.chunk(id.toString('hex'));
  try {
    return await backend.get(key, { signal: AbortSignal.timeout(timeoutMs) });
  } catch (err) {
    if (isCofferError(err, 'REMOTE_NOT_FOUND')) return undefined;
    if ((err as Error).name === 'TimeoutError' || (err as Error).name === 'AbortError') {
      throw new RemoteError('REMOTE_UNAVAILABLE', `the remote did not deliver chunk ${id.toString('hex')} within ${timeoutMs / 1000} s`);
    }
    throw err;
  }
}

/**
 * The mount's first contact with the remote, bounded by `timeoutMs`. Refuses to mount when the
 * remote refuses this drive (a wrong or revoked token, refused credentials) or serves an older
 * state than this vault has seen. An unreachable remote is not a reason to refuse: the vault
 * works offline, and the syncer's status says so until the remote answers.
 */
async function firstContact(syncer: Syncer, log: Logger, timeoutMs: number, configPath: string): Promise<void> {
  const signal = AbortSignal.timeout(timeoutMs);
  try {
    await syncer.probe(signal);
    await syncer.checkRemote(signal);
  } catch (err) {
    if (isCofferError(err, 'REMOTE_ROLLBACK')) throw err;
    if (isRefusal(err)) {
      throw new CofferError(err.code, `the remote refuses this drive, so nothing was mounted: ${err.message} (the vault's config: ${configPath})`);
    }
    const message = signal.aborted ? `no answer within ${timeoutMs / 1000} s` : (err as Error).message;
    log.warn(`the remote could not be reached at mount; working offline until it answers: ${message}`, { err });
    syncer.noteOffline(`the remote could not be reached at mount (${message}); working offline: writes queue and upload once it answers`);
  }
}

/** Runs until the vault is unmounted; resolves after a clean shutdown. */
export async function runDaemon(options: DaemonOptions): Promise<void> {
  const { vault, log } = options;
  const mountpoint = resolve(options.mountpoint);
  const paths = vault.paths;

  const mountStat = await stat(mountpoint).catch(() => undefined);
  if (!mountStat) throw new CofferError('BAD_ARGUMENT', `mountpoint ${mountpoint} does not exist; create it first (mkdir -p ${mountpoint})`);
  if (!mountStat.isDirectory()) throw new CofferError('BAD_ARGUMENT', `mountpoint ${mountpoint} is not a directory`);
  if (await findMount(mountpoint)) {
    if (await isStaleMount(mountpoint)) {
      log.warn(`cleaning a stale mount left at ${mountpoint}`, { mountpoint });
      await forceUnmount(mountpoint);
    } else {
      throw new CofferError('ALREADY_MOUNTED', `${mountpoint} is already a mountpoint`);
    }
  }

  const loosened = await restrictToOwner(paths);
  if (loosened.length > 0) log.info(`made ${loosened.length} files and folders of the vault readable by their owner only`, { paths: loosened });

  const config = vault.config;
  const backend = openConfiguredBackend(config);
  let index: VaultIndex;
  let deviceState: DeviceState;
  try {
    // Makes and registers this device if needed, and upgrades a format-1 vault's index.
    deviceState = await prepareDevice(vault, backend, AbortSignal.timeout(config.remoteReadTimeoutMs));
    index = new VaultIndex(paths.index);
    try {
      index.verify();
    } catch (err) {
      index.close();
      throw err;
    }
  } catch (err) {
    if (isCofferError(err, 'ALREADY_MOUNTED')) {
      throw new CofferError('ALREADY_MOUNTED', `the vault ${paths.dir} is already mounted by another Coffer daemon`);
    }
    if (isCofferError(err, 'INDEX_DAMAGED') || isCofferError(err, 'UNSUPPORTED_FORMAT')) {
      throw new CofferError(
        'INDEX_DAMAGED',
        `${err.message}; nothing was mounted. Rebuild it from the remote with: coffer rebuild-index ${paths.dir} ` +
          `(the damaged file is kept, and local chunks the remote's index does not name are moved to ${paths.lostFound}, never deleted)`,
      );
    }
    throw err;
  }
  const orphans = index.purgeOrphans(Date.now());
  if (orphans > 0) log.info(`removed ${orphans} files that were deleted while open when the daemon last stopped`);

  const name = volumeName(config, paths);
  // remoteReadTimeoutMs bounds how long a read waits for the remote, not for our own bandwidth
  // limit: a read may queue behind the chunks read-ahead fetched just before it.
  const throttleAllowanceMs =
    config.downloadLimit > 0 ? Math.ceil((((1 + PREFETCH_CHUNKS) * (vault.header.chunkSize + 4096)) / config.downloadLimit) * 1000) : 0;
  const readTimeoutMs = config.remoteReadTimeoutMs + throttleAllowanceMs;
  // The layers below report only what went wrong; each line says which chunk, inode or path.
  const logFn: LogFn = (message, fields) => log.error(message, fields);
  const opStats = new OpStats();
  const sealer = new WorkerSealer({ keys: vault.keys, context: vault.dataContext, chunkSize: vault.header.chunkSize }, undefined, logFn);
  const store = new ChunkStore({
    sealer,
    dir: paths.cache,
    chunkSize: vault.header.chunkSize,
    keys: vault.keys,
    context: vault.dataContext,
    memoryCacheBytes: config.memoryCacheSize,
    cacheLimitBytes: config.cacheSize,
    canEvict: (id) => index.chunkInfo(id)?.uploaded === true,
    log: logFn,
    fetchRemote: (id) => fetchChunk(backend, id, readTimeoutMs),
  });
  const space: RemoteSpaceGuard = new RemoteSpaceGuard({
    fetch: backend.space ? (signal) => backend.space!({ signal }) : undefined,
    queued: () => index.pendingUploads(),
    uncommitted: () => data.uncommitted(),
    metadataBytes: () => ENTRY_TARGET_BYTES,
    chunkSize: vault.header.chunkSize,
    log,
    // Uploads refused for lack of room back off for minutes: once there is room, go now.
    onRoom: () => index.retryUploadsNow(),
    // Its questions are authenticated too: a token revoked while the drive is idle shows in status.
    onAnswer: (outcome, askedAtMs) => {
      if (outcome.ok) syncer.noteAccepted('request');
      else if (isRefusal(outcome.err)) syncer.noteRefusal(outcome.err, askedAtMs);
    },
    timeoutMs: config.remoteReadTimeoutMs,
  });
  const data = new FileData(index, store, {
    chunkSize: vault.header.chunkSize,
    bufferBytes: vault.config.bufferSize,
    idleCommitMs: 5000,
    log: logFn,
    admitWrite: (bytes) => space.admit(bytes),
  });
  const filesystem = new Filesystem(index, data, {
    vaultDir: paths.dir,
    syncState: (ino) => fileSyncState(ino, index, data, store, syncer),
    capacity: () => space.capacity(),
    uid: process.getuid?.() ?? 0,
    gid: process.getgid?.() ?? 0,
  });
  index.replica.hooks = { isBusy: (ino) => data.hasUncommitted(ino), isOpen: (ino) => data.isOpen(ino) };
  const collector = new ChunkCollector(index, store, log);
  const syncer = new Syncer({
    index,
    store,
    backend,
    metadataContext: vault.metadataContext,
    stateDir: paths.state,
    deviceState,
    pollIntervalMs: config.pollIntervalMs,
    checkpointEntries: config.checkpointEntries,
    // A format-1 vault is upgraded once its whole tree is in this device's journal.
    onPublished: async (state) => (state.upgrading ? finishUpgrade(vault, backend, state) : state),
    concurrency: config.uploadConcurrency,
    log,
    observer: space,
    // While writes are refused for lack of room, a delete is published (and its chunks freed) at once.
    publishUrgently: () => space.isFull(),
  });

  let session: FuseSession | undefined;
  let control: Server | undefined;
  let info: DaemonInfo | undefined;
  let watcher: NodeJS.Timeout | undefined;
  let shuttingDown: Promise<void> | undefined;
  let pendingAtExit: PendingUploads | undefined;
  /** Aborted by a second signal: stop uploading and exit now. */
  const drainAbort = new AbortController();
  let scanning: Promise<unknown> | undefined;
  let finished!: () => void;
  const done = new Promise<void>((resolveDone) => (finished = resolveDone));

  const pendingNow = (): PendingUploads => {
    const { pendingChunks, pendingBytes } = index.counts();
    const sync = syncer.status();
    return { pendingFiles: pendingChunks > 0 ? index.pendingFileCount() : 0, pendingChunks, pendingBytes, unpublished: sync.publishPending, refused: sync.refused };
  };

  /**
   * After the unmount: keeps uploading and publishing for at most `boundMs`, or until a second
   * signal. Whatever is left stays in the queue (it lives in the index) for the next mount.
   */
  const drain = async (boundMs: number): Promise<void> => {
    const before = pendingNow();
    if (boundMs <= 0 || (before.pendingChunks === 0 && !before.unpublished) || drainAbort.signal.aborted) return;
    log.info(
      `uploading what is pending for at most ${boundMs / 1000} s before exiting: ${before.pendingChunks} chunks (${before.pendingBytes} bytes)` +
        `${before.unpublished ? ', and the index' : ''}`,
    );
    const deadline = Date.now() + boundMs;
    const target = syncer.requestSync();
    while (!syncer.isSynced(target) && !drainAbort.signal.aborted && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, Math.max(1, Math.min(100, deadline - Date.now()))));
    }
  };

  const shutdown = (reason: string, drainMs = 0): Promise<void> => {
    shuttingDown ??= (async () => {
      log.info(`shutting down: ${reason}`);
      clearInterval(watcher);
      clearInterval(rateSampler);
      await data.flushAll().catch((err) => log.error(`committing buffers before unmount: ${(err as Error).message}`, { err }));
      if (session) await session.unmount().catch((err) => log.error(`unmounting ${mountpoint}: ${(err as Error).message}`, { err, mountpoint }));
      await data.flushAll().catch((err) => log.error(`committing buffers after unmount: ${(err as Error).message}`, { err }));
      data.stopIdleCommits();
      await sealer.close();
      await scanning?.catch(() => {});
      await collector.stop();
      await drain(drainMs).catch((err) => log.error(`uploading before exit: ${(err as Error).message}`, { err }));
      await syncer.stop();
      await space.stop();
      pendingAtExit = pendingNow();
      if (pendingAtExit.pendingChunks > 0 || pendingAtExit.unpublished) {
        log.info(
          `${pendingAtExit.pendingChunks} chunks (${pendingAtExit.pendingBytes} bytes) of ${pendingAtExit.pendingFiles} file(s) are not on the remote yet` +
            `${pendingAtExit.unpublished ? ' and the index is not published' : ''}; they stay queued and upload at the next mount`,
        );
      }
      index.close();
      control?.close();
      if (info) await removeDaemonInfo(info).catch(() => {});
      log.info(`unmounted ${mountpoint}`);
      finished();
    })();
    return shuttingDown;
  };

  // Upload rate over the last ten seconds, from the syncer's running byte count.
  const uploadSamples: { atMs: number; bytes: number }[] = [];
  const rateSampler = setInterval(() => {
    uploadSamples.push({ atMs: Date.now(), bytes: syncer.status().uploadedBytes });
    if (uploadSamples.length > 11) uploadSamples.shift();
  }, 1000);
  rateSampler.unref();
  const uploadRate = (): number | null => {
    const first = uploadSamples[0];
    const last = uploadSamples[uploadSamples.length - 1];
    if (!first || !last || last.atMs - first.atMs < 1000) return null;
    return (last.bytes - first.bytes) / ((last.atMs - first.atMs) / 1000);
  };

  const status = (): DaemonStatus => {
    const cache = store.cacheUsage;
    const counts = index.counts();
    const rate = uploadRate();
    return {
      mounted: true,
      pid: process.pid,
      name,
      vault: paths.dir,
      mountpoint,
      remote: backend.description,
      ...counts,
      bufferedBytes: data.bufferedByteCount,
      cacheBytes: cache.bytes,
      cacheLimitBytes: cache.limitBytes,
      sync: syncer.status(),
      fuseOps: opStats.snapshot(),
      stopping: shuttingDown !== undefined,
      uploadErrors: index.lastUploadErrors(10).map((e) => ({
        ...e,
        paths: index.filesOfChunk(Buffer.from(e.id, 'hex'), 5).map(({ ino }) => index.pathOf(ino)),
      })),
      pendingFiles: counts.pendingChunks > 0 ? index.pendingFileCount() : 0,
      uploadRate: rate,
      uploadEtaSeconds: rate && rate > 0 && counts.pendingBytes > 0 ? Math.ceil(counts.pendingBytes / rate) : null,
      remoteSpace: space.status() ?? null,
    };
  };

  const handle = async (request: ControlRequest): Promise<unknown> => {
    switch (request.op) {
      case 'status':
        return status();
      case 'sync': {
        // Everything written before this request is committed, then counted in the target.
        await data.flushAll();
        const requestedAtMs = Date.now();
        // A refused token is asked about afresh: a sync needs the remote's word now, even with nothing to upload.
        if (syncer.status().refused.some((r) => r.code === 'REMOTE_UNAUTHORIZED')) {
          await syncer.probe(AbortSignal.timeout(config.remoteReadTimeoutMs)).catch(() => {});
        }
        return { target: syncer.requestSync(), requestedAtMs } satisfies SyncStarted;
      }
      case 'pending':
        // Everything written so far is committed first, so it is counted.
        await data.flushAll();
        return pendingNow() satisfies PendingUploads;
      case 'unmount': {
        // Answer after the mount is gone, so the CLI can return only then. The CLI has already
        // waited for uploads if the user wanted that: no drain here.
        await shutdown('unmount requested');
        return { unmounted: true, ...pendingAtExit! } satisfies UnmountResult;
      }
      default:
        throw new CofferError('BAD_ARGUMENT', `unknown control request ${JSON.stringify(request)}`);
    }
  };

  try {
    await syncer.start();
    await firstContact(syncer, log, config.remoteReadTimeoutMs, paths.config);
    // Known before the first write, so a full account refuses it; an unreachable remote delays
    // the mount by a few seconds at most: until it answers, no limit is known.
    await space.start();
    // df, findmnt and mountinfo show the volume name as the source and fuse.coffer as the type.
    session = await mountFuse(mountpoint, filesystem, { ...vaultMountOptions(logFn), fsname: name, opStats });
    data.startIdleCommits();
    collector.start();
    void backend.capabilities().then(
      ({ atomicExclusiveCreate }) => {
        if (!atomicExclusiveCreate) log.warn(`the remote ${backend.description} does not enforce exclusive creates: never run two copies of one vault directory against it`);
      },
      () => {},
    );
    scanning = store.scanLocal().then(
      (ids) => collector.removeUnknown(ids),
      (err) => log.warn(`scanning the chunk cache: ${(err as Error).message}`, { err }),
    );
    control = await serveControl(paths.socket, handle);
    info = { pid: process.pid, vault: paths.dir, mountpoint, socket: paths.socket, startedAt: new Date().toISOString() };
    await writeDaemonInfo(info);
  } catch (err) {
    await shutdown(`start failed: ${(err as Error).message}`);
    throw err;
  }

  watcher = setInterval(() => {
    void findMount(mountpoint).then((entry) => {
      if (!entry && !shuttingDown) void shutdown('the mount was removed from outside', config.shutdownDrainMs);
    });
  }, 2000);
  watcher.unref();
  // A bug in a background task must not take the mount down with it: log it and carry on.
  const onRejection = (reason: unknown) =>
    log.error(`unhandled failure in a background task: ${(reason as Error)?.message ?? String(reason)}`, { err: reason });
  process.on('unhandledRejection', onRejection);
  // What nothing caught ends the process: the log must say why before it goes (the mount is
  // left stale; the next mount or unmount cleans it).
  const onFatal = (err: unknown) => {
    log.fatal(`the daemon stopped on an uncaught error: ${(err as Error)?.message ?? String(err)}`, { err });
    process.exit(1);
  };
  process.on('uncaughtException', onFatal);
  // A signal (systemd stopping the service, Ctrl-C in the foreground) unmounts, then uploads for at
  // most shutdownDrainMs; a second signal cuts that short. Nothing queued is lost either way.
  const onSignal = (signal: NodeJS.Signals) => {
    if (shuttingDown) {
      if (!drainAbort.signal.aborted) log.info(`received ${signal} again: not waiting for uploads`);
      drainAbort.abort();
      return;
    }
    void shutdown(`received ${signal}`, config.shutdownDrainMs);
  };
  process.on('SIGTERM', onSignal);
  process.on('SIGINT', onSignal);
  process.on('SIGHUP', () => {});

  log.info(`mounted ${paths.dir} as ${JSON.stringify(name)} at ${mountpoint} (remote ${backend.description})`, { vault: paths.dir, mountpoint, name });
  log.debug('settings', {
    cacheSize: config.cacheSize,
    bufferSize: config.bufferSize,
    memoryCacheSize: config.memoryCacheSize,
    remoteReadTimeoutMs: config.remoteReadTimeoutMs,
    uploadConcurrency: config.uploadConcurrency,
    uploadLimit: config.uploadLimit,
    downloadLimit: config.downloadLimit,
    readTimeoutMs,
    shutdownDrainMs: config.shutdownDrainMs,
    logLevel: log.level,
  });
  options.onReady?.();
  await done;
  process.off('unhandledRejection', onRejection);
  process.off('uncaughtException', onFatal);
  process.off('SIGTERM', onSignal);
  process.off('SIGINT', onSignal);
}
