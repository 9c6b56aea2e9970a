/**
 * A remote in an S3 bucket: AWS itself or an S3-compatible server (Ceph RGW, MinIO, ...).
 *
 * Requests are plain HTTP through got, signed with SigV4 by aws4, with the whole body in a
 * Buffer: its SHA-256 is signed (a proxy cannot swap the bytes) and a retry can replay it.
 * (`coffer serve --s3` also sends bodies from files, `S3Upload`, signed the same way, and reads
 * answers as streams, `sendStreaming`: its objects are too large to hold many in memory.)
 * Nothing here retries or sleeps; `RetryingBackend` does that around any backend, and
 * every failure is classified so it knows what is worth another try:
 * - REMOTE_UNAVAILABLE: network trouble, timeouts, 5xx, 408, 429 and S3's own transient
 *   codes (SlowDown, RequestTimeout, a conditional-write conflict);
 * - REMOTE_UNAUTHORIZED: refused credentials (401, 403, InvalidAccessKeyId, SignatureDoesNotMatch,
 *   AccessDenied, expired tokens);
 * - REMOTE_REFUSED: everything else the server refuses (clock skew, wrong region, missing bucket).
 * Retrying cannot help either of the last two; the message says what to fix.
 */
import { createHash, randomBytes } from 'node:crypto';
import type { Readable } from 'node:stream';
import aws4 from 'aws4';
import { CofferError, RemoteError } from '../errors.js';
import type { ByteRange, CallOptions, ListOptions, ObjectInfo, RemoteBackend, RemoteCapabilities } from './backend.js';
import { exchange, exchangeStreaming, type HttpAnswer, type StreamingHttpAnswer } from './http-exchange.js';

export interface S3Credentials {
  accessKeyId: string;
  secretAccessKey: string;
  sessionToken?: string;
}

export interface S3BackendOptions extends S3Credentials {
  bucket: string;
  /** Where this remote lives inside the bucket; a trailing `/` is added when missing. */
  prefix: string;
  /** e.g. `https://s3.eu-west-1.amazonaws.com` or `http://127.0.0.1:7480`. */
  endpoint: string;
  region: string;
  /** `https://host/bucket/key` instead of `https://bucket.host/key`: what non-AWS servers need. */
  forcePathStyle: boolean;
  /** Limit on connecting, on waiting for an answer and on a stalled transfer (not on a whole transfer). */
  timeoutMs?: number;
  /** Objects per ListObjectsV2 page (S3 caps it at 1000); smaller only to test pagination. */
  listPageSize?: number;
}

type Method = 'GET' | 'PUT' | 'HEAD' | 'DELETE';

export interface S3Request {
  method: Method;
  /** Object key relative to the prefix; absent for requests on the bucket (listing). */
  key?: string;
  query?: Record<string, string>;
  headers?: Record<string, string>;
  body?: Buffer | S3Upload;
}

/** A body too large to hold in memory: re-readable, with its length and SHA-256 known in advance (both are signed). */
export interface S3Upload {
  open(): Readable;
  size: number;
  sha256: string;
}

type S3Response = HttpAnswer;

/** A request ready to go on the wire. */
export interface PreparedRequest {
  method: Method;
  url: URL;
  headers: Record<string, string>;
}

const EMPTY_SHA256 = createHash('sha256').update('').digest('hex');
const DEFAULT_TIMEOUT_MS = 30_000;
/** Where `capabilities()` writes its throwaway objects, relative to the prefix; `list` hides it. */
const PROBE_DIR = '.coffer-probe/';

/**
 * Signs a request with SigV4 for S3 and returns the headers to send, `authorization`
 * included. `range` is signed too (aws4 leaves it out by default), so a tampered Range
 * is refused by the server rather than answered with the wrong bytes.
 */
