/**
 * Fixed op sequences for the differential test (see differential.test.ts): each runs against a
 * Coffer mount and a plain directory, and every outcome and the final trees must match. A
 * sequence the property shrinks to when it finds a bug lands here, pasted as printed; so do
 * hand-written ones for paths the random search reaches only rarely.
 */
import { describe, it } from 'vitest';
import { MiB, differentialSides, runDifferential, type Op } from './helpers/fs-model.js';

const sides = differentialSides('coffer-diff-reg-');

const run = (ops: Op[]) => () => runDifferential(ops, sides.subject, sides.oracle);
/** Without the leniencies for known bugs: for the skipped cases, which must pass once fixed. */
const runStrict = (ops: Op[]) => () => runDifferential(ops, sides.subject, sides.oracle, undefined, true);

describe('differential regressions', () => {
  it(
    'renaming over the name of an open file leaves the descriptor on the old file, across a remount',
    run([
      { op: 'create', path: 'a', len: 5000, seed: 1 },
      { op: 'create', path: 'b', len: 3000, seed: 2 },
      { op: 'open', fd: 0, path: 'b' },
      { op: 'rename', from: 'a', to: 'b' },
      { op: 'fdwrite', fd: 0, offset: 100, len: 50, seed: 3 },
      { op: 'fdread', fd: 0, offset: 0, len: 4000 },
      { op: 'read', path: 'b', offset: 0, len: 6000 },
      { op: 'stat', path: 'b' },
      { op: 'remount' },
      { op: 'read', path: 'b', offset: 0, len: 6000 },
      { op: 'stat', path: 'b' },
      { op: 'readdir', path: '.' },
    ]),
  );

  it(
    'an unlinked open file stays writable, and is gone after close and remount',
    run([
      { op: 'mkdir', path: 'd' },
      { op: 'create', path: 'd/a', len: MiB + 10, seed: 4 },
      { op: 'open', fd: 0, path: 'd/a' },
      { op: 'unlink', path: 'd/a' },
      { op: 'fdwrite', fd: 0, offset: MiB - 5, len: 20, seed: 5 },
      { op: 'ftruncate', fd: 0, size: 3 * MiB },
      { op: 'fdread', fd: 0, offset: MiB - 100, len: 200 },
      { op: 'fdread', fd: 0, offset: 3 * MiB - 10, len: 100 },
      { op: 'readdir', path: 'd' },
      { op: 'close', fd: 0 },
      { op: 'remount' },
      { op: 'readdir', path: 'd' },
    ]),
  );

  it(
    'shrinking into a chunk and growing again reads zeros past the cut, before and after a remount',
    run([
      { op: 'write', path: 'a', offset: MiB - 4096, len: 2 * MiB, seed: 6 },
      { op: 'truncate', path: 'a', size: MiB - 100 },
      { op: 'truncate', path: 'a', size: 2 * MiB + 7 },
      { op: 'read', path: 'a', offset: MiB - 4096, len: 8192 },
      { op: 'read', path: 'a', offset: 2 * MiB - 10, len: 100 },
      { op: 'append', path: 'a', len: 10, seed: 7 },
      { op: 'remount' },
      { op: 'read', path: 'a', offset: 0, len: 3 * MiB },
      { op: 'stat', path: 'a' },
    ]),
  );

  it(
    'offsets and sizes beyond 4 GiB, which cross FUSE as two 32-bit halves',
    run([
      { op: 'write', path: 'a', offset: 4 * 1024 * MiB + 10, len: 100, seed: 11 },
      { op: 'stat', path: 'a' },
      { op: 'read', path: 'a', offset: 4 * 1024 * MiB, len: 200 },
      { op: 'open', fd: 0, path: 'a' },
      { op: 'fdwrite', fd: 0, offset: 12 * 1024 * MiB - 5, len: 10, seed: 12 },
      { op: 'fdread', fd: 0, offset: 12 * 1024 * MiB - 100, len: 200 },
      { op: 'ftruncate', fd: 0, size: 4 * 1024 * MiB + 50 },
      { op: 'stat', path: 'a' },
      { op: 'read', path: 'a', offset: 4 * 1024 * MiB, len: 200 },
      // Back to a few bytes: the final comparison hashes whole files.
      { op: 'truncate', path: 'a', size: 5 },
    ]),
  );

  it(
    'hard links share contents, modes and times; rename between two links of one file does nothing',
    run([
      { op: 'create', path: 'a', len: 100, seed: 8 },
      { op: 'mkdir', path: 'd' },
      { op: 'link', from: 'a', to: 'd/b' },
      { op: 'write', path: 'd/b', offset: 50, len: 100, seed: 9 },
      { op: 'chmod', path: 'a', mode: 0o4755 },
      { op: 'utimes', path: 'd/b', atimeMs: 1_000_000_000_000, mtimeMs: 1_100_000_000_123 },
      { op: 'stat', path: 'a' },
      { op: 'rename', from: 'a', to: 'd/b' },
      { op: 'stat', path: 'a' },
      { op: 'setxattr', path: 'a', name: 'user.x', value: 'blue' },
      { op: 'getxattr', path: 'd/b', name: 'user.x' },
      { op: 'unlink', path: 'a' },
      { op: 'stat', path: 'd/b' },
      { op: 'remount' },
      { op: 'stat', path: 'd/b' },
      { op: 'getxattr', path: 'd/b', name: 'user.x' },
    ]),
  );

  it(
    'renaming a directory over an empty one, into itself and over a non-empty one',
    run([
      { op: 'mkdir', path: 'd' },
      { op: 'mkdir', path: 'd/e' },
      { op: 'create', path: 'd/e/a', len: 10, seed: 10 },
      { op: 'mkdir', path: 'e' },
      { op: 'setxattr', path: 'e', name: 'user.y', value: '1' },
      { op: 'rename', from: 'd/e', to: 'e' },
      { op: 'stat', path: 'd' },
      { op: 'getxattr', path: 'e', name: 'user.y' },
      { op: 'rename', from: 'e', to: 'e/d' },
      { op: 'rename', from: 'd', to: 'e' },
      { op: 'rmdir', path: 'e' },
      { op: 'symlink', target: 'e/a', path: 'd/b' },
      { op: 'read', path: 'd/b', offset: 0, len: 100 },
      { op: 'readlink', path: 'd/b' },
    ]),
  );

  // KNOWN BUG: a descriptor reads stale cached bytes after its file is written or truncated through another hard link.
  // libfuse2's high-level API gives each name its own kernel inode, and only the one written
  // through is invalidated; a read within the size the stale inode last saw is served from its
  // page cache without reaching the daemon (nothing in daemon.log). The differential property
  // compares such reads for success only until this is fixed (staleAliasRead in fs-model.ts).
  it.skip(
    'a descriptor sees writes and truncation made through another hard link',
    runStrict([
      { op: 'create', path: 'a', len: 100, seed: 1 },
      { op: 'link', from: 'a', to: 'b' },
      { op: 'open', fd: 0, path: 'a' },
      { op: 'fdread', fd: 0, offset: 0, len: 100 },
      { op: 'write', path: 'b', offset: 0, len: 50, seed: 2 },
      { op: 'fdread', fd: 0, offset: 0, len: 100 },
      { op: 'truncate', path: 'b', size: 10 },
      { op: 'fdread', fd: 0, offset: 0, len: 100 },
    ]),
  );

  // Times before 1970 once failed with EIO: the native side passed them as unsigned 64-bit
  // millisecond counts ("cannot store REAL value in INTEGER column inodes.mtime_ms").
  it(
    'keeps times before 1970',
    runStrict([
      { op: 'create', path: 'a', len: 1, seed: 1 },
      { op: 'utimes', path: 'a', atimeMs: 0, mtimeMs: -1000 },
      { op: 'utimes', path: 'a', atimeMs: -86_400_123, mtimeMs: 1_000_000_000_000 },
      { op: 'stat', path: 'a' },
    ]),
  );

  // Linux filesystems give a new directory in a setgid directory the parent's S_ISGID and group,
  // and a new file the parent's group; with FUSE that is the daemon's job (it once was not done).
  it(
    'a subdirectory of a setgid directory is setgid',
    runStrict([
      { op: 'mkdir', path: 'd' },
      { op: 'chmod', path: 'd', mode: 0o2750 },
      { op: 'mkdir', path: 'd/d' },
      { op: 'stat', path: 'd/d' },
    ]),
  );
});
