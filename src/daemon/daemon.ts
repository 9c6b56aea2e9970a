/**
 * One process per mounted vault: opens the index (taking its lock), wires the chunk
 * store, file data, filesystem, sync and control socket together, mounts, and on
 * unmount or a signal commits every buffer before it lets go.
 *
 * The daemon never touches its own mount (that would deadlock the FUSE thread).
 */
import { resolve } from 'node:path';
import { stat } from 'node:fs/promises';
import type { Server } from 'node:net';
import { CofferError, RemoteError, isCofferError } from '../errors.js';
import { ChunkStore } from '../chunks/chunk-store.js';
import { ChunkCollector } from '../chunks/collector.js';
import { VaultIndex, type IndexCounts } from '../index/vault-index.js';
import { FileData } from '../fs/file-data.js';
import { Filesystem } from '../fs/filesystem.js';
import { mountFuse, type FuseSession } from '../fs/fuse.js';
import { vaultMountOptions } from '../fs/mount-options.js';
import { findMount, isStaleMount, forceUnmount } from '../fs/mountinfo.js';
import { remoteKeys, type RemoteBackend } from '../remote/backend.js';
import { Syncer, type SyncStatus } from '../sync/syncer.js';
import { openConfiguredBackend } from '../vault/config.js';
import type { UnlockedVault } from '../vault/vault.js';
import { serveControl, type ControlRequest } from './control.js';
import { removeDaemonInfo, writeDaemonInfo, type DaemonInfo } from './registry.js';
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
  vault: string;
  mountpoint: string;
  remote: string;
  bufferedBytes: number;
  cacheBytes: number;
  cacheLimitBytes: number;
  sync: SyncStatus;
  /** Chunks whose upload keeps failing, with the last error (they are retried with backoff). */
  uploadErrors: { id: string; attempts: number; error: string }[];
}

export interface SyncStarted {
  /** The sync is complete once status.sync.publishedChange reaches this. */
  target: number;
}

export interface UnmountResult {
  unmounted: true;
  /** Chunks written but not yet on the remote: they upload at the next mount. */
  pendingChunks: number;
  pendingBytes: number;
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
 * Refuses to mount over a remote that serves an older state than this vault has seen.
 * An unreachable remote is not a reason to refuse: the vault works offline and checks later.
 */
async function refuseRolledBackRemote(syncer: Syncer, log: Logger, timeoutMs: number): Promise<void> {
  try {
    await syncer.checkRemote(AbortSignal.timeout(timeoutMs));
  } catch (err) {
    if (isCofferError(err, 'REMOTE_ROLLBACK')) throw err;
    log.warn(`the remote could not be checked now; working offline until it answers: ${(err as Error).message}`, err);
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
      log.warn(`cleaning a stale mount left at ${mountpoint}`);
      await forceUnmount(mountpoint);
    } else {
      throw new CofferError('ALREADY_MOUNTED', `${mountpoint} is already a mountpoint`);
    }
  }

