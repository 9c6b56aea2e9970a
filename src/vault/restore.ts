/**
 * A new index holding the vault's state as the remote holds it: the newest checkpoint that can be
 * read, then every journal entry after it; every journal from its start when there is no
 * checkpoint, or the one found cannot be used (the half-filled index is then made anew). Used by
 * clone (a new device) and rebuild-index (a device whose index was lost).
 */
import { rm } from 'node:fs/promises';
import { isCofferError } from '../errors.js';
import type { ObjectContext } from '../crypto/objects.js';
import { VaultIndex } from '../index/vault-index.js';
import { silentLog } from '../logging.js';
import type { RemoteBackend } from '../remote/backend.js';
import { bestCheckpoint, restoreCheckpoint } from '../sync/checkpointer.js';
import type { DeviceState } from '../sync/device-state.js';
import { JournalContext } from '../sync/journal-context.js';
import { pullChanges, type PullResult } from '../sync/merger.js';
import type { VaultPaths } from './layout.js';

/** The checkpoint an index started from: whose, which, and how many entries it covers. */
export interface CheckpointUsed {
  device: string;
  deviceName: string;
  seq: number;
  entries: number;
}

export interface RestoreResult {
  /** The reader's state after the last entry merged (what it has seen of each device). */
  state: DeviceState;
  pulled: PullResult;
  checkpoint?: CheckpointUsed;
}

/**
 * Fills `paths.index` (which must not exist) as device `state` would see the vault. With
 * `persist`, the state is saved to `paths.state` as the restore goes; without, nothing but the
 * index is written. `syncAtClose` is for a caller that throws the index away if the restore does
 * not finish (OpenIndexOptions.syncAtClose).
 */
export async function restoreIndex(
  paths: VaultPaths,
  backend: RemoteBackend,
  context: ObjectContext,
  state: DeviceState,
  options: { persist: boolean; syncAtClose: boolean; say: (line: string) => void; signal: AbortSignal },
): Promise<RestoreResult> {
  const { say, signal } = options;
  const open = () => {
    const index = new VaultIndex(paths.index, { create: { uid: process.getuid?.() ?? 0, gid: process.getgid?.() ?? 0, nowMs: Date.now() }, syncAtClose: options.syncAtClose });
    // The new index's root is not a change of this device: the vault's root comes from the journals.
    index.replica.forgetLocalChanges();
    const ctx = new JournalContext(index, backend, context, paths.state, silentLog, structuredClone(state));
    if (!options.persist) ctx.save = async () => {};
    return { index, ctx };
  };
  let { index, ctx } = open();
  try {
    let checkpoint: CheckpointUsed | undefined;
    const head = await bestCheckpoint(ctx, signal, (device, seq, why) => say(`warning: checkpoint ${seq} of device ${device} cannot be read (${why}); passing it over`));
    if (head) {
      try {
        await restoreCheckpoint(ctx, head, signal);
        const entries = Object.values(head.covers).reduce((n, m) => n + m.seq, 0);
        checkpoint = { device: head.device, deviceName: index.replica.deviceName(head.device), seq: head.seq, entries };
      } catch (err) {
        if (isCofferError(err, 'REMOTE_UNAVAILABLE') || signal.aborted) throw err;
        say(`warning: checkpoint ${head.seq} of device ${head.device} cannot be used (${(err as Error).message}); reading every journal from its start instead`);
        index.close();
        for (const file of [paths.index, `${paths.index}-wal`, `${paths.index}-shm`]) await rm(file, { force: true });
        ({ index, ctx } = open());
      }
    }
    const pulled = await pullChanges(ctx, signal);
    return { state: ctx.state, pulled, ...(checkpoint && { checkpoint }) };
  } finally {
    index.close();
  }
}
