/**
 * The vault header (vault.json): everything needed, besides the passphrase, to turn a remote
 * full of ciphertext back into a vault. It is public: the wrapped key is bound to the KDF
 * parameters, vault id and key epoch through the AEAD's associated data, and every field is
 * covered by a MAC under a subkey of the master key. See docs/FORMAT.md, "Vault header".
 */
import { randomFillSync, timingSafeEqual } from 'node:crypto';
import { AuthenticationError, FormatError, WrongPassphraseError } from '../errors.js';
import { KEY_BYTES, NONCE_BYTES, TAG_BYTES, xchachaOpen, xchachaSeal } from './aead.js';
import { DEFAULT_KDF, KDF_SALT_BYTES, checkKdfParams, deriveKek, newKdfParams, type KdfAlgorithm, type KdfParams } from './kdf.js';
import { MASTER_KEY_BYTES, deriveVaultKeys, keyedHash, wipeVaultKeys } from './keys.js';
import { PAD_BLOCK, VAULT_ID_BYTES } from './objects.js';

export const HEADER_FORMAT = 'coffer-vault';
/** The version `init` writes; READABLE_HEADER_VERSIONS are the ones this Coffer opens (1 is upgraded at mount). */
export const HEADER_VERSION = 2;
export const READABLE_HEADER_VERSIONS: readonly number[] = [1, 2];
export const HEADER_FILE_NAME = 'vault.json';
export const WRAP_AD_LABEL = 'coffer-vault-key-v1';
export const WRAPPED_KEY_BYTES = NONCE_BYTES + MASTER_KEY_BYTES + TAG_BYTES;
export const HEADER_MAC_BYTES = 32;
export const MIN_CHUNK_SIZE = PAD_BLOCK;
export const MAX_CHUNK_SIZE = 64 * 1024 * 1024;

export interface VaultHeader {
  format: 'coffer-vault';
  version: 1 | 2;
  /** 32 lowercase hex chars */
  vaultId: string;
  /** ISO 8601 UTC, as Date.prototype.toISOString writes it */
  created: string;
  chunkSize: number;
  keyEpoch: number;
  kdf: { algorithm: KdfAlgorithm; opsLimit: number; memLimitBytes: number; /** base64 */ salt: string };
  /** base64 of nonce(24) ‖ ciphertext(32) ‖ tag(16) of the master key */
  wrappedKey: string;
  /** base64 keyed BLAKE2b-256 (configMac subkey) of the canonical JSON of every other field */
  mac: string;
}

export interface UnlockedVault {
  header: VaultHeader;
  masterKey: Uint8Array;
}

const HEADER_KEYS = ['chunkSize', 'created', 'format', 'kdf', 'keyEpoch', 'mac', 'vaultId', 'version', 'wrappedKey'];
const KDF_KEYS = ['algorithm', 'memLimitBytes', 'opsLimit', 'salt'];
const ISO_UTC = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?Z$/;
const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;

function corrupt(message: string): FormatError {
  return new FormatError(`vault header: ${message}`, 'CORRUPT_FORMAT');
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value) &&
    (Object.getPrototypeOf(value) === Object.prototype || Object.getPrototypeOf(value) === null);
}

function checkExactKeys(obj: Record<string, unknown>, expected: readonly string[], where: string): void {
  const keys = Object.keys(obj).sort();
  const missing = expected.filter((k) => !keys.includes(k));
  const extra = keys.filter((k) => !expected.includes(k));
  if (missing.length > 0 || extra.length > 0) {
    const parts = [missing.length > 0 ? `missing ${missing.join(', ')}` : '', extra.length > 0 ? `unexpected ${extra.join(', ')}` : ''];
    throw corrupt(`${where}: ${parts.filter(Boolean).join('; ')}`);
  }
}

function decodeBase64(value: unknown, bytes: number, field: string): Buffer {
  if (typeof value !== 'string' || !BASE64.test(value)) throw corrupt(`${field} is not base64`);
  const decoded = Buffer.from(value, 'base64');
  if (decoded.length !== bytes) throw corrupt(`${field} must decode to ${bytes} bytes, got ${decoded.length}`);
  return decoded;
}

function checkInteger(value: unknown, field: string, min: number, max: number): number {
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < min || value > max) {
    throw corrupt(`${field} must be an integer in [${min}, ${max}]`);
  }
  return value;
}

function checkChunkSize(chunkSize: unknown): number {
  const n = checkInteger(chunkSize, 'chunkSize', MIN_CHUNK_SIZE, MAX_CHUNK_SIZE);
  // A full chunk is stored unpadded, so its size must already be a whole number of pad blocks.
  if (n % PAD_BLOCK !== 0) throw corrupt(`chunkSize must be a multiple of ${PAD_BLOCK}`);
  return n;
}

