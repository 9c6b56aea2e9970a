/**
 * The one interface every remote storage backend implements. Keys are relative
 * slash-separated names (`chunks/ab/ab12…`, `manifests/00000000000000000001`);
 * values are opaque sealed bytes. Backends know nothing of files or keys.
 *
 * Errors each method may throw (all RemoteError):
 * - `REMOTE_NOT_FOUND`   get/head/delete of a key that does not exist (delete may also succeed silently)
 * - `REMOTE_EXISTS`      createExclusive of a key that already exists
 * - `REMOTE_QUOTA`       put/createExclusive the server refuses for lack of room (the account's quota); not retried
 * - `REMOTE_UNAVAILABLE` anything transient or environmental (network, 5xx, disk); safe to retry
 * - `REMOTE_UNAUTHORIZED` (http, s3) the token or credentials are refused (401/403); retrying cannot help
 * - `REMOTE_REFUSED`     (http, s3) the server refuses the request for good (another 4xx: a missing
 *                        bucket, an object over its size limit); retrying cannot help
 * Every call takes an AbortSignal; an aborted call rejects with the signal's reason.
 *
 * `space` is optional: only a backend whose server keeps per-account quotas (coffer serve)
 * implements it. It resolves to undefined when the server cannot tell (an older server without
 * the usage endpoint), and fails like the other calls: REMOTE_UNAVAILABLE when the server
 * cannot be reached or answers 5xx (safe to retry), REMOTE_UNAUTHORIZED for a refused token.
 */
export interface ByteRange {
  offset: number;
  length: number;
}

export interface ObjectInfo {
  key: string;
  size: number;
}

export interface CallOptions {
  signal?: AbortSignal;
}

export interface ListOptions extends CallOptions {
  /** Only keys that sort after this one (a whole key, compared bytewise), as S3's start-after. */
  after?: string;
}

export interface RemoteCapabilities {
  /** createExclusive is atomic on the server (a concurrent second create fails). */
  atomicExclusiveCreate: boolean;
}

/** An account's usage and limits as the server counts them; a quota of 0 is no limit. */
export interface RemoteSpace {
  usedBytes: number;
  usedObjects: number;
  quotaBytes: number;
  quotaObjects: number;
}

export interface RemoteBackend {
  /** A human-readable location, for status and logs (never holds secrets). */
  readonly description: string;
  /** What the server guarantees; may ask the server once (REMOTE_UNAVAILABLE if it cannot). */
  capabilities(options?: CallOptions): Promise<RemoteCapabilities>;
  /** Stores `body` under `key`, replacing nothing the caller did not mean to: data objects are written once. */
  put(key: string, body: Buffer, options?: CallOptions): Promise<void>;
  /** Stores `body` only if `key` does not exist yet (REMOTE_EXISTS otherwise). */
  createExclusive(key: string, body: Buffer, options?: CallOptions): Promise<void>;
  get(key: string, options?: CallOptions & { range?: ByteRange }): Promise<Buffer>;
  head(key: string, options?: CallOptions): Promise<ObjectInfo>;
  /** Every object whose key starts with `prefix` (and sorts after `options.after`), in key order. */
  list(prefix: string, options?: ListOptions): Promise<ObjectInfo[]>;
  delete(key: string, options?: CallOptions): Promise<void>;
  /** The account's usage and quotas (see above); absent or undefined: no limit known. */
  space?(options?: CallOptions): Promise<RemoteSpace | undefined>;
}

/** Remote key names, specified in docs/FORMAT.md ("Remote layout"). */
export const remoteKeys = {
  header: 'coffer-vault.json',
  chunk: (idHex: string) => `chunks/${idHex.slice(0, 2)}/${idHex}`,
  snapshotPart: (idHex: string) => `snapshots/${idHex}`,
  manifest: (counter: number) => `manifests/${String(counter).padStart(20, '0')}`,
  manifestPrefix: 'manifests/',
  /** Format 2: a device's record, and the entries of its journal. */
  device: (deviceHex: string) => `devices/${deviceHex}`,
  devicePrefix: 'devices/',
  journal: (deviceHex: string, seq: number) => `journals/${deviceHex}/${String(seq).padStart(20, '0')}`,
  journalPrefix: (deviceHex: string) => `journals/${deviceHex}/`,
  /** Format 2: a device's checkpoints (heads) and their parts. */
  checkpoint: (deviceHex: string, seq: number) => `checkpoints/${deviceHex}/${String(seq).padStart(20, '0')}`,
  checkpointPart: (deviceHex: string, seq: number, part: number) => `checkpoints/${deviceHex}/${String(seq).padStart(20, '0')}.${String(part).padStart(6, '0')}`,
  checkpointPrefix: 'checkpoints/',
  checkpointDevicePrefix: (deviceHex: string) => `checkpoints/${deviceHex}/`,
};
