/**
 * The one place where errors become errno values for the kernel. Anything that is
 * not a known filesystem condition is EIO, logged, and never reported as ENOENT.
 */
import { constants } from 'node:os';
import { AuthenticationError, CofferError, FsError, RemoteSpaceError } from '../errors.js';
import type { LogFn } from '../logging.js';

const errnoByName = constants.errno as Record<string, number>;

/** Node system errors that pass through unchanged because they mean the same to the caller. */
const PASS_THROUGH = new Set(['ENOSPC', 'EDQUOT', 'EFBIG', 'EROFS', 'ENAMETOOLONG']);

export type ErrorLogger = LogFn;

/** Negative errno for fuse-native callbacks. */
export function toErrno(err: unknown, op: string, log: ErrorLogger): number {
  if (err instanceof FsError) return -errnoByName[err.posix]!;
  if (err instanceof AuthenticationError) {
    log(`${op}: ${err.message}`, { op, err, ...(err.objectId ? { chunk: err.objectId } : {}) });
    return -errnoByName.EIO!;
  }
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  if (typeof code === 'string' && PASS_THROUGH.has(code)) return -errnoByName[code]!;
  // The index's disk is full: to the program this is the same as its own write not fitting.
  if (code === 'SQLITE_FULL') return -errnoByName.ENOSPC!;
  // A write refused before it was acknowledged, since the remote account could not take it:
  // a full disk to the program. Not logged here: the guard logs when refusing starts and stops,
  // where one line per refused write would flood the log of a program that retries.
  if (err instanceof RemoteSpaceError) return -errnoByName.ENOSPC!;
  // The remote's account is full: to the program, the same as a full disk.
  if (err instanceof CofferError && err.code === 'REMOTE_QUOTA') {
    log(`${op}: remote quota exceeded: ${err.message}`, { op, err });
    return -errnoByName.ENOSPC!;
  }
  if (err instanceof CofferError && err.code === 'REMOTE_UNAVAILABLE') {
    log(`${op}: remote unavailable: ${err.message}`, { op, err });
    return -errnoByName.EIO!;
  }
  log(`${op}: unexpected error: ${(err as Error)?.message ?? String(err)}`, { op, err });
  return -errnoByName.EIO!;
}
