/**
 * A remote that is a local folder (the embedded default, or `file:///path`).
 * Writes are atomic: temp file, fsync, rename (or link, for exclusive creates), fsync
 * of the directory, so a crash leaves either the old state or the whole object.
 */
import { link, mkdir, open, readdir, rename, rm, stat, unlink } from 'node:fs/promises';
import { dirname, join, relative, resolve, sep } from 'node:path';
import { randomBytes } from 'node:crypto';
import { RemoteError } from '../errors.js';
import type { ByteRange, CallOptions, ListOptions, ObjectInfo, RemoteBackend, RemoteCapabilities } from './backend.js';
import { syncDirectory } from '../chunks/chunk-store.js';

export class FileBackend implements RemoteBackend {
  readonly root: string;

  constructor(root: string) {
    this.root = resolve(root);
  }

  get description(): string {
    return `file://${this.root}`;
  }

  async capabilities(): Promise<RemoteCapabilities> {
    return { atomicExclusiveCreate: true }; // link(2) fails if the name exists
  }

  private pathOf(key: string): string {
    const path = resolve(this.root, key);
    if (!path.startsWith(this.root + sep) || key.includes('\0')) {
      throw new RemoteError('REMOTE_NOT_FOUND', `invalid object key ${JSON.stringify(key)}`);
    }
    return path;
  }

  async put(key: string, body: Buffer, options?: CallOptions): Promise<void> {
    await this.write(key, body, false, options);
  }

  async createExclusive(key: string, body: Buffer, options?: CallOptions): Promise<void> {
    await this.write(key, body, true, options);
  }

  private async write(key: string, body: Buffer, exclusive: boolean, options?: CallOptions): Promise<void> {
    options?.signal?.throwIfAborted();
    const path = this.pathOf(key);
    const temp = join(dirname(path), `.${randomBytes(6).toString('hex')}.tmp`);
    try {
      await mkdir(dirname(path), { recursive: true });
      const handle = await open(temp, 'wx');
      try {
        await handle.writeFile(body);
        await handle.sync();
      } finally {
        await handle.close();
      }
      if (exclusive) {
        await link(temp, path);
        await unlink(temp);
      } else {
        await rename(temp, path);
      }
      await syncDirectory(dirname(path));
    } catch (err) {
      await unlink(temp).catch(() => {});
      if ((err as NodeJS.ErrnoException).code === 'EEXIST' && exclusive) {
        throw new RemoteError('REMOTE_EXISTS', `object ${key} already exists`);
      }
      throw unavailable(err, `writing ${key}`);
    }
  }

  async get(key: string, options?: CallOptions & { range?: ByteRange }): Promise<Buffer> {
    options?.signal?.throwIfAborted();
    const path = this.pathOf(key);
    try {
      const handle = await open(path, 'r');
      try {
        if (!options?.range) return await handle.readFile();
        const { offset, length } = options.range;
        const buf = Buffer.alloc(length);
        const { bytesRead } = await handle.read(buf, 0, length, offset);
        return buf.subarray(0, bytesRead);
      } finally {
        await handle.close();
      }
    } catch (err) {
      throw notFoundOrUnavailable(err, key);
    }
  }

  async head(key: string, options?: CallOptions): Promise<ObjectInfo> {
    options?.signal?.throwIfAborted();
    try {
      const info = await stat(this.pathOf(key));
      return { key, size: info.size };
    } catch (err) {
      throw notFoundOrUnavailable(err, key);
    }
  }

  async list(prefix: string, options?: ListOptions): Promise<ObjectInfo[]> {
    const after = options?.after;
    options?.signal?.throwIfAborted();
    const found: ObjectInfo[] = [];
    const walk = async (dir: string): Promise<void> => {
      let entries;
      try {
        entries = await readdir(dir, { withFileTypes: true });
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
        throw unavailable(err, `listing ${prefix}`);
      }
      for (const entry of entries) {
        if (entry.name.startsWith('.')) continue;
        const path = join(dir, entry.name);
        const key = relative(this.root, path).split(sep).join('/');
        if (entry.isDirectory()) {
          if (key.startsWith(prefix) || prefix.startsWith(key + '/')) await walk(path);
        } else if (key.startsWith(prefix) && (after === undefined || key > after)) {
          found.push({ key, size: (await stat(path)).size });
        }
      }
    };
    await walk(this.root);
    return found.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
  }

  async delete(key: string, options?: CallOptions): Promise<void> {
    options?.signal?.throwIfAborted();
    await rm(this.pathOf(key), { force: true }).catch((err) => {
      throw unavailable(err, `deleting ${key}`);
    });
  }
}

function notFoundOrUnavailable(err: unknown, key: string): RemoteError {
  if ((err as NodeJS.ErrnoException).code === 'ENOENT') return new RemoteError('REMOTE_NOT_FOUND', `object ${key} not found`);
  return unavailable(err, `reading ${key}`);
}

function unavailable(err: unknown, what: string): RemoteError {
  if (err instanceof RemoteError) return err;
  return new RemoteError('REMOTE_UNAVAILABLE', `${what}: ${(err as Error).message}`, { cause: err });
}
