/**
 * Sealed objects: the one byte format for data chunks, index snapshot parts and manifests,
 * identical in the local chunk cache and on the remote, so an object can move between them
 * without being re-encrypted. See docs/FORMAT.md, "Sealed objects".
 */
import { randomFillSync } from 'node:crypto';
import { AuthenticationError, FormatError } from '../errors.js';
import { KEY_BYTES, NONCE_BYTES, TAG_BYTES, xchachaOpen, xchachaSealParts } from './aead.js';

export enum ObjectType {
  DataChunk = 1,
  SnapshotPart = 2,
  Manifest = 3,
  JournalEntry = 4,
  DeviceRecord = 5,
  CheckpointHead = 6,
  CheckpointPart = 7,
}

export interface ObjectContext {
  /** 16 bytes */
  vaultId: Uint8Array;
  /** u32 */
  keyEpoch: number;
  key: Uint8Array;
}

export interface SealOptions {
  /** Pad to a multiple of PAD_BLOCK so the exact length (e.g. of a file's last chunk) does not leak. */
  pad?: boolean;
}

export const OBJECT_MAGIC = Buffer.from('CFOB', 'ascii');
export const OBJECT_FORMAT_VERSION = 1;
export const OBJECT_HEADER_BYTES = 12;
export const OBJECT_OVERHEAD = OBJECT_HEADER_BYTES + NONCE_BYTES + TAG_BYTES;
export const OBJECT_ID_BYTES = 32;
export const VAULT_ID_BYTES = 16;
export const PAD_BLOCK = 4096;
export const FLAG_PADDED = 0x01;
const KNOWN_FLAGS = FLAG_PADDED;

const TYPE_NAMES: Record<ObjectType, string> = {
  [ObjectType.DataChunk]: 'data chunk',
  [ObjectType.SnapshotPart]: 'snapshot part',
  [ObjectType.Manifest]: 'manifest',
  [ObjectType.JournalEntry]: 'journal entry',
  [ObjectType.DeviceRecord]: 'device record',
  [ObjectType.CheckpointHead]: 'checkpoint',
  [ObjectType.CheckpointPart]: 'checkpoint part',
};

// ISO/IEC 7816-4 padding never exceeds one block, so one shared block of 0x80 ‖ zeros
// supplies every possible tail without allocating.
const PAD_TAIL = Buffer.alloc(PAD_BLOCK);
PAD_TAIL[0] = 0x80;

function typeName(type: ObjectType): string {
  return TYPE_NAMES[type] ?? `type ${type}`;
}

function checkContext(ctx: ObjectContext, type: ObjectType, objectId: Uint8Array): void {
  if (ctx.vaultId.length !== VAULT_ID_BYTES) throw new RangeError(`vault id must be ${VAULT_ID_BYTES} bytes, got ${ctx.vaultId.length}`);
  if (!Number.isInteger(ctx.keyEpoch) || ctx.keyEpoch < 0 || ctx.keyEpoch > 0xffffffff) {
    throw new RangeError(`key epoch must be a u32, got ${ctx.keyEpoch}`);
  }
  if (ctx.key.length !== KEY_BYTES) throw new RangeError(`object key must be ${KEY_BYTES} bytes, got ${ctx.key.length}`);
  if (objectId.length !== OBJECT_ID_BYTES) throw new RangeError(`object id must be ${OBJECT_ID_BYTES} bytes, got ${objectId.length}`);
  if (TYPE_NAMES[type] === undefined) throw new RangeError(`unknown object type ${type}`);
}

function encodeHeader(type: ObjectType, flags: number, keyEpoch: number): Buffer {
  const header = Buffer.alloc(OBJECT_HEADER_BYTES);
  OBJECT_MAGIC.copy(header, 0);
  header[4] = OBJECT_FORMAT_VERSION;
  header[5] = type;
  header[6] = flags;
  header[7] = 0;
  header.writeUInt32BE(keyEpoch, 8);
  return header;
}

/** The AD binds the object to its vault, id, type, epoch and format version. */
function associatedData(header: Uint8Array, vaultId: Uint8Array, objectId: Uint8Array): Buffer {
  const ad = Buffer.allocUnsafe(OBJECT_HEADER_BYTES + VAULT_ID_BYTES + OBJECT_ID_BYTES);
  ad.set(header, 0);
  ad.set(vaultId, OBJECT_HEADER_BYTES);
  ad.set(objectId, OBJECT_HEADER_BYTES + VAULT_ID_BYTES);
  return ad;
}

export function paddedLength(plaintextLength: number): number {
  return (Math.floor(plaintextLength / PAD_BLOCK) + 1) * PAD_BLOCK;
}

/** Size of the sealed object for a plaintext of this length. */
export function sealedLength(plaintextLength: number, opts?: SealOptions): number {
  return OBJECT_OVERHEAD + (opts?.pad ? paddedLength(plaintextLength) : plaintextLength);
}

