/**
 * Turning a chunk's plaintext into its id and sealed bytes: a keyed BLAKE2b hash and an
 * XChaCha20-Poly1305 seal, about 2 ms of CPU per MiB. `InlineSealer` does it on the calling
 * thread; `WorkerSealer` does it in worker threads so the thread that serves FUSE keeps
 * answering the kernel while earlier chunks are sealed.
 */
import { availableParallelism } from 'node:os';
import { Worker } from 'node:worker_threads';
import type { LogFn } from '../logging.js';
import { chunkId, type VaultKeys } from '../crypto/keys.js';
import { ObjectType, sealObject, type ObjectContext } from '../crypto/objects.js';

export interface SealedChunk {
  id: Buffer;
  sealed: Buffer;
}

export interface ChunkSealer {
  /** The chunk's id and its sealed object. The caller leaves `plaintext` unchanged until this settles. */
  seal(plaintext: Buffer): Promise<SealedChunk>;
  close(): Promise<void>;
}

export interface SealerKeys {
  keys: Pick<VaultKeys, 'chunk' | 'chunkId'>;
  context: ObjectContext;
  chunkSize: number;
}

export function sealChunk({ keys, context, chunkSize }: SealerKeys, plaintext: Buffer): SealedChunk {
  const id = chunkId(keys as VaultKeys, plaintext);
  const sealed = sealObject(context, ObjectType.DataChunk, id, plaintext, { pad: plaintext.length < chunkSize });
  return { id, sealed };
}

export class InlineSealer implements ChunkSealer {
  constructor(private readonly keys: SealerKeys) {}

  async seal(plaintext: Buffer): Promise<SealedChunk> {
    return sealChunk(this.keys, plaintext);
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

export type SealRequest = { seq: number; plaintext: Uint8Array };
export type SealReply = { seq: number; id: Uint8Array; sealed: Uint8Array } | { seq: number; error: string };

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
 * Below this size sealing takes a few microseconds, less than the trip to a worker and back,
 * and a small file's close waits for its chunk: sealed inline.
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

  seal(plaintext: Buffer): Promise<SealedChunk> {
    const pooled = plaintext.length < INLINE_BELOW_BYTES ? undefined : this.leastBusy();
    if (!pooled) return this.inline.seal(plaintext);
    const seq = this.nextSeq++;
    return new Promise<SealedChunk>((resolve, reject) => {
      this.waiting.set(seq, { plaintext, resolve, reject, worker: pooled });
      pooled.inflight++;
      pooled.worker.postMessage({ seq, plaintext } satisfies SealRequest);
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
    else waiter.resolve({ id: toBuffer(reply.id), sealed: toBuffer(reply.sealed) });
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
