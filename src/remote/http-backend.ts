/**
 * A remote served by `coffer serve` (docs/SERVER.md): `http(s)://host:port/[vault/prefix/]`.
 * The URL's path is a key prefix inside the account, so one account can hold several vaults.
 * Requests carry `Authorization: Bearer <token>`; answers are classified by the JSON error code:
 * NOT_FOUND → REMOTE_NOT_FOUND, EXISTS → REMOTE_EXISTS, QUOTA_EXCEEDED → REMOTE_QUOTA (ENOSPC
 * to programs), timeouts, rate limits and 5xx → REMOTE_UNAVAILABLE (retried), a refused token
 * → REMOTE_UNAUTHORIZED, any other refusal → REMOTE_REFUSED (retrying cannot help either).
 */
import { STATUS_CODES } from 'node:http';
import { CofferError, RemoteError } from '../errors.js';
import type { ByteRange, CallOptions, ListOptions, ObjectInfo, RemoteBackend, RemoteCapabilities, RemoteSpace } from './backend.js';
import { exchange, type HttpAnswer } from './http-exchange.js';

export interface HttpBackendOptions {
  /** http(s)://host:port/ with an optional path that becomes a key prefix. */
  url: string;
  token: string;
  timeoutMs?: number;
}

type HttpResponse = HttpAnswer;

const LIST_PAGE = 1000;

export class HttpBackend implements RemoteBackend {
  private readonly origin: string;
  private readonly prefix: string;
  private readonly token: string;
  private readonly timeoutMs: number;

  constructor(options: HttpBackendOptions) {
    const url = new URL(options.url);
    this.origin = url.origin;
    const path = decodeURIComponent(url.pathname).replace(/^\/+|\/+$/g, '');
    this.prefix = path ? path + '/' : '';
    this.token = options.token;
    this.timeoutMs = options.timeoutMs ?? 60_000;
  }

  get description(): string {
    return `${this.origin}/${this.prefix}`;
  }

  async capabilities(): Promise<RemoteCapabilities> {
    return { atomicExclusiveCreate: true }; // the server creates with link(2)
  }

  private objectUrl(key: string): string {
    // URL parsing would fold "." and ".." segments into another key: refuse them here.
    if (key.split('/').some((segment) => segment === '' || segment === '.' || segment === '..')) {
      throw new CofferError('BAD_ARGUMENT', `invalid object key ${JSON.stringify(key)}`);
    }
    return `${this.origin}/v1/objects/${(this.prefix + key).split('/').map(encodeURIComponent).join('/')}`;
  }

  private async send(
    method: 'GET' | 'PUT' | 'HEAD' | 'DELETE',
    url: string,
    what: string,
    options: { body?: Buffer; headers?: Record<string, string>; signal?: AbortSignal },
  ): Promise<HttpResponse> {
    return exchange(
      { method, url, headers: { authorization: `Bearer ${this.token}`, ...options.headers }, body: options.body, signal: options.signal, timeoutMs: this.timeoutMs },
      `${what} at ${this.origin}`,
    );
  }

  private failure(what: string, response: HttpResponse): CofferError {
    let code: string | undefined;
    let message: string | undefined;
    try {
      const parsed = JSON.parse(response.body.toString('utf8')) as { error?: { code?: string; message?: string } };
      code = parsed.error?.code;
      message = parsed.error?.message;
    } catch {
      // not JSON: a proxy's page, or a HEAD answer without a body
    }
    // A HEAD answer has no body: the status's own name says what the code would have.
    const name = code ?? STATUS_CODES[response.status]?.toUpperCase().replace(/ /g, '_');
    const text = `${what} at ${this.origin}: ${response.status}${name ? ` ${name}` : ''}${message ? `: ${message}` : ''}`;
    const { status } = response;
    if (status === 404 && (code === undefined || code === 'NOT_FOUND')) return new RemoteError('REMOTE_NOT_FOUND', text);
    if (code === 'EXISTS' || status === 412) return new RemoteError('REMOTE_EXISTS', text);
    if (code === 'QUOTA_EXCEEDED' || status === 507) return new RemoteError('REMOTE_QUOTA', text + ' (the account on the server is full: free space or raise its quota)');
    if (status >= 500 || status === 408 || status === 429) return new RemoteError('REMOTE_UNAVAILABLE', text);
    if (status === 401 || status === 403) {
      return new RemoteError('REMOTE_UNAUTHORIZED', text + ' (the server refuses this token: check COFFER_TOKEN or "token" in the vault\'s config.json)');
    }
    return new RemoteError('REMOTE_REFUSED', text);
  }