export function signS3Request(
  request: { method: string; url: URL; headers: Record<string, string>; payloadSha256: string },
  region: string,
  credentials: S3Credentials,
  now: Date,
): Record<string, string> {
  const headers: Record<string, string> = {};
  for (const [name, value] of Object.entries(request.headers)) headers[name.toLowerCase()] = value;
  headers.host = request.url.host;
  headers['x-amz-content-sha256'] = request.payloadSha256;
  headers['x-amz-date'] = now.toISOString().replace(/[-:]|\.\d{3}/g, '');
  if (credentials.sessionToken) headers['x-amz-security-token'] = credentials.sessionToken;
  const signed = aws4.sign(
    {
      service: 's3',
      region,
      method: request.method,
      host: request.url.host,
      path: request.url.pathname + request.url.search,
      headers,
      extraHeadersToInclude: { range: true },
    } as aws4.Request & { extraHeadersToInclude: Record<string, boolean> },
    {
      accessKeyId: credentials.accessKeyId,
      secretAccessKey: credentials.secretAccessKey,
      sessionToken: credentials.sessionToken,
    },
  );
  const out: Record<string, string> = {};
  for (const [name, value] of Object.entries(signed.headers ?? {})) out[name.toLowerCase()] = String(value);
  return out;
}

export class S3Backend implements RemoteBackend {
  readonly bucket: string;
  readonly prefix: string;
  readonly region: string;
  private readonly endpoint: URL;
  private readonly forcePathStyle: boolean;
  private readonly credentials: S3Credentials;
  private readonly timeoutMs: number;
  private readonly listPageSize: number;
  private probe: Promise<RemoteCapabilities> | undefined;

  constructor(options: S3BackendOptions) {
    if (!options.bucket || /[/\s]/.test(options.bucket)) {
      throw new CofferError('BAD_ARGUMENT', `not an S3 bucket name: ${JSON.stringify(options.bucket)}`);
    }
    let endpoint: URL;
    try {
      endpoint = new URL(options.endpoint);
    } catch {
      throw new CofferError('BAD_ARGUMENT', `not an S3 endpoint URL: ${options.endpoint}`);
    }
    if (endpoint.protocol !== 'http:' && endpoint.protocol !== 'https:') {
      throw new CofferError('BAD_ARGUMENT', `S3 endpoint must be http:// or https://, not ${options.endpoint}`);
    }
    if (!options.accessKeyId || !options.secretAccessKey) {
      throw new CofferError('BAD_ARGUMENT', 'S3 needs an access key id and a secret access key');
    }
    let prefix = options.prefix.replace(/^\/+/, '');
    if (prefix && !prefix.endsWith('/')) prefix += '/';
    if (prefix) checkKey(prefix + 'x');
    this.bucket = options.bucket;
    this.prefix = prefix;
    this.region = options.region;
    this.endpoint = endpoint;
    this.forcePathStyle = options.forcePathStyle;
    this.credentials = {
      accessKeyId: options.accessKeyId,
      secretAccessKey: options.secretAccessKey,
      sessionToken: options.sessionToken,
    };
    this.timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    this.listPageSize = Math.max(1, Math.min(1000, options.listPageSize ?? 1000));
  }

  get description(): string {
    // origin, not href: an endpoint URL may carry user:password.
    return `s3://${this.bucket}/${this.prefix} at ${this.endpoint.origin}`;
  }

  async capabilities(options?: CallOptions): Promise<RemoteCapabilities> {
    options?.signal?.throwIfAborted();
    // One probe for every caller; it runs without any caller's signal so one caller
    // giving up does not fail the others, and a failed probe is asked again next time.
    this.probe ??= this.probeExclusiveCreate().catch((err: unknown) => {
      this.probe = undefined;
      throw err;
    });
    return await untilAborted(this.probe, options?.signal);
  }

  /**
   * Some S3-compatible servers accept `If-None-Match: *` on PUT and then ignore it, so no
   * answer to a question can be trusted: write a fresh object twice and see whether the
   * second write is refused.
   */
  private async probeExclusiveCreate(): Promise<RemoteCapabilities> {
    const key = `${PROBE_DIR}${randomBytes(12).toString('hex')}`;
    const body = Buffer.from('coffer capability probe\n');
    const conditionalPut = () => this.send({ method: 'PUT', key, body, headers: { 'if-none-match': '*' } }, 'probe');
    const first = await conditionalPut();
    try {
      if (refusesConditionalPut(first)) return { atomicExclusiveCreate: false };
      if (!ok(first.status)) throw this.failure('probe', key, first);
      const second = await conditionalPut();
      if (second.status === 412) return { atomicExclusiveCreate: true };
      if (ok(second.status) || refusesConditionalPut(second)) return { atomicExclusiveCreate: false };
      throw this.failure('probe', key, second);
    } finally {
      await this.send({ method: 'DELETE', key }, 'probe').catch(() => {}); // a stray probe object is harmless
    }
  }

