/**
 * `coffer serve`: the HTTP API behind the drive's http(s):// remotes (docs/SERVER.md).
 *
 * Layout: `<data>/accounts.json` (accounts and token hashes), and for each account
 * `<data>/accounts/<id>/objects/<key>` (objects) and `<data>/accounts/<id>/tmp/` (uploads in
 * progress). A request's account comes from its bearer token alone, and keys are checked
 * against a strict pattern (src/server/keys.ts) before they ever become paths, so no request
 * reaches another account's objects or anything outside the data directory.
 */
import { randomBytes } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { link, mkdir, open, readdir, rename, rm, stat, unlink } from 'node:fs/promises';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { dirname, join, resolve, sep } from 'node:path';
import { syncDirectory } from '../chunks/chunk-store.js';
import { AccountBook, type Account } from './accounts.js';
import { isValidKey, isValidPrefix, keyFromPath } from './keys.js';

export type ErrorCode =
  | 'BAD_REQUEST'
  | 'BAD_KEY'
  | 'UNAUTHORIZED'
  | 'NOT_FOUND'
  | 'METHOD_NOT_ALLOWED'
  | 'EXISTS'
  | 'TOO_LARGE'
  | 'RANGE_NOT_SATISFIABLE'
  | 'RATE_LIMITED'
  | 'TOO_MANY_UPLOADS'
  | 'QUOTA_EXCEEDED'
  | 'TIMEOUT'
  | 'INTERNAL';

const STATUS: Record<ErrorCode, number> = {
  BAD_REQUEST: 400,
  BAD_KEY: 400,
  UNAUTHORIZED: 401,
  NOT_FOUND: 404,
  METHOD_NOT_ALLOWED: 405,
  EXISTS: 412,
  TOO_LARGE: 413,
  RANGE_NOT_SATISFIABLE: 416,
  RATE_LIMITED: 429,
  TOO_MANY_UPLOADS: 429,
  QUOTA_EXCEEDED: 507,
  TIMEOUT: 408,
  INTERNAL: 500,
};

class ApiError extends Error {
  constructor(readonly code: ErrorCode, message: string) {
    super(message);
  }
}

export interface ServeOptions {
  dataDir: string;
  host: string;
  port: number;
  /** Largest object accepted, bytes (413 TOO_LARGE beyond it, checked while the body streams). */
  maxObjectSize?: number;
  /** Uploads one account may have in progress at once (429 TOO_MANY_UPLOADS beyond). */
  maxConcurrentUploads?: number;
  /** Requests per second per account, sustained (429 RATE_LIMITED beyond); bursts of twice as many pass. */
  rateLimit?: number;
  /** A request must be complete (headers and body) within this, ms. */
  requestTimeoutMs?: number;
  /** Headers must arrive within this, ms. */
  headersTimeoutMs?: number;
  /** A connection that sends or receives nothing for this long is closed, ms. */
  idleTimeoutMs?: number;
  /** Largest number of keys one list page returns. */
  maxListPage?: number;
}

export const SERVE_DEFAULTS = {
  maxObjectSize: 65 * 1024 * 1024, // the largest chunk size a vault may use (64 MiB) plus sealing overhead
  maxConcurrentUploads: 16,
  rateLimit: 500,
  requestTimeoutMs: 300_000,
  headersTimeoutMs: 10_000,
  idleTimeoutMs: 30_000,
  maxListPage: 1000,
};

interface Usage {
  bytes: number;
  objects: number;
  /** Bytes of uploads in progress, counted against the quota before they land. */
  reservedBytes: number;
  uploads: number;
  tokens: number;
  refilledAt: number;
}

export class CofferServer {
  readonly options: Required<ServeOptions>;
  private readonly dataDir: string;
  private readonly accounts: AccountBook;
  private readonly usage = new Map<string, Promise<Usage>>();
  private readonly server: Server;
  private readonly metrics = {
    requests: new Map<string, number>(),
    bytesIn: 0,
    bytesOut: 0,
    uploadsInProgress: 0,
  };

