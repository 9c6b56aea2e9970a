/**
 * Deletes local copies of chunks that no file references any more, after a grace
 * period so that reads which looked the chunk up before it was released finish first.
 * Runs under the chunk's file lock, so it never races a writer storing the same
 * content again: either the writer re-references the row first (and the chunk
 * stays), or the local file is gone before the writer stores it anew.
 */
import type { VaultIndex } from '../index/vault-index.js';
import type { Log } from '../logging.js';
import type { ChunkStore } from './chunk-store.js';

export class ChunkCollector {
  private timer: NodeJS.Timeout | undefined;
  private running = false;

  constructor(
    private readonly index: VaultIndex,
    private readonly store: ChunkStore,
    private readonly log: Log,
    private readonly graceMs = 5000,
  ) {}

  start(intervalMs = 2000): void {
    this.timer = setInterval(() => void this.collect(), intervalMs);
    this.timer.unref();
  }

  /** Stops collecting and waits for a collection under way, so the index can close after. */
  async stop(): Promise<void> {
    clearInterval(this.timer);
    while (this.running) await new Promise((r) => setTimeout(r, 10));
  }

  /** Deletes cached files the index does not know: left by a crash between write and commit. */
  async removeUnknown(ids: Buffer[]): Promise<number> {
    let removed = 0;
    for (const id of ids) {
      if (this.index.hasChunk(id)) continue;
      await this.store.fileLock.run(id.toString('hex'), async () => {
        if (!this.index.hasChunk(id)) {
          await this.store.removeLocal(id);
          removed++;
        }
      });
    }
    if (removed > 0) this.log.info(`removed ${removed} cached chunks that no file references (left by an interrupted write)`);
    return removed;
  }

  async collect(): Promise<number> {
    if (this.running) return 0;
    this.running = true;
    let removed = 0;
    try {
      for (const id of this.index.releasedChunks(Date.now() - this.graceMs, 256)) {
        await this.store.fileLock.run(id.toString('hex'), async () => {
          if (this.index.forgetChunk(id, Date.now())) {
            await this.store.removeLocal(id);
            removed++;
          }
        });
      }
    } catch (err) {
      this.log.error(`collecting released chunks: ${(err as Error).message}`, { err });
    } finally {
      this.running = false;
    }
    return removed;
  }
}
