/**
 * A vault's volume name: what the mount is called where the system shows mounts (the source
 * column of df and findmnt, `/proc/self/mountinfo`). Set at init, kept in the local config
 * only — the remote never sees it.
 */
import { basename } from 'node:path';
import { CofferError } from '../errors.js';

/** Characters, not bytes: enough for any label people type, short enough for every listing. */
export const VOLUME_NAME_MAX = 64;

/** Control characters, and the Unicode line and paragraph separators: they break listings. */
const FORBIDDEN = /[\p{Cc}\u2028\u2029]/u;

/**
 * The name as stored: surrounding white space removed; empty, over-long names and control
 * characters refused with BAD_ARGUMENT (the command line was wrong).
 */
export function checkVolumeName(name: string, what = 'volume name'): string {
  const trimmed = name.trim();
  const example = what === 'volume name' ? '--name Photos' : '--device-name laptop';
  if (trimmed === '') throw new CofferError('BAD_ARGUMENT', `the ${what} is empty; give a name such as ${example}`);
  if (FORBIDDEN.test(trimmed) || (what !== 'volume name' && trimmed.includes('/'))) {
    throw new CofferError('BAD_ARGUMENT', `the ${what} ${JSON.stringify(trimmed)} contains control characters${what !== 'volume name' ? ' or /' : ''}; use printable characters only`);
  }
  const length = [...trimmed].length;
  if (length > VOLUME_NAME_MAX) {
    throw new CofferError('BAD_ARGUMENT', `the ${what} is ${length} characters long; use at most ${VOLUME_NAME_MAX}`);
  }
  return trimmed;
}

/** Whether `name` is a volume name `checkVolumeName` would store unchanged. */
export function isVolumeName(name: unknown): name is string {
  try {
    return typeof name === 'string' && checkVolumeName(name) === name;
  } catch {
    return false;
  }
}

/**
 * The name a vault gets when none was given (and the one vaults created before names existed
 * show): its directory's name, made valid.
 */
export function defaultVolumeName(vaultDir: string): string {
  const cleaned = [...basename(vaultDir).replace(new RegExp(FORBIDDEN.source, 'gu'), '').trim()].slice(0, VOLUME_NAME_MAX).join('').trim();
  return cleaned || 'Coffer';
}
