/**
 * The bucket store behind `coffer serve --s3 s3://bucket/prefix`: `<prefix>/accounts.json`
 * and `<prefix>/accounts/<id>/objects/<key>`, spoken to through the drive's own S3 client
 * (src/remote/s3-backend.ts: SigV4, error classification). It keeps no state of its own
 * beyond uploads being spooled, so any number of server processes can share one bucket.
 *
 * Uploads are spooled to a local temp file, then sent. Why not stream them straight through:
 * a client may send its body chunked, with no length, and S3 needs one up front; and the
 * spooled file's SHA-256 is signed, so the store refuses bytes altered on the way, as it does
 * for the drive's own uploads. Memory stays bounded either way (one piece at a time); disk
 * use is bounded by the object size limit times the uploads in progress. A 201 is only sent
 * once S3 has answered the PUT, i.e. once the object is durable in the store.
 */
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdtemp, open, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { CofferError, RemoteError } from '../errors.js';
import { S3Backend, type S3BackendOptions, type S3Upload } from '../remote/s3-backend.js';
import { sleep } from '../remote/sleep.js';
import { formatAccounts, parseAccounts, type Account } from './accounts.js';
import { checkAccountId, StoreError, type AccountsSnapshot, type ObjectRead, type ObjectStore, type StoredObject } from './object-store.js';

const ACCOUNTS_KEY = 'accounts.json';
/** How much of an unexpected answer's body is kept for its error message. */
const ERROR_BODY_LIMIT = 64 * 1024;

export interface S3StoreOptions extends S3BackendOptions {
  /** See ObjectStore.usageRefreshMs. */
  usageRefreshMs?: number;
}

export class S3ObjectStore implements ObjectStore {
  readonly usageRefreshMs: number;
  private readonly s3: S3Backend;
  private spoolDir: string | undefined;
  private spooled = 0;

  constructor(options: S3StoreOptions) {
    this.s3 = new S3Backend(options);
    this.usageRefreshMs = options.usageRefreshMs ?? 60_000;
  }

  get description(): string {
    return this.s3.description;
  }

  async open(): Promise<void> {
    // Exclusive creates are the drive's locks: a store that would let two racing creates
    // both succeed is refused outright rather than served with a weaker guarantee.
    const { atomicExclusiveCreate } = await this.s3.capabilities();
    if (!atomicExclusiveCreate) {
      throw new CofferError('BAD_ARGUMENT', `${this.description} does not enforce If-None-Match: * on PUT; coffer serve needs it for exclusive creates`);
    }
    this.spoolDir = await mkdtemp(join(tmpdir(), 'coffer-serve-spool-'));
  }

  async close(): Promise<void> {
    if (this.spoolDir) await rm(this.spoolDir, { recursive: true, force: true });
    this.spoolDir = undefined;
  }

  async readAccounts(): Promise<AccountsSnapshot> {
    const response = await this.s3.send({ method: 'GET', key: ACCOUNTS_KEY }, 'GET');
    if (response.status === 404) return { accounts: [], version: undefined };
    if (response.status !== 200) throw this.s3.failure('GET', ACCOUNTS_KEY, response);
    return { accounts: parseAccounts(response.body.toString('utf8'), `s3://${this.s3.bucket}/${this.s3.prefix}${ACCOUNTS_KEY}`), version: etagOf(response.headers.etag) };
  }

  /**
   * A conditional PUT: `If-Match` on the ETag read (or `If-None-Match: *` for the first
   * registry), so of two admins adding accounts at once, one is told to read again.
   */
  async writeAccounts(accounts: Account[], expectedVersion: string | undefined): Promise<void> {
    const body = Buffer.from(formatAccounts(accounts));
    // Ceph RGW (16.x) compares If-Match with the ETag unquoted, AWS quoted or not: unquoted first.
    const forms = expectedVersion === undefined ? [{ 'if-none-match': '*' }] : [{ 'if-match': expectedVersion }, { 'if-match': `"${expectedVersion}"` }];
    for (const headers of forms) {
      const response = await this.s3.send({ method: 'PUT', key: ACCOUNTS_KEY, body, headers }, 'PUT (conditional)');
      if (response.status >= 200 && response.status < 300) return;
      if (response.status !== 412 && response.status !== 409) throw this.s3.failure('PUT (conditional)', ACCOUNTS_KEY, response);
      if ((await this.readAccounts()).version !== expectedVersion) break;
      // Unchanged, yet refused: the server wants the ETag in the other form.
    }
    throw new StoreError('CHANGED', `s3://${this.s3.bucket}/${this.s3.prefix}${ACCOUNTS_KEY} changed while it was being updated`);
  }

  private objectsPrefix(accountId: string): string {
    return `accounts/${checkAccountId(accountId)}/objects/`;
  }