  async put(key: string, body: Buffer, options?: CallOptions): Promise<void> {
    checkKey(key);
    const response = await this.send({ method: 'PUT', key, body }, 'PUT', options?.signal);
    if (!ok(response.status)) throw this.failure('PUT', key, response);
  }

  /**
   * Atomic where the server enforces `If-None-Match: *` (see `capabilities()`). Where it
   * does not, this is only a HEAD followed by a PUT: it refuses a key that already exists,
   * but two writers racing between those two requests both "succeed" and the later wins.
   */
  async createExclusive(key: string, body: Buffer, options?: CallOptions): Promise<void> {
    checkKey(key);
    const { atomicExclusiveCreate } = await this.capabilities(options);
    if (!atomicExclusiveCreate) {
      const exists = await this.head(key, options).then(
        () => true,
        (err: unknown) => {
          if (err instanceof RemoteError && err.code === 'REMOTE_NOT_FOUND') return false;
          throw err;
        },
      );
      if (exists) throw new RemoteError('REMOTE_EXISTS', `object ${key} already exists`);
      await this.put(key, body, options);
      return;
    }
    const response = await this.send(
      { method: 'PUT', key, body, headers: { 'if-none-match': '*' } },
      'PUT (exclusive)',
      options?.signal,
    );
    if (ok(response.status)) return;
    if (response.status === 412) throw new RemoteError('REMOTE_EXISTS', `object ${key} already exists`);
    // S3 answers 409 ConditionalRequestConflict while a competing conditional write is in
    // flight; asking again gives the definitive 412 or success.
    if (response.status === 409) {
      throw new RemoteError('REMOTE_UNAVAILABLE', describeFailure(`S3 PUT (exclusive) ${this.where(key)}`, response));
    }
    throw this.failure('PUT (exclusive)', key, response);
  }

  async get(key: string, options?: CallOptions & { range?: ByteRange }): Promise<Buffer> {
    checkKey(key);
    const range = options?.range;
    if (range && (range.offset < 0 || range.length < 0 || !Number.isSafeInteger(range.offset + range.length))) {
      throw new CofferError('BAD_ARGUMENT', `bad byte range ${range.offset}+${range.length} for ${key}`);
    }
    if (range && range.length === 0) {
      await this.head(key, options); // still NOT_FOUND for a missing object
      return Buffer.alloc(0);
    }
    const headers: Record<string, string> = range ? { range: `bytes=${range.offset}-${range.offset + range.length - 1}` } : {};
    const response = await this.send({ method: 'GET', key, headers }, 'GET', options?.signal);
    if (range) {
      if (response.status === 206) return response.body;
      // A server that ignores Range sends the whole object.
      if (response.status === 200) return response.body.subarray(range.offset, range.offset + range.length);
      // The range starts at or past the end: like a short read at EOF, nothing is there.
      if (response.status === 416) return Buffer.alloc(0);
    } else if (response.status === 200) {
      return response.body;
    }
    throw this.failure('GET', key, response);
  }

  async head(key: string, options?: CallOptions): Promise<ObjectInfo> {
    checkKey(key);
    const response = await this.send({ method: 'HEAD', key }, 'HEAD', options?.signal);
    if (!ok(response.status)) throw this.failure('HEAD', key, response);
    const size = Number(response.headers['content-length']);
    if (!Number.isSafeInteger(size) || size < 0) {
      throw new RemoteError('REMOTE_UNAVAILABLE', `S3 HEAD ${this.where(key)}: no usable Content-Length in the answer`);
    }
    return { key, size };
  }

