/**
 * The local chunk cache: sealed chunks (the same bytes the remote holds) under
 * `<dir>/<first two hex digits>/<id hex>`, written atomically (temp file + rename),
 * read through an in-memory cache of opened chunks, and fetched from the remote
 * when not held locally.
 *
 * A chunk is served only after it authenticates as the chunk with that id (the id is
 * part of what the tag covers, see docs/FORMAT.md); otherwise the read fails with
 * AuthenticationError naming the chunk, and nothing is cached.
 */
import { mkdir, open, readdir, readFile, rename, stat, unlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { AuthenticationError } from '../errors.js';
import type { LogFn } from '../logging.js';
import { chunkIdMatches, type VaultKeys } from '../crypto/keys.js';
import { ObjectType, openObject, type ObjectContext } from '../crypto/objects.js';
import { InlineSealer, type ChunkSealer, type SealedChunk } from './chunk-sealer.js';
import { KeyedLock } from './keyed-lock.js';

/** Fetches a chunk's sealed bytes from wherever else it is kept; undefined if nowhere. */
export type SealedChunkSource = (id: Buffer) => Promise<Buffer | undefined>;

export interface ChunkStoreOptions {
  dir: string;
  chunkSize: number;
  keys: VaultKeys;
  context: ObjectContext;
  /** Bytes of opened (plaintext) chunks kept in memory. */
  memoryCacheBytes: number;
  /** Bytes of sealed chunks kept on local disk before evicting ones the remote holds. */
  cacheLimitBytes?: number;
  fetchRemote?: SealedChunkSource;
  /** Whether a chunk may leave the local cache (the remote has it). */
  canEvict?: (id: Buffer) => boolean;
  log?: LogFn;
  /** Where chunks are hashed and sealed; inline on the calling thread by default. */
  sealer?: ChunkSealer;
}

export class ChunkStore {
  /** Serialises writing and deleting the local file of one chunk id. */
  readonly fileLock = new KeyedLock<string>();
  private readonly opened = new Map<string, Buffer>();
  private openedBytes = 0;
  private readonly loading = new Map<string, Promise<Buffer>>();
  private readonly createdDirs = new Set<string>();
  private unsynced = new Set<string>();
  /** Local chunk files, least recently used first: id hex → sealed size. */
  private readonly local = new Map<string, number>();
  private localBytes = 0;
  private evicting: Promise<void> | undefined;
  private readonly recentFetchFailures = new Map<string, { untilMs: number; error: unknown }>();
  fetchRemote: SealedChunkSource | undefined;
  private readonly sealer: ChunkSealer;

  constructor(private readonly options: ChunkStoreOptions) {
    this.fetchRemote = options.fetchRemote;
    this.sealer = options.sealer ?? new InlineSealer({ keys: options.keys, context: options.context, chunkSize: options.chunkSize });
  }

  get cacheUsage(): { bytes: number; chunks: number; limitBytes: number } {
    return { bytes: this.localBytes, chunks: this.local.size, limitBytes: this.options.cacheLimitBytes ?? Infinity };
  }

  isLocal(id: Buffer): boolean {
    return this.local.has(id.toString('hex'));
  }

  /**
   * Learns what the cache directory holds (at start-up, in the background). Returns the
   * ids found and removes temporary files left by a crash mid-write.
   */
  async scanLocal(): Promise<Buffer[]> {
    const found: { hex: string; size: number; mtimeMs: number }[] = [];
    const top = await readdir(this.options.dir).catch(() => [] as string[]);
    for (const sub of top) {
      if (!/^[0-9a-f]{2}$/.test(sub)) continue;
      const dir = join(this.options.dir, sub);
      for (const name of await readdir(dir).catch(() => [] as string[])) {
        const path = join(dir, name);
        if (name.endsWith('.tmp')) {
          await unlink(path).catch(() => {});
          continue;
        }
        if (!/^[0-9a-f]{64}$/.test(name)) continue;
        const info = await stat(path).catch(() => undefined);
        if (info) found.push({ hex: name, size: info.size, mtimeMs: info.mtimeMs });
      }
      this.createdDirs.add(dir);
    }
    // What the scan found is older than anything used since start-up: it goes first.
    found.sort((a, b) => a.mtimeMs - b.mtimeMs);
    const sinceStart = [...this.local];
    this.local.clear();
    for (const { hex, size } of found) this.local.set(hex, size);
    for (const [hex, size] of sinceStart) this.local.set(hex, size);
    this.localBytes = 0;
    for (const size of this.local.values()) this.localBytes += size;
    this.scheduleEviction();
    return found.map((f) => Buffer.from(f.hex, 'hex'));
  }

  private track(hex: string, size: number): void {
    this.untrack(hex);
    this.local.set(hex, size);
    this.localBytes += size;
  }

  private untrack(hex: string): void {
    const size = this.local.get(hex);
    if (size !== undefined) {
      this.local.delete(hex);
      this.localBytes -= size;
    }
  }

  private touchLocal(hex: string): void {
    const size = this.local.get(hex);
    if (size !== undefined) {
      this.local.delete(hex);
      this.local.set(hex, size);
    }
  }

  /** Evicts least recently used chunks the remote holds until the cache fits its limit. */
  scheduleEviction(): void {
    const limit = this.options.cacheLimitBytes;
    if (limit === undefined || this.localBytes <= limit || this.evicting) return;
    this.evicting = this.evict(limit)
      .catch((err) => this.options.log?.(`evicting cached chunks: ${(err as Error).message}`, { err }))
      .finally(() => (this.evicting = undefined));
  }

  private async evict(limit: number): Promise<void> {
    await this.evictDown(limit);
  }

  /** Evicts least recently used evictable chunks until at most `limit` bytes are local; returns bytes freed. */
  private async evictDown(limit: number): Promise<number> {
    const canEvict = this.options.canEvict ?? (() => false);
    const before = this.localBytes;
    for (const hex of [...this.local.keys()]) {
      if (this.localBytes <= limit) break;
      const id = Buffer.from(hex, 'hex');
      if (!canEvict(id) || this.loading.has(hex)) continue;
      await this.fileLock.run(hex, async () => {
        if (canEvict(id)) await this.removeLocal(id);
      });
    }
    return before - this.localBytes;
  }

  pathOf(id: Buffer): string {
    const hex = id.toString('hex');
    return join(this.options.dir, hex.slice(0, 2), hex);
  }

  /**
   * A chunk's id and sealed bytes, possibly already written to the cache (see `keepSealed`);
   * the plaintext must stay unchanged until this settles.
   */
  sealChunk(plaintext: Buffer): Promise<SealedChunk> {
    return this.sealer.seal(plaintext, { storeIn: this.options.dir });
  }

  /**
   * Makes a sealed chunk part of the cache: written here unless the sealer already wrote it.
   * Caller holds `fileLock` for the id. The sealer writes outside that lock, so a collection or
   * eviction of the same id may have removed its file since: checked here, under the lock.
   */
  async keepSealed(chunk: SealedChunk): Promise<void> {
    const present = chunk.stored && (await stat(this.pathOf(chunk.id)).then(() => true, () => false));
    if (!present) return this.writeSealed(chunk.id, chunk.sealed);
    const hex = chunk.id.toString('hex');
    this.unsynced.add(this.pathOf(chunk.id));
    this.createdDirs.add(join(this.options.dir, hex.slice(0, 2)));
    this.track(hex, chunk.sealed.length);
    this.scheduleEviction();
  }

  /** Writes a sealed chunk file atomically. Caller holds `fileLock` for the id. */
  async writeSealed(id: Buffer, sealed: Buffer): Promise<void> {
    const hex = id.toString('hex');
    const dir = join(this.options.dir, hex.slice(0, 2));
    if (!this.createdDirs.has(dir)) {
      await mkdir(dir, { recursive: true });
      this.createdDirs.add(dir);
    }
    const final = join(dir, hex);
    try {
      await writeAtomically(final, sealed);
    } catch (err) {
      // A full disk: make room by dropping cached chunks the remote holds, then try once more.
      // Try even if this call freed nothing: a concurrent write that hit the full disk at the
      // same moment may just have made the room.
      if ((err as NodeJS.ErrnoException).code !== 'ENOSPC') throw err;
      await this.evictDown(this.localBytes - ENOSPC_RELIEF_BYTES);
      await writeAtomically(final, sealed);
    }
    this.unsynced.add(final);
    this.track(hex, sealed.length);
    this.scheduleEviction();
  }

  /** Opened plaintext of a chunk; concurrent reads of one chunk share one load. */
  async read(id: Buffer): Promise<Buffer> {
    const hex = id.toString('hex');
    const hit = this.opened.get(hex);
    if (hit) {
      this.opened.delete(hex);
      this.opened.set(hex, hit);
      this.touchLocal(hex);
      return hit;
    }
    let pending = this.loading.get(hex);
    if (!pending) {
      pending = this.load(id).finally(() => this.loading.delete(hex));
      this.loading.set(hex, pending);
    }
    return pending;
  }

  /** Remembers a chunk's plaintext that was just written, so reading it back costs nothing. */
  remember(id: Buffer, plaintext: Buffer): void {
    this.cacheOpened(id.toString('hex'), plaintext);
  }

  async readSealed(id: Buffer): Promise<Buffer> {
    return readFile(this.pathOf(id));
  }

  private async load(id: Buffer): Promise<Buffer> {
    const hex = id.toString('hex');
    let sealed: Buffer | undefined;
    let fromRemote = false;
    try {
      sealed = await readFile(this.pathOf(id));
      this.touchLocal(hex);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    }
    let plaintext: Buffer | undefined;
    if (sealed) {
      plaintext = this.openSealed(id, sealed);
    } else if (this.fetchRemote) {
      ({ sealed, plaintext } = (await this.fetchFromRemote(id)) ?? {});
      fromRemote = true;
    }
    if (!sealed || !plaintext) throw new AuthenticationError(`chunk ${hex} is missing from the local cache and the remote`, hex);
    if (fromRemote) {
      await this.fileLock.run(hex, () => this.writeSealed(id, sealed!));
    }
    this.cacheOpened(hex, plaintext);
    return plaintext;
  }

  /**
   * A chunk from the remote, authenticated. A body that does not authenticate is fetched
   * again (it may have been cut in transit) but never used. A failure is remembered
   * briefly, so the kernel's immediate retry of a failed read fails at once instead of
   * waiting for the remote a second time.
   */
  private async fetchFromRemote(id: Buffer): Promise<{ sealed: Buffer; plaintext: Buffer } | undefined> {
    const hex = id.toString('hex');
    const failed = this.recentFetchFailures.get(hex);
    if (failed && failed.untilMs > Date.now()) throw failed.error;
    try {
      for (let attempt = 1; ; attempt++) {
        const sealed = await this.fetchRemote!(id);
        if (!sealed) return undefined;
        try {
          return { sealed, plaintext: this.openSealed(id, sealed) };
        } catch (err) {
          if (attempt >= REMOTE_FETCH_ATTEMPTS) throw err;
          this.options.log?.(`chunk ${hex} from the remote did not authenticate; fetching it again`, { chunk: hex, err });
        }
      }
    } catch (err) {
      if (this.recentFetchFailures.size > 1024) this.recentFetchFailures.clear();
      this.recentFetchFailures.set(hex, { untilMs: Date.now() + FETCH_FAILURE_MEMORY_MS, error: err });
      throw err;
    }
  }

  /**
   * Authenticates sealed bytes as chunk `id` and returns its plaintext, or throws
   * AuthenticationError. The tag already binds the id; `recomputeId` (fsck) also hashes the
   * plaintext back to it, which only a bug in a key holder's writer could make fail.
   */
  openSealed(id: Buffer, sealed: Buffer, { recomputeId = false } = {}): Buffer {
    const hex = id.toString('hex');
    const plaintext = openObject(this.options.context, ObjectType.DataChunk, id, sealed);
    if (recomputeId && !chunkIdMatches(this.options.keys, plaintext, id)) {
      throw new AuthenticationError(`chunk ${hex} decrypted to content that does not match its id`, hex);
    }
    return plaintext;
  }

  private cacheOpened(hex: string, view: Buffer): void {
    const limit = this.options.memoryCacheBytes;
    if (view.length > limit) return;
    // A short view into a larger buffer (a write buffer, a padded payload) would keep all of
    // it alive while counting only its own length against the limit: keep just the bytes.
    const plaintext = view.byteLength * 2 < view.buffer.byteLength ? Buffer.from(view) : view;
    const old = this.opened.get(hex);
    if (old) {
      this.opened.delete(hex);
      this.openedBytes -= old.length;
    }
    this.opened.set(hex, plaintext);
    this.openedBytes += plaintext.length;
    for (const [key, value] of this.opened) {
      if (this.openedBytes <= limit) break;
      this.opened.delete(key);
      this.openedBytes -= value.length;
    }
  }

  /** Deletes the local copy. Caller holds `fileLock` for the id. */
  async removeLocal(id: Buffer): Promise<void> {
    const path = this.pathOf(id);
    this.unsynced.delete(path);
    const hex = id.toString('hex');
    this.untrack(hex);
    const cached = this.opened.get(hex);
    if (cached) {
      this.opened.delete(hex);
      this.openedBytes -= cached.length;
    }
    await unlink(path).catch((err: NodeJS.ErrnoException) => {
      if (err.code !== 'ENOENT') throw err;
    });
  }

  /** fsyncs every chunk file written since the last call, then their directories. */
  async syncWritten(): Promise<void> {
    const paths = [...this.unsynced];
    this.unsynced = new Set();
    const dirs = new Set<string>();
    await Promise.all(
      paths.map(async (path) => {
        dirs.add(join(path, '..'));
        const handle = await open(path, 'r').catch((err: NodeJS.ErrnoException) => {
          if (err.code === 'ENOENT') return undefined;
          throw err;
        });
        if (!handle) return;
        try {
          await handle.sync();
        } finally {
          await handle.close();
        }
      }),
    );
    await Promise.all([...dirs].map((dir) => syncDirectory(dir)));
  }
}

/** Fetches of one chunk body before a failure to authenticate is final. */
const REMOTE_FETCH_ATTEMPTS = 2;
/** How long a failed remote fetch answers later reads of the same chunk at once. */
const FETCH_FAILURE_MEMORY_MS = 500;

/** How much a full disk makes the cache give up at once. */
const ENOSPC_RELIEF_BYTES = 64 * 1024 * 1024;

/** Temp file + rename: a crash never leaves a partial object under its final name. */
async function writeAtomically(path: string, data: Buffer): Promise<void> {
  const temp = `${path}.${randomBytes(4).toString('hex')}.tmp`;
  try {
    await writeFile(temp, data);
    await rename(temp, path);
  } catch (err) {
    await unlink(temp).catch(() => {});
    throw err;
  }
}

export async function syncDirectory(dir: string): Promise<void> {
  const handle = await open(dir, 'r');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}
