/**
 * File contents: per-file write buffers cut into fixed-size chunks, committed to
 * the chunk store and the index, and reads that see buffered data first.
 *
 * Invariants:
 * - A chunk buffer is written only by the holder of its file's `fileLock`, and only
 *   while it sits in `dirty`; `startCommit` (also only under the lock) moves it to
 *   `inflight`, after which it is never written again. So a commit seals exactly the
 *   bytes that were acknowledged before it started.
 * - Commits of the same chunk index run in the order they started (each awaits the
 *   one before), so an older commit never overwrites a newer one in the index.
 * - Bytes of a file past its size are zero in every buffer and every committed
 *   chunk: truncation trims the chunk it cuts through and commits it at once.
 * - Memory held by buffers is bounded by `bufferBytes`: a write that goes past it
 *   waits until older buffers are committed.
 * - A commit that fails (a full disk, say) puts its buffer back and the error is
 *   returned by the next write, flush or fsync of that file: data is never dropped
 *   without the program being told.
 */
import { FsError } from '../errors.js';
import type { ChunkStore } from '../chunks/chunk-store.js';
import { KeyedLock } from '../chunks/keyed-lock.js';
import type { VaultIndex } from '../index/vault-index.js';
import { AuthenticationError, FormatError } from '../errors.js';
import type { LogFn } from '../logging.js';

export interface FileDataOptions {
  chunkSize: number;
  /** Upper bound on memory held by write buffers, all files together. */
  bufferBytes: number;
  /** A buffer left untouched this long is committed even while the file stays open. */
  idleCommitMs: number;
  log: LogFn;
  now?: () => number;
}

interface ChunkBuffer {
  buf: Buffer;
  /** Bytes of the chunk that hold file data; the rest of `buf` is zero or unused. */
  length: number;
  lastWriteMs: number;
}

interface InflightCommit {
  chunk: ChunkBuffer;
  done: Promise<void>;
}

interface FileState {
  ino: number;
  size: number;
  mtimeMs: number;
  /** size or mtime differ from the index */
  attrsDirty: boolean;
  dirty: Map<number, ChunkBuffer>;
  inflight: Map<number, InflightCommit>;
  error: unknown;
  handles: number;
}

const GROWTH_STEP = 64 * 1024;
/** Chunks read ahead of a sequential reader. */
export const PREFETCH_CHUNKS = 4;

export class FileData {
  private readonly files = new Map<number, FileState>();
  private readonly fileLock = new KeyedLock<number>();
  private bufferedBytes = 0;
  private readonly zero: Buffer;
  private readonly now: () => number;
  private idleTimer: NodeJS.Timeout | undefined;

  constructor(
    private readonly index: VaultIndex,
    private readonly store: ChunkStore,
    private readonly options: FileDataOptions,
  ) {
    this.zero = Buffer.alloc(options.chunkSize);
    this.now = options.now ?? Date.now;
  }

  get chunkSize(): number {
    return this.options.chunkSize;
  }

  get bufferedByteCount(): number {
    return this.bufferedBytes;
  }

  startIdleCommits(intervalMs = 1000): void {
    this.idleTimer = setInterval(() => void this.commitIdle(), intervalMs);
    this.idleTimer.unref();
  }

  stopIdleCommits(): void {
    clearInterval(this.idleTimer);
  }

  // ---- handles ----

  opened(ino: number): void {
    this.state(ino).handles++;
  }

  isOpen(ino: number): boolean {
    return (this.files.get(ino)?.handles ?? 0) > 0;
  }

  /** The last close of a file: commit what it wrote, or drop it if the file is gone. */
  async closed(ino: number): Promise<void> {
    const st = this.files.get(ino);
    if (!st) return;
    st.handles--;
    if (st.handles > 0) return;
    const inode = this.index.getInode(ino);
    if (!inode || inode.nlink <= 0) {
      await this.fileLock.run(ino, async () => {
        this.discard(st);
        await this.settle(st);
      });
      this.files.delete(ino);
      this.index.purgeIfUnlinked(ino, this.now());
      return;
    }
    try {
      await this.flush(ino);
    } finally {
      if (st.handles === 0 && st.dirty.size === 0 && st.inflight.size === 0) this.files.delete(ino);
    }
  }

