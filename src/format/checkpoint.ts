/**
 * Checkpoints of format 2 (docs/FORMAT.md, "Checkpoints"): one device's compacted copy of the
 * vault's replicated state (every known version of every node, the merged tree, the devices), with,
 * for each device, how far into its journal it reaches. A clone reads the newest checkpoint and
 * then only the journal entries that follow it.
 *
 * A checkpoint is a head (what it covers, and the sealed hash of each part, in order) and parts
 * (rows of one table each, deflated before sealing). The head is created last, exclusively: a
 * checkpoint without its head does not exist.
 *
 * This module is bytes and shapes only: no I/O, no index.
 */
import { deflateRawSync, inflateRawSync } from 'node:zlib';
import { CofferError } from '../errors.js';

/** The tables a checkpoint carries, in the order its parts hold them (a loader needs nodes' inodes before their names). */
export const CHECKPOINT_TABLES = ['devices', 'inodes', 'entries', 'file_chunks', 'xattrs', 'nodes', 'derived', 'versions', 'superseded'] as const;
export type CheckpointTable = (typeof CHECKPOINT_TABLES)[number];

/**
 * A part is cut once its rows reach about this many bytes of JSON (before deflating). A reader
 * holds a part's rows at once; at 1 MiB they stay few enough to die young in the loader's heap.
 */
export const PART_TARGET_BYTES = 1024 * 1024;
/** What one part may inflate to at most (a writer stays far below). */
const PART_MAX_BYTES = 64 * 1024 * 1024;

export interface JournalMark {
  seq: number;
  /** Sealed hash of that entry (what entry seq + 1 names as `previous`). */
  hash: string;
}

export interface CheckpointHead {
  format: 'coffer-checkpoint';
  version: 2;
  device: string;
  seq: number;
  created: string;
  /** The writer's Lamport clock: above every stamp the checkpoint holds. */
  clock: number;
  /** For each device, the last entry of its journal the checkpoint includes. */
  covers: Record<string, JournalMark>;
  /** Sealed hash of each part, in order. */
  parts: string[];
  /** Rows per table (for progress and a check of the whole). */
  rows: Partial<Record<CheckpointTable, number>>;
}

export interface CheckpointPart {
  format: 'coffer-checkpoint-part';
  version: 2;
  device: string;
  seq: number;
  part: number;
  table: CheckpointTable;
  rows: unknown[][];
}

/** Object id of checkpoint `seq`'s head: device id (16) ‖ 0x01 ‖ 7 zero bytes ‖ seq (u64 BE). */
export function checkpointObjectId(deviceHex: string, seq: number): Buffer {
  const id = Buffer.alloc(32);
  Buffer.from(deviceHex, 'hex').copy(id, 0);
  id[16] = 0x01;
  id.writeBigUInt64BE(BigInt(seq), 24);
  return id;
}

/** Object id of part `part` of checkpoint `seq`: device id (16) ‖ 0x02 ‖ 3 zero bytes ‖ part (u32 BE) ‖ seq (u64 BE). */
export function checkpointPartObjectId(deviceHex: string, seq: number, part: number): Buffer {
  const id = Buffer.alloc(32);
  Buffer.from(deviceHex, 'hex').copy(id, 0);
  id[16] = 0x02;
  id.writeUInt32BE(part, 20);
  id.writeBigUInt64BE(BigInt(seq), 24);
  return id;
}

function corrupt(what: string): never {
  throw new CofferError('CORRUPT_FORMAT', what);
}

const isInt = (v: unknown, min = 0): v is number => typeof v === 'number' && Number.isSafeInteger(v) && v >= min;
const HEX32_RE = /^[0-9a-f]{32}$/;
const HEX64_RE = /^[0-9a-f]{64}$/;

export function encodeCheckpointHead(head: CheckpointHead): Buffer {
  return Buffer.from(JSON.stringify(head), 'utf8');
}

export function decodeCheckpointHead(plaintext: Buffer, device: string, seq: number): CheckpointHead {
  const where = `checkpoint ${seq} of device ${device}`;
  let raw: Record<string, unknown>;
  try {
    raw = JSON.parse(plaintext.toString('utf8')) as Record<string, unknown>;
  } catch {
    corrupt(`${where} is not JSON`);
  }
  if (raw.format !== 'coffer-checkpoint') corrupt(`${where}: not a checkpoint`);
  if (raw.version !== 2) throw new CofferError('UNSUPPORTED_FORMAT', `${where} has version ${String(raw.version)}; this Coffer reads version 2`);
  if (raw.device !== device || raw.seq !== seq) corrupt(`${where} says it is checkpoint ${String(raw.seq)} of device ${String(raw.device)}`);
  if (typeof raw.created !== 'string' || !isInt(raw.clock)) corrupt(`${where}: created or clock is malformed`);
  const covers = raw.covers as Record<string, unknown>;
  if (typeof covers !== 'object' || covers === null) corrupt(`${where}: covers must be an object`);
  for (const [d, mark] of Object.entries(covers)) {
    const m = mark as Record<string, unknown>;
    if (!HEX32_RE.test(d) || typeof m !== 'object' || m === null || !isInt(m.seq, 1) || typeof m.hash !== 'string' || !HEX64_RE.test(m.hash)) {
      corrupt(`${where}: what it covers of device ${d} is malformed`);
    }
  }
  if (!Array.isArray(raw.parts) || !(raw.parts as unknown[]).every((h) => typeof h === 'string' && HEX64_RE.test(h))) corrupt(`${where}: parts must be sealed hashes`);
  if (typeof raw.rows !== 'object' || raw.rows === null) corrupt(`${where}: rows must be an object`);
  return raw as unknown as CheckpointHead;
}

/** The JSON of a part, deflated (what is sealed). `rowsJson` is the rows' JSON text, already joined by commas. */
export function encodeCheckpointPart(meta: Omit<CheckpointPart, 'rows' | 'format' | 'version'>, rowsJson: string): Buffer {
  const head = JSON.stringify({ format: 'coffer-checkpoint-part', version: 2, device: meta.device, seq: meta.seq, part: meta.part, table: meta.table });
  return deflateRawSync(Buffer.from(`${head.slice(0, -1)},"rows":[${rowsJson}]}`, 'utf8'), { level: 1 });
}

export function decodeCheckpointPart(sealedPlaintext: Buffer, device: string, seq: number, part: number): CheckpointPart {
  const where = `part ${part} of checkpoint ${seq} of device ${device}`;
  let raw: Record<string, unknown>;
  try {
    raw = JSON.parse(inflateRawSync(sealedPlaintext, { maxOutputLength: PART_MAX_BYTES }).toString('utf8')) as Record<string, unknown>;
  } catch (err) {
    corrupt(`${where} cannot be read: ${(err as Error).message}`);
  }
  if (raw.format !== 'coffer-checkpoint-part' || raw.version !== 2) corrupt(`${where}: not a checkpoint part`);
  if (raw.device !== device || raw.seq !== seq || raw.part !== part) corrupt(`${where} says it is part ${String(raw.part)} of checkpoint ${String(raw.seq)} of device ${String(raw.device)}`);
  if (!CHECKPOINT_TABLES.includes(raw.table as CheckpointTable)) corrupt(`${where}: unknown table ${String(raw.table)}`);
  if (!Array.isArray(raw.rows) || !(raw.rows as unknown[]).every((r) => Array.isArray(r))) corrupt(`${where}: rows must be lists`);
  return raw as unknown as CheckpointPart;
}
