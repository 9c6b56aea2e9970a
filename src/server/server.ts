/**
 * `coffer serve`: the HTTP API behind the drive's http(s):// remotes (docs/SERVER.md).
 *
 * This is the HTTP layer: tokens, keys, limits, quotas, errors and metrics. Objects and the
 * accounts registry live in an ObjectStore (object-store.ts): a data directory or an S3
 * bucket. A request's account comes from its bearer token alone, and keys are checked
 * against a strict pattern (src/server/keys.ts) before they reach the store, so no request
 * reaches another account's objects or anything outside the store's namespace. Metrics are
 * the operator's: on the main address only with the admin token, or without one on a second,
 * private address that serves nothing else.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { pipeline } from 'node:stream';
import { CofferError } from '../errors.js';
import { AccountBook, type Account } from './accounts.js';
import { isValidKey, isValidPrefix, keyFromPath } from './keys.js';
import { StoreError, type ObjectStore } from './object-store.js';

export type ErrorCode =
  | 'BAD_REQUEST'
  | 'BAD_KEY'
  | 'UNAUTHORIZED'
  | 'NOT_FOUND'
  | 'METHOD_NOT_ALLOWED'
  | 'KEY_CONFLICT'
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
  KEY_CONFLICT: 409,
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
  /** Where objects and the accounts registry live. */
  store: ObjectStore;
  host: string;
  port: number;
  /** Lets `GET /metrics` in on the main address with `Authorization: Bearer <it>`; without it, never. */
  adminToken?: string;
  /** A second address that serves `/metrics` and `/healthz` (only) without a token. */
  metricsListen?: { host: string; port: number };
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
  /**
   * The accounts registry is checked this often (changes made elsewhere reach this process), ms.
   * Default: every second where the store has a cheap version check (a data directory's stat),
   * else every 5 s (a GET of the registry from S3).
   */
  accountsRefreshMs?: number;
}

/** The limits and timeouts of ServeOptions, each with a default. */
export type ServeLimits = Omit<ServeOptions, 'store' | 'host' | 'port' | 'adminToken' | 'metricsListen'>;

export const SERVE_DEFAULTS = {
  maxObjectSize: 65 * 1024 * 1024, // the largest chunk size a vault may use (64 MiB) plus sealing overhead
  maxConcurrentUploads: 16,
  rateLimit: 500,
  requestTimeoutMs: 300_000,
  headersTimeoutMs: 10_000,
  idleTimeoutMs: 30_000,
  maxListPage: 1000,
};

/** Upper bounds of the request latency histogram, seconds. */
const LATENCY_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300];

interface Latency {
  /** Requests at or under each of LATENCY_BUCKETS (not cumulative; summed when printed). */
  buckets: number[];
  sum: number;
  count: number;
}

interface Usage {
  bytes: number;
  objects: number;
  /** When bytes and objects were last counted from the store, ms since the epoch. */
  countedAt: number;
  recounting: boolean;
  /** Bytes of uploads in progress, counted against the quota before they land. */
  reservedBytes: number;
  uploads: number;
  tokens: number;
  refilledAt: number;
}

export class CofferServer {
  readonly options: Required<ServeLimits> & Pick<ServeOptions, 'host' | 'port'>;
  private readonly store: ObjectStore;
  /** SHA-256 of the admin token: compared in constant time, whatever the length sent. */
  private readonly adminTokenHash: Buffer | undefined;
  /** The private address of `metricsListen`, and its server. */
  private readonly metricsListener: { server: Server; host: string; port: number } | undefined;
  private readonly accounts: AccountBook;
  private readonly usage = new Map<string, Promise<Usage>>();
  /** The usage this process has counted, by account id, for the per-account gauges. */
  private readonly loadedUsage = new Map<string, Usage>();
  private readonly server: Server;
  private accountsTimer: NodeJS.Timeout | undefined;
  private readonly metrics = {
    requests: new Map<string, number>(),
    errors: new Map<ErrorCode, number>(),
    latency: new Map<string, Latency>(),
    bytesIn: 0,
    bytesOut: 0,
    uploadsInProgress: 0,
  };

