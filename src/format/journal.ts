/**
 * The remote metadata of format 2 (docs/FORMAT.md, "Journals"): each device appends sealed,
 * numbered, hash-chained journal entries under keys only it writes, and registers itself once in
 * a device record. An entry carries node records: the whole state of one node (file, directory,
 * symlink) as the device saw it after its changes, stamped and naming the versions it supersedes.
 *
 * This module is bytes and shapes only: no I/O, no index. Everything it parses is checked field
 * by field, because a sealed object from a buggy or newer writer must fail clearly, not half-apply.
 */
import { CofferError } from '../errors.js';
import { sodium } from '../crypto/sodium.js';

export const DEVICE_ID_BYTES = 16;
export const NODE_ID_BYTES = 16;
/** The root directory's node id: 16 zero bytes. */
export const ROOT_NODE_ID = '0'.repeat(NODE_ID_BYTES * 2);
/** An entry's records are cut so that one sealed entry stays near this size. */
export const ENTRY_TARGET_BYTES = 1024 * 1024;

/**
 * A version stamp: `<lamport clock, 12 hex digits>.<device id hex>`. Comparing two stamps as
 * strings orders them by clock, then device: the one total order every device agrees on.
 */
export type Stamp = string;

export function makeStamp(clock: number, deviceHex: string): Stamp {
  return `${clock.toString(16).padStart(12, '0')}.${deviceHex}`;
}

export function stampClock(stamp: Stamp): number {
  return parseInt(stamp.slice(0, 12), 16);
}

export function stampDevice(stamp: Stamp): string {
  return stamp.slice(13);
}

const STAMP_RE = /^[0-9a-f]{12}\.[0-9a-f]{32}$/;
const HEX32_RE = /^[0-9a-f]{32}$/;
const HEX64_RE = /^[0-9a-f]{64}$/;

/** What a node is, apart from which version of it this is. */
export interface NodeBody {
  /** st_mode with the type bits. */
  mode: number;
  uid: number;
  gid: number;
  rdev: number;
  atimeMs: number;
  mtimeMs: number;
  ctimeMs: number;
  /** A symlink's target. */
  target: string | null;
  size: number;
  /** The chunk map: [index, chunk id hex, plaintext bytes, sealed bytes]; a missing index is a hole. */
  chunks: [number, string, number, number][];
  /** Extended attributes, sorted by name: [name, value base64]. */
  xattrs: [string, string][];
  /** Where the node is: [parent node id hex, name]; a directory has one, a file one per hard link. */
  names: [string, string][];
  /** Deleted: `names` says where it was. */
  deleted: boolean;
  /** The stamp of the version that put the node at `names` (kept while the names stay): of two nodes with one name, the one placed first keeps it. */
  placed: Stamp;
}

export interface NodeRecord extends NodeBody {
  id: string;
  stamp: Stamp;
  /** Stamps of the versions of this node this one supersedes (what the device had seen). */
  prev: Stamp[];
  /** Wall-clock time the device made this version (epoch ms): names conflicted copies. */
  time: number;
  /** A conflicted copy made real: the version of another node it was derived from, no longer a head there. */
  retires?: [string, Stamp];
}

export interface JournalEntry {
  format: 'coffer-journal';
  version: 2;
  device: string;
  seq: number;
  /** Hex BLAKE2b-256 of the device's previous sealed entry; null for seq 1. */
  previous: string | null;
  created: string;
  /** The device's Lamport clock after this entry: every stamp in it is at most this. */
  clock: number;
  records: NodeRecord[];
}

export interface DeviceRecord {
  format: 'coffer-device';
  version: 2;
  device: string;
  /** What the user calls the device (its host name unless given). */
  name: string;
  created: string;
}

/** Object id of entry `seq` of a device: device id (16) ‖ 8 zero bytes ‖ seq (u64 BE). */
export function journalObjectId(deviceHex: string, seq: number): Buffer {
  const id = Buffer.alloc(32);
  Buffer.from(deviceHex, 'hex').copy(id, 0);
  id.writeBigUInt64BE(BigInt(seq), 24);
  return id;
}

