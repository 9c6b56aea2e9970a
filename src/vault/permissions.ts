/**
 * A vault directory is its owner's alone: the index holds every name, the logs name files, the
 * cache and an embedded remote hold ciphertext whose count and sizes tell a story. Coffer creates
 * everything with umask 077 (see cli/main.ts); a vault made before that, or loosened by hand, is
 * tightened here at mount. The directory's own mode is what keeps other users out of cache/ and
 * remote/, so the thousands of files inside them are not visited.
 */
import { chmod, lstat, readdir } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import type { VaultPaths } from './layout.js';

/** Removes group and other permissions from the vault's files; returns the paths it changed. */
export async function restrictToOwner(paths: VaultPaths): Promise<string[]> {
  const logs = dirname(paths.log);
  const candidates = [
    paths.dir,
    paths.header,
    paths.config,
    paths.index,
    `${paths.index}-wal`,
    `${paths.index}-shm`,
    paths.cache,
    paths.embeddedRemote,
    paths.lostFound,
    paths.state,
    ...(await namesIn(paths.state)),
    logs,
    ...(await namesIn(logs)),
  ];
  const changed: string[] = [];
  for (const path of candidates) {
    const st = await lstat(path).catch(() => undefined);
    if (!st || st.isSymbolicLink() || (st.mode & 0o077) === 0) continue;
    await chmod(path, st.mode & 0o7700);
    changed.push(path);
  }
  return changed;
}

async function namesIn(dir: string): Promise<string[]> {
  return (await readdir(dir).catch(() => [] as string[])).map((name) => join(dir, name));
}
