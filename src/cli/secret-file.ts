/**
 * Files that hold a secret (the passphrase a service mounts with, the admin token of
 * `coffer serve`): a regular file this user owns that nobody else can read or change.
 */
import { stat } from 'node:fs/promises';
import { CofferError, type CofferErrorCode } from '../errors.js';
import { shellWord } from './format.js';

export interface SecretFileKind {
  /** What the file is, for messages: "the passphrase file". */
  what: string;
  /** What a reader of the file could do: "anyone who reads it can open the vault". */
  risk: string;
  /** Why it must be this user's own: "the service runs as you and must own it". */
  owner: string;
  /** The error for a file that is missing or not a regular file. */
  unusable: CofferErrorCode;
}

export async function checkSecretFile(path: string, kind: SecretFileKind): Promise<void> {
  const st = await stat(path).catch((err: NodeJS.ErrnoException) => {
    throw new CofferError(kind.unusable, `cannot use ${kind.what} ${path}: ${err.code === 'ENOENT' ? 'it does not exist' : err.message}`);
  });
  if (!st.isFile()) throw new CofferError(kind.unusable, `${kind.what} ${path} is not a regular file`);
  if ((st.mode & 0o077) !== 0) {
    const mode = (st.mode & 0o777).toString(8).padStart(3, '0');
    throw new CofferError(
      'UNSAFE_PERMISSIONS',
      `${kind.what} ${path} can be ${st.mode & 0o044 ? 'read' : 'changed'} by other users (mode ${mode}); ${kind.risk}. Restrict it with: chmod 600 ${shellWord(path)}`,
    );
  }
  const uid = process.getuid?.();
  if (uid !== undefined && st.uid !== uid) {
    throw new CofferError('UNSAFE_PERMISSIONS', `${kind.what} ${path} belongs to user id ${st.uid}, not to you (${uid}); ${kind.owner}`);
  }
}