  /** Whether a file has written data not yet committed to chunks. */
  hasUncommitted(ino: number): boolean {
    const st = this.files.get(ino);
    return !!st && (st.dirty.size > 0 || st.inflight.size > 0);
  }

  /** Size and mtime as the program sees them, ahead of the index. */
  overlay(ino: number): { size: number; mtimeMs: number } | undefined {
    const st = this.files.get(ino);
    return st && st.attrsDirty ? { size: st.size, mtimeMs: st.mtimeMs } : undefined;
  }

  // ---- data ----

  async write(ino: number, data: Buffer, position: number): Promise<number> {
    const cs = this.options.chunkSize;
    await this.fileLock.run(ino, async () => {
      const st = this.state(ino);
      this.raiseSavedError(st);
      const now = this.now();
      let done = 0;
      while (done < data.length) {
        const at = position + done;
        const idx = Math.floor(at / cs);
        const within = at - idx * cs;
        const n = Math.min(cs - within, data.length - done);
        const chunk = st.dirty.get(idx) ?? (await this.startBuffer(st, idx, within === 0 && n === cs));
        this.ensureCapacity(chunk, within + n);
        data.copy(chunk.buf, within, done, done + n);
        chunk.length = Math.max(chunk.length, within + n);
        chunk.lastWriteMs = now;
        done += n;
        if (within + n === cs) this.startCommit(st, idx);
      }
      st.size = Math.max(st.size, position + data.length);
      st.mtimeMs = now;
      st.attrsDirty = true;
    });
    await this.relievePressure(ino);
    return data.length;
  }

  async read(ino: number, target: Buffer, length: number, position: number): Promise<number> {
    const cs = this.options.chunkSize;
    const st = this.files.get(ino);
    const size = st ? st.size : (this.index.getInode(ino)?.size ?? 0);
    if (position >= size) return 0;
    const end = Math.min(position + length, size);
    let at = position;
    while (at < end) {
      const idx = Math.floor(at / cs);
      const within = at - idx * cs;
      const n = Math.min(cs - within, end - at);
      const out = at - position;
      const buffered = st?.dirty.get(idx) ?? st?.inflight.get(idx)?.chunk;
      if (buffered) {
        copyPadded(buffered.buf.subarray(0, buffered.length), within, n, target, out);
      } else {
        const id = this.index.chunkAt(ino, idx);
        if (id) {
          const plain = await this.openChunk(ino, idx, id);
          copyPadded(plain, within, n, target, out);
          if (within + n > cs / 2) this.prefetch(ino, idx + 1, PREFETCH_CHUNKS);
        } else {
          target.fill(0, out, out + n);
        }
      }
      at += n;
    }
    return end - position;
  }

  async truncate(ino: number, size: number): Promise<void> {
    const cs = this.options.chunkSize;
    await this.fileLock.run(ino, async () => {
      const st = this.state(ino);
      try {
        await this.settle(st);
        this.raiseSavedError(st);
        const now = this.now();
        const keep = Math.ceil(size / cs);
        if (size < st.size) {
          for (const [idx, chunk] of st.dirty) {
            if (idx >= keep) {
              st.dirty.delete(idx);
              this.bufferedBytes -= chunk.buf.length;
            }
          }
          const cut = size % cs;
          const cutIdx = Math.floor(size / cs);
          if (cut !== 0) {
            const chunk = st.dirty.get(cutIdx) ?? (await this.startBuffer(st, cutIdx, false));
            if (chunk.length > cut) {
              chunk.buf.fill(0, cut, chunk.length);
              chunk.length = cut;
            }
            this.startCommit(st, cutIdx);
            await this.settle(st);
            this.raiseSavedError(st);
          }
        }
        this.index.truncate(ino, size, keep, now);
        st.size = size;
        st.mtimeMs = now;
        st.attrsDirty = false;
      } finally {
        this.forgetIfIdle(st);
      }
    });
  }

  /** Commits every buffer of a file and reports any error a commit met. */
  async flush(ino: number): Promise<void> {
    const st = this.files.get(ino);
    if (!st) return;
    await this.fileLock.run(ino, async () => {
      for (const idx of [...st.dirty.keys()]) this.startCommit(st, idx);
      await this.settle(st);
      if (st.attrsDirty && st.error === undefined) {
        this.index.setSizeAndTimes(ino, st.size, st.mtimeMs, this.now());
        st.attrsDirty = false;
      }
      this.raiseSavedError(st);
    });
  }