  async list(prefix: string, options?: ListOptions): Promise<ObjectInfo[]> {
    const found: ObjectInfo[] = [];
    let from: { token?: string; startAfter?: string } = options?.after === undefined ? {} : { startAfter: options.after };
    for (;;) {
      const page = await this.requestListPage(prefix, from, this.listPageSize, options?.signal);
      for (const object of page.objects) if (!object.key.startsWith(PROBE_DIR)) found.push(object);
      if (!page.truncated) break;
      const last = page.objects.at(-1)?.key;
      if (page.nextToken !== undefined && page.nextToken !== from.token) {
        from = { token: page.nextToken };
      } else if (last !== undefined && last !== from.startAfter) {
        // Some servers omit the token: carry on after the last key seen.
        from = { startAfter: last };
      } else {
        throw new RemoteError('REMOTE_UNAVAILABLE', `S3 LIST ${this.where(prefix)}: truncated page with no way to continue`);
      }
    }
    return found.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
  }

  /**
   * One ListObjectsV2 page of at most `maxKeys` (up to 1000) objects whose key starts with
   * `prefix` and sorts after `startAfter` (both relative to this remote's prefix), in key order.
   */
  async listPage(prefix: string, startAfter: string, maxKeys: number, options?: CallOptions): Promise<{ objects: ObjectInfo[]; truncated: boolean }> {
    const { objects, truncated } = await this.requestListPage(prefix, startAfter === '' ? {} : { startAfter }, Math.max(1, Math.min(1000, maxKeys)), options?.signal);
    return { objects, truncated };
  }

  /**
   * One ListObjectsV2 request, continuing from a continuation token or after a key (relative to
   * this remote's prefix); the keys it answers are made relative to the prefix too.
   */
  private async requestListPage(
    prefix: string,
    from: { token?: string; startAfter?: string },
    maxKeys: number,
    signal?: AbortSignal,
  ): Promise<{ objects: ObjectInfo[]; truncated: boolean; nextToken?: string }> {
    const query: Record<string, string> = { 'list-type': '2', prefix: this.prefix + prefix, 'max-keys': String(maxKeys) };
    if (from.token !== undefined) query['continuation-token'] = from.token;
    else if (from.startAfter !== undefined) query['start-after'] = this.prefix + from.startAfter;
    const response = await this.send({ method: 'GET', query }, 'LIST', signal);
    if (response.status !== 200) throw this.failure('LIST', prefix, response);
    const page = parseListPage(response.body.toString('utf8'));
    const objects = page.objects.filter((o) => o.key.startsWith(this.prefix)).map((o) => ({ key: o.key.slice(this.prefix.length), size: o.size }));
    return { objects, truncated: page.truncated, nextToken: page.nextToken };
  }

  async delete(key: string, options?: CallOptions): Promise<void> {
    checkKey(key);
    const response = await this.send({ method: 'DELETE', key }, 'DELETE', options?.signal);
    if (ok(response.status) || response.status === 404) return;
    throw this.failure('DELETE', key, response);
  }

  /** The URL and signed headers for a request; `now` is a parameter so signing can be tested against fixed vectors. */
  prepare(request: S3Request, now: Date = new Date()): PreparedRequest {
    const url = this.urlFor(request.key, request.query);
    const body = request.body;
    const headers: Record<string, string> = { ...request.headers };
    if (body) headers['content-type'] = 'application/octet-stream';
    const signed = signS3Request(
      {
        method: request.method,
        url,
        headers,
        payloadSha256: !body ? EMPTY_SHA256 : Buffer.isBuffer(body) ? createHash('sha256').update(body).digest('hex') : body.sha256,
      },
      this.region,
      this.credentials,
      now,
    );
    if (body) signed['content-length'] = String(Buffer.isBuffer(body) ? body.length : body.size);
    signed['user-agent'] = 'coffer';
    return { method: request.method, url, headers: signed };
  }

  private urlFor(key: string | undefined, query: Record<string, string> | undefined): URL {
    const base = this.endpoint.pathname.replace(/\/+$/, '');
    const objectPath = key === undefined ? '' : (this.prefix + key).split('/').map(encodeRfc3986).join('/');
    let url: string;
    if (this.forcePathStyle) {
      url = `${this.endpoint.origin}${base}/${encodeRfc3986(this.bucket)}${key === undefined ? '' : `/${objectPath}`}`;
    } else {
      url = `${this.endpoint.protocol}//${this.bucket}.${this.endpoint.host}${base}/${objectPath}`;
    }
    if (query) {
      url += '?' + Object.keys(query).sort().map((name) => `${encodeRfc3986(name)}=${encodeRfc3986(query[name]!)}`).join('&');
    }
    return new URL(url);
  }