  async put(key: string, body: Buffer, options?: CallOptions): Promise<void> {
    const response = await this.send('PUT', this.objectUrl(key), `PUT ${key}`, { body, signal: options?.signal });
    if (response.status !== 201 && response.status !== 200 && response.status !== 204) throw this.failure(`PUT ${key}`, response);
  }

  async createExclusive(key: string, body: Buffer, options?: CallOptions): Promise<void> {
    const response = await this.send('PUT', this.objectUrl(key), `PUT ${key}`, { body, headers: { 'if-none-match': '*' }, signal: options?.signal });
    if (response.status !== 201 && response.status !== 200 && response.status !== 204) throw this.failure(`create ${key}`, response);
  }

  async get(key: string, options?: CallOptions & { range?: ByteRange }): Promise<Buffer> {
    const range = options?.range;
    if (range && range.length === 0) return Buffer.alloc(0);
    const headers: Record<string, string> = range ? { range: `bytes=${range.offset}-${range.offset + range.length - 1}` } : {};
    const response = await this.send('GET', this.objectUrl(key), `GET ${key}`, { headers, signal: options?.signal });
    if (response.status === 200 && !range) return response.body;
    if (response.status === 206 && range) return response.body;
    if (response.status === 200 && range) return response.body.subarray(range.offset, range.offset + range.length);
    if (response.status === 416 && range) return Buffer.alloc(0); // the range starts at or past the end
    throw this.failure(`GET ${key}`, response);
  }

  async head(key: string, options?: CallOptions): Promise<ObjectInfo> {
    const response = await this.send('HEAD', this.objectUrl(key), `HEAD ${key}`, { signal: options?.signal });
    if (response.status !== 200) throw this.failure(`HEAD ${key}`, response);
    return { key, size: Number(response.headers['content-length']) };
  }

  async list(prefix: string, options?: ListOptions): Promise<ObjectInfo[]> {
    const found: ObjectInfo[] = [];
    let after = options?.after === undefined ? '' : this.prefix + options.after;
    for (;;) {
      const query = new URLSearchParams({ prefix: this.prefix + prefix, limit: String(LIST_PAGE) });
      if (after) query.set('after', after);
      const response = await this.send('GET', `${this.origin}/v1/objects?${query}`, `list ${prefix}`, { signal: options?.signal });
      if (response.status !== 200) throw this.failure(`list ${prefix}`, response);
      let page: { objects: ObjectInfo[]; next: string | null };
      try {
        page = JSON.parse(response.body.toString('utf8')) as typeof page;
      } catch (err) {
        throw new RemoteError('REMOTE_UNAVAILABLE', `list ${prefix} at ${this.origin}: the answer is not JSON`, { cause: err });
      }
      for (const object of page.objects) found.push({ key: object.key.slice(this.prefix.length), size: object.size });
      if (!page.next) return found;
      after = page.next;
    }
  }

  /**
   * GET /v1/usage: the whole account's usage, whatever prefix this vault lives under (the
   * quota is the account's). A server without the endpoint (404 NOT_FOUND) knows no limit.
   */
  async space(options?: CallOptions): Promise<RemoteSpace | undefined> {
    const response = await this.send('GET', `${this.origin}/v1/usage`, 'usage', { signal: options?.signal });
    if (response.status === 404) return undefined;
    if (response.status !== 200) throw this.failure('usage', response);
    let usage: { bytes?: unknown; objects?: unknown; quotaBytes?: unknown; quotaObjects?: unknown };
    try {
      usage = JSON.parse(response.body.toString('utf8')) as typeof usage;
    } catch (err) {
      throw new RemoteError('REMOTE_UNAVAILABLE', `usage at ${this.origin}: the answer is not JSON`, { cause: err });
    }
    const count = (value: unknown): number => (typeof value === 'number' && Number.isSafeInteger(value) && value >= 0 ? value : NaN);
    const space: RemoteSpace = {
      usedBytes: count(usage.bytes),
      usedObjects: count(usage.objects),
      quotaBytes: count(usage.quotaBytes),
      quotaObjects: count(usage.quotaObjects),
    };
    if (Object.values(space).some(Number.isNaN)) throw new RemoteError('REMOTE_UNAVAILABLE', `usage at ${this.origin}: unexpected answer ${response.body.toString('utf8').slice(0, 200)}`);
    return space;
  }

  async delete(key: string, options?: CallOptions): Promise<void> {
    const response = await this.send('DELETE', this.objectUrl(key), `DELETE ${key}`, { signal: options?.signal });
    if (response.status !== 204 && response.status !== 200 && response.status !== 404) throw this.failure(`DELETE ${key}`, response);
  }
}
