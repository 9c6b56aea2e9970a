/**
 * Checks a vault that is not mounted: the index's own consistency, every chunk the
 * index references in the local cache (and, on request, on the remote), each opened
 * and authenticated. Problems are reported with the files and byte ranges they touch.
 */
import { readFile } from 'node:fs/promises';
import { isCofferError } from '../errors.js';
import { ChunkStore } from '../chunks/chunk-store.js';
import { VaultIndex } from '../index/vault-index.js';
import { remoteKeys } from '../remote/backend.js';
import { openConfiguredBackend } from './config.js';
import type { UnlockedVault } from './vault.js';

export interface AffectedRange {
  path: string;
  offset: number;
  length: number;
}

export interface FsckProblem {
  kind: 'index' | 'chunk-missing' | 'chunk-corrupt' | 'remote-missing' | 'remote-corrupt';
  message: string;
  chunk?: string;
  affected?: AffectedRange[];
}

export interface FsckReport {
  ok: boolean;
  problems: FsckProblem[];
  checked: { inodes: number; chunks: number; localChunks: number; remoteChunks: number };
}

export async function fsckVault(vault: UnlockedVault, options: { remote: boolean; onProgress?: (done: number, total: number) => void }): Promise<FsckReport> {
  const index = new VaultIndex(vault.paths.index);
  const problems: FsckProblem[] = [];
  const checked = { inodes: 0, chunks: 0, localChunks: 0, remoteChunks: 0 };
  try {
    const consistency = index.check();
    checked.inodes = consistency.inodes;
    for (const message of consistency.problems) problems.push({ kind: 'index', message });
    const store = new ChunkStore({
      dir: vault.paths.cache,
      chunkSize: vault.header.chunkSize,
      keys: vault.keys,
      context: vault.dataContext,
      memoryCacheBytes: 0,
    });
    const backend = options.remote ? openConfiguredBackend(vault.config) : undefined;
    const chunks = index.referencedChunks();
    checked.chunks = chunks.length;
    let done = 0;
    for (const { id, uploaded } of chunks) {
      const hex = id.toString('hex');
      const affected = () => affectedRanges(index, id, vault.header.chunkSize);
      let local: Buffer | undefined;
      try {
        local = await readFile(store.pathOf(id));
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
      }
      if (local) {
        checked.localChunks++;
        const trouble = verify(store, id, local);
        if (trouble) problems.push({ kind: 'chunk-corrupt', chunk: hex, message: `local copy of chunk ${hex}: ${trouble}`, affected: affected() });
      } else if (!uploaded) {
        problems.push({ kind: 'chunk-missing', chunk: hex, message: `chunk ${hex} is neither in the local cache nor uploaded`, affected: affected() });
      }
      if (backend) {
        checked.remoteChunks++;
        try {
          const remote = await backend.get(remoteKeys.chunk(hex));
          const trouble = verify(store, id, remote);
          if (trouble) problems.push({ kind: 'remote-corrupt', chunk: hex, message: `remote copy of chunk ${hex}: ${trouble}`, affected: affected() });
        } catch (err) {
          if (!isCofferError(err, 'REMOTE_NOT_FOUND')) throw err;
          if (uploaded) problems.push({ kind: 'remote-missing', chunk: hex, message: `chunk ${hex} is missing from the remote`, affected: affected() });
        }
      }
      options.onProgress?.(++done, chunks.length);
    }
  } finally {
    index.close();
  }
  return { ok: problems.length === 0, problems, checked };
}

function verify(store: ChunkStore, id: Buffer, sealed: Buffer): string | undefined {
  try {
    store.openSealed(id, sealed, { recomputeId: true });
    return undefined;
  } catch (err) {
    return (err as Error).message;
  }
}

/** Which files, and which bytes of them, a chunk holds. */
function affectedRanges(index: VaultIndex, id: Buffer, chunkSize: number): AffectedRange[] {
  return index.filesOfChunk(id, Number.MAX_SAFE_INTEGER).map(({ ino, idx }) => {
    const size = index.getInode(ino)?.size ?? 0;
    const offset = idx * chunkSize;
    return { path: index.pathOf(ino), offset, length: Math.max(0, Math.min(chunkSize, size - offset)) };
  });
}
