/**
 * Checkpoints (docs/FORMAT.md, "Checkpoints"): once the journals have grown by enough entries
 * since the newest checkpoint any device wrote, a device with nothing unpublished writes the
 * vault's state as its index holds it, covering the entries that index has applied. A clone reads
 * the newest checkpoint and then only the entries after it.
 *
 * Writing: parts first (plain puts under this attempt's number, which is never reused), the head
 * last with an exclusive create: a checkpoint whose head is missing does not exist, and the parts
 * of a failed attempt are deleted when possible (otherwise they are garbage nobody reads).
 * Pruning: after writing one, a device deletes its own older checkpoints but the newest one before
 * it (a clone may be reading that one), heads before parts, and the parts of attempts that never
 * got a head. A device thus keeps at most two checkpoints on the remote.
 * Reading: every part must be the one the head names (its sealed hash) and authenticate as that
 * part of that checkpoint; the entries after it must follow what it covers (the merger checks
 * each journal's hash chain from the covered entry on).
 */
import { join } from 'node:path';
import { setImmediate as yieldToLoop } from 'node:timers/promises';
import { CofferError } from '../errors.js';
import { ObjectType, openObject, sealObject } from '../crypto/objects.js';
import {
  CHECKPOINT_TABLES,
  PART_TARGET_BYTES,
  checkpointObjectId,
  checkpointPartObjectId,
  decodeCheckpointHead,
  decodeCheckpointPart,
  encodeCheckpointHead,
  encodeCheckpointPart,
  type CheckpointHead,
  type CheckpointTable,
} from '../format/checkpoint.js';
import { sealedHash } from '../format/journal.js';
import { CheckpointLoader, IndexSnapshot } from '../index/checkpoint.js';
import { remoteKeys } from '../remote/backend.js';
import type { JournalContext } from './journal-context.js';

/** Default: a checkpoint once the journals hold this many entries past the newest one. */
export const DEFAULT_CHECKPOINT_ENTRIES = 256;

const CHECKPOINT_KEY_RE = /^checkpoints\/([0-9a-f]{32})\/(\d{20})$/;

/** Journal entries this device knows of, summed over devices (its own included). */
export function knownEntries(ctx: JournalContext): number {
  return ctx.state.seq + Object.values(ctx.state.seen).reduce((n, s) => n + s.seq, 0);
}

const coveredEntries = (head: CheckpointHead) => Object.values(head.covers).reduce((n, m) => n + m.seq, 0);

/** The newest checkpoint of each device on the remote (by key; heads not read). */
export async function listCheckpoints(ctx: JournalContext, signal?: AbortSignal): Promise<{ device: string; seq: number }[]> {
  const newest = new Map<string, number>();
  for (const { key } of await ctx.backend.list(remoteKeys.checkpointPrefix, { signal })) {
    const m = CHECKPOINT_KEY_RE.exec(key);
    if (m) newest.set(m[1]!, Math.max(newest.get(m[1]!) ?? 0, Number(m[2])));
  }
  return [...newest].map(([device, seq]) => ({ device, seq }));
}

export async function readCheckpointHead(ctx: JournalContext, device: string, seq: number, signal?: AbortSignal): Promise<CheckpointHead> {
  const sealed = await ctx.backend.get(remoteKeys.checkpoint(device, seq), { signal });
  return decodeCheckpointHead(openObject(ctx.metadataContext, ObjectType.CheckpointHead, checkpointObjectId(device, seq), sealed), device, seq);
}

/**
 * The checkpoint covering the most entries among each device's newest (heads that cannot be read
 * are reported through `skip` and passed over); undefined if there is none.
 */
export async function bestCheckpoint(ctx: JournalContext, signal: AbortSignal, skip: (device: string, seq: number, why: string) => void): Promise<CheckpointHead | undefined> {
  let best: CheckpointHead | undefined;
  for (const { device, seq } of await listCheckpoints(ctx, signal)) {
    let head: CheckpointHead;
    try {
      head = await readCheckpointHead(ctx, device, seq, signal);
    } catch (err) {
      if ((err as CofferError).code === 'REMOTE_UNAVAILABLE' || signal.aborted) throw err;
      skip(device, seq, (err as Error).message);
      continue;
    }
    if (!best || coveredEntries(head) > coveredEntries(best) || (coveredEntries(head) === coveredEntries(best) && head.created > best.created)) best = head;
  }
  return best;
}