/** Object id of a device record: device id (16) ‖ 16 bytes 0xff. */
export function deviceObjectId(deviceHex: string): Buffer {
  const id = Buffer.alloc(32, 0xff);
  Buffer.from(deviceHex, 'hex').copy(id, 0);
  return id;
}

/** BLAKE2b-256 of a sealed object: what the next entry names as `previous`. */
export function sealedHash(sealed: Uint8Array): string {
  return Buffer.from(sodium().crypto_generichash(32, sealed, null)).toString('hex');
}

function corrupt(what: string): never {
  throw new CofferError('CORRUPT_FORMAT', what);
}

function isInt(v: unknown, min = 0): v is number {
  return typeof v === 'number' && Number.isSafeInteger(v) && v >= min;
}

function checkBody(r: Record<string, unknown>, where: string): void {
  for (const key of ['mode', 'uid', 'gid', 'rdev', 'size'] as const) if (!isInt(r[key])) corrupt(`${where}: ${key} must be a non-negative integer`);
  for (const key of ['atimeMs', 'mtimeMs', 'ctimeMs'] as const) if (!isInt(r[key], Number.MIN_SAFE_INTEGER)) corrupt(`${where}: ${key} must be an integer`);
  if (r.target !== null && typeof r.target !== 'string') corrupt(`${where}: target must be a string or null`);
  if (typeof r.deleted !== 'boolean') corrupt(`${where}: deleted must be a boolean`);
  if (typeof r.placed !== 'string' || !STAMP_RE.test(r.placed)) corrupt(`${where}: placed must be a stamp`);
  if (!Array.isArray(r.chunks)) corrupt(`${where}: chunks must be a list`);
  for (const c of r.chunks as unknown[]) {
    if (!Array.isArray(c) || c.length !== 4 || !isInt(c[0]) || typeof c[1] !== 'string' || !HEX64_RE.test(c[1]) || !isInt(c[2]) || !isInt(c[3])) {
      corrupt(`${where}: a chunk must be [index, id hex, plain bytes, sealed bytes]`);
    }
  }
  if (!Array.isArray(r.xattrs) || !(r.xattrs as unknown[]).every((x) => Array.isArray(x) && x.length === 2 && typeof x[0] === 'string' && typeof x[1] === 'string')) {
    corrupt(`${where}: xattrs must be [name, base64] pairs`);
  }
  if (!Array.isArray(r.names) || !(r.names as unknown[]).every((n) => Array.isArray(n) && n.length === 2 && typeof n[0] === 'string' && HEX32_RE.test(n[0]) && typeof n[1] === 'string' && n[1] !== '' && !n[1].includes('/'))) {
    corrupt(`${where}: names must be [parent id hex, name] pairs`);
  }
}

function checkRecord(raw: unknown, device: string, clock: number, where: string): NodeRecord {
  if (typeof raw !== 'object' || raw === null) corrupt(`${where}: a record must be an object`);
  const r = raw as Record<string, unknown>;
  if (typeof r.id !== 'string' || !HEX32_RE.test(r.id)) corrupt(`${where}: id must be 32 hex digits`);
  if (typeof r.stamp !== 'string' || !STAMP_RE.test(r.stamp)) corrupt(`${where}: stamp is malformed`);
  if (stampDevice(r.stamp) !== device) corrupt(`${where}: stamp ${r.stamp} is not of device ${device}`);
  if (stampClock(r.stamp) > clock) corrupt(`${where}: stamp ${r.stamp} is past the entry's clock ${clock}`);
  if (!Array.isArray(r.prev) || !(r.prev as unknown[]).every((p) => typeof p === 'string' && STAMP_RE.test(p) && p < (r.stamp as string))) {
    corrupt(`${where}: prev must list earlier stamps`);
  }
  if (!isInt(r.time)) corrupt(`${where}: time must be an integer`);
  if (r.retires !== undefined) {
    const t = r.retires as unknown[];
    if (!Array.isArray(t) || t.length !== 2 || typeof t[0] !== 'string' || !HEX32_RE.test(t[0]) || typeof t[1] !== 'string' || !STAMP_RE.test(t[1])) {
      corrupt(`${where}: retires must be [id, stamp]`);
    }
  }
  checkBody(r, where);
  return r as unknown as NodeRecord;
}

