/**
 * Passphrase → key-encryption key (KEK) with Argon2id.
 *
 * deriveKek() is deliberately slow and memory-hard (about half a second and 64 MiB at the
 * defaults). It runs in a worker thread of its own that exits when done: the WebAssembly memory
 * Argon2id needs never shrinks once grown, so deriving in-process would keep it for the life of a
 * long command (a clone, an upgrade), and the calling thread stays free meanwhile. Only unlocking
 * (CLI unlock, init, passwd, clone) calls it, before anything is mounted.
 */
import { randomFillSync } from 'node:crypto';
import { createRequire } from 'node:module';
import { Worker } from 'node:worker_threads';
import { FormatError, WeakKdfParamsError } from '../errors.js';

export type KdfAlgorithm = 'argon2id13';

export interface KdfParams {
  algorithm: KdfAlgorithm;
  opsLimit: number;
  memLimitBytes: number;
  /** 16 bytes */
  salt: Uint8Array;
}

export interface KdfCost {
  opsLimit: number;
  memLimitBytes: number;
}

export const KDF_ALGORITHM: KdfAlgorithm = 'argon2id13';
export const KDF_SALT_BYTES = 16;
export const KEK_BYTES = 32;

const MiB = 1024 * 1024;

/**
 * RFC 9106's choice where memory is limited (section 4: t = 3 passes, 64 MiB), the memory
 * gocryptfs's and restic's scrypt defaults use too. Existing vaults keep the cost they were made
 * with; a passphrase change re-wraps at this default or the vault's cost, whichever is higher.
 */
export const DEFAULT_KDF: Readonly<KdfCost> = Object.freeze({ opsLimit: 3, memLimitBytes: 64 * MiB });

/** Anything cheaper is refused when reading a header, so a tampered header cannot downgrade. */
export const KDF_FLOOR: Readonly<KdfCost> = Object.freeze({ opsLimit: 2, memLimitBytes: 64 * MiB });

/**
 * A header asking for more than this would make unlocking hang or exhaust memory (the
 * WebAssembly Argon2id cannot address 2 GiB at all; 1 GiB at ops 3 already takes ~5 s here).
 */
export const KDF_CEILING: Readonly<KdfCost> = Object.freeze({ opsLimit: 64, memLimitBytes: 1024 * MiB });

/**
 * Throws WeakKdfParamsError below the floor or for an unknown algorithm, FormatError for
 * values that are not usable at all. Runs before any derivation.
 */
export function checkKdfParams(params: KdfParams): void {
  if (params.algorithm !== KDF_ALGORITHM) {
    throw new WeakKdfParamsError(`unknown KDF algorithm ${JSON.stringify(String(params.algorithm))}; only ${KDF_ALGORITHM} is accepted`);
  }
  const { opsLimit, memLimitBytes } = params;
  if (!Number.isSafeInteger(opsLimit) || !Number.isSafeInteger(memLimitBytes)) {
    throw new FormatError('KDF opsLimit and memLimitBytes must be integers', 'CORRUPT_FORMAT');
  }
  if (opsLimit < KDF_FLOOR.opsLimit || memLimitBytes < KDF_FLOOR.memLimitBytes) {
    throw new WeakKdfParamsError(
      `KDF parameters (opsLimit ${opsLimit}, memLimit ${memLimitBytes} bytes) are below the floor ` +
        `(opsLimit ${KDF_FLOOR.opsLimit}, memLimit ${KDF_FLOOR.memLimitBytes} bytes); refusing to use them`,
    );
  }
  if (opsLimit > KDF_CEILING.opsLimit || memLimitBytes > KDF_CEILING.memLimitBytes) {
    throw new FormatError(
      `KDF parameters (opsLimit ${opsLimit}, memLimit ${memLimitBytes} bytes) exceed what this version supports ` +
        `(opsLimit ${KDF_CEILING.opsLimit}, memLimit ${KDF_CEILING.memLimitBytes} bytes)`,
      'UNSUPPORTED_FORMAT',
    );
  }
  if (!(params.salt instanceof Uint8Array) || params.salt.length !== KDF_SALT_BYTES) {
    throw new FormatError(`KDF salt must be ${KDF_SALT_BYTES} bytes`, 'CORRUPT_FORMAT');
  }
}

export function newKdfParams(cost: KdfCost = DEFAULT_KDF): KdfParams {
  const params: KdfParams = {
    algorithm: KDF_ALGORITHM,
    opsLimit: cost.opsLimit,
    memLimitBytes: cost.memLimitBytes,
    salt: randomFillSync(new Uint8Array(KDF_SALT_BYTES)),
  };
  checkKdfParams(params);
  return params;
}

/** The worker's whole program (CommonJS, so that it loads the same libsodium build by path). */
const WORKER_SOURCE = `
const { parentPort, workerData: w } = require('node:worker_threads');
const sodium = require(w.sodiumPath);
sodium.ready.then(() => {
  try {
    parentPort.postMessage({ kek: sodium.crypto_pwhash(w.bytes, w.password, w.salt, w.opsLimit, w.memLimitBytes, sodium.crypto_pwhash_ALG_ARGON2ID13) });
  } catch (err) {
    parentPort.postMessage({ error: String(err && err.message || err) });
  } finally {
    w.password.fill(0);
  }
});
`;

const sodiumPath = createRequire(import.meta.url).resolve('libsodium-wrappers-sumo');

/**
 * The passphrase is NFC-normalised first so that the same passphrase typed on systems whose
 * input methods produce different Unicode forms (macOS tends towards NFD) unlocks the vault.
 */
export async function deriveKek(passphrase: string, params: KdfParams): Promise<Uint8Array> {
  checkKdfParams(params);
  const password = new Uint8Array(Buffer.from(passphrase.normalize('NFC'), 'utf8'));
  const workerData = { sodiumPath, password, salt: params.salt, opsLimit: params.opsLimit, memLimitBytes: params.memLimitBytes, bytes: KEK_BYTES };
  try {
    const worker = new Worker(WORKER_SOURCE, { eval: true, workerData });
    // Settled at exit, once the worker's memory is gone, with what it sent before.
    return await new Promise<Uint8Array>((resolve, reject) => {
      let reply: { kek?: Uint8Array; error?: string } = { error: 'the worker ended without an answer' };
      let failure: Error | undefined;
      worker.once('message', (r: typeof reply) => (reply = r));
      worker.once('error', (err) => (failure = err));
      worker.once('exit', () => {
        if (reply.kek) resolve(reply.kek);
        else reject(failure ?? new Error(`deriving the key from the passphrase failed: ${reply.error}`));
      });
    });
  } finally {
    password.fill(0);
  }
}
