/**
 * Where `coffer serve` keeps its accounts registry and the accounts' objects: a data
 * directory (DiskObjectStore) or an S3 bucket (S3ObjectStore). The HTTP layer (tokens,
 * limits, quotas, errors, metrics) lives in server.ts and reaches storage only through this.
 *
 * Account ids and keys reach a store already checked (a hex id the server made, a key that
 * passed src/server/keys.ts); a store still refuses anything that would leave its namespace.
 *
 * Errors:
 * - `StoreError` with a code the HTTP layer maps to an answer:
 *   - `NOT_FOUND`  get of a missing object (head answers `undefined`, delete succeeds instead)
 *   - `EXISTS`     exclusive put of a key that exists (of racing exclusive puts, exactly one wins)
 *   - `KEY_CONFLICT` put of a key whose parent is an object, or that is the parent of objects,
 *                  where the store cannot hold both (the disk store; S3 can)
 *   - `RANGE_NOT_SATISFIABLE` get with a range starting at or past the end (`size` is set)
 *   - `CHANGED`    writeAccounts whose `expectedVersion` is no longer the current one
 * - whatever the `body` iterable of a put throws (the HTTP layer's size and quota checks), as is;
 *   nothing of that upload is stored;
 * - anything else (disk I/O, an unreachable or refusing S3 server) as an ordinary error: the
 *   server answers 500 and the drive retries.
 */
import type { Readable } from 'node:stream';
import type { Account } from './accounts.js';

export type StoreErrorCode = 'NOT_FOUND' | 'EXISTS' | 'KEY_CONFLICT' | 'RANGE_NOT_SATISFIABLE' | 'CHANGED';

export class StoreError extends Error {
  constructor(
    readonly code: StoreErrorCode,
    message: string,
    /** For RANGE_NOT_SATISFIABLE: the object's size, for the answer's `Content-Range: bytes *\/size`. */
    readonly size?: number,
  ) {
    super(message);
  }
}

export interface StoredObject {
  key: string;
  size: number;
}

export interface ObjectRead {
  /** The whole object's size. */
  size: number;
  /** First and last byte of `body` (last is start - 1 for an empty object). */
  start: number;
  end: number;
  body: Readable;
}

export interface AccountsSnapshot {
  accounts: Account[];
  /** Opaque; changes whenever the registry does (undefined: there is no registry yet). */
  version: string | undefined;
}

export interface ObjectStore {
  /** For the startup line and logs; never holds secrets. */
  readonly description: string;
  /**
   * How often the server recounts an account's usage from a listing, ms: other processes
   * may write to the same store. Infinity when this process is the store's only writer.
   */
  readonly usageRefreshMs: number;
  /** Gets the store ready (folders, a reachable bucket that honours conditional writes). */
  open(): Promise<void>;
  /** Releases what open() took (temp folders); objects stay. */
  close(): Promise<void>;

  readAccounts(): Promise<AccountsSnapshot>;
  /** Replaces the registry if it is still at `expectedVersion` (CHANGED otherwise). */
  writeAccounts(accounts: Account[], expectedVersion: string | undefined): Promise<void>;
  /** Cheap check of the registry's version, where the store has one (the disk's mtime). */
  accountsVersion?(): Promise<string | undefined>;

  /**
   * Stores the bytes `body` yields under `key`; resolves once they are durable. `exclusive`:
   * only if the key does not exist (EXISTS). Answers the size of the object it replaced.
   */
  put(accountId: string, key: string, body: AsyncIterable<Buffer>, options: { exclusive: boolean }): Promise<{ replacedSize: number | undefined }>;
  /** The object, or the bytes `start` to `end` (clamped to its end; absent: to its end). */
  get(accountId: string, key: string, range?: { start: number; end?: number }): Promise<ObjectRead>;
  /** The object's size, or undefined if there is no such object. */
  head(accountId: string, key: string): Promise<number | undefined>;
  /** One page: objects whose key starts with `prefix` and sorts after `after`, in byte order. */
  list(accountId: string, page: { prefix: string; after: string; limit: number }): Promise<{ objects: StoredObject[]; truncated: boolean }>;
  /** Every object of the account (for usage counts). */
  listAll(accountId: string): Promise<StoredObject[]>;
  /** Removes the object; answers its size, or undefined if there was none. */
  delete(accountId: string, key: string): Promise<number | undefined>;
  /** Removes every object of the account (after its registry entry is gone). */
  deleteAccount(accountId: string): Promise<void>;
}

/** Account ids are hex the server made; checked anyway so a hand-edited registry cannot point elsewhere. */
export function checkAccountId(id: string): string {
  if (!/^[0-9a-f]{8,64}$/.test(id)) throw new Error(`bad account id ${JSON.stringify(id)} in the accounts registry`);
  return id;
}