/**
 * Fills the context's index (new, empty) from a checkpoint and makes the device state start
 * after what it covers. Throws CORRUPT_FORMAT or AUTHENTICATION_FAILED naming the part at fault.
 */
export async function restoreCheckpoint(ctx: JournalContext, head: CheckpointHead, signal: AbortSignal, progress?: (done: number, total: number) => void): Promise<void> {
  const where = `checkpoint ${head.seq} of device ${head.device}`;
  const loader = new CheckpointLoader(ctx.index);
  const fetchPart = (i: number) => ctx.backend.get(remoteKeys.checkpointPart(head.device, head.seq, i), { signal });
  // A few parts in flight while one is loaded.
  const ahead: Promise<Buffer>[] = [];
  for (let i = 0; i < Math.min(4, head.parts.length); i++) ahead.push(fetchPart(i));
  let order = 0;
  for (let i = 0; i < head.parts.length; i++) {
    const sealed = await ahead.shift()!;
    if (i + 4 < head.parts.length) ahead.push(fetchPart(i + 4));
    if (sealedHash(sealed) !== head.parts[i]) throw new CofferError('AUTHENTICATION_FAILED', `part ${i} of ${where} is not the part its head names (swapped or replaced on the remote)`);
    const part = decodeCheckpointPart(openObject(ctx.metadataContext, ObjectType.CheckpointPart, checkpointPartObjectId(head.device, head.seq, i), sealed), head.device, head.seq, i);
    const at = CHECKPOINT_TABLES.indexOf(part.table);
    if (at < order) throw new CofferError('CORRUPT_FORMAT', `part ${i} of ${where} holds ${part.table} after ${CHECKPOINT_TABLES[order]}`);
    order = at;
    loader.load(part.table, part.rows, `part ${i} of ${where}`);
    progress?.(i + 1, head.parts.length);
  }
  loader.finish(head.rows, head.covers, where);
  for (const [device, mark] of Object.entries(head.covers)) {
    if (device === ctx.state.device) continue;
    ctx.state.seen[device] = { seq: mark.seq, hash: mark.hash, publishedMs: null, heardMs: null };
  }
  ctx.state.clock = Math.max(ctx.state.clock, head.clock);
  ctx.state.checkpoint = { seq: ctx.state.checkpoint?.seq ?? 0, covered: coveredEntries(head), attemptMs: 0 };
  await ctx.save();
}

export interface CheckpointResult {
  seq: number;
  parts: number;
  bytes: number;
  covered: number;
}

/**
 * Writes a checkpoint if one is due: this device has nothing unpublished, and the journals hold at
 * least `everyEntries` entries past the newest checkpoint (its own, or another device's it finds
 * on the remote). Resolves to what was written, or undefined.
 */
export async function checkpointIfDue(ctx: JournalContext, everyEntries: number, signal: AbortSignal): Promise<CheckpointResult | undefined> {
  const known = knownEntries(ctx);
  if (known - (ctx.state.checkpoint?.covered ?? 0) < everyEntries || ctx.index.replica.pendingCount() > 0) return undefined;
  const newest = await bestCheckpoint(ctx, signal, () => {});
  if (newest && coveredEntries(newest) > (ctx.state.checkpoint?.covered ?? 0)) {
    ctx.state = { ...ctx.state, checkpoint: { seq: ctx.state.checkpoint?.seq ?? 0, attemptMs: ctx.state.checkpoint?.attemptMs ?? 0, covered: coveredEntries(newest) } };
    await ctx.save();
    if (known - coveredEntries(newest) < everyEntries) return undefined;
  }
  return writeCheckpoint(ctx, signal);
}

/** Under a device's own prefix: a head (`<seq>`) or a part (`<seq>.<part>`). */
const OWN_CHECKPOINT_KEY_RE = /^(\d{20})(\.\d{6})?$/;

/**
 * Deletes what this device wrote under checkpoints/ before its two newest checkpoints: older heads
 * first (a checkpoint without its head does not exist), then their parts and those of failed
 * attempts. Resolves to the number of objects deleted.
 */