  constructor(options: ServeOptions) {
    this.options = { ...SERVE_DEFAULTS, ...options };
    this.dataDir = resolve(options.dataDir);
    this.accounts = new AccountBook(this.dataDir);
    this.server = createServer({
      requestTimeout: this.options.requestTimeoutMs,
      headersTimeout: this.options.headersTimeoutMs,
      keepAliveTimeout: 5_000,
    });
    this.server.setTimeout(this.options.idleTimeoutMs, (socket) => socket.destroy());
    this.server.on('request', (req, res) => void this.handle(req, res));
  }

  async listen(): Promise<AddressInfo> {
    await mkdir(join(this.dataDir, 'accounts'), { recursive: true, mode: 0o700 });
    await this.accounts.load();
    await new Promise<void>((resolvePromise, reject) => {
      this.server.once('error', reject);
      this.server.listen(this.options.port, this.options.host, () => {
        this.server.off('error', reject);
        resolvePromise();
      });
    });
    return this.server.address() as AddressInfo;
  }

  /** Stops accepting connections, lets requests in flight finish, then closes idle ones. */
  async close(): Promise<void> {
    const closed = new Promise<void>((r) => this.server.close(() => r()));
    this.server.closeIdleConnections();
    const force = setTimeout(() => this.server.closeAllConnections(), 5_000);
    await closed;
    clearTimeout(force);
  }

  private count(method: string, status: number): void {
    const label = `method="${method}",status="${status}"`;
    this.metrics.requests.set(label, (this.metrics.requests.get(label) ?? 0) + 1);
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const method = req.method ?? 'GET';
    res.on('finish', () => this.count(method, res.statusCode));
    try {
      const url = new URL(req.url ?? '/', 'http://coffer.invalid');
      const rawPath = (req.url ?? '/').split('?')[0]!;
      if (rawPath === '/healthz' && (method === 'GET' || method === 'HEAD')) {
        return this.sendJson(res, 200, { ok: true });
      }
      if (rawPath === '/metrics' && method === 'GET') return this.sendMetrics(res);
      const account = await this.authenticate(req);
      this.takeToken(await this.usageOf(account));
      if (rawPath === '/v1/usage') return await this.sendUsage(account, method, res);
      if (rawPath === '/v1/objects' || rawPath === '/v1/objects/') {
        if (method !== 'GET') throw new ApiError('METHOD_NOT_ALLOWED', `${method} is not allowed on /v1/objects`);
        return await this.list(account, url, res);
      }
      if (!rawPath.startsWith('/v1/objects/')) throw new ApiError('NOT_FOUND', `no such endpoint: ${rawPath}`);
      const key = keyFromPath(rawPath.slice('/v1/objects/'.length));
      if (key === undefined || !isValidKey(key)) throw new ApiError('BAD_KEY', `invalid object key ${JSON.stringify(key ?? rawPath)}`);
      switch (method) {
        case 'PUT':
          return await this.put(account, key, req, res);
        case 'GET':
        case 'HEAD':
          return await this.get(account, key, req, res, method === 'HEAD');
        case 'DELETE':
          return await this.delete(account, key, res);
        default:
          throw new ApiError('METHOD_NOT_ALLOWED', `${method} is not allowed on objects`);
      }
    } catch (err) {
      this.fail(req, res, err);
    }
  }

  private fail(req: IncomingMessage, res: ServerResponse, err: unknown): void {
    const api = err instanceof ApiError ? err : new ApiError('INTERNAL', 'internal error');
    if (!(err instanceof ApiError)) process.stderr.write(`coffer serve: ${(err as Error)?.stack ?? String(err)}\n`);
    if (res.headersSent) {
      res.destroy();
      return;
    }
    // A body the handler did not read is drained (up to a point) so the client sees the answer.
    if (!req.complete) {
      res.setHeader('Connection', 'close');
      req.resume();
    }
    this.sendJson(res, STATUS[api.code], { error: { code: api.code, message: api.message } }, req.method === 'HEAD');
  }

