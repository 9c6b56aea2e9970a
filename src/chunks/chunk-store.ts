/**
 * The local chunk cache: sealed chunks (the same bytes the remote holds) under
 * `<dir>/<first two hex digits>/<id hex>`, written atomically (temp file + rename),
 * read through an in-memory cache of opened chunks, and fetched from the remote
 * when not held locally.
 *
 * A chunk is served only after it authenticates AND its plaintext hashes back to
 * its id; otherwise the read fails with AuthenticationError naming the chunk, and
 * nothing is cached.
 */
import { mkdir, open, readFile, rename, unlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { AuthenticationError } from '../errors.js';
import { chunkId, type VaultKeys } from '../crypto/keys.js';
import { ObjectType, openObject, sealObject, type ObjectContext } from '../crypto/objects.js';
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
  fetchRemote?: SealedChunkSource;
}

export class ChunkStore {
  /** Serialises writing and deleting the local file of one chunk id. */
  readonly fileLock = new KeyedLock<string>();
  private readonly opened = new Map<string, Buffer>();
  private openedBytes = 0;
  private readonly loading = new Map<string, Promise<Buffer>>();
  private readonly createdDirs = new Set<string>();
  private unsynced = new Set<string>();
  fetchRemote: SealedChunkSource | undefined;

  constructor(private readonly options: ChunkStoreOptions) {
    this.fetchRemote = options.fetchRemote;
  }

  idOf(plaintext: Buffer): Buffer {
    return chunkId(this.options.keys, plaintext);
  }

  pathOf(id: Buffer): string {
    const hex = id.toString('hex');
    return join(this.options.dir, hex.slice(0, 2), hex);
  }

  seal(id: Buffer, plaintext: Buffer): Buffer {
    return sealObject(this.options.context, ObjectType.DataChunk, id, plaintext, {
      pad: plaintext.length < this.options.chunkSize,
    });
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
    const temp = `${final}.${randomBytes(4).toString('hex')}.tmp`;
    try {
      await writeFile(temp, sealed);
      await rename(temp, final);
    } catch (err) {
      await unlink(temp).catch(() => {});
      throw err;
    }
    this.unsynced.add(final);
  }

  /** Opened plaintext of a chunk; concurrent reads of one chunk share one load. */
  async read(id: Buffer): Promise<Buffer> {
    const hex = id.toString('hex');
    const hit = this.opened.get(hex);
    if (hit) {
      this.opened.delete(hex);
      this.opened.set(hex, hit);
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
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    }
    if (!sealed && this.fetchRemote) {
      sealed = await this.fetchRemote(id);
      fromRemote = true;
    }
    if (!sealed) throw new AuthenticationError(`chunk ${hex} is missing from the local cache and the remote`, hex);
    const plaintext = this.open(id, sealed);
    if (fromRemote) {
      await this.fileLock.run(hex, () => this.writeSealed(id, sealed!));
    }
    this.cacheOpened(hex, plaintext);
    return plaintext;
  }

  private open(id: Buffer, sealed: Buffer): Buffer {
    const hex = id.toString('hex');
    const plaintext = openObject(this.options.context, ObjectType.DataChunk, id, sealed);
    if (!this.idOf(plaintext).equals(id)) {
      throw new AuthenticationError(`chunk ${hex} decrypted to content that does not match its id`, hex);
    }
    return plaintext;
  }

  private cacheOpened(hex: string, plaintext: Buffer): void {
    const limit = this.options.memoryCacheBytes;
    if (plaintext.length > limit) return;
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

export async function syncDirectory(dir: string): Promise<void> {
  const handle = await open(dir, 'r');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}
