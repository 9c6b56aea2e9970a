/**
 * Rebuilding a lost or damaged local index from the remote (the newest checkpoint, then the
 * journal entries after it: restore.ts). Nothing local is deleted:
 * the damaged index files are renamed aside, and cached chunks the restored index does
 * not name (written after the last publish) are moved to lost+found for manual recovery.
 */
import { mkdir, rename, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { CofferError } from '../errors.js';
import { ChunkStore } from '../chunks/chunk-store.js';
import { VaultIndex } from '../index/vault-index.js';
import { readDeviceState, writeDeviceState } from '../sync/device-state.js';
import { openConfiguredBackend } from './config.js';
import { restoreIndex, type CheckpointUsed } from './restore.js';
import type { UnlockedVault } from './vault.js';

export interface RebuildResult {
  /** Journal entries read after the checkpoint, if any (of every device, this one's included). */
  entries: number;
  /** The checkpoint the index started from, if any. */
  checkpoint?: CheckpointUsed;
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
  const found = await readDeviceState(paths.state);
  if (!found || 'format1' in found) {
    throw new CofferError('UNSUPPORTED_FORMAT', `${paths.dir} has no format-2 device state; mount it once (which upgrades it) or clone the vault anew`);
  }
  const backend = openConfiguredBackend(vault.config);
  // Read as a reader with no id of its own: this device's journal is read like any other's.
  const reader = { ...found, device: randomBytes(16).toString('hex'), seen: Object.fromEntries([found.device, ...Object.keys(found.seen)].map((d) => [d, { seq: 0, hash: null, publishedMs: null, heardMs: null }])) };
  const { state, pulled, checkpoint } = await restoreIndex(paths, backend, vault.metadataContext, reader, { persist: false, syncAtClose: false, say, signal: AbortSignal.timeout(24 * 3600_000) });
  const ownRead = state.seen[found.device]!;
  if (ownRead.seq < found.seq) {
    throw new CofferError('REMOTE_ROLLBACK', `the remote holds entries up to ${ownRead.seq} of this device's journal, but it published entry ${found.seq}: refusing to rebuild from a rolled-back remote`);
  }
  for (const [device, mark] of Object.entries(found.seen)) {
    if ((state.seen[device]?.seq ?? 0) < mark.seq) {
      throw new CofferError('REMOTE_ROLLBACK', `the remote holds fewer entries of device ${device}'s journal than this device already applied: refusing to rebuild from a rolled-back remote`);
    }
  }
  const { [found.device]: _own, ...others } = state.seen;
  await writeDeviceState(paths.state, { ...found, clock: Math.max(found.clock, state.clock), seen: others });

  const store = new ChunkStore({ dir: paths.cache, chunkSize: vault.header.chunkSize, keys: vault.keys, context: vault.dataContext, memoryCacheBytes: 0 });
  const reopened = new VaultIndex(paths.index);
  const counts = reopened.counts();
  let chunksKeptAside = 0;
  try {
    const keptDir = join(paths.lostFound, 'chunks');
    for (const id of await store.scanLocal()) {
      if (reopened.hasChunk(id)) continue;
      await mkdir(keptDir, { recursive: true });
      await rename(store.pathOf(id), join(keptDir, id.toString('hex')));
      chunksKeptAside++;
    }
  } finally {
    reopened.close();
  }
  return { entries: pulled.entries, ...(checkpoint && { checkpoint }), files: counts.files, bytes: counts.bytes, setAside, chunksKeptAside };
}