  private sendJson(res: ServerResponse, status: number, body: unknown, headOnly = false): void {
    const text = Buffer.from(JSON.stringify(body) + '\n');
    res.writeHead(status, { 'Content-Type': 'application/json', 'Content-Length': text.length });
    res.end(headOnly ? undefined : text);
  }

  private async authenticate(req: IncomingMessage): Promise<Account> {
    const header = req.headers.authorization;
    const match = header ? /^Bearer\s+(\S+)$/i.exec(header) : null;
    if (!match) throw new ApiError('UNAUTHORIZED', 'send Authorization: Bearer <token>');
    const account = await this.accounts.authenticate(match[1]!);
    if (!account) throw new ApiError('UNAUTHORIZED', 'unknown token');
    return account;
  }

  private accountDir(account: Account): string {
    // Account ids are hex the server made; checked anyway so a hand-edited file cannot point elsewhere.
    if (!/^[0-9a-f]{8,64}$/.test(account.id)) throw new ApiError('INTERNAL', 'bad account id');
    return join(this.dataDir, 'accounts', account.id);
  }

  private objectPath(account: Account, key: string): string {
    const root = join(this.accountDir(account), 'objects');
    const path = resolve(root, key);
    if (!path.startsWith(root + sep)) throw new ApiError('BAD_KEY', `invalid object key ${JSON.stringify(key)}`);
    return path;
  }

  private usageOf(account: Account): Promise<Usage> {
    let usage = this.usage.get(account.id);
    if (!usage) {
      usage = (async () => {
        const usage: Usage = { bytes: 0, objects: 0, reservedBytes: 0, uploads: 0, tokens: 2 * this.options.rateLimit, refilledAt: Date.now() };
        for (const info of await this.walk(join(this.accountDir(account), 'objects'), '')) {
          usage.bytes += info.size;
          usage.objects += 1;
        }
        return usage;
      })();
      this.usage.set(account.id, usage);
      usage.catch(() => this.usage.delete(account.id));
    }
    return usage;
  }

  private takeToken(usage: Usage): void {
    const now = Date.now();
    const rate = this.options.rateLimit;
    usage.tokens = Math.min(2 * rate, usage.tokens + ((now - usage.refilledAt) / 1000) * rate);
    usage.refilledAt = now;
    if (usage.tokens < 1) throw new ApiError('RATE_LIMITED', `more than ${rate} requests per second: slow down`);
    usage.tokens -= 1;
  }