export function encodeJournalEntry(entry: JournalEntry): Buffer {
  return Buffer.from(JSON.stringify(entry), 'utf8');
}

/** Parses an opened entry and checks it is entry `seq` of `device`, record by record. */
export function decodeJournalEntry(plaintext: Buffer, device: string, seq: number): JournalEntry {
  let raw: Record<string, unknown>;
  try {
    raw = JSON.parse(plaintext.toString('utf8')) as Record<string, unknown>;
  } catch {
    corrupt(`journal entry ${seq} of device ${device} is not JSON`);
  }
  const where = `journal entry ${seq} of device ${device}`;
  if (raw.format !== 'coffer-journal') corrupt(`${where}: not a journal entry`);
  if (raw.version !== 2) throw new CofferError('UNSUPPORTED_FORMAT', `${where} has version ${String(raw.version)}; this Coffer reads version 2`);
  if (raw.device !== device || raw.seq !== seq) corrupt(`${where} says it is entry ${String(raw.seq)} of device ${String(raw.device)}`);
  if (raw.previous !== null && (typeof raw.previous !== 'string' || !HEX64_RE.test(raw.previous))) corrupt(`${where}: previous is malformed`);
  if ((seq === 1) !== (raw.previous === null)) corrupt(`${where}: previous must be null exactly for the first entry`);
  if (!isInt(raw.clock, 1)) corrupt(`${where}: clock must be a positive integer`);
  if (typeof raw.created !== 'string') corrupt(`${where}: created must be a string`);
  if (!Array.isArray(raw.records)) corrupt(`${where}: records must be a list`);
  const records = (raw.records as unknown[]).map((r, i) => checkRecord(r, device, raw.clock as number, `${where}, record ${i}`));
  const ids = new Set(records.map((r) => r.id));
  if (ids.size !== records.length) corrupt(`${where}: a node appears twice`);
  return { ...(raw as unknown as JournalEntry), records };
}

export function encodeDeviceRecord(record: DeviceRecord): Buffer {
  return Buffer.from(JSON.stringify(record), 'utf8');
}

export function decodeDeviceRecord(plaintext: Buffer, device: string): DeviceRecord {
  let raw: Record<string, unknown>;
  try {
    raw = JSON.parse(plaintext.toString('utf8')) as Record<string, unknown>;
  } catch {
    corrupt(`the record of device ${device} is not JSON`);
  }
  if (raw.format !== 'coffer-device' || raw.version !== 2 || raw.device !== device || typeof raw.name !== 'string' || typeof raw.created !== 'string') {
    corrupt(`the record of device ${device} is malformed`);
  }
  return raw as unknown as DeviceRecord;
}

/** Cuts records into groups whose encoded size stays near ENTRY_TARGET_BYTES (a group holds one record at least). */
export function groupRecords(records: NodeRecord[], targetBytes = ENTRY_TARGET_BYTES): NodeRecord[][] {
  const groups: NodeRecord[][] = [];
  let current: NodeRecord[] = [];
  let bytes = 0;
  for (const record of records) {
    const size = JSON.stringify(record).length + 1;
    if (current.length > 0 && bytes + size > targetBytes) {
      groups.push(current);
      current = [];
      bytes = 0;
    }
    current.push(record);
    bytes += size;
  }
  if (current.length > 0) groups.push(current);
  return groups;
}
