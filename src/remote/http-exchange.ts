/**
 * One HTTP exchange for the HTTP-based backends (S3, coffer serve): every answer the server
 * gives comes back as it is, for the backend to interpret; only failing to get one (refused,
 * reset, timed out) throws, as REMOTE_UNAVAILABLE naming `what` was attempted.
 */
import type { Readable } from 'node:stream';
import got from 'got';
import { RemoteError } from '../errors.js';

export interface HttpExchange {
  method: string;
  url: string | URL;
  headers: Record<string, string>;
  /** A stream is sent as it comes; its length must be in the headers (no chunked uploads to S3). */
  body?: Buffer | Readable;
  signal?: AbortSignal;
  timeoutMs: number;
}

export interface HttpAnswer {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: Buffer;
}

/** An answer whose body is still arriving; the caller must read or destroy it. */
export interface StreamingHttpAnswer {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: Readable;
}

/** One attempt, answers of every status returned as they are: retries and errors are the caller's. */
function gotOptions(request: HttpExchange) {
  const t = request.timeoutMs;
  return {
    method: request.method as 'GET',
    headers: request.headers,
    body: request.body,
    signal: request.signal,
    throwHttpErrors: false,
    retry: { limit: 0 },
    followRedirect: false,
    decompress: false,
    timeout: { lookup: t, connect: t, secureConnect: t, socket: t, response: t },
  };
}

export async function exchange(request: HttpExchange, what: string): Promise<HttpAnswer> {
  const { signal } = request;
  signal?.throwIfAborted();
  try {
    const response = await got(request.url, { ...gotOptions(request), responseType: 'buffer' });
    return { status: response.statusCode, headers: response.headers, body: response.body };
  } catch (err) {
    if (signal?.aborted) throw signal.reason;
    const detail = err instanceof Error ? ((err as { code?: string }).code ?? err.name) + ': ' + err.message : String(err);
    throw new RemoteError('REMOTE_UNAVAILABLE', `${what}: ${detail}`, { cause: err });
  }
}

/**
 * Like `exchange`, but resolves as soon as the answer's headers arrive, with its body as a
 * stream: for objects too large to hold in memory. Errors after that come from the stream.
 */
export async function exchangeStreaming(request: HttpExchange, what: string): Promise<StreamingHttpAnswer> {
  const { signal } = request;
  signal?.throwIfAborted();
  const stream = got.stream(request.url, gotOptions(request));
  return new Promise<StreamingHttpAnswer>((resolve, reject) => {
    const onError = (err: unknown): void => {
      if (signal?.aborted) return reject(signal.reason);
      const detail = err instanceof Error ? ((err as { code?: string }).code ?? err.name) + ': ' + err.message : String(err);
      reject(new RemoteError('REMOTE_UNAVAILABLE', `${what}: ${detail}`, { cause: err }));
    };
    stream.once('error', onError);
    stream.once('response', (response: { statusCode: number; headers: Record<string, string | string[] | undefined> }) => {
      stream.off('error', onError);
      resolve({ status: response.statusCode, headers: response.headers, body: stream });
    });
  });
}