  let index: VaultIndex;
  try {
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

  const config = vault.config;
  const backend = openConfiguredBackend(config);
  const logFn = (message: string, err?: unknown) => log.error(message, err);
  const store = new ChunkStore({
    dir: paths.cache,
    chunkSize: vault.header.chunkSize,
    keys: vault.keys,
    context: vault.dataContext,
    memoryCacheBytes: config.memoryCacheSize,
    cacheLimitBytes: config.cacheSize,
    canEvict: (id) => index.chunkInfo(id)?.uploaded === true,
    log: logFn,
    fetchRemote: (id) => fetchChunk(backend, id, config.remoteReadTimeoutMs),
  });
  const data = new FileData(index, store, {
    chunkSize: vault.header.chunkSize,
    bufferBytes: vault.config.bufferSize,
    idleCommitMs: 5000,
    log: logFn,
  });
  const filesystem = new Filesystem(index, data, {
    vaultDir: paths.dir,
    syncState: (ino) => fileSyncState(ino, index, data, store, syncer),
    uid: process.getuid?.() ?? 0,
    gid: process.getgid?.() ?? 0,
  });
  const collector = new ChunkCollector(index, store, logFn);
  const syncer = new Syncer({
    index,
    store,
    backend,
    metadataContext: vault.metadataContext,
    chunkSize: vault.header.chunkSize,
    stateDir: paths.state,
    concurrency: config.uploadConcurrency,
    log: (message, err) => log.warn(message, err),
  });

  let session: FuseSession | undefined;
  let control: Server | undefined;
  let info: DaemonInfo | undefined;
  let watcher: NodeJS.Timeout | undefined;
  let shuttingDown: Promise<void> | undefined;
  let pendingAtExit: IndexCounts | undefined;
  let scanning: Promise<unknown> | undefined;
  let finished!: () => void;
  const done = new Promise<void>((resolveDone) => (finished = resolveDone));

  const shutdown = (reason: string): Promise<void> => {
    shuttingDown ??= (async () => {
      log.info(`shutting down: ${reason}`);
      clearInterval(watcher);
      await data.flushAll().catch((err) => log.error(`committing buffers before unmount: ${(err as Error).message}`, err));
      if (session) await session.unmount().catch((err) => log.error(`unmounting ${mountpoint}: ${(err as Error).message}`, err));
      await data.flushAll().catch((err) => log.error(`committing buffers after unmount: ${(err as Error).message}`, err));
      data.stopIdleCommits();
      await scanning?.catch(() => {});
      await collector.stop();
      await syncer.stop();
      pendingAtExit = index.counts();
      index.close();
      control?.close();
      if (info) await removeDaemonInfo(info).catch(() => {});
      log.info(`unmounted ${mountpoint}`);
      finished();
    })();
    return shuttingDown;
  };

  const status = (): DaemonStatus => {
    const cache = store.cacheUsage;
    return {
      mounted: true,
      pid: process.pid,
      vault: paths.dir,
      mountpoint,
      remote: backend.description,
      ...index.counts(),
      bufferedBytes: data.bufferedByteCount,
      cacheBytes: cache.bytes,
      cacheLimitBytes: cache.limitBytes,
      sync: syncer.status(),
      uploadErrors: index.lastUploadErrors(10),
    };
  };

  const handle = async (request: ControlRequest): Promise<unknown> => {
    switch (request.op) {
      case 'status':
        return status();
      case 'sync':
        // Everything written before this request is committed, then counted in the target.
        await data.flushAll();
        return { target: syncer.requestSync() } satisfies SyncStarted;
      case 'unmount': {
        // Answer after the mount is gone, so the CLI can return only then.
        await shutdown('unmount requested');
        const { pendingChunks, pendingBytes } = pendingAtExit!;
        return { unmounted: true, pendingChunks, pendingBytes } satisfies UnmountResult;
      }
      default:
        throw new CofferError('BAD_ARGUMENT', `unknown control request ${JSON.stringify(request)}`);
    }
  };

  try {
    await syncer.start();
    await refuseRolledBackRemote(syncer, log, config.remoteReadTimeoutMs);
    session = await mountFuse(mountpoint, filesystem, vaultMountOptions((message, err) => log.error(message, err)));
    data.startIdleCommits();
    collector.start();
    void backend.capabilities().then(
      ({ atomicExclusiveCreate }) => {
        if (!atomicExclusiveCreate) log.warn(`the remote ${backend.description} does not enforce exclusive creates: only one device may write to this vault`);
      },
      () => {},
    );
    scanning = store.scanLocal().then(
      (ids) => collector.removeUnknown(ids),
      (err) => log.warn(`scanning the chunk cache: ${(err as Error).message}`, err),
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
      if (!entry && !shuttingDown) void shutdown('the mount was removed from outside');
    });
  }, 2000);
  watcher.unref();
  // A bug in a background task must not take the mount down with it: log it and carry on.
  const onRejection = (reason: unknown) => log.error(`unhandled failure in a background task: ${(reason as Error)?.stack ?? String(reason)}`);
  process.on('unhandledRejection', onRejection);
  const onSignal = (signal: NodeJS.Signals) => void shutdown(`received ${signal}`);
  process.on('SIGTERM', onSignal);
  process.on('SIGINT', onSignal);
  process.on('SIGHUP', () => {});

  log.info(`mounted ${paths.dir} at ${mountpoint} (remote ${backend.description})`);
  options.onReady?.();
  await done;
  process.off('unhandledRejection', onRejection);
  process.off('SIGTERM', onSignal);
  process.off('SIGINT', onSignal);
}