  private async put(account: Account, key: string, req: IncomingMessage, res: ServerResponse): Promise<void> {
    const exclusive = req.headers['if-none-match'] === '*';
    const usage = await this.usageOf(account);
    const max = this.options.maxObjectSize;
    const declared = req.headers['content-length'] === undefined ? undefined : Number(req.headers['content-length']);
    if (declared !== undefined && !(Number.isSafeInteger(declared) && declared >= 0)) throw new ApiError('BAD_REQUEST', 'bad Content-Length');
    if (declared !== undefined && declared > max) throw new ApiError('TOO_LARGE', `object of ${declared} bytes is larger than the limit of ${max} bytes`);
    if (usage.uploads >= this.options.maxConcurrentUploads) {
      throw new ApiError('TOO_MANY_UPLOADS', `more than ${this.options.maxConcurrentUploads} uploads at once for this account`);
    }
    const path = this.objectPath(account, key);
    const old = await stat(path).then((s) => s.size, () => undefined);
    if (exclusive && old !== undefined) throw new ApiError('EXISTS', `object ${key} already exists`);
    if (account.quotaObjects > 0 && old === undefined && usage.objects + 1 > account.quotaObjects) {
      throw new ApiError('QUOTA_EXCEEDED', `the account holds ${usage.objects} objects, its quota`);
    }
    const overQuota = (bytes: number) => account.quotaBytes > 0 && usage.bytes + usage.reservedBytes + bytes - (old ?? 0) > account.quotaBytes;
    if (declared !== undefined && overQuota(declared)) {
      throw new ApiError('QUOTA_EXCEEDED', `storing ${declared} more bytes would exceed the account's quota of ${account.quotaBytes} bytes`);
    }
    usage.uploads += 1;
    this.metrics.uploadsInProgress += 1;
    let reserved = 0;
    const tmpDir = join(this.accountDir(account), 'tmp');
    const temp = join(tmpDir, `${randomBytes(8).toString('hex')}.tmp`);
    try {
      await mkdir(tmpDir, { recursive: true });
      const handle = await open(temp, 'wx', 0o600);
      let size = 0;
      try {
        for await (const piece of req) {
          const buf = piece as Buffer;
          size += buf.length;
          this.metrics.bytesIn += buf.length;
          if (size > max) throw new ApiError('TOO_LARGE', `object is larger than the limit of ${max} bytes`);
          if (size > reserved) {
            if (overQuota(size)) throw new ApiError('QUOTA_EXCEEDED', `storing this object would exceed the account's quota of ${account.quotaBytes} bytes`);
            usage.reservedBytes += size - reserved;
            reserved = size;
          }
          await handle.write(buf);
        }
        if (!req.complete) throw new ApiError('BAD_REQUEST', 'the upload was cut off');
        await handle.sync();
      } finally {
        await handle.close();
      }
      await mkdir(dirname(path), { recursive: true });
      let replaced = old;
      if (exclusive) {
        try {
          await link(temp, path); // fails if the name exists: of two racing creates, one wins
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code === 'EEXIST') throw new ApiError('EXISTS', `object ${key} already exists`);
          throw err;
        }
        await unlink(temp);
        replaced = undefined;
      } else {
        replaced = await stat(path).then((s) => s.size, () => undefined);
        await rename(temp, path);
      }
      await syncDirectory(dirname(path));
      usage.bytes += size - (replaced ?? 0);
      if (replaced === undefined) usage.objects += 1;
      res.writeHead(201, { 'Content-Length': 0 }).end();
    } finally {
      usage.reservedBytes -= reserved;
      usage.uploads -= 1;
      this.metrics.uploadsInProgress -= 1;
      await unlink(temp).catch(() => {});
    }
  }

  /**
   * GET /v1/usage: what the caller's account stores and may store, so a drive can refuse writes
   * it could never upload. Uploads in progress are left out: the drive counts them as its own
   * pending bytes until they land, and counting them here too would count them twice.
   */
  private async sendUsage(account: Account, method: string, res: ServerResponse): Promise<void> {
    if (method !== 'GET') throw new ApiError('METHOD_NOT_ALLOWED', `${method} is not allowed on /v1/usage`);
    const usage = await this.usageOf(account);
    this.sendJson(res, 200, { bytes: usage.bytes, objects: usage.objects, quotaBytes: account.quotaBytes, quotaObjects: account.quotaObjects });
  }

  private async get(account: Account, key: string, req: IncomingMessage, res: ServerResponse, headOnly: boolean): Promise<void> {
    const path = this.objectPath(account, key);
    const info = await stat(path).catch((err: NodeJS.ErrnoException) => {
      if (err.code === 'ENOENT' || err.code === 'ENOTDIR') throw new ApiError('NOT_FOUND', `object ${key} not found`);
      throw err;
    });
    if (!info.isFile()) throw new ApiError('NOT_FOUND', `object ${key} not found`);
    const size = info.size;
    let start = 0;
    let end = size - 1;
    let status = 200;
    const range = req.headers.range;
    if (range !== undefined) {
      const match = /^bytes=(\d+)-(\d*)$/.exec(range.trim());
      if (!match) throw new ApiError('BAD_REQUEST', `unsupported Range ${JSON.stringify(range)} (one bytes=first-[last] range)`);
      start = Number(match[1]);
      end = match[2] === '' ? size - 1 : Math.min(Number(match[2]), size - 1);
      if (start >= size || end < start) {
        res.setHeader('Content-Range', `bytes */${size}`);
        throw new ApiError('RANGE_NOT_SATISFIABLE', `range ${range} is outside the object's ${size} bytes`);
      }
      status = 206;
      res.setHeader('Content-Range', `bytes ${start}-${end}/${size}`);
    }
    const length = size === 0 ? 0 : end - start + 1;
    res.writeHead(status, { 'Content-Type': 'application/octet-stream', 'Content-Length': length, 'Accept-Ranges': 'bytes' });
    if (headOnly || length === 0) {
      res.end();
      return;
    }
    const stream = createReadStream(path, { start, end });
    stream.on('data', (piece) => (this.metrics.bytesOut += piece.length));
    stream.on('error', () => res.destroy());
    stream.pipe(res);
  }

  private async delete(account: Account, key: string, res: ServerResponse): Promise<void> {
    const path = this.objectPath(account, key);
    const usage = await this.usageOf(account);
    const size = await stat(path).then((s) => (s.isFile() ? s.size : undefined), () => undefined);
    if (size !== undefined) {
      await rm(path, { force: true });
      usage.bytes -= size;
      usage.objects -= 1;
    }
    res.writeHead(204).end();
  }

  private async list(account: Account, url: URL, res: ServerResponse): Promise<void> {
    const prefix = url.searchParams.get('prefix') ?? '';
    const after = url.searchParams.get('after') ?? '';
    const limitText = url.searchParams.get('limit');
    const limit = limitText === null ? this.options.maxListPage : Number(limitText);
    if (!isValidPrefix(prefix)) throw new ApiError('BAD_KEY', `invalid prefix ${JSON.stringify(prefix)}`);
    if (!Number.isSafeInteger(limit) || limit < 1) throw new ApiError('BAD_REQUEST', 'limit must be a positive integer');
    const page = Math.min(limit, this.options.maxListPage);
    const all = (await this.walk(join(this.accountDir(account), 'objects'), prefix)).filter((o) => o.key > after);
    const objects = all.slice(0, page);
    this.sendJson(res, 200, { objects, next: all.length > page ? objects[objects.length - 1]!.key : null });
  }

  /** Every object under `root` whose key starts with `prefix`, in key order. */
  private async walk(root: string, prefix: string): Promise<{ key: string; size: number }[]> {
    const found: { key: string; size: number }[] = [];
    const visit = async (dir: string, dirKey: string): Promise<void> => {
      let entries;
      try {
        entries = await readdir(dir, { withFileTypes: true });
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
        throw err;
      }
      for (const entry of entries) {
        const key = dirKey + entry.name;
        if (entry.isDirectory()) {
          if (key.startsWith(prefix) || prefix.startsWith(key + '/')) await visit(join(dir, entry.name), key + '/');
        } else if (entry.isFile() && key.startsWith(prefix)) {
          const size = await stat(join(dir, entry.name)).then((s) => s.size, () => undefined);
          if (size !== undefined) found.push({ key, size });
        }
      }
    };
    await visit(root, '');
    return found.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
  }

  private sendMetrics(res: ServerResponse): void {
    const lines = [
      '# HELP coffer_serve_requests_total HTTP requests answered, by method and status.',
      '# TYPE coffer_serve_requests_total counter',
      ...[...this.metrics.requests].map(([labels, n]) => `coffer_serve_requests_total{${labels}} ${n}`),
      '# HELP coffer_serve_received_bytes_total Object bytes received in uploads.',
      '# TYPE coffer_serve_received_bytes_total counter',
      `coffer_serve_received_bytes_total ${this.metrics.bytesIn}`,
      '# HELP coffer_serve_sent_bytes_total Object bytes sent in downloads.',
      '# TYPE coffer_serve_sent_bytes_total counter',
      `coffer_serve_sent_bytes_total ${this.metrics.bytesOut}`,
      '# HELP coffer_serve_uploads_in_progress Uploads being received now.',
      '# TYPE coffer_serve_uploads_in_progress gauge',
      `coffer_serve_uploads_in_progress ${this.metrics.uploadsInProgress}`,
    ];
    const text = Buffer.from(lines.join('\n') + '\n');
    res.writeHead(200, { 'Content-Type': 'text/plain; version=0.0.4', 'Content-Length': text.length });
    res.end(text);
  }
}
