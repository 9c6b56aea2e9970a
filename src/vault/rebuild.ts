/**
 * Rebuilding a lost or damaged local index from the remote. Nothing local is deleted:
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
import { JournalContext } from '../sync/journal-context.js';
import { silentLog } from '../logging.js';
import { pullChanges } from '../sync/merger.js';
import { openConfiguredBackend } from './config.js';
import type { UnlockedVault } from './vault.js';

export interface RebuildResult {
  /** Journal entries read (of every device, this one's included). */
  entries: number;
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
  const index = new VaultIndex(paths.index, { create: { uid: process.getuid?.() ?? 0, gid: process.getgid?.() ?? 0, nowMs: Date.now() } });
  let restored;
  try {
    index.replica.forgetLocalChanges();
    // Every journal is read from its start, this device's own included: as a reader with no id of its own.
    const reader = { ...found, device: randomBytes(16).toString('hex'), seen: Object.fromEntries([found.device, ...Object.keys(found.seen)].map((d) => [d, { seq: 0, hash: null, publishedMs: null, heardMs: null }])) };
    const ctx = new JournalContext(index, backend, vault.metadataContext, paths.state, silentLog, reader);
    ctx.save = async () => {};
    const pulled = await pullChanges(ctx, AbortSignal.timeout(24 * 3600_000));
    const ownRead = ctx.state.seen[found.device]!;
    if (ownRead.seq < found.seq) {
      throw new CofferError('REMOTE_ROLLBACK', `the remote holds entries up to ${ownRead.seq} of this device's journal, but it published entry ${found.seq}: refusing to rebuild from a rolled-back remote`);
    }
    for (const [device, mark] of Object.entries(found.seen)) {
      if ((ctx.state.seen[device]?.seq ?? 0) < mark.seq) {
        throw new CofferError('REMOTE_ROLLBACK', `the remote holds fewer entries of device ${device}'s journal than this device already applied: refusing to rebuild from a rolled-back remote`);
      }
    }
    const { [found.device]: _own, ...others } = ctx.state.seen;
    await writeDeviceState(paths.state, { ...found, clock: Math.max(found.clock, ctx.state.clock), seen: others });
    const counts = index.counts();
    restored = { entries: pulled.entries, files: counts.files, bytes: counts.bytes };
  } finally {
    index.close();
  }

  const store = new ChunkStore({ dir: paths.cache, chunkSize: vault.header.chunkSize, keys: vault.keys, context: vault.dataContext, memoryCacheBytes: 0 });
  const reopened = new VaultIndex(paths.index);
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
  return { ...restored, setAside, chunksKeptAside };
}
