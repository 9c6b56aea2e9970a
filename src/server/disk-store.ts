/**
 * The data-directory store: `<data>/accounts.json` (mode 0600), and for each account
 * `<data>/accounts/<id>/objects/<key>` (one file per object) and `<data>/accounts/<id>/tmp/`
 * (uploads in progress). An upload goes to a temp file, is fsynced, then renamed (or linked,
 * for an exclusive put) into place and the folder fsynced: a crash leaves the old object or
 * the whole new one. One process owns a data directory (usage is never recounted, and temp
 * files left by a crash are removed when it opens).
 */
import { randomBytes } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { link, mkdir, open, readFile, readdir, rename, rm, stat, unlink, writeFile } from 'node:fs/promises';
import { dirname, join, resolve, sep } from 'node:path';
import { syncDirectory } from '../chunks/chunk-store.js';
import { formatAccounts, parseAccounts, type Account } from './accounts.js';
import { checkAccountId, StoreError, type AccountsSnapshot, type ObjectRead, type ObjectStore, type StoredObject } from './object-store.js';

export class DiskObjectStore implements ObjectStore {
  readonly dataDir: string;
  readonly usageRefreshMs = Infinity;

  constructor(dataDir: string) {
    this.dataDir = resolve(dataDir);
  }

  get description(): string {
    return this.dataDir;
  }

  /**
   * Also empties every account's tmp/: this process owns the data directory, so what is there
   * was left by uploads a crash cut off (none of them was acknowledged).
   */
  async open(): Promise<void> {
    const accounts = join(this.dataDir, 'accounts');
    await mkdir(accounts, { recursive: true, mode: 0o700 });
    for (const id of await readdir(accounts)) {
      if (/^[0-9a-f]{8,64}$/.test(id)) await rm(join(accounts, id, 'tmp'), { recursive: true, force: true });
    }
  }

  async close(): Promise<void> {}

  private get accountsPath(): string {
    return join(this.dataDir, 'accounts.json');
  }

  async accountsVersion(): Promise<string | undefined> {
    try {
      // Every write renames a new file into place, so the inode alone tells writes apart,
      // even two within one mtime tick.
      const info = await stat(this.accountsPath);
      return `${info.ino}:${info.mtimeMs}:${info.size}`;
    } catch {
      return undefined;
    }
  }

