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
 *   waits until older buffers are committed (every finished commit wakes the waiters).
 * - Chunk buffers live in SharedArrayBuffers so sealing in a worker thread reads them
 *   without a copy; that is safe because a buffer is never written once its commit starts.
 * - A full chunk's buffer is not kept by anything once its commit succeeds (only partial
 *   chunks are remembered as opened plaintext), so it is reused for a later chunk instead
 *   of being left to the garbage collector.
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
  /**
   * Asked before a write is acknowledged with the bytes it brings (overwrites count as new:
   * cheaper than finding out, and never too few); throws (or rejects) to refuse the write,
   * which then changes nothing. The remote-space guard answers it (src/sync/remote-space.ts).
   */
  admitWrite?: (bytes: number) => void | Promise<void>;
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
/** Full-size chunk buffers kept for reuse. */
const SPARE_BUFFERS = 8;
/** Most chunks opened ahead of a sequential reader. */
export const PREFETCH_CHUNKS = 4;

export class FileData {
  private readonly files = new Map<number, FileState>();
  private readonly fileLock = new KeyedLock<number>();
  private bufferedBytes = 0;
  /** Writers waiting for buffer memory; woken whenever a commit finishes. */
  private spaceWaiters: (() => void)[] = [];
  private readonly spareBuffers: Buffer[] = [];
  private readonly zero: Buffer;
  private readonly now: () => number;
  private idleTimer: NodeJS.Timeout | undefined;
  /** Per file being read: where a sequential reader reads next, and the chunks already asked ahead for. */
  private readonly readers = new Map<number, { nextPosition: number; runBytes: number; aheadTo: number }>();

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
    this.readers.delete(ino);
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

  /**
   * Written data not yet sealed into chunks, all files together: the bytes the chunks it
   * fills hold (a chunk partly overwritten counts whole, as it is uploaded whole) and how many
   * chunks that is. Neither is in the upload queue yet.
   */
  uncommitted(): { bytes: number; chunks: number } {
    let bytes = 0;
    let chunks = 0;
    for (const st of this.files.values()) {
      for (const chunk of st.dirty.values()) {
        bytes += chunk.length;
        chunks++;
      }
      // A chunk both in flight and written again counts twice: the older one may be uploaded too.
      for (const commit of st.inflight.values()) {
        bytes += commit.chunk.length;
        chunks++;
      }
    }
    return { bytes, chunks };
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
      const admitting = this.options.admitWrite?.(data.length);
      if (admitting) await admitting; // only a write that may not fit waits (for the server's figures)
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
    this.readAhead(ino, position, end);
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
    const spare = capacity === cs ? this.spareBuffers.pop() : undefined;
    const buf = spare ?? sharedBuffer(capacity);
    const copied = content ? content.copy(buf, 0, 0, Math.min(content.length, capacity)) : 0;
    // A reused buffer holds an old chunk: zero what this one does not overwrite right away.
    if (spare && !wholeOverwrite) buf.fill(0, copied);
    const chunk: ChunkBuffer = { buf, length: content?.length ?? 0, lastWriteMs: this.now() };
    st.dirty.set(idx, chunk);
    this.bufferedBytes += capacity;
    return chunk;
  }

  private ensureCapacity(chunk: ChunkBuffer, needed: number): void {
    if (chunk.buf.length >= needed) return;
    const capacity = Math.min(this.options.chunkSize, Math.max(roundUp(needed, GROWTH_STEP), chunk.buf.length * 2));
    const grown = sharedBuffer(capacity);
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
      let reusable = false;
      try {
        await this.commitChunk(st, idx, chunk);
        reusable = chunk.length === this.options.chunkSize;
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
        if (reusable && this.spareBuffers.length < SPARE_BUFFERS) this.spareBuffers.push(chunk.buf);
        this.wakeSpaceWaiters();
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
    const sealed = await this.store.sealChunk(data);
    const { id } = sealed;
    await this.store.fileLock.run(id.toString('hex'), async () => {
      let sealedSize = this.index.chunkInfo(id)?.sealedSize;
      // A chunk the vault already has (dedup) needs no new file, but one the sealer wrote is kept track of.
      if (sealedSize === undefined || sealed.stored) {
        await this.store.keepSealed(sealed);
        sealedSize ??= sealed.sealed.length;
      }
      this.index.commitChunk(st.ino, idx, { id, plainSize: data.length, sealedSize }, st.size, st.mtimeMs, this.now());
    });
    // A full chunk is most likely one of many written in a row: its buffer is reused instead.
    if (data.length < this.options.chunkSize) this.store.remember(id, data);
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

  /**
   * A sequential reader has the next chunks opened (read from disk or the remote, and
   * decrypted) while it works on this one. The window grows with the run of sequential
   * bytes, like the kernel's read-ahead: a program that reads only a file's head (a
   * thumbnailer, `file`) fetches nothing extra, and random reads fetch only what they touch.
   */
  private readAhead(ino: number, position: number, end: number): void {
    const cs = this.options.chunkSize;
    let reader = this.readers.get(ino);
    if (!reader) {
      if (this.readers.size >= 1024) this.readers.clear();
      reader = { nextPosition: -1, runBytes: 0, aheadTo: 0 };
      this.readers.set(ino, reader);
    }
    if (reader.nextPosition === position) reader.runBytes += end - position;
    else {
      reader.runBytes = end - position;
      reader.aheadTo = 0;
    }
    reader.nextPosition = end;
    if (reader.runBytes < cs / 2) return;
    const window = Math.min(PREFETCH_CHUNKS, 1 + Math.floor(reader.runBytes / cs));
    const next = Math.floor(Math.max(end - 1, 0) / cs) + 1;
    for (let idx = Math.max(next, reader.aheadTo); idx < next + window; idx++) {
      const id = this.index.chunkAt(ino, idx);
      if (!id) break;
      this.store.read(id).catch(() => {});
      reader.aheadTo = idx + 1;
    }
  }

  /** Waits, outside any file lock, until buffers fit the memory bound again. */
  private async relievePressure(writerIno: number): Promise<void> {
    while (this.bufferedBytes > this.options.bufferBytes) {
      const victim = this.oldestDirty();
      if (victim) {
        await this.fileLock.run(victim.st.ino, async () => this.startCommit(victim.st, victim.idx));
      }
      if (!this.anyInflight()) break;
      await new Promise<void>((resolve) => this.spaceWaiters.push(resolve));
      const writer = this.files.get(writerIno);
      if (writer && writer.error !== undefined) {
        await this.fileLock.run(writerIno, async () => this.raiseSavedError(writer));
      }
    }
  }

  private anyInflight(): boolean {
    for (const st of this.files.values()) if (st.inflight.size > 0) return true;
    return false;
  }

  private wakeSpaceWaiters(): void {
    const waiters = this.spaceWaiters;
    if (waiters.length === 0) return;
    this.spaceWaiters = [];
    for (const wake of waiters) wake();
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

function sharedBuffer(bytes: number): Buffer {
  return Buffer.from(new SharedArrayBuffer(bytes));
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