  /** flush, then make the chunk files and the index durable. */
  async fsync(ino: number): Promise<void> {
    await this.flush(ino);
    await this.store.syncWritten();
    this.index.makeDurable(this.now());
  }

  async flushAll(): Promise<void> {
    const errors: unknown[] = [];
    for (const ino of [...this.files.keys()]) {
      await this.flush(ino).catch((err) => errors.push(err));
    }
    await this.store.syncWritten();
    this.index.makeDurable(this.now());
    if (errors.length > 0) throw errors[0];
  }

  // ---- internals ----

  private state(ino: number): FileState {
    let st = this.files.get(ino);
    if (!st) {
      const inode = this.index.getInode(ino);
      if (!inode) throw new FsError('ENOENT');
      st = {
        ino,
        size: inode.size,
        mtimeMs: inode.mtimeMs,
        attrsDirty: false,
        dirty: new Map(),
        inflight: new Map(),
        error: undefined,
        handles: 0,
      };
      this.files.set(ino, st);
    }
    return st;
  }

  private forgetIfIdle(st: FileState): void {
    if (st.handles === 0 && st.dirty.size === 0 && st.inflight.size === 0 && !st.attrsDirty) this.files.delete(st.ino);
  }

  private raiseSavedError(st: FileState): void {
    if (st.error !== undefined) {
      const err = st.error;
      st.error = undefined;
      throw err;
    }
  }

  /** A buffer for chunk `idx` holding its current content (unless it is about to be overwritten whole). */
  private async startBuffer(st: FileState, idx: number, wholeOverwrite: boolean): Promise<ChunkBuffer> {
    const cs = this.options.chunkSize;
    let content: Buffer | undefined;
    if (!wholeOverwrite) {
      const inflight = st.inflight.get(idx)?.chunk;
      if (inflight) content = inflight.buf.subarray(0, inflight.length);
      else {
        const id = this.index.chunkAt(st.ino, idx);
        if (id) content = await this.openChunk(st.ino, idx, id);
      }
    }
    const capacity = wholeOverwrite ? cs : Math.min(cs, roundUp(Math.max(content?.length ?? 0, 1), GROWTH_STEP));
    // A chunk about to be overwritten whole needs no zeroing: every byte is written next.
    const buf = wholeOverwrite ? Buffer.allocUnsafe(capacity) : Buffer.alloc(capacity);
    if (content) content.copy(buf, 0, 0, Math.min(content.length, capacity));
    const chunk: ChunkBuffer = { buf, length: content?.length ?? 0, lastWriteMs: this.now() };
    st.dirty.set(idx, chunk);
    this.bufferedBytes += capacity;
    return chunk;
  }

  private ensureCapacity(chunk: ChunkBuffer, needed: number): void {
    if (chunk.buf.length >= needed) return;
    const capacity = Math.min(this.options.chunkSize, Math.max(roundUp(needed, GROWTH_STEP), chunk.buf.length * 2));
    const grown = Buffer.alloc(capacity);
    chunk.buf.copy(grown, 0, 0, chunk.length);
    this.bufferedBytes += capacity - chunk.buf.length;
    chunk.buf = grown;
  }

  /** Caller holds the file's lock. */
  private startCommit(st: FileState, idx: number): void {
    const chunk = st.dirty.get(idx);
    if (!chunk) return;
    st.dirty.delete(idx);
    const previous = st.inflight.get(idx)?.done;
    const entry: InflightCommit = { chunk, done: Promise.resolve() };
    entry.done = (async () => {
      if (previous) await previous;
      try {
        await this.commitChunk(st, idx, chunk);
      } catch (err) {
        if (!st.dirty.has(idx)) {
          st.dirty.set(idx, chunk);
          this.bufferedBytes += chunk.buf.length;
        }
        if (st.error === undefined) st.error = err;
        this.options.log(`inode ${st.ino}: committing chunk index ${idx} failed: ${(err as Error).message}`, { ino: st.ino, index: idx, err });
      } finally {
        if (st.inflight.get(idx) === entry) st.inflight.delete(idx);
        this.bufferedBytes -= chunk.buf.length;
      }
    })();
    st.inflight.set(idx, entry);
  }