  async put(accountId: string, key: string, body: AsyncIterable<Buffer>, options: { exclusive: boolean }): Promise<{ replacedSize: number | undefined }> {
    const objectKey = this.objectsPrefix(accountId) + key;
    if (!this.spoolDir) throw new Error('the S3 store is not open');
    const path = join(this.spoolDir, `${process.pid}-${++this.spooled}.tmp`);
    try {
      const upload = await spool(body, path);
      const replacedSize = options.exclusive ? undefined : await this.head(accountId, key);
      const headers: Record<string, string> = options.exclusive ? { 'if-none-match': '*' } : {};
      for (let attempt = 1; ; attempt++) {
        const response = await this.s3.send({ method: 'PUT', key: objectKey, body: upload, headers }, options.exclusive ? 'PUT (exclusive)' : 'PUT');
        if (response.status >= 200 && response.status < 300) return { replacedSize };
        if (response.status === 412) throw new StoreError('EXISTS', `object ${key} already exists`);
        // 409 ConditionalRequestConflict: a competing conditional write was in flight; asking
        // again gets the definitive 412 or success.
        if (response.status === 409 && attempt < 5) {
          await sleep(50 * attempt, undefined);
          continue;
        }
        throw this.s3.failure('PUT', objectKey, response);
      }
    } finally {
      await rm(path, { force: true });
    }
  }

  async get(accountId: string, key: string, range?: { start: number; end?: number }): Promise<ObjectRead> {
    const objectKey = this.objectsPrefix(accountId) + key;
    const headers: Record<string, string> = range ? { range: `bytes=${range.start}-${range.end ?? ''}` } : {};
    const answer = await this.s3.sendStreaming({ method: 'GET', key: objectKey, headers }, 'GET');
    if (answer.status === 200 && !range) {
      const size = Number(answer.headers['content-length']);
      if (Number.isSafeInteger(size) && size >= 0) return { size, start: 0, end: size - 1, body: answer.body };
    }
    if (answer.status === 206) {
      const match = /^bytes (\d+)-(\d+)\/(\d+)$/.exec(String(answer.headers['content-range'] ?? ''));
      if (match) return { size: Number(match[3]), start: Number(match[1]), end: Number(match[2]), body: answer.body };
    }
    const response = { status: answer.status, headers: answer.headers, body: await readSome(answer.body, ERROR_BODY_LIMIT) };
    if (response.status === 404) throw new StoreError('NOT_FOUND', `object ${key} not found`);
    if (response.status === 416) {
      const size = await this.head(accountId, key);
      if (size === undefined) throw new StoreError('NOT_FOUND', `object ${key} not found`);
      throw new StoreError('RANGE_NOT_SATISFIABLE', `range starts past the object's ${size} bytes`, size);
    }
    if (response.status === 200 || response.status === 206) {
      throw new RemoteError('REMOTE_UNAVAILABLE', `S3 GET ${objectKey}: an answer without a usable Content-Length or Content-Range`);
    }
    throw this.s3.failure('GET', objectKey, response);
  }

  async head(accountId: string, key: string): Promise<number | undefined> {
    try {
      return (await this.s3.head(this.objectsPrefix(accountId) + key)).size;
    } catch (err) {
      if (err instanceof RemoteError && err.code === 'REMOTE_NOT_FOUND') return undefined;
      throw err;
    }
  }

  async list(accountId: string, page: { prefix: string; after: string; limit: number }): Promise<{ objects: StoredObject[]; truncated: boolean }> {
    const base = this.objectsPrefix(accountId);
    const { objects, truncated } = await this.s3.listPage(base + page.prefix, page.after === '' ? '' : base + page.after, page.limit);
    return { objects: objects.map((o) => ({ key: o.key.slice(base.length), size: o.size })), truncated };
  }

  async listAll(accountId: string): Promise<StoredObject[]> {
    const base = this.objectsPrefix(accountId);
    return (await this.s3.list(base)).map((o) => ({ key: o.key.slice(base.length), size: o.size }));
  }

  async deleteAccount(accountId: string): Promise<void> {
    const base = this.objectsPrefix(accountId);
    for (const object of await this.s3.list(base)) await this.s3.delete(object.key);
  }

  async delete(accountId: string, key: string): Promise<number | undefined> {
    const size = await this.head(accountId, key);
    if (size !== undefined) await this.s3.delete(this.objectsPrefix(accountId) + key);
    return size;
  }
}

/** Writes what `body` yields to a new file at `path`, hashing it on the way. */
async function spool(body: AsyncIterable<Buffer>, path: string): Promise<S3Upload> {
  const hash = createHash('sha256');
  let size = 0;
  const handle = await open(path, 'wx', 0o600);
  try {
    for await (const piece of body) {
      hash.update(piece);
      size += piece.length;
      await handle.write(piece);
    }
  } finally {
    await handle.close();
  }
  return { open: () => createReadStream(path), size, sha256: hash.digest('hex') };
}

/** Up to `limit` bytes of a stream, then the rest is dropped. */
async function readSome(stream: Readable, limit: number): Promise<Buffer> {
  const pieces: Buffer[] = [];
  let length = 0;
  try {
    for await (const piece of stream) {
      if (length < limit) pieces.push(piece as Buffer);
      length += (piece as Buffer).length;
      if (length >= limit) break;
    }
  } catch {
    // The error answer itself failed to arrive; what came is enough for a message.
  } finally {
    stream.destroy();
  }
  return Buffer.concat(pieces).subarray(0, limit);
}

function etagOf(header: string | string[] | undefined): string | undefined {
  const value = Array.isArray(header) ? header[0] : header;
  return value === undefined ? undefined : value.replace(/^W\//, '').replace(/"/g, '');
}