export function sealObject(
  ctx: ObjectContext,
  type: ObjectType,
  objectId: Uint8Array,
  plaintext: Uint8Array,
  opts?: SealOptions,
): Buffer {
  // Node's OpenSSL CSPRNG, not libsodium's randombytes_buf: the WebAssembly build pulls
  // entropy from JavaScript a few bytes at a time (about 70 µs per nonce here).
  return sealObjectWithNonce(ctx, type, objectId, plaintext, randomFillSync(Buffer.allocUnsafe(NONCE_BYTES)), opts);
}

/**
 * Deterministic sealing for golden vectors and tests. Production code must use sealObject:
 * reusing a nonce under one key breaks both confidentiality and authenticity.
 */
export function sealObjectWithNonce(
  ctx: ObjectContext,
  type: ObjectType,
  objectId: Uint8Array,
  plaintext: Uint8Array,
  nonce: Uint8Array,
  opts?: SealOptions,
): Buffer {
  checkContext(ctx, type, objectId);
  if (nonce.length !== NONCE_BYTES) throw new RangeError(`nonce must be ${NONCE_BYTES} bytes, got ${nonce.length}`);
  const pad = opts?.pad === true;
  const header = encodeHeader(type, pad ? FLAG_PADDED : 0, ctx.keyEpoch);
  const prefix = Buffer.concat([header, nonce]);
  const parts = pad ? [plaintext, PAD_TAIL.subarray(0, paddedLength(plaintext.length) - plaintext.length)] : [plaintext];
  return xchachaSealParts(ctx.key, nonce, parts, associatedData(header, ctx.vaultId, objectId), prefix);
}

function unpad(padded: Buffer, idHex: string, type: ObjectType): Buffer {
  const fail = (): never => {
    throw new FormatError(`object ${idHex} (${typeName(type)}) authenticated but its padding is malformed`, 'CORRUPT_FORMAT');
  };
  if (padded.length === 0 || padded.length % PAD_BLOCK !== 0) fail();
  const stop = padded.length - PAD_BLOCK;
  let i = padded.length - 1;
  while (i >= stop && padded[i] === 0) i--;
  if (i < stop || padded[i] !== 0x80) fail();
  return padded.subarray(0, i);
}

/**
 * Returns the plaintext only after the tag has verified; anything else about the object
 * that does not match what the caller expects is reported as an authentication failure,
 * except an unknown format version, which is reported as unsupported so that an older
 * Coffer reading a newer vault says so instead of claiming tampering.
 */
export function openObject(ctx: ObjectContext, type: ObjectType, objectId: Uint8Array, sealed: Uint8Array): Buffer {
  checkContext(ctx, type, objectId);
  const idHex = Buffer.from(objectId.buffer, objectId.byteOffset, objectId.byteLength).toString('hex');
  const reject = (why: string): never => {
    throw new AuthenticationError(`object ${idHex} (${typeName(type)}) failed authentication: ${why}`, idHex);
  };
  if (sealed.length < OBJECT_OVERHEAD) reject(`only ${sealed.length} bytes, shorter than the ${OBJECT_OVERHEAD}-byte overhead`);
  const bytes = Buffer.from(sealed.buffer, sealed.byteOffset, sealed.byteLength);
  const header = bytes.subarray(0, OBJECT_HEADER_BYTES);
  if (!header.subarray(0, 4).equals(OBJECT_MAGIC)) reject('bad magic');
  if (header[4] !== OBJECT_FORMAT_VERSION) {
    throw new FormatError(
      `object ${idHex} (${typeName(type)}) has format version ${header[4]}; this Coffer reads version ${OBJECT_FORMAT_VERSION}`,
      'UNSUPPORTED_FORMAT',
    );
  }
  if (header[5] !== type) reject(`header says object type ${header[5]}, expected ${type}`);
  const flags = header[6]!;
  if ((flags & ~KNOWN_FLAGS) !== 0) reject(`unknown flags 0x${flags.toString(16)}`);
  if (header[7] !== 0) reject('reserved byte is not zero');
  const epoch = header.readUInt32BE(8);
  if (epoch !== ctx.keyEpoch) reject(`sealed under key epoch ${epoch}, expected ${ctx.keyEpoch}`);
  const nonce = bytes.subarray(OBJECT_HEADER_BYTES, OBJECT_HEADER_BYTES + NONCE_BYTES);
  let plaintext: Buffer;
  try {
    plaintext = xchachaOpen(ctx.key, nonce, bytes.subarray(OBJECT_HEADER_BYTES + NONCE_BYTES), associatedData(header, ctx.vaultId, objectId), idHex);
  } catch (err) {
    if (err instanceof AuthenticationError) reject('tag does not verify');
    throw err;
  }
  return (flags & FLAG_PADDED) !== 0 ? unpad(plaintext, idHex, type) : plaintext;
}