export async function pruneCheckpoints(ctx: JournalContext, signal: AbortSignal): Promise<number> {
  const prefix = remoteKeys.checkpointDevicePrefix(ctx.state.device);
  const owned = (await ctx.backend.list(prefix, { signal })).flatMap(({ key }) => {
    const m = OWN_CHECKPOINT_KEY_RE.exec(key.slice(prefix.length));
    return m ? [{ key, seq: Number(m[1]), head: m[2] === undefined }] : [];
  });
  const heads = owned.filter((o) => o.head).map((o) => o.seq).sort((x, y) => y - x);
  if (heads.length === 0) return 0;
  const kept = new Set(heads.slice(0, 2));
  const doomed = owned.filter((o) => o.seq < heads[0]! && !kept.has(o.seq)).sort((x, y) => Number(y.head) - Number(x.head));
  for (const { key } of doomed) await ctx.backend.delete(key, { signal });
  return doomed.length;
}

/** Writes checkpoint number (last + 1) of the index as it is now; undefined if a local change appeared meanwhile. */
export async function writeCheckpoint(ctx: JournalContext, signal: AbortSignal): Promise<CheckpointResult | undefined> {
  const snapshot = await IndexSnapshot.take(ctx.index, join(ctx.stateDir, 'checkpoint-copy.db'));
  const device = ctx.state.device;
  const seq = (ctx.state.checkpoint?.seq ?? 0) + 1;
  const written: string[] = [];
  try {
    if (!snapshot.publishedOnly()) return undefined;
    const covers = snapshot.marks();
    const clock = ctx.state.clock;
    // The number is taken before anything is written: a later attempt never writes over this one's parts.
    ctx.state = { ...ctx.state, checkpoint: { seq, covered: ctx.state.checkpoint?.covered ?? 0, attemptMs: Date.now() } };
    await ctx.save();
    const parts: string[] = [];
    const rows: Partial<Record<CheckpointTable, number>> = {};
    let bytes = 0;
    const flush = async (table: CheckpointTable, texts: string[]) => {
      const part = parts.length;
      const sealed = sealObject(ctx.metadataContext, ObjectType.CheckpointPart, checkpointPartObjectId(device, seq, part), encodeCheckpointPart({ device, seq, part, table }, texts.join(',')), { pad: true });
      const key = remoteKeys.checkpointPart(device, seq, part);
      written.push(key);
      await ctx.backend.put(key, sealed, { signal });
      parts.push(sealedHash(sealed));
      bytes += sealed.length;
    };
    for (const table of CHECKPOINT_TABLES) {
      let texts: string[] = [];
      let size = 0;
      for (const batch of snapshot.rows(table)) {
        rows[table] = (rows[table] ?? 0) + batch.length;
        for (const text of batch) {
          texts.push(text);
          size += text.length + 1;
        }
        if (size >= PART_TARGET_BYTES) {
          await flush(table, texts);
          texts = [];
          size = 0;
        } else {
          await yieldToLoop(); // the thread serves FUSE too
        }
        signal.throwIfAborted();
      }
      if (texts.length > 0) await flush(table, texts);
    }
    const head: CheckpointHead = { format: 'coffer-checkpoint', version: 2, device, seq, created: new Date().toISOString(), clock, covers, parts, rows };
    const sealedHead = sealObject(ctx.metadataContext, ObjectType.CheckpointHead, checkpointObjectId(device, seq), encodeCheckpointHead(head), { pad: true });
    await ctx.backend.createExclusive(remoteKeys.checkpoint(device, seq), sealedHead, { signal });
    written.length = 0;
    const covered = coveredEntries(head);
    ctx.state = { ...ctx.state, checkpoint: { seq, covered: Math.max(covered, ctx.state.checkpoint?.covered ?? 0), attemptMs: Date.now() } };
    await ctx.save();
    ctx.log.info(`wrote checkpoint ${seq}: ${parts.length} parts, ${bytes + sealedHead.length} bytes, covering ${covered} journal entries`, { op: 'checkpoint', seq, parts: parts.length, bytes, covered });
    await pruneCheckpoints(ctx, signal).catch((err: unknown) => {
      if (!signal.aborted) ctx.log.warn(`older checkpoints of this device stay on the remote for now: ${(err as Error).message}`, { op: 'checkpoint' });
    });
    return { seq, parts: parts.length, bytes: bytes + sealedHead.length, covered };
  } finally {
    await snapshot.close();
    for (const key of written) await ctx.backend.delete(key).catch(() => {});
  }
}