  constructor(options: ServeOptions) {
    const { store, adminToken, metricsListen, ...rest } = options;
    this.options = { ...SERVE_DEFAULTS, accountsRefreshMs: store.accountsVersion ? 1_000 : 5_000, ...rest };
    this.store = store;
    this.adminTokenHash = adminToken === undefined ? undefined : sha256(adminToken);
    this.accounts = new AccountBook(this.store);
    this.server = this.createHttpServer((req, res) => void this.handle(req, res));
    this.metricsListener = metricsListen && { ...metricsListen, server: this.createHttpServer((req, res) => this.handleMetricsAddress(req, res)) };
  }

  private createHttpServer(onRequest: (req: IncomingMessage, res: ServerResponse) => void): Server {
    const server = createServer({
      requestTimeout: this.options.requestTimeoutMs,
      headersTimeout: this.options.headersTimeoutMs,
      // Node enforces both timeouts only when it sweeps its connections (every 30 s by default),
      // which let a slow-loris client hold a socket for up to 30 s past them.
      connectionsCheckingInterval: Math.min(1_000, this.options.headersTimeoutMs, this.options.requestTimeoutMs),
      keepAliveTimeout: 5_000,
    });
    server.setTimeout(this.options.idleTimeoutMs, (socket) => socket.destroy());
    server.on('request', onRequest);
    return server;
  }

  /** Opens the store, then listens; `metrics` is the metrics address, with `metricsListen`. */
  async listen(): Promise<{ address: AddressInfo; metrics: AddressInfo | undefined }> {
    await this.store.open();
    try {
      await this.accounts.load();
      await listenOn(this.server, this.options.host, this.options.port);
      if (this.metricsListener) await listenOn(this.metricsListener.server, this.metricsListener.host, this.metricsListener.port, '--metrics-listen');
    } catch (err) {
      if (this.server.listening) await closeGracefully(this.server);
      await this.store.close();
      throw err;
    }
    // Accounts added, changed or revoked by another process (or the CLI) reach this one.
    this.accountsTimer = setInterval(() => {
      this.accounts.load().catch((err: unknown) => process.stderr.write(`coffer serve: re-reading the accounts: ${(err as Error)?.message ?? String(err)}\n`));
    }, this.options.accountsRefreshMs);
    this.accountsTimer.unref();
    return { address: this.server.address() as AddressInfo, metrics: this.metricsListener?.server.address() as AddressInfo | undefined };
  }

  /** Stops accepting connections, lets requests in flight finish, then closes idle ones. */
  async close(): Promise<void> {
    clearInterval(this.accountsTimer);
    await Promise.all([this.server, this.metricsListener?.server].map((server) => server && closeGracefully(server)));
    await this.store.close();
  }

