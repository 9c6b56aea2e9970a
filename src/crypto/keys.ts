/**
 * Per-purpose subkeys of the vault master key. Keeping purposes apart means a weakness or
 * a leak in one use (say, chunk ids that an attacker can test against) says nothing about
 * the keys that encrypt data or authenticate the header.
 */
import { timingSafeEqual } from 'node:crypto';
import { sodium } from './sodium.js';

export const MASTER_KEY_BYTES = 32;
export const SUBKEY_BYTES = 32;
export const CHUNK_ID_BYTES = 32;

/** libsodium's KDF context is exactly 8 bytes; changing it changes every subkey. */
export const KDF_CONTEXT = 'coffer01';

export const SubkeyId = Object.freeze({ chunk: 1, chunkId: 2, metadata: 3, configMac: 4 } as const);

export interface VaultKeys {
  /** Seals data chunks. */
  chunk: Uint8Array;
  /** Keys the BLAKE2b chunk ids. */
  chunkId: Uint8Array;
  /** Seals index snapshots and manifests. */
  metadata: Uint8Array;
  /** Authenticates the vault header (and any later configuration). */
  configMac: Uint8Array;
}

function toBuffer(bytes: Uint8Array): Buffer {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

export function deriveVaultKeys(masterKey: Uint8Array): VaultKeys {
  if (masterKey.length !== MASTER_KEY_BYTES) {
    throw new RangeError(`master key must be ${MASTER_KEY_BYTES} bytes, got ${masterKey.length}`);
  }
  const s = sodium();
  const derive = (id: number): Uint8Array => s.crypto_kdf_derive_from_key(SUBKEY_BYTES, id, KDF_CONTEXT, masterKey);
  return {
    chunk: derive(SubkeyId.chunk),
    chunkId: derive(SubkeyId.chunkId),
    metadata: derive(SubkeyId.metadata),
    configMac: derive(SubkeyId.configMac),
  };
}

/** Keyed BLAKE2b-256. */
export function keyedHash(key: Uint8Array, data: Uint8Array): Buffer {
  if (key.length < 16 || key.length > 64) throw new RangeError(`BLAKE2b key must be 16..64 bytes, got ${key.length}`);
  return toBuffer(sodium().crypto_generichash(32, data, key));
}

/**
 * Keyed so that dedup works inside one vault while nobody without the key can confirm that
 * a vault holds a known file.
 */
export function chunkId(keys: VaultKeys, plaintext: Uint8Array): Buffer {
  return keyedHash(keys.chunkId, plaintext);
}

/** The read path re-checks every opened chunk against the id it was fetched under. */
export function chunkIdMatches(keys: VaultKeys, plaintext: Uint8Array, expectedId: Uint8Array): boolean {
  if (expectedId.length !== CHUNK_ID_BYTES) return false;
  return timingSafeEqual(chunkId(keys, plaintext), expectedId);
}

/** Best effort: JavaScript may hold other copies, but the ones we own should not linger. */
export function wipeVaultKeys(keys: VaultKeys): void {
  keys.chunk.fill(0);
  keys.chunkId.fill(0);
  keys.metadata.fill(0);
  keys.configMac.fill(0);
}
