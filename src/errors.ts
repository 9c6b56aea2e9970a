/**
 * The closed set of errors Coffer raises. Every layer throws these (or lets Node's
 * system errors through); only `src/fs/errno.ts` turns them into errno values,
 * and only the CLI turns them into messages and exit codes.
 */

export type PosixCode =
  | 'ENOENT' | 'EEXIST' | 'ENOTDIR' | 'EISDIR' | 'ENOTEMPTY' | 'EACCES' | 'EPERM'
  | 'ENAMETOOLONG' | 'EINVAL' | 'ENOSPC' | 'EIO' | 'EBADF' | 'ENODATA' | 'ERANGE'
  | 'EOPNOTSUPP' | 'EXDEV' | 'EMLINK' | 'ELOOP' | 'EFBIG' | 'E2BIG' | 'EROFS' | 'ENOSYS';

export type CofferErrorCode =
  | PosixCode
  | 'AUTHENTICATION_FAILED'
  | 'WRONG_PASSPHRASE'
  | 'WEAK_KDF_PARAMS'
  | 'UNSUPPORTED_FORMAT'
  | 'CORRUPT_FORMAT'
  | 'ALREADY_MOUNTED'
  | 'NOT_A_VAULT'
  | 'INDEX_DAMAGED'
  | 'VAULT_EXISTS'
  | 'NOT_MOUNTED'
  | 'REMOTE_UNAVAILABLE'
  | 'REMOTE_NOT_FOUND'
  | 'REMOTE_EXISTS'
  /** The remote refuses more data: the account's quota (or the server's disk) is full. */
  | 'REMOTE_QUOTA'
  /** The remote refuses this drive's token or credentials (HTTP 401/403): retrying cannot help. */
  | 'REMOTE_UNAUTHORIZED'
  /** The remote refuses the request itself for good (a 4xx other than the above): retrying cannot help. */
  | 'REMOTE_REFUSED'
  /** Another writer published to this vault: this copy may not publish over it. */
  | 'REMOTE_CONFLICT'
  | 'REMOTE_ROLLBACK'
  | 'BAD_ARGUMENT'
  | 'NO_PASSPHRASE'
  | 'DAEMON_FAILED'
  /** A wait ended before everything was on the remote: its bound ran out, or the remote refused. */
  | 'SYNC_INCOMPLETE'
  /** A file holding a secret can be read or changed by other users. */
  | 'UNSAFE_PERMISSIONS'
  /** Nothing of the kind is installed (e.g. no service unit for a vault). */
  | 'NOT_INSTALLED'
  /** `coffer serve` could not listen on an address: in use, not allowed, or not this machine's. */
  | 'CANNOT_LISTEN';

export class CofferError extends Error {
  constructor(readonly code: CofferErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
  }
}

/** A filesystem-level failure that maps one-to-one onto a POSIX errno. */
export class FsError extends CofferError {
  constructor(readonly posix: PosixCode, message: string = posix) {
    super(posix, message);
  }
}

/** An object (chunk, snapshot part, manifest, header) did not authenticate: never serve it. */
export class AuthenticationError extends CofferError {
  constructor(message: string, readonly objectId?: string) {
    super('AUTHENTICATION_FAILED', message);
  }
}

export class WrongPassphraseError extends CofferError {
  constructor() {
    super('WRONG_PASSPHRASE', 'wrong passphrase: the vault key could not be unlocked');
  }
}

export class WeakKdfParamsError extends CofferError {
  constructor(message: string) {
    super('WEAK_KDF_PARAMS', message);
  }
}

export class FormatError extends CofferError {
  constructor(message: string, code: 'UNSUPPORTED_FORMAT' | 'CORRUPT_FORMAT' = 'CORRUPT_FORMAT') {
    super(code, message);
  }
}

export type RemoteErrorCode =
  | 'REMOTE_UNAVAILABLE'
  | 'REMOTE_NOT_FOUND'
  | 'REMOTE_EXISTS'
  | 'REMOTE_QUOTA'
  | 'REMOTE_UNAUTHORIZED'
  | 'REMOTE_REFUSED';

/**
 * Remote failures that retrying the same request cannot fix: the server said no (a full
 * account, a refused token, a request it will never take) or another writer took the vault.
 * Sync stops retrying them at its usual pace, shows them in status, and ends `sync --wait`.
 */
export const REFUSAL_CODES: ReadonlySet<CofferErrorCode> = new Set(['REMOTE_QUOTA', 'REMOTE_UNAUTHORIZED', 'REMOTE_REFUSED', 'REMOTE_CONFLICT']);

export function isRefusal(err: unknown): err is CofferError {
  return err instanceof CofferError && REFUSAL_CODES.has(err.code);
}

/** A remote backend failure; `code` tells whether it is worth retrying (only REMOTE_UNAVAILABLE is). */
export class RemoteError extends CofferError {
  constructor(
    code: RemoteErrorCode,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(code, message, options);
  }
}

/**
 * A write the drive refuses because the remote account could not store it: its quota is used
 * (an upload met REMOTE_QUOTA) or the write would not fit in what is left of it once everything
 * not yet uploaded is counted. Refused before it is acknowledged, so nothing is lost.
 */
export class RemoteSpaceError extends CofferError {
  constructor(
    message: string,
    /** Bytes the refused write would have added. */
    readonly neededBytes: number,
    /** Bytes the drive considered free for new data when it refused. */
    readonly freeBytes: number,
  ) {
    super('REMOTE_QUOTA', message);
  }
}

export function fsError(posix: PosixCode, message?: string): FsError {
  return new FsError(posix, message);
}

export function isCofferError(err: unknown, code?: CofferErrorCode): err is CofferError {
  return err instanceof CofferError && (code === undefined || err.code === code);
}