/**
 * Strict shape check. Format and version are looked at first: a newer version may have other
 * fields, and must be reported as unsupported rather than corrupt.
 */
function validateHeader(raw: unknown): VaultHeader {
  if (!isPlainObject(raw)) throw corrupt('not a JSON object');
  if (raw.format !== HEADER_FORMAT) {
    throw new FormatError(`not a Coffer vault header (format ${JSON.stringify(raw.format ?? null)})`, 'UNSUPPORTED_FORMAT');
  }
  if (typeof raw.version !== 'number' || !Number.isSafeInteger(raw.version)) throw corrupt('version must be an integer');
  if (!READABLE_HEADER_VERSIONS.includes(raw.version)) {
    throw new FormatError(`vault header version ${raw.version} is not supported (this Coffer reads versions ${READABLE_HEADER_VERSIONS.join(' and ')})`, 'UNSUPPORTED_FORMAT');
  }
  checkExactKeys(raw, HEADER_KEYS, 'fields');
  if (typeof raw.vaultId !== 'string' || !/^[0-9a-f]{32}$/.test(raw.vaultId)) throw corrupt('vaultId must be 32 lowercase hex characters');
  if (typeof raw.created !== 'string' || !ISO_UTC.test(raw.created) || Number.isNaN(Date.parse(raw.created))) {
    throw corrupt('created must be an ISO 8601 UTC time');
  }
  const chunkSize = checkChunkSize(raw.chunkSize);
  const keyEpoch = checkInteger(raw.keyEpoch, 'keyEpoch', 1, 0xffffffff);
  const kdf = raw.kdf;
  if (!isPlainObject(kdf)) throw corrupt('kdf must be an object');
  checkExactKeys(kdf, KDF_KEYS, 'kdf fields');
  // An unknown algorithm name is a downgrade question, answered by checkKdfParams.
  if (typeof kdf.algorithm !== 'string') throw corrupt('kdf.algorithm must be a string');
  const opsLimit = checkInteger(kdf.opsLimit, 'kdf.opsLimit', 0, 0xffffffff);
  const memLimitBytes = checkInteger(kdf.memLimitBytes, 'kdf.memLimitBytes', 0, Number.MAX_SAFE_INTEGER);
  decodeBase64(kdf.salt, KDF_SALT_BYTES, 'kdf.salt');
  decodeBase64(raw.wrappedKey, WRAPPED_KEY_BYTES, 'wrappedKey');
  decodeBase64(raw.mac, HEADER_MAC_BYTES, 'mac');
  return {
    format: HEADER_FORMAT,
    version: raw.version as 1 | 2,
    vaultId: raw.vaultId,
    created: raw.created,
    chunkSize,
    keyEpoch,
    kdf: { algorithm: kdf.algorithm as KdfAlgorithm, opsLimit, memLimitBytes, salt: kdf.salt as string },
    wrappedKey: raw.wrappedKey as string,
    mac: raw.mac as string,
  };
}

export function kdfParamsOf(header: VaultHeader): KdfParams {
  return {
    algorithm: header.kdf.algorithm,
    opsLimit: header.kdf.opsLimit,
    memLimitBytes: header.kdf.memLimitBytes,
    salt: new Uint8Array(Buffer.from(header.kdf.salt, 'base64')),
  };
}

export function vaultIdBytes(header: Pick<VaultHeader, 'vaultId'>): Uint8Array {
  return new Uint8Array(Buffer.from(header.vaultId, 'hex'));
}

/**
 * Length-prefixed binary form of the KDF parameters for the wrap AD:
 * u8 len ‖ algorithm (ASCII) ‖ opsLimit u32 BE ‖ memLimitBytes u64 BE ‖ u8 len ‖ salt.
 */
export function encodeKdfParams(params: KdfParams): Buffer {
  const algorithm = Buffer.from(params.algorithm, 'utf8');
  if (algorithm.length > 255 || params.salt.length > 255) throw new RangeError('KDF parameters too long to encode');
  const out = Buffer.alloc(1 + algorithm.length + 4 + 8 + 1 + params.salt.length);
  let o = out.writeUInt8(algorithm.length, 0);
  o += algorithm.copy(out, o);
  o = out.writeUInt32BE(params.opsLimit, o);
  o = out.writeBigUInt64BE(BigInt(params.memLimitBytes), o);
  o = out.writeUInt8(params.salt.length, o);
  out.set(params.salt, o);
  return out;
}

