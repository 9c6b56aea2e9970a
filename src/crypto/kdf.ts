/**
 * Passphrase → key-encryption key (KEK) with Argon2id.
 *
 * deriveKek() is synchronous and deliberately slow (about 1 s and 256 MiB at the defaults).
 * It must never run on the thread that serves FUSE: every file operation would stall behind
 * it. Only unlocking (CLI unlock, passwd) calls it, before anything is mounted.
 */
import { randomFillSync } from 'node:crypto';
import { FormatError, WeakKdfParamsError } from '../errors.js';
import { sodium } from './sodium.js';

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

export const DEFAULT_KDF: Readonly<KdfCost> = Object.freeze({ opsLimit: 3, memLimitBytes: 256 * MiB });

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

/**
 * The passphrase is NFC-normalised first so that the same passphrase typed on systems whose
 * input methods produce different Unicode forms (macOS tends towards NFD) unlocks the vault.
 */
export function deriveKek(passphrase: string, params: KdfParams): Uint8Array {
  checkKdfParams(params);
  const s = sodium();
  const password = Buffer.from(passphrase.normalize('NFC'), 'utf8');
  try {
    return s.crypto_pwhash(KEK_BYTES, password, params.salt, params.opsLimit, params.memLimitBytes, s.crypto_pwhash_ALG_ARGON2ID13);
  } finally {
    password.fill(0);
  }
}
