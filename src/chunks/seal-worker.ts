/**
 * A worker thread of WorkerSealer (chunk-sealer.ts): seals the chunks it is sent, in order,
 * and writes them into the cache directory when asked to.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { loadSodium } from '../crypto/sodium.js';
import { sealChunk, storeSealedSync, type SealerKeys, type SealReply, type SealRequest, type SealWorkerData } from './chunk-sealer.js';

const data = workerData as SealWorkerData;
const keys: SealerKeys = {
  keys: { chunk: data.chunkKey, chunkId: data.chunkIdKey },
  context: { key: data.chunkKey, vaultId: data.vaultId, keyEpoch: data.keyEpoch },
  chunkSize: data.chunkSize,
};
const port = parentPort!;
const createdDirs = new Set<string>();
await loadSodium();

port.on('message', ({ seq, plaintext, storeIn }: SealRequest) => {
  let reply: SealReply;
  const transfer: ArrayBuffer[] = [];
  try {
    const { id, sealed } = sealChunk(keys, Buffer.from(plaintext.buffer, plaintext.byteOffset, plaintext.byteLength));
    // A failed write is not an error here: the caller writes the chunk itself and makes room if the disk is full.
    const stored = storeIn !== undefined && storeSealedSync(storeIn, id, sealed, createdDirs) === undefined;
    reply = { seq, id, sealed, stored };
    // A sealed chunk owns its whole ArrayBuffer: hand it over instead of copying it back.
    if (sealed.byteOffset === 0 && sealed.byteLength === sealed.buffer.byteLength) transfer.push(sealed.buffer as ArrayBuffer);
  } catch (err) {
    reply = { seq, error: (err as Error).message };
  }
  port.postMessage(reply, transfer);
});