/** Binds the wrapped key to the vault, the KDF parameters that protect it and the key epoch. */
export function wrapAssociatedData(vaultId: Uint8Array, params: KdfParams, keyEpoch: number): Buffer {
  const epoch = Buffer.alloc(4);
  epoch.writeUInt32BE(keyEpoch, 0);
  return Buffer.concat([Buffer.from(WRAP_AD_LABEL, 'utf8'), vaultId, encodeKdfParams(params), epoch]);
}

/** JSON with object keys sorted at every level and no whitespace; the MAC input. */
export function canonicalJson(value: unknown): string {
  if (value === null || typeof value === 'string' || typeof value === 'boolean') return JSON.stringify(value);
  if (typeof value === 'number') {
    if (!Number.isFinite(value)) throw new RangeError('canonical JSON cannot encode non-finite numbers');
    return JSON.stringify(value);
  }
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(',')}]`;
  if (isPlainObject(value)) {
    const keys = Object.keys(value).filter((k) => value[k] !== undefined).sort();
    return `{${keys.map((k) => `${JSON.stringify(k)}:${canonicalJson(value[k])}`).join(',')}}`;
  }
  throw new TypeError(`canonical JSON cannot encode ${typeof value}`);
}

function computeMac(header: Omit<VaultHeader, 'mac'> | VaultHeader, masterKey: Uint8Array): Buffer {
  const unsigned: Record<string, unknown> = { ...header };
  delete unsigned.mac;
  const keys = deriveVaultKeys(masterKey);
  try {
    return keyedHash(keys.configMac, Buffer.from(canonicalJson(unsigned), 'utf8'));
  } finally {
    wipeVaultKeys(keys);
  }
}

function macMatches(header: VaultHeader, masterKey: Uint8Array): boolean {
  return timingSafeEqual(computeMac(header, masterKey), Buffer.from(header.mac, 'base64'));
}

export interface BuildVaultHeaderInput {
  passphrase: string;
  chunkSize: number;
  kdf: KdfParams;
  vaultId: Uint8Array;
  masterKey: Uint8Array;
  wrapNonce: Uint8Array;
  created: string;
  keyEpoch: number;
  /** Default: HEADER_VERSION. */
  version?: 1 | 2;
}

/**
 * Deterministic construction from explicit inputs, for golden vectors and tests; everything
 * else goes through createVaultHeader or rewrapVaultHeader, which draw fresh randomness.
 */
export async function buildVaultHeader(input: BuildVaultHeaderInput): Promise<VaultHeader> {
  if (input.vaultId.length !== VAULT_ID_BYTES) throw new RangeError(`vault id must be ${VAULT_ID_BYTES} bytes`);
  if (input.masterKey.length !== MASTER_KEY_BYTES) throw new RangeError(`master key must be ${MASTER_KEY_BYTES} bytes`);
  if (input.wrapNonce.length !== NONCE_BYTES) throw new RangeError(`wrap nonce must be ${NONCE_BYTES} bytes`);
  checkChunkSize(input.chunkSize);
  checkInteger(input.keyEpoch, 'keyEpoch', 1, 0xffffffff);
  if (!ISO_UTC.test(input.created)) throw corrupt('created must be an ISO 8601 UTC time');
  checkKdfParams(input.kdf);
  const kek = await deriveKek(input.passphrase, input.kdf);
  let wrapped: Buffer;
  try {
    wrapped = xchachaSeal(kek, input.wrapNonce, input.masterKey, wrapAssociatedData(input.vaultId, input.kdf, input.keyEpoch));
  } finally {
    kek.fill(0);
  }
  const unsigned: Omit<VaultHeader, 'mac'> = {
    format: HEADER_FORMAT,
    version: input.version ?? HEADER_VERSION,
    vaultId: Buffer.from(input.vaultId).toString('hex'),
    created: input.created,
    chunkSize: input.chunkSize,
    keyEpoch: input.keyEpoch,
    kdf: {
      algorithm: input.kdf.algorithm,
      opsLimit: input.kdf.opsLimit,
      memLimitBytes: input.kdf.memLimitBytes,
      salt: Buffer.from(input.kdf.salt).toString('base64'),
    },
    wrappedKey: Buffer.concat([input.wrapNonce, wrapped]).toString('base64'),
  };
  return { ...unsigned, mac: computeMac(unsigned, input.masterKey).toString('base64') };
}

export async function createVaultHeader(passphrase: string, opts: { chunkSize: number; kdf?: KdfParams }): Promise<UnlockedVault> {
  const masterKey = randomFillSync(new Uint8Array(MASTER_KEY_BYTES));
  const header = await buildVaultHeader({
    passphrase,
    chunkSize: opts.chunkSize,
    kdf: opts.kdf ?? newKdfParams(),
    vaultId: randomFillSync(new Uint8Array(VAULT_ID_BYTES)),
    masterKey,
    wrapNonce: randomFillSync(new Uint8Array(NONCE_BYTES)),
    created: new Date().toISOString(),
    keyEpoch: 1,
  });
  return { header, masterKey };
}

/**
 * Order matters: shape, then the KDF floor (so a downgraded header costs nothing and unlocks
 * nothing), then Argon2id, then the unwrap, then the MAC. A failed unwrap cannot tell a wrong
 * passphrase from edited KDF parameters, vault id or epoch; both mean this passphrase does not
 * open this header.
 */
export async function unlockVaultHeader(raw: unknown, passphrase: string): Promise<UnlockedVault> {
  const header = validateHeader(raw);
  const kdf = kdfParamsOf(header);
  checkKdfParams(kdf);
  const kek = await deriveKek(passphrase, kdf);
  const wrapped = Buffer.from(header.wrappedKey, 'base64');
  let opened: Buffer;
  try {
    opened = xchachaOpen(kek, wrapped.subarray(0, NONCE_BYTES), wrapped.subarray(NONCE_BYTES), wrapAssociatedData(vaultIdBytes(header), kdf, header.keyEpoch));
  } catch (err) {
    if (err instanceof AuthenticationError) throw new WrongPassphraseError();
    throw err;
  } finally {
    kek.fill(0);
  }
  const masterKey = new Uint8Array(opened);
  opened.fill(0);
  if (masterKey.length !== KEY_BYTES || !macMatches(header, masterKey)) {
    masterKey.fill(0);
    throw new FormatError('vault header was modified: its MAC does not match', 'CORRUPT_FORMAT');
  }
  return { header, masterKey };
}

/**
 * For a process that receives an already-unwrapped master key (the daemon, from the CLI).
 * Without the passphrase the KEK is unknown, so the wrapped key cannot be compared with the
 * master key; the MAC is the check instead. It fails both when the header was edited and
 * when the key belongs to another vault, since a wrong key yields a wrong configMac subkey.
 */
export function verifyVaultHeader(raw: unknown, masterKey: Uint8Array): VaultHeader {
  const header = validateHeader(raw);
  checkKdfParams(kdfParamsOf(header));
  if (masterKey.length !== MASTER_KEY_BYTES) throw new RangeError(`master key must be ${MASTER_KEY_BYTES} bytes`);
  if (!macMatches(header, masterKey)) {
    throw new FormatError('vault header was modified, or the master key belongs to another vault: its MAC does not match', 'CORRUPT_FORMAT');
  }
  return header;
}

/**
 * Changing the passphrase re-wraps the same master key under a new salt (and, if given, new
 * cost; by default the current default or the header's cost, whichever is higher, so that a
 * change never makes guessing cheaper); nothing sealed under the master key changes. The header
 * is verified against the key first, so a wrong key can never be wrapped into a vault's header.
 */
export async function rewrapVaultHeader(header: VaultHeader, masterKey: Uint8Array, newPassphrase: string, kdf?: KdfParams): Promise<VaultHeader> {
  const current = verifyVaultHeader(header, masterKey);
  const cost = {
    opsLimit: Math.max(DEFAULT_KDF.opsLimit, current.kdf.opsLimit),
    memLimitBytes: Math.max(DEFAULT_KDF.memLimitBytes, current.kdf.memLimitBytes),
  };
  return buildVaultHeader({
    passphrase: newPassphrase,
    chunkSize: current.chunkSize,
    kdf: kdf ?? newKdfParams(cost),
    vaultId: vaultIdBytes(current),
    masterKey,
    wrapNonce: randomFillSync(new Uint8Array(NONCE_BYTES)),
    created: current.created,
    keyEpoch: current.keyEpoch,
    version: current.version,
  });
}

/** The same header at format version 2 (the keys and everything else unchanged), MACed anew. */
export function upgradeHeaderVersion(header: VaultHeader, masterKey: Uint8Array): VaultHeader {
  const current = verifyVaultHeader(header, masterKey);
  const { mac: _mac, ...unsigned } = { ...current, version: 2 as const };
  return { ...unsigned, mac: computeMac(unsigned, masterKey).toString('base64') };
}

export function serializeHeader(header: VaultHeader): string {
  return `${JSON.stringify(header, null, 2)}\n`;
}

export function parseHeaderJson(text: string): unknown {
  try {
    return JSON.parse(text) as unknown;
  } catch (err) {
    throw corrupt(`not valid JSON (${(err as Error).message})`);
  }
}