  private async commitChunk(st: FileState, idx: number, chunk: ChunkBuffer): Promise<void> {
    const data = chunk.buf.subarray(0, chunk.length);
    const now = this.now();
    if (data.length === 0 || data.equals(this.zero.subarray(0, data.length))) {
      this.index.commitChunk(st.ino, idx, null, st.size, st.mtimeMs, now);
      return;
    }
    const id = this.store.idOf(data);
    await this.store.fileLock.run(id.toString('hex'), async () => {
      let sealedSize = this.index.chunkInfo(id)?.sealedSize;
      if (sealedSize === undefined) {
        const sealed = this.store.seal(id, data);
        await this.store.writeSealed(id, sealed);
        sealedSize = sealed.length;
      }
      this.index.commitChunk(st.ino, idx, { id, plainSize: data.length, sealedSize }, st.size, st.mtimeMs, this.now());
    });
    this.store.remember(id, data);
  }

  private async settle(st: FileState): Promise<void> {
    while (st.inflight.size > 0) {
      await Promise.all([...st.inflight.values()].map((c) => c.done));
    }
  }

  private discard(st: FileState): void {
    for (const chunk of st.dirty.values()) this.bufferedBytes -= chunk.buf.length;
    st.dirty.clear();
    st.attrsDirty = false;
  }

  private async openChunk(ino: number, idx: number, id: Buffer): Promise<Buffer> {
    try {
      return await this.store.read(id);
    } catch (err) {
      if (err instanceof AuthenticationError || err instanceof FormatError) {
        this.options.log(`inode ${ino} chunk index ${idx}: ${err.message}`, { ino, index: idx, chunk: id.toString('hex'), err });
        throw new FsError('EIO', err.message);
      }
      throw err;
    }
  }

  /** Sequential reads warm the next chunks, so a remote fetch overlaps the reader's work. */
  private prefetch(ino: number, from: number, count: number): void {
    for (let idx = from; idx < from + count; idx++) {
      const id = this.index.chunkAt(ino, idx);
      if (!id) return;
      if (idx > from && this.store.isLocal(id)) continue; // a local chunk is cheap to open when it is reached
      this.store.read(id).catch(() => {});
    }
  }

  /** Waits, outside any file lock, until buffers fit the memory bound again. */
  private async relievePressure(writerIno: number): Promise<void> {
    while (this.bufferedBytes > this.options.bufferBytes) {
      const victim = this.oldestDirty();
      if (victim) {
        await this.fileLock.run(victim.st.ino, async () => this.startCommit(victim.st, victim.idx));
      }
      const pending = [...this.files.values()].flatMap((st) => [...st.inflight.values()].map((c) => c.done));
      if (pending.length === 0) break;
      await Promise.race(pending);
      const writer = this.files.get(writerIno);
      if (writer && writer.error !== undefined) {
        await this.fileLock.run(writerIno, async () => this.raiseSavedError(writer));
      }
    }
  }

  private oldestDirty(): { st: FileState; idx: number } | undefined {
    let best: { st: FileState; idx: number; at: number } | undefined;
    for (const st of this.files.values()) {
      for (const [idx, chunk] of st.dirty) {
        if (!best || chunk.lastWriteMs < best.at) best = { st, idx, at: chunk.lastWriteMs };
      }
    }
    return best;
  }

  private async commitIdle(): Promise<void> {
    const cutoff = this.now() - this.options.idleCommitMs;
    for (const st of [...this.files.values()]) {
      const idle = [...st.dirty.entries()].filter(([, c]) => c.lastWriteMs <= cutoff).map(([idx]) => idx);
      if (idle.length === 0) continue;
      await this.fileLock.run(st.ino, async () => {
        for (const idx of idle) this.startCommit(st, idx);
        await this.settle(st);
        if (st.attrsDirty && st.dirty.size === 0 && st.error === undefined) {
          this.index.setSizeAndTimes(st.ino, st.size, st.mtimeMs, this.now());
          st.attrsDirty = false;
        }
      });
    }
  }
}

function roundUp(n: number, step: number): number {
  return Math.ceil(n / step) * step;
}

/** Copies `n` bytes from `source` at `from`, reading zeros past its end. */
function copyPadded(source: Buffer, from: number, n: number, target: Buffer, to: number): void {
  const available = Math.max(0, Math.min(n, source.length - from));
  if (available > 0) source.copy(target, to, from, from + available);
  if (available < n) target.fill(0, to + available, to + n);
}