  private count(method: string, status: number, seconds: number): void {
    const label = `method="${method}",status="${status}"`;
    this.metrics.requests.set(label, (this.metrics.requests.get(label) ?? 0) + 1);
    // Methods come from clients: anything unusual shares one series so labels stay few.
    const methodLabel = ['GET', 'HEAD', 'PUT', 'DELETE'].includes(method) ? method : 'OTHER';
    let latency = this.metrics.latency.get(methodLabel);
    if (!latency) this.metrics.latency.set(methodLabel, (latency = { buckets: LATENCY_BUCKETS.map(() => 0), sum: 0, count: 0 }));
    const bucket = LATENCY_BUCKETS.findIndex((bound) => seconds <= bound);
    if (bucket >= 0) latency.buckets[bucket]! += 1;
    latency.sum += seconds;
    latency.count += 1;
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const method = req.method ?? 'GET';
    const started = process.hrtime.bigint();
    res.on('finish', () => this.count(method, res.statusCode, Number(process.hrtime.bigint() - started) / 1e9));
    try {
      const url = new URL(req.url ?? '/', 'http://coffer.invalid');
      const rawPath = (req.url ?? '/').split('?')[0]!;
      if (rawPath === '/metrics' && method === 'GET') this.checkAdmin(req);
      if (this.answerProbe(rawPath, method, res)) return;
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
          return await this.get(account, key, req, res);
        case 'HEAD':
          return await this.head(account, key, req, res);
        case 'DELETE':
          return await this.delete(account, key, res);
        default:
          throw new ApiError('METHOD_NOT_ALLOWED', `${method} is not allowed on objects`);
      }
    } catch (err) {
      this.fail(req, res, err);
    }
  }

  /**
   * The metrics address: `/metrics` and `/healthz`, no token needed, nothing else. Its requests
   * are not counted in the metrics (a scraper's would crowd out the clients').
   */
  private handleMetricsAddress(req: IncomingMessage, res: ServerResponse): void {
    const rawPath = (req.url ?? '/').split('?')[0]!;
    if (this.answerProbe(rawPath, req.method ?? 'GET', res)) return;
    req.resume();
    this.sendJson(res, STATUS.NOT_FOUND, { error: { code: 'NOT_FOUND', message: `only GET /metrics and /healthz are served here, not ${rawPath}` } }, req.method === 'HEAD');
  }

  /** Answers `/healthz` and `GET /metrics`, whoever asks (the caller checks who may); false for any other request. */
  private answerProbe(rawPath: string, method: string, res: ServerResponse): boolean {
    if (rawPath === '/healthz' && (method === 'GET' || method === 'HEAD')) this.sendJson(res, 200, { ok: true }, method === 'HEAD');
    else if (rawPath === '/metrics' && method === 'GET') this.sendMetrics(res);
    else return false;
    return true;
  }

  /** `GET /metrics` on the main address: the admin token, or 401 saying how to get metrics. */
  private checkAdmin(req: IncomingMessage): void {
    if (!this.adminTokenHash) {
      throw new ApiError(
        'UNAUTHORIZED',
        'metrics are not served on this address: start coffer serve with --admin-token-file FILE (or COFFER_ADMIN_TOKEN) and send Authorization: Bearer <admin token>, or with --metrics-listen HOST:PORT to serve them without a token on a private address',
      );
    }
    const token = bearerToken(req);
    if (token === undefined || !timingSafeEqual(sha256(token), this.adminTokenHash)) {
      throw new ApiError('UNAUTHORIZED', 'GET /metrics needs Authorization: Bearer <admin token>, the token given to coffer serve with --admin-token-file or COFFER_ADMIN_TOKEN (account tokens do not work here)');
    }
  }

  private fail(req: IncomingMessage, res: ServerResponse, err: unknown): void {
    const api = toApiError(err, res);
    if (api.code === 'INTERNAL') process.stderr.write(`coffer serve: ${(err as Error)?.stack ?? String(err)}\n`);
    this.metrics.errors.set(api.code, (this.metrics.errors.get(api.code) ?? 0) + 1);
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
    const token = bearerToken(req);
    if (token === undefined) throw new ApiError('UNAUTHORIZED', 'send Authorization: Bearer <token>');
    const account = await this.accounts.authenticate(token);
    if (!account) throw new ApiError('UNAUTHORIZED', 'unknown token');
    return account;
  }

  /**
   * The account's usage: counted from the store on first use, then kept up to date with this
   * process's puts and deletes, and recounted every `store.usageRefreshMs` (in the background)
   * so that other processes' writes to the same store are counted too.
   */
  private async usageOf(account: Account): Promise<Usage> {
    let pending = this.usage.get(account.id);
    if (!pending) {
      pending = (async () => {
        const counted = await this.countUsage(account.id);
        const usage: Usage = { ...counted, countedAt: Date.now(), recounting: false, reservedBytes: 0, uploads: 0, tokens: 2 * this.options.rateLimit, refilledAt: Date.now() };
        this.loadedUsage.set(account.id, usage);
        return usage;
      })();
      this.usage.set(account.id, pending);
      pending.catch(() => this.usage.delete(account.id));
    }
    const usage = await pending;
    if (!usage.recounting && Date.now() - usage.countedAt >= this.store.usageRefreshMs) {
      usage.recounting = true;
      this.countUsage(account.id)
        .then((counted) => Object.assign(usage, counted, { countedAt: Date.now() }))
        .catch((err: unknown) => process.stderr.write(`coffer serve: recounting usage: ${(err as Error)?.message ?? String(err)}\n`))
        .finally(() => (usage.recounting = false));
    }
    return usage;
  }

  private async countUsage(accountId: string): Promise<{ bytes: number; objects: number }> {
    let bytes = 0;
    let objects = 0;
    for (const info of await this.store.listAll(accountId)) {
      bytes += info.size;
      objects += 1;
    }
    return { bytes, objects };
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
    const old = await this.store.head(account.id, key);
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
    let size = 0;
    const metrics = this.metrics;
    // The store sees the body only through these checks: a body too large or over quota
    // stops the upload (and the store keeps nothing of it) as soon as it is.
    async function* checkedBody(): AsyncGenerator<Buffer> {
      for await (const piece of req) {
        const buf = piece as Buffer;
        size += buf.length;
        metrics.bytesIn += buf.length;
        if (size > max) throw new ApiError('TOO_LARGE', `object is larger than the limit of ${max} bytes`);
        if (size > reserved) {
          // usage.reservedBytes already holds this upload's earlier pieces: count only the new ones.
          if (overQuota(size - reserved)) throw new ApiError('QUOTA_EXCEEDED', `storing this object would exceed the account's quota of ${account.quotaBytes} bytes`);
          usage.reservedBytes += size - reserved;
          reserved = size;
        }
        yield buf;
      }
      if (!req.complete) throw new ApiError('BAD_REQUEST', 'the upload was cut off');
    }
    try {
      const { replacedSize } = await this.store.put(account.id, key, checkedBody(), { exclusive });
      usage.bytes += size - (replacedSize ?? 0);
      if (replacedSize === undefined) usage.objects += 1;
      res.writeHead(201, { 'Content-Length': 0 }).end();
    } finally {
      usage.reservedBytes -= reserved;
      usage.uploads -= 1;
      this.metrics.uploadsInProgress -= 1;
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

  private async get(account: Account, key: string, req: IncomingMessage, res: ServerResponse): Promise<void> {
    const range = parseRange(req.headers.range);
    const read = await this.store.get(account.id, key, range);
    const length = read.size === 0 ? 0 : read.end - read.start + 1;
    if (range) res.setHeader('Content-Range', `bytes ${read.start}-${read.end}/${read.size}`);
    res.writeHead(range ? 206 : 200, { 'Content-Type': 'application/octet-stream', 'Content-Length': length, 'Accept-Ranges': 'bytes' });
    if (length === 0) {
      read.body.destroy();
      res.end();
      return;
    }
    read.body.on('data', (piece: Buffer) => (this.metrics.bytesOut += piece.length));
    // Either side failing ends both: a store read cut off cuts the answer off (the client sees
    // a short body, not a wrong one), and a client gone stops the read from the store.
    pipeline(read.body, res, () => {});
  }

  private async head(account: Account, key: string, req: IncomingMessage, res: ServerResponse): Promise<void> {
    const range = parseRange(req.headers.range);
    const size = await this.store.head(account.id, key);
    if (size === undefined) throw new ApiError('NOT_FOUND', `object ${key} not found`);
    let length = size;
    if (range) {
      const end = range.end === undefined ? size - 1 : Math.min(range.end, size - 1);
      if (range.start >= size || end < range.start) {
        res.setHeader('Content-Range', `bytes */${size}`);
        throw new ApiError('RANGE_NOT_SATISFIABLE', `range ${req.headers.range} is outside the object's ${size} bytes`);
      }
      res.setHeader('Content-Range', `bytes ${range.start}-${end}/${size}`);
      length = end - range.start + 1;
    }
    res.writeHead(range ? 206 : 200, { 'Content-Type': 'application/octet-stream', 'Content-Length': length, 'Accept-Ranges': 'bytes' });
    res.end();
  }

  private async delete(account: Account, key: string, res: ServerResponse): Promise<void> {
    const usage = await this.usageOf(account);
    const size = await this.store.delete(account.id, key);
    if (size !== undefined) {
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
    const { objects, truncated } = await this.store.list(account.id, { prefix, after, limit: page });
    this.sendJson(res, 200, { objects, next: truncated && objects.length > 0 ? objects[objects.length - 1]!.key : null });
  }

  private sendMetrics(res: ServerResponse): void {
    const lines = [
      '# HELP coffer_serve_requests_total HTTP requests answered, by method and status.',
      '# TYPE coffer_serve_requests_total counter',
      ...[...this.metrics.requests].map(([labels, n]) => `coffer_serve_requests_total{${labels}} ${n}`),
      '# HELP coffer_serve_request_duration_seconds Time from a request\'s arrival to the end of its answer, by method.',
      '# TYPE coffer_serve_request_duration_seconds histogram',
      ...[...this.metrics.latency].flatMap(([method, latency]) => {
        let cumulative = 0;
        return [
          ...LATENCY_BUCKETS.map((bound, i) => `coffer_serve_request_duration_seconds_bucket{method="${method}",le="${bound}"} ${(cumulative += latency.buckets[i]!)}`),
          `coffer_serve_request_duration_seconds_bucket{method="${method}",le="+Inf"} ${latency.count}`,
          `coffer_serve_request_duration_seconds_sum{method="${method}"} ${latency.sum}`,
          `coffer_serve_request_duration_seconds_count{method="${method}"} ${latency.count}`,
        ];
      }),
      '# HELP coffer_serve_errors_total Error answers, by their JSON error code.',
      '# TYPE coffer_serve_errors_total counter',
      ...[...this.metrics.errors].map(([code, n]) => `coffer_serve_errors_total{code="${code}"} ${n}`),
      '# HELP coffer_serve_received_bytes_total Object bytes received in uploads.',
      '# TYPE coffer_serve_received_bytes_total counter',
      `coffer_serve_received_bytes_total ${this.metrics.bytesIn}`,
      '# HELP coffer_serve_sent_bytes_total Object bytes sent in downloads.',
      '# TYPE coffer_serve_sent_bytes_total counter',
      `coffer_serve_sent_bytes_total ${this.metrics.bytesOut}`,
      '# HELP coffer_serve_uploads_in_progress Uploads being received now.',
      '# TYPE coffer_serve_uploads_in_progress gauge',
      `coffer_serve_uploads_in_progress ${this.metrics.uploadsInProgress}`,
      // Accounts are labelled by their random id, never by name: names say who the users are.
      '# HELP coffer_serve_account_bytes Bytes an account stores, as this process counts them (accounts it has served only), by account id.',
      '# TYPE coffer_serve_account_bytes gauge',
      ...[...this.loadedUsage].map(([id, u]) => `coffer_serve_account_bytes{account="${id}"} ${u.bytes}`),
      '# HELP coffer_serve_account_objects Objects an account stores, as this process counts them (accounts it has served only), by account id.',
      '# TYPE coffer_serve_account_objects gauge',
      ...[...this.loadedUsage].map(([id, u]) => `coffer_serve_account_objects{account="${id}"} ${u.objects}`),
    ];
    const text = Buffer.from(lines.join('\n') + '\n');
    res.writeHead(200, { 'Content-Type': 'text/plain; version=0.0.4', 'Content-Length': text.length });
    res.end(text);
  }
}

/** The token of an `Authorization: Bearer <token>` header, if the request has one. */
function bearerToken(req: IncomingMessage): string | undefined {
  const header = req.headers.authorization;
  return (header ? /^Bearer\s+(\S+)$/i.exec(header) : null)?.[1];
}

const sha256 = (text: string): Buffer => createHash('sha256').update(text, 'utf8').digest();

/** Stops accepting connections, lets requests in flight finish (cut after 5 s), closes idle ones. */
async function closeGracefully(server: Server): Promise<void> {
  const closed = new Promise<void>((r) => server.close(() => r()));
  server.closeIdleConnections();
  const force = setTimeout(() => server.closeAllConnections(), 5_000);
  await closed;
  clearTimeout(force);
}

/** Listens on `host:port`, or fails with CANNOT_LISTEN and one sentence saying why. */
async function listenOn(server: Server, host: string, port: number, flag = ''): Promise<void> {
  try {
    await new Promise<void>((resolvePromise, reject) => {
      server.once('error', reject);
      server.listen(port, host, () => {
        server.off('error', reject);
        resolvePromise();
      });
    });
  } catch (err) {
    const address = `${host.includes(':') ? `[${host}]` : host}:${port}`;
    throw new CofferError('CANNOT_LISTEN', `cannot listen on ${address}${flag && ` (${flag})`}: ${whyNotListening(err as NodeJS.ErrnoException, host, port)}`, { cause: err });
  }
}

function whyNotListening(err: NodeJS.ErrnoException, host: string, port: number): string {
  switch (err.code) {
    case 'EADDRINUSE':
      return 'the address is already in use (is another coffer serve running?)';
    case 'EACCES':
      return port < 1024 ? 'permission denied (ports below 1024 need root or the CAP_NET_BIND_SERVICE capability; use a port from 1024 up)' : 'permission denied';
    case 'EADDRNOTAVAIL':
      return 'this machine has no such address (use one of its own addresses, 127.0.0.1, or 0.0.0.0 for all of them)';
    case 'ENOTFOUND':
      return `no address is known for the host name ${host}`;
    case 'EAI_AGAIN':
      return `the host name ${host} could not be looked up (the name server did not answer)`;
    default:
      return err.message;
  }
}

/** A `Range: bytes=FIRST-[LAST]` header (the one form the API takes), or undefined for none. */
function parseRange(range: string | undefined): { start: number; end?: number } | undefined {
  if (range === undefined) return undefined;
  const match = /^bytes=(\d+)-(\d*)$/.exec(range.trim());
  if (!match) throw new ApiError('BAD_REQUEST', `unsupported Range ${JSON.stringify(range)} (one bytes=first-[last] range)`);
  const start = Number(match[1]);
  const end = match[2] === '' ? undefined : Number(match[2]);
  if (!Number.isSafeInteger(start) || (end !== undefined && !Number.isSafeInteger(end))) throw new ApiError('BAD_REQUEST', `Range ${JSON.stringify(range)} is out of bounds`);
  if (end !== undefined && end < start) throw new ApiError('RANGE_NOT_SATISFIABLE', `range ${range} ends before it starts`);
  return { start, end };
}

/** The answer for an error: an ApiError as it is, a store's refusal as its code, anything else INTERNAL. */
function toApiError(err: unknown, res: ServerResponse): ApiError {
  if (err instanceof ApiError) return err;
  if (err instanceof StoreError) {
    switch (err.code) {
      case 'NOT_FOUND':
      case 'EXISTS':
      case 'KEY_CONFLICT':
        return new ApiError(err.code, err.message);
      case 'RANGE_NOT_SATISFIABLE':
        if (err.size !== undefined && !res.headersSent) res.setHeader('Content-Range', `bytes */${err.size}`);
        return new ApiError(err.code, err.message);
      case 'CHANGED':
        break;
    }
  }
  return new ApiError('INTERNAL', 'internal error');
}