  /**
   * One HTTP exchange. Any answer from the server comes back; only failing to get one throws.
   * Public for callers that need S3 requests the RemoteBackend interface does not offer
   * (conditional writes on an ETag, streamed bodies); `failure()` classifies their answers.
   */
  async send(request: S3Request, op: string, signal?: AbortSignal): Promise<S3Response> {
    const { method, url, headers } = this.prepare(request);
    const body = request.body === undefined || Buffer.isBuffer(request.body) ? request.body : request.body.open();
    return exchange(
      { method, url, headers, body, signal, timeoutMs: this.timeoutMs },
      `S3 ${op} ${this.where(request.key ?? request.query?.prefix?.slice(this.prefix.length) ?? '')}`,
    );
  }

  /** `send`, with the answer's body as a stream (for objects too large to hold in memory). */
  async sendStreaming(request: S3Request, op: string, signal?: AbortSignal): Promise<StreamingHttpAnswer> {
    const { method, url, headers } = this.prepare(request);
    const body = request.body === undefined || Buffer.isBuffer(request.body) ? request.body : request.body.open();
    return exchangeStreaming({ method, url, headers, body, signal, timeoutMs: this.timeoutMs }, `S3 ${op} ${this.where(request.key ?? '')}`);
  }

  private where(key: string): string {
    return `s3://${this.bucket}/${this.prefix}${key} at ${this.endpoint.origin}`;
  }

  /** The error for an answer the caller did not expect, classified as the file header describes. */
  failure(op: string, key: string, response: S3Response): CofferError {
    const { status } = response;
    const { code } = parseS3Error(response.body);
    const message = describeFailure(`S3 ${op} ${this.where(key)}`, response);
    if (status === 404 && code === 'NoSuchBucket') {
      return new RemoteError('REMOTE_REFUSED', `${message} (the bucket ${this.bucket} does not exist: create it first)`);
    }
    if (status === 404) return new RemoteError('REMOTE_NOT_FOUND', message);
    if (status >= 500 || status === 408 || status === 429 || (code !== undefined && TRANSIENT_CODES.has(code))) {
      return new RemoteError('REMOTE_UNAVAILABLE', message);
    }
    if (status === 401 || status === 403 || (code !== undefined && CREDENTIAL_CODES.has(code))) {
      return new RemoteError('REMOTE_UNAUTHORIZED', message + hintFor(status, code));
    }
    return new RemoteError('REMOTE_REFUSED', message + hintFor(status, code));
  }
}

/** S3 error codes that say the credentials are refused, whatever the status. */
const CREDENTIAL_CODES = new Set(['InvalidAccessKeyId', 'SignatureDoesNotMatch', 'InvalidToken', 'ExpiredToken', 'AccessDenied']);

/** S3 error codes worth another try even when the status is a 4xx. */
const TRANSIENT_CODES = new Set(['RequestTimeout', 'SlowDown', 'InternalError', 'ServiceUnavailable', 'OperationAborted', 'ConditionalRequestConflict']);

function hintFor(status: number, code: string | undefined): string {
  switch (code) {
    case 'InvalidAccessKeyId':
    case 'SignatureDoesNotMatch':
    case 'InvalidToken':
    case 'ExpiredToken':
      return ' (check AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and AWS_SESSION_TOKEN)';
    case 'RequestTimeTooSkewed':
      return " (this machine's clock is off)";
    case 'AuthorizationHeaderMalformed':
    case 'PermanentRedirect':
      return ' (the bucket is in another region: set AWS_REGION)';
    case 'AccessDenied':
      return ' (the credentials lack permission for this bucket or prefix)';
  }
  if (status >= 300 && status < 400) return ' (redirected: the bucket is probably in another region, or the endpoint is wrong)';
  if (status === 403 && code === undefined) return ' (refused: check the credentials, the region and the clock)';
  return '';
}

