/**
 * `coffer upgrade <vault-dir>`: a format-1 vault becomes format 2 without mounting it — the index
 * gains node ids, this copy registers as a device, its whole tree goes into its journal (chunks not
 * yet on the remote are uploaded first), and the header says format 2 here and on the remote.
 * Mounting does the same in the background; either resumes an upgrade the other left unfinished.
 */
import { ChunkStore } from '../chunks/chunk-store.js';
import { VaultIndex } from '../index/vault-index.js';
import { remoteKeys } from '../remote/backend.js';
import { readDeviceState } from '../sync/device-state.js';
import { JournalContext } from '../sync/journal-context.js';
import { silentLog } from '../logging.js';
import { publishChanges } from '../sync/publisher.js';
import { openConfiguredBackend } from './config.js';
import { finishUpgrade, prepareDevice } from './device.js';
import type { UnlockedVault } from './vault.js';

export interface UpgradeResult {
  /** False when the vault already was in format 2. */
  upgraded: boolean;
  entries: number;
  records: number;
}

export async function upgradeVault(vault: UnlockedVault, say: (line: string) => void): Promise<UpgradeResult> {
  const { paths } = vault;
  const found = await readDeviceState(paths.state);
  if (vault.header.version === 2 && found && !('format1' in found) && !found.upgrading) return { upgraded: false, entries: 0, records: 0 };
  const backend = openConfiguredBackend(vault.config);
  const signal = AbortSignal.timeout(24 * 3600_000);
  const state = await prepareDevice(vault, backend, signal);
  const index = new VaultIndex(paths.index);
  try {
    const store = new ChunkStore({ dir: paths.cache, chunkSize: vault.header.chunkSize, keys: vault.keys, context: vault.dataContext, memoryCacheBytes: 0 });
    const ctx = new JournalContext(index, backend, vault.metadataContext, paths.state, silentLog, state);
    say(`Publishing ${index.replica.pendingCount()} nodes to this device's journal…`);
    const published = await publishChanges(
      ctx,
      {
        chunksUploaded: async (ids, s) => {
          for (const id of ids) {
            if (index.chunkInfo(id)?.uploaded !== false) continue;
            await backend.put(remoteKeys.chunk(id.toString('hex')), await store.readSealed(id), { signal: s });
            index.markUploaded(id);
          }
        },
        uploaded: () => {},
      },
      signal,
    );
    await finishUpgrade(vault, backend, ctx.state, signal);
    return { upgraded: true, entries: published.entries, records: published.records };
  } finally {
    index.close();
  }
}
