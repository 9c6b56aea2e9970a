/**
 * Rebuilding a lost or damaged local index from the remote. Nothing local is deleted:
 * the damaged index files are renamed aside, and cached chunks the restored index does
 * not name (written after the last publish) are moved to lost+found for manual recovery.
 */
import { mkdir, readFile, rename, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { ChunkStore } from '../chunks/chunk-store.js';
import { VaultIndex } from '../index/vault-index.js';
import { syncStatePath, type SyncState } from '../sync/syncer.js';
import { restoreIndex } from './clone.js';
import { openConfiguredBackend } from './config.js';
import type { UnlockedVault } from './vault.js';

export interface RebuildResult {
  manifest: number;
  files: number;
  bytes: number;
  /** Where the old index files went. */
  setAside: string[];
  /** Cached chunks the restored index does not name, moved to lost+found/chunks. */
  chunksKeptAside: number;
}

export async function rebuildIndex(vault: UnlockedVault, say: (line: string) => void): Promise<RebuildResult> {
  const { paths } = vault;
  const stamp = new Date().toISOString().replace(/[:.]/g, '-');
  const setAside: string[] = [];
  for (const file of [paths.index, `${paths.index}-wal`, `${paths.index}-shm`]) {
    if (await stat(file).then(() => true, () => false)) {
      const aside = `${file}.damaged-${stamp}`;
      await rename(file, aside);
      setAside.push(aside);
    }
  }
  let highWater = 0;
  try {
    highWater = (JSON.parse(await readFile(syncStatePath(paths.state), 'utf8')) as SyncState).lastManifest;
  } catch {
    // no publish was ever recorded here
  }
  const restored = await restoreIndex(paths, openConfiguredBackend(vault.config), vault.metadataContext, highWater, say);

  const store = new ChunkStore({ dir: paths.cache, chunkSize: vault.header.chunkSize, keys: vault.keys, context: vault.dataContext, memoryCacheBytes: 0 });
  const index = new VaultIndex(paths.index);
  let chunksKeptAside = 0;
  try {
    const keptDir = join(paths.lostFound, 'chunks');
    for (const id of await store.scanLocal()) {
      if (index.hasChunk(id)) continue;
      await mkdir(keptDir, { recursive: true });
      await rename(store.pathOf(id), join(keptDir, id.toString('hex')));
      chunksKeptAside++;
    }
  } finally {
    index.close();
  }
  return { ...restored, setAside, chunksKeptAside };
}
