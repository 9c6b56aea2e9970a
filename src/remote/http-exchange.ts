/**
 * One HTTP exchange for the HTTP-based backends (S3, coffer serve): every answer the server
 * gives comes back as it is, for the backend to interpret; only failing to get one (refused,
 * reset, timed out) throws, as REMOTE_UNAVAILABLE naming `what` was attempted.
 */
import got from 'got';
import { RemoteError } from '../errors.js';

export interface HttpExchange {
  method: string;
  url: string | URL;
  headers: Record<string, string>;
  body?: Buffer;
  signal?: AbortSignal;
  timeoutMs: number;
}

export interface HttpAnswer {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: Buffer;
}

export async function exchange(request: HttpExchange, what: string): Promise<HttpAnswer> {
  const { signal, timeoutMs: t } = request;
  signal?.throwIfAborted();
  try {
    const response = await got(request.url, {
      method: request.method as 'GET',
      headers: request.headers,
      body: request.body,
      signal,
      throwHttpErrors: false,
      retry: { limit: 0 },
      followRedirect: false,
      decompress: false,
      responseType: 'buffer',
      timeout: { lookup: t, connect: t, secureConnect: t, socket: t, response: t },
    });
    return { status: response.statusCode, headers: response.headers, body: response.body };
  } catch (err) {
    if (signal?.aborted) throw signal.reason;
    const detail = err instanceof Error ? ((err as { code?: string }).code ?? err.name) + ': ' + err.message : String(err);
    throw new RemoteError('REMOTE_UNAVAILABLE', `${what}: ${detail}`, { cause: err });
  }
}
