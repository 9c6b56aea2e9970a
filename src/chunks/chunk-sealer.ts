/**
 * Turning a chunk's plaintext into its id and sealed bytes: a keyed BLAKE2b hash and an
 * XChaCha20-Poly1305 seal, about 2 ms of CPU per MiB. `InlineSealer` does it on the calling
 * thread; `WorkerSealer` does it in worker threads so the thread that serves FUSE keeps
 * answering the kernel while earlier chunks are sealed. A worker can also write the sealed
 * chunk into the cache directory itself (synchronously, which is allowed off the FUSE thread):
 * one trip to the worker instead of four to libuv's thread pool for temp file, write, close
 * and rename, which is most of what closing a small file costs.
 */
import { availableParallelism } from 'node:os';
import { randomBytes } from 'node:crypto';
import { closeSync, mkdirSync, openSync, renameSync, unlinkSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { Worker } from 'node:worker_threads';
import type { LogFn } from '../logging.js';
import { chunkId, type VaultKeys } from '../crypto/keys.js';
import { ObjectType, sealObject, type ObjectContext } from '../crypto/objects.js';

export interface SealedChunk {
  id: Buffer;
  sealed: Buffer;
  /** The sealed bytes are already in `<storeIn>/<hh>/<id hex>` (written atomically, not fsynced). */
  stored: boolean;
}

export interface SealOptions {
  /** A chunk cache directory to write the sealed chunk into, where the sealer can. */
  storeIn?: string;
}

export interface ChunkSealer {
  /** The chunk's id and its sealed object. The caller leaves `plaintext` unchanged until this settles. */
  seal(plaintext: Buffer, options?: SealOptions): Promise<SealedChunk>;
  close(): Promise<void>;
}

export interface SealerKeys {
  keys: Pick<VaultKeys, 'chunk' | 'chunkId'>;
  context: ObjectContext;
  chunkSize: number;
}

export function sealChunk({ keys, context, chunkSize }: SealerKeys, plaintext: Buffer): Omit<SealedChunk, 'stored'> {
  const id = chunkId(keys as VaultKeys, plaintext);
  const sealed = sealObject(context, ObjectType.DataChunk, id, plaintext, { pad: plaintext.length < chunkSize });
  return { id, sealed };
}

/**
 * Writes a sealed chunk under its cache name through a temporary file, synchronously: for
 * worker threads only. Returns the error code instead of throwing, so the caller can fall
 * back to the cache's own write (which makes room on ENOSPC).
 */
export function storeSealedSync(dir: string, id: Buffer, sealed: Buffer, createdDirs: Set<string>): string | undefined {
  const hex = id.toString('hex');
  const sub = join(dir, hex.slice(0, 2));
  const temp = join(sub, `${hex}.${randomBytes(4).toString('hex')}.tmp`);
  let fd: number | undefined;
  try {
    if (!createdDirs.has(sub)) {
      mkdirSync(sub, { recursive: true });
      createdDirs.add(sub);
    }
    fd = openSync(temp, 'wx');
    for (let at = 0; at < sealed.length; ) at += writeSync(fd, sealed, at, sealed.length - at);
    closeSync(fd);
    fd = undefined;
    renameSync(temp, join(sub, hex));
    return undefined;
  } catch (err) {
    if (fd !== undefined) closeSync(fd);
    try {
      unlinkSync(temp);
    } catch {
      // never created, or already renamed
    }
    return (err as NodeJS.ErrnoException).code ?? 'EIO';
  }
}

export class InlineSealer implements ChunkSealer {
  constructor(private readonly keys: SealerKeys) {}

  async seal(plaintext: Buffer): Promise<SealedChunk> {
    return { ...sealChunk(this.keys, plaintext), stored: false };
  }

  async close(): Promise<void> {}
}

/** What the worker receives at start (see seal-worker.ts). */
export interface SealWorkerData {
  chunkKey: Uint8Array;
  chunkIdKey: Uint8Array;
  vaultId: Uint8Array;
  keyEpoch: number;
  chunkSize: number;
}

export type SealRequest = { seq: number; plaintext: Uint8Array; storeIn?: string };
export type SealReply = { seq: number; id: Uint8Array; sealed: Uint8Array; stored: boolean } | { seq: number; error: string };

interface Waiter {
  plaintext: Buffer;
  resolve: (chunk: SealedChunk) => void;
  reject: (err: Error) => void;
  worker: PooledWorker;
}

interface PooledWorker {
  worker: Worker;
  inflight: number;
}

/**
 * Below this size sealing takes a few microseconds, less than the trip to a worker and back:
 * sealed inline unless the worker also writes it.
 */
const INLINE_BELOW_BYTES = 64 * 1024;

/** Worker threads for sealing. If a worker dies, its chunks and later ones are sealed inline. */
export class WorkerSealer implements ChunkSealer {
  private readonly workers: PooledWorker[] = [];
  private readonly waiting = new Map<number, Waiter>();
  private nextSeq = 1;
  private readonly inline: InlineSealer;
  private broken = false;

  constructor(
    keys: SealerKeys,
    count = defaultSealWorkers(),
    private readonly log: LogFn = () => {},
  ) {
    this.inline = new InlineSealer(keys);
    const workerData: SealWorkerData = {
      chunkKey: keys.keys.chunk,
      chunkIdKey: keys.keys.chunkId,
      vaultId: keys.context.vaultId,
      keyEpoch: keys.context.keyEpoch,
      chunkSize: keys.chunkSize,
    };
    for (let i = 0; i < count; i++) {
      const pooled: PooledWorker = { worker: new Worker(new URL('./seal-worker.js', import.meta.url), { workerData }), inflight: 0 };
      pooled.worker.unref();
      pooled.worker.on('message', (reply: SealReply) => this.settle(reply));
      pooled.worker.on('error', (err) => this.fail(pooled, err));
      pooled.worker.on('exit', (code) => this.fail(pooled, new Error(`chunk sealing worker exited with code ${code}`)));
      this.workers.push(pooled);
    }
  }

  seal(plaintext: Buffer, options: SealOptions = {}): Promise<SealedChunk> {
    const { storeIn } = options;
    const pooled = plaintext.length < INLINE_BELOW_BYTES && storeIn === undefined ? undefined : this.leastBusy();
    if (!pooled) return this.inline.seal(plaintext);
    const seq = this.nextSeq++;
    return new Promise<SealedChunk>((resolve, reject) => {
      this.waiting.set(seq, { plaintext, resolve, reject, worker: pooled });
      pooled.inflight++;
      pooled.worker.postMessage({ seq, plaintext, storeIn } satisfies SealRequest);
    });
  }

  async close(): Promise<void> {
    this.broken = true;
    const workers = this.workers.splice(0);
    await Promise.all(workers.map((w) => w.worker.terminate()));
  }

  private leastBusy(): PooledWorker | undefined {
    if (this.broken) return undefined;
    let best: PooledWorker | undefined;
    for (const w of this.workers) if (!best || w.inflight < best.inflight) best = w;
    return best;
  }

  private settle(reply: SealReply): void {
    const waiter = this.waiting.get(reply.seq);
    if (!waiter) return;
    this.waiting.delete(reply.seq);
    waiter.worker.inflight--;
    if ('error' in reply) waiter.reject(new Error(`sealing a chunk failed: ${reply.error}`));
    else waiter.resolve({ id: toBuffer(reply.id), sealed: toBuffer(reply.sealed), stored: reply.stored });
  }

  /** A dead worker's chunks are still in their callers' buffers: seal them inline instead of failing the writes. */
  private fail(pooled: PooledWorker, err: Error): void {
    const index = this.workers.indexOf(pooled);
    if (index < 0) return;
    this.workers.splice(index, 1);
    if (!this.broken) this.log(`chunk sealing worker stopped; sealing on the main thread from now on: ${err.message}`, { err });
    for (const [seq, waiter] of this.waiting) {
      if (waiter.worker !== pooled) continue;
      this.waiting.delete(seq);
      this.inline.seal(waiter.plaintext).then(waiter.resolve, waiter.reject);
    }
  }
}

/** One worker per spare core, at most four: the thread serving FUSE needs a core of its own. */
export function defaultSealWorkers(): number {
  return Math.max(1, Math.min(4, availableParallelism() - 1));
}

function toBuffer(bytes: Uint8Array): Buffer {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}
