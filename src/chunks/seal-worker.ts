/** A worker thread of WorkerSealer (chunk-sealer.ts): seals the chunks it is sent, in order. */
import { parentPort, workerData } from 'node:worker_threads';
import { loadSodium } from '../crypto/sodium.js';
import { sealChunk, type SealerKeys, type SealReply, type SealRequest, type SealWorkerData } from './chunk-sealer.js';

const data = workerData as SealWorkerData;
const keys: SealerKeys = {
  keys: { chunk: data.chunkKey, chunkId: data.chunkIdKey },
  context: { key: data.chunkKey, vaultId: data.vaultId, keyEpoch: data.keyEpoch },
  chunkSize: data.chunkSize,
};
const port = parentPort!;
await loadSodium();

port.on('message', ({ seq, plaintext }: SealRequest) => {
  let reply: SealReply;
  const transfer: ArrayBuffer[] = [];
  try {
    const { id, sealed } = sealChunk(keys, Buffer.from(plaintext.buffer, plaintext.byteOffset, plaintext.byteLength));
    reply = { seq, id, sealed };
    // A sealed chunk owns its whole ArrayBuffer: hand it over instead of copying it back.
    if (sealed.byteOffset === 0 && sealed.byteLength === sealed.buffer.byteLength) transfer.push(sealed.buffer as ArrayBuffer);
  } catch (err) {
    reply = { seq, error: (err as Error).message };
  }
  port.postMessage(reply, transfer);
});
