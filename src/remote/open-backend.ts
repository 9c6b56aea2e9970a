import { fileURLToPath } from 'node:url';
import { CofferError } from '../errors.js';
import type { RemoteBackend } from './backend.js';
import { FileBackend } from './file-backend.js';
import { HttpBackend } from './http-backend.js';
import { RetryingBackend } from './retrying-backend.js';
import { S3Backend, type S3BackendOptions } from './s3-backend.js';

export interface OpenBackendOptions {
  /** S3 endpoint URL; default `COFFER_S3_ENDPOINT`, else AWS for the region. */
  s3Endpoint?: string;
  /** Default `AWS_REGION`, `AWS_DEFAULT_REGION`, else us-east-1. */
  s3Region?: string;
  /** Bearer token for http(s):// remotes (`coffer serve`); `COFFER_TOKEN` wins over it. */
  token?: string;
  /** Where credentials and defaults come from (`process.env` unless given). */
  env?: NodeJS.ProcessEnv;
  /**
   * Wraps the backend that talks to the storage, beneath any retries: fault injection goes
   * here, so the retries meet the faults as they would meet a failing network.
   */
  wrap?: (backend: RemoteBackend) => RemoteBackend;
}

/**
 * Opens the backend a remote URL names: `file:///path`, `s3://bucket/prefix` or
 * `http(s)://host:port/[prefix]` (a `coffer serve` server).
 *
 * An S3 or HTTP remote comes wrapped in RetryingBackend, since the network fails transiently. A
 * file remote does not: its only "transient" failures are local disk errors that a retry
 * seldom cures, and callers get the FileBackend itself as they always have.
 */
export function openBackend(url: string, options: OpenBackendOptions = {}): RemoteBackend {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw new CofferError('BAD_ARGUMENT', `not a remote URL: ${url} (expected file:///path, s3://bucket/prefix or http(s)://host:port/)`);
  }
  const wrap = options.wrap ?? ((backend: RemoteBackend) => backend);
  switch (parsed.protocol) {
    case 'file:':
      return wrap(new FileBackend(fileURLToPath(parsed)));
    case 's3:':
      return new RetryingBackend(wrap(new S3Backend(s3OptionsFor(parsed, url, options))));
    case 'http:':
    case 'https:':
      return new RetryingBackend(wrap(openHttp(parsed, url, options)));
    default:
      throw new CofferError('BAD_ARGUMENT', `unsupported remote ${parsed.protocol}// in ${url} (supported: file://, s3://, http://, https://)`);
  }
}

/**
 * The S3 settings an `s3://bucket/prefix` URL names, with credentials, region and endpoint
 * from the options and the environment: shared by the drive's S3 remotes and `coffer serve --s3`.
 */
export function s3OptionsFromUrl(url: string, options: Pick<OpenBackendOptions, 's3Endpoint' | 's3Region' | 'env'> = {}): S3BackendOptions {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw new CofferError('BAD_ARGUMENT', `not an S3 URL: ${url} (expected s3://bucket/prefix)`);
  }
  if (parsed.protocol !== 's3:') throw new CofferError('BAD_ARGUMENT', `not an S3 URL: ${url} (expected s3://bucket/prefix)`);
  return s3OptionsFor(parsed, url, options);
}

function s3OptionsFor(parsed: URL, url: string, options: Pick<OpenBackendOptions, 's3Endpoint' | 's3Region' | 'env'>): S3BackendOptions {
  const env = options.env ?? process.env;
  const bucket = parsed.hostname;
  if (!bucket) throw new CofferError('BAD_ARGUMENT', `no bucket in ${url} (expected s3://bucket/prefix)`);
  if (parsed.username || parsed.password || parsed.port || parsed.search || parsed.hash) {
    throw new CofferError('BAD_ARGUMENT', `unexpected parts in ${url}: an S3 remote is s3://bucket/prefix; credentials come from the environment`);
  }
  const accessKeyId = env.AWS_ACCESS_KEY_ID;
  const secretAccessKey = env.AWS_SECRET_ACCESS_KEY;
  if (!accessKeyId || !secretAccessKey) {
    throw new CofferError('BAD_ARGUMENT', `set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN for temporary credentials) to use ${url}`);
  }
  const region = options.s3Region || env.AWS_REGION || env.AWS_DEFAULT_REGION || 'us-east-1';
  const endpoint = options.s3Endpoint || env.COFFER_S3_ENDPOINT || `https://s3.${region}.amazonaws.com`;
  let host: string;
  try {
    host = new URL(endpoint).hostname;
  } catch {
    throw new CofferError('BAD_ARGUMENT', `not an S3 endpoint URL: ${endpoint}`);
  }
  let prefix: string;
  try {
    prefix = decodeURIComponent(parsed.pathname.replace(/^\/+/, ''));
  } catch {
    throw new CofferError('BAD_ARGUMENT', `bad percent-encoding in ${url}`);
  }
  return {
    bucket,
    prefix,
    endpoint,
    region,
    accessKeyId,
    secretAccessKey,
    sessionToken: env.AWS_SESSION_TOKEN || undefined,
    // Only AWS is sure to serve bucket.host names; other servers need DNS set up for it.
    forcePathStyle: !/(^|\.)amazonaws\.com(\.cn)?$/.test(host),
  };
}

function openHttp(parsed: URL, url: string, options: OpenBackendOptions): HttpBackend {
  const env = options.env ?? process.env;
  if (parsed.username || parsed.password || parsed.search || parsed.hash) {
    throw new CofferError('BAD_ARGUMENT', `unexpected parts in ${url}: a coffer serve remote is http(s)://host:port/[prefix]; the token comes from COFFER_TOKEN or the vault config`);
  }
  const token = env.COFFER_TOKEN || options.token;
  if (!token) throw new CofferError('BAD_ARGUMENT', `set COFFER_TOKEN (or "token" in the vault's config.json) to use ${url}`);
  return new HttpBackend({ url, token });
}