  async readAccounts(): Promise<AccountsSnapshot> {
    const version = await this.accountsVersion();
    let text: string;
    try {
      text = await readFile(this.accountsPath, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { accounts: [], version: undefined };
      throw err;
    }
    return { accounts: parseAccounts(text, this.accountsPath), version };
  }

  /**
   * Compare-and-swap under `accounts.json.lock` (created with O_EXCL): the version check and
   * the rename happen with no other `coffer serve account` command in between, so of two
   * admins changing the registry at once, one is told CHANGED and reads again. The server only
   * reads the file, and the rename shows it the old or the new file whole.
   */
  async writeAccounts(accounts: Account[], expectedVersion: string | undefined): Promise<void> {
    await mkdir(this.dataDir, { recursive: true, mode: 0o700 });
    const temp = `${this.accountsPath}.${randomBytes(4).toString('hex')}.tmp`;
    await writeFile(temp, formatAccounts(accounts), { mode: 0o600 });
    try {
      await withLock(`${this.accountsPath}.lock`, async () => {
        if ((await this.accountsVersion()) !== expectedVersion) {
          throw new StoreError('CHANGED', `${this.accountsPath} changed while it was being updated`);
        }
        await rename(temp, this.accountsPath);
        await syncDirectory(this.dataDir);
      });
    } finally {
      await unlink(temp).catch(() => {});
    }
    for (const account of accounts) {
      await mkdir(join(this.accountDir(account.id), 'objects'), { recursive: true, mode: 0o700 });
    }
  }

  async deleteAccount(accountId: string): Promise<void> {
    await rm(this.accountDir(accountId), { recursive: true, force: true });
  }

  private accountDir(accountId: string): string {
    return join(this.dataDir, 'accounts', checkAccountId(accountId));
  }

  private objectPath(accountId: string, key: string): string {
    const root = join(this.accountDir(accountId), 'objects');
    const path = resolve(root, key);
    if (!path.startsWith(root + sep)) throw new Error(`object key ${JSON.stringify(key)} leaves the account's folder`);
    return path;
  }

  /** The size of the file at `path`; undefined if there is none; KEY_CONFLICT if it is a folder of other objects. */
  private async sizeAt(path: string, key: string): Promise<number | undefined> {
    let info;
    try {
      info = await stat(path);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ENOENT' || code === 'ENOTDIR') return undefined;
      throw err;
    }
    if (info.isDirectory()) throw conflict(key);
    return info.isFile() ? info.size : undefined;
  }

  async put(accountId: string, key: string, body: AsyncIterable<Buffer>, options: { exclusive: boolean }): Promise<{ replacedSize: number | undefined }> {
    const path = this.objectPath(accountId, key);
    const tmpDir = join(this.accountDir(accountId), 'tmp');
    const temp = join(tmpDir, `${randomBytes(8).toString('hex')}.tmp`);
    try {
      await mkdir(tmpDir, { recursive: true });
      const handle = await open(temp, 'wx', 0o600);
      try {
        for await (const piece of body) await handle.write(piece);
        await handle.sync();
      } finally {
        await handle.close();
      }
      let firstCreated: string | undefined;
      try {
        firstCreated = await mkdir(dirname(path), { recursive: true });
      } catch (err) {
        // A file where a folder of the key's path should be: the parent key is an object.
        const code = (err as NodeJS.ErrnoException).code;
        if (code === 'ENOTDIR' || code === 'EEXIST') throw conflict(key);
        throw err;
      }
      // Folders made for this key must outlive a power cut too: each one's entry in its parent.
      for (let made = dirname(path); firstCreated !== undefined && made.length >= firstCreated.length; made = dirname(made)) {
        await syncDirectory(dirname(made));
      }
      let replacedSize: number | undefined;
      if (options.exclusive) {
        if ((await this.sizeAt(path, key)) !== undefined) throw new StoreError('EXISTS', `object ${key} already exists`);
        try {
          await link(temp, path); // fails if the name exists: of two racing creates, one wins
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code === 'EEXIST') {
            await this.sizeAt(path, key); // a folder that appeared since is a conflict, not an existing object
            throw new StoreError('EXISTS', `object ${key} already exists`);
          }
          throw err;
        }
      } else {
        replacedSize = await this.sizeAt(path, key);
        await rename(temp, path);
      }
      await syncDirectory(dirname(path));
      return { replacedSize };
    } finally {
      await unlink(temp).catch(() => {});
    }
  }

  async get(accountId: string, key: string, range?: { start: number; end?: number }): Promise<ObjectRead> {
    const path = this.objectPath(accountId, key);
    const size = await this.sizeAt(path, key).catch((err: unknown) => {
      if (err instanceof StoreError) return undefined; // a folder is no object
      throw err;
    });
    if (size === undefined) throw new StoreError('NOT_FOUND', `object ${key} not found`);
    const start = range?.start ?? 0;
    const end = range?.end === undefined ? size - 1 : Math.min(range.end, size - 1);
    if (range && (start >= size || end < start)) throw new StoreError('RANGE_NOT_SATISFIABLE', `range starts past the object's ${size} bytes`, size);
    return { size, start, end, body: createReadStream(path, { start, end: Math.max(end, start) }) };
  }

  async head(accountId: string, key: string): Promise<number | undefined> {
    return this.sizeAt(this.objectPath(accountId, key), key).catch((err: unknown) => {
      if (err instanceof StoreError) return undefined;
      throw err;
    });
  }

  async delete(accountId: string, key: string): Promise<number | undefined> {
    const path = this.objectPath(accountId, key);
    const size = await this.head(accountId, key);
    if (size !== undefined) await rm(path, { force: true });
    return size;
  }