function describeFailure(what: string, response: S3Response): string {
  const { code, message } = parseS3Error(response.body);
  const requestId = response.headers['x-amz-request-id'];
  return (
    `${what}: HTTP ${response.status}` +
    (code ? ` ${code}` : '') +
    (message ? `: ${message}` : '') +
    (typeof requestId === 'string' ? ` [request id ${requestId}]` : '')
  );
}

/** A server that does not do conditional writes may reject the header outright rather than ignore it. */
function refusesConditionalPut(response: S3Response): boolean {
  const { code } = parseS3Error(response.body);
  return (response.status === 501 || response.status === 400) && !(code !== undefined && TRANSIENT_CODES.has(code));
}

function ok(status: number): boolean {
  return status >= 200 && status < 300;
}

/** Keys the URL parser would rewrite (`.`/`..` segments) or S3 would reject, refused like FileBackend does. */
function checkKey(key: string): void {
  if (key === '' || key.startsWith('/') || key.split('/').some((s) => s === '.' || s === '..') || /[\u0000-\u001f\u007f]/.test(key)) {
    throw new RemoteError('REMOTE_NOT_FOUND', `invalid object key ${JSON.stringify(key)}`);
  }
}

/** SigV4's URI encoding: everything but A-Z a-z 0-9 - _ . ~ is percent-encoded. */
function encodeRfc3986(text: string): string {
  return encodeURIComponent(text).replace(/[!'()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`);
}

function decodeXml(text: string): string {
  return text.replace(/&(#x[0-9a-fA-F]+|#[0-9]+|lt|gt|amp|quot|apos);/g, (_, entity: string) => {
    switch (entity) {
      case 'lt':
        return '<';
      case 'gt':
        return '>';
      case 'amp':
        return '&';
      case 'quot':
        return '"';
      case 'apos':
        return "'";
    }
    return String.fromCodePoint(entity[1] === 'x' ? parseInt(entity.slice(2), 16) : parseInt(entity.slice(1), 10));
  });
}

function xmlElement(xml: string, name: string): string | undefined {
  const match = new RegExp(`<${name}>([\\s\\S]*?)</${name}>`).exec(xml);
  return match ? decodeXml(match[1]!) : undefined;
}

function parseS3Error(body: Buffer): { code?: string; message?: string } {
  if (body.length === 0) return {};
  const xml = body.subarray(0, 64 * 1024).toString('utf8');
  return { code: xmlElement(xml, 'Code'), message: xmlElement(xml, 'Message') };
}

/** The parts of a ListObjectsV2 answer Coffer needs; the format is flat enough for a scan. */
function parseListPage(xml: string): { objects: ObjectInfo[]; truncated: boolean; nextToken?: string } {
  if (!xml.includes('<ListBucketResult')) {
    throw new RemoteError('REMOTE_UNAVAILABLE', `S3 LIST: the answer is not a ListBucketResult: ${xml.slice(0, 200)}`);
  }
  const objects: ObjectInfo[] = [];
  for (const match of xml.matchAll(/<Contents>([\s\S]*?)<\/Contents>/g)) {
    const key = xmlElement(match[1]!, 'Key');
    const size = Number(xmlElement(match[1]!, 'Size'));
    if (key === undefined || !Number.isSafeInteger(size)) {
      throw new RemoteError('REMOTE_UNAVAILABLE', 'S3 LIST: an entry without a key or size');
    }
    objects.push({ key, size });
  }
  return {
    objects,
    truncated: xmlElement(xml, 'IsTruncated') === 'true',
    nextToken: xmlElement(xml, 'NextContinuationToken'),
  };
}

/** Waits for `promise`, but rejects with the signal's reason as soon as it aborts. */
function untilAborted<T>(promise: Promise<T>, signal: AbortSignal | undefined): Promise<T> {
  if (!signal) return promise;
  return new Promise<T>((resolve, reject) => {
    const onAbort = (): void => reject(signal.reason);
    signal.addEventListener('abort', onAbort, { once: true });
    promise.then(
      (value) => {
        signal.removeEventListener('abort', onAbort);
        resolve(value);
      },
      (err: unknown) => {
        signal.removeEventListener('abort', onAbort);
        reject(err);
      },
    );
  });
}