  async list(accountId: string, page: { prefix: string; after: string; limit: number }): Promise<{ objects: StoredObject[]; truncated: boolean }> {
    const found = await this.walk(accountId, page.prefix, page.after, page.limit + 1);
    return { objects: found.slice(0, page.limit), truncated: found.length > page.limit };
  }

  listAll(accountId: string): Promise<StoredObject[]> {
    return this.walk(accountId, '', '', Infinity);
  }

  /**
   * Up to `limit` objects whose key starts with `prefix` and sorts after `after`, in key order.
   * Folders are visited in key order and only where such keys can be, and the walk stops once
   * it has `limit`: a page costs about its own size, not the account's. (Keys are ASCII, so
   * JavaScript's string order is byte order.)
   */
  private async walk(accountId: string, prefix: string, after: string, limit: number): Promise<StoredObject[]> {
    const found: StoredObject[] = [];
    const visit = async (dir: string, dirKey: string): Promise<void> => {
      let entries;
      try {
        entries = await readdir(dir, { withFileTypes: true });
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
        throw err;
      }
      // A folder's keys all start with its name and "/": that is where it sorts among the files.
      const sorted = entries
        .filter((e) => e.isDirectory() || e.isFile())
        .map((entry) => ({ entry, key: dirKey + entry.name + (entry.isDirectory() ? '/' : '') }))
        .sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
      for (const { entry, key } of sorted) {
        if (found.length >= limit) return;
        if (entry.isDirectory()) {
          const holdsPrefix = key.startsWith(prefix) || prefix.startsWith(key);
          // Every key inside is `key` + more: all of them sort before `after` if `after` is
          // past `key` without starting with it.
          const allBeforeAfter = after > key && !after.startsWith(key);
          if (holdsPrefix && !allBeforeAfter) await visit(join(dir, entry.name), key);
        } else if (key.startsWith(prefix) && key > after) {
          const size = await stat(join(dir, entry.name)).then((s) => s.size, () => undefined);
          if (size !== undefined) found.push({ key, size });
        }
      }
    };
    await visit(join(this.accountDir(accountId), 'objects'), '');
    return found;
  }
}

function conflict(key: string): StoreError {
  return new StoreError('KEY_CONFLICT', `object ${key} conflicts with another object: one key cannot be both an object and the folder of others (a/b next to a)`);
}

const LOCK_WAIT_MS = 10_000;
/** A lock older than this was left by a command that died: holders keep it for milliseconds. */
const LOCK_STALE_MS = 30_000;

async function withLock<T>(lock: string, body: () => Promise<T>): Promise<T> {
  const deadline = Date.now() + LOCK_WAIT_MS;
  for (let delay = 5; ; delay = Math.min(delay * 2, 200)) {
    try {
      const handle = await open(lock, 'wx', 0o600);
      await handle.writeFile(`${process.pid}\n`);
      await handle.close();
      break;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      if (await removeIfStale(lock)) continue;
      if (Date.now() > deadline) throw new Error(`${lock} is held by another coffer serve account command; if none runs, remove it`);
      await new Promise((r) => setTimeout(r, delay));
    }
  }
  try {
    return await body();
  } finally {
    await unlink(lock).catch(() => {});
  }
}

/**
 * Removes a lock left behind: its holder's pid is gone (and the lock is not brand new), or it is
 * older than any holder keeps it. The inode is checked again just before the unlink, so a lock
 * taken by a live command in the meantime stays.
 */
async function removeIfStale(lock: string): Promise<boolean> {
  try {
    const [info, text] = await Promise.all([stat(lock), readFile(lock, 'utf8')]);
    const age = Date.now() - info.mtimeMs;
    const pid = Number(text.trim());
    let holderGone = false;
    if (Number.isSafeInteger(pid) && pid > 0) {
      try {
        process.kill(pid, 0);
      } catch (err) {
        holderGone = (err as NodeJS.ErrnoException).code === 'ESRCH';
      }
    }
    if (!((holderGone && age > 2_000) || age > LOCK_STALE_MS)) return false;
    if ((await stat(lock)).ino !== info.ino) return false;
    await unlink(lock);
    return true;
  } catch {
    return false; // gone already, or being written: try again
  }
}
