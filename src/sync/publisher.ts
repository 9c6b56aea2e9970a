/**
 * Publishing: this device's unpublished changes go to the remote as the next entries of its
 * journal (docs/FORMAT.md, "Publishing"). An entry carries the records of the nodes that changed,
 * so a publish costs what changed, not what the vault holds.
 *
 * Order: every chunk a record names is on the remote before its entry; the entry is created with
 * an exclusive create; only then are the state file and the index told. A crash in between is
 * found at the next publish: the entry under this device's next number is its own (same previous
 * hash), and is adopted instead of written again.
 */
import { CofferError, isCofferError } from '../errors.js';
import { ObjectType, openObject } from '../crypto/objects.js';
import { decodeJournalEntry, encodeJournalEntry, ENTRY_TARGET_BYTES, journalObjectId, sealedHash, type JournalEntry, type NodeRecord } from '../format/journal.js';
import { remoteKeys } from '../remote/backend.js';
import { registerDevice, type JournalContext } from './journal-context.js';

/** Records per entry at most (an entry is also cut near ENTRY_TARGET_BYTES). */
const RECORDS_PER_BATCH = 2000;

export interface PublishHooks {
  /** Resolves once every chunk named is on the remote (uploads them first). */
  chunksUploaded(ids: Buffer[], signal: AbortSignal): Promise<void>;
  /** One object of `bytes` went to the remote. */
  uploaded(bytes: number): void;
}

export interface PublishResult {
  entries: number;
  records: number;
  bytes: number;
}

/** Publishes every change made here so far; resolves when none is left unpublished. */
export async function publishChanges(ctx: JournalContext, hooks: PublishHooks, signal: AbortSignal): Promise<PublishResult> {
  const result: PublishResult = { entries: 0, records: 0, bytes: 0 };
  const replica = ctx.index.replica;
  if (!ctx.state.registered && replica.pendingCount() > 0) {
    await registerDevice(ctx.backend, ctx.metadataContext, ctx.state.device, ctx.state.name, signal);
    ctx.state = { ...ctx.state, registered: true };
    await ctx.save();
  }
  for (let guard = 0; replica.pendingCount() > 0 && guard < 1_000_000; guard++) {
    signal.throwIfAborted();
    const clock = ctx.state.clock + 1;
    const { records, gens } = replica.pendingRecords(clock, ctx.state.device, Date.now(), RECORDS_PER_BATCH);
    const kept = trimToSize(records);
    const keptGens = new Map([...gens].filter(([id]) => kept.some((r) => r.id === id) || !records.some((r) => r.id === id)));
    await hooks.chunksUploaded(
      kept.flatMap((r) => r.chunks.map((c) => Buffer.from(c[1], 'hex'))),
      signal,
    );
    if (kept.length === 0) {
      replica.markPublished([], keptGens);
      continue;
    }
    const written = await writeEntry(ctx, clock, kept, signal);
    result.entries++;
    result.records += kept.length;
    result.bytes += written.bytes;
    hooks.uploaded(written.bytes);
    replica.markPublished(kept, keptGens, { device: ctx.state.device, seq: written.seq, hash: written.hash });
  }
  return result;
}

function trimToSize(records: NodeRecord[]): NodeRecord[] {
  let bytes = 0;
  const kept: NodeRecord[] = [];
  for (const record of records) {
    const size = JSON.stringify(record).length + 1;
    if (kept.length > 0 && bytes + size > ENTRY_TARGET_BYTES) break;
    kept.push(record);
    bytes += size;
  }
  return kept;
}

/** Creates the next entry of this device's journal; returns its number, sealed hash and size. */
async function writeEntry(ctx: JournalContext, clock: number, records: NodeRecord[], signal: AbortSignal): Promise<{ seq: number; hash: string; bytes: number }> {
  for (;;) {
    const seq = ctx.state.seq + 1;
    const entry: JournalEntry = {
      format: 'coffer-journal',
      version: 2,
      device: ctx.state.device,
      seq,
      previous: ctx.state.hash,
      created: new Date().toISOString(),
      clock,
      records,
    };
    const sealed = ctx.sealEntry(entry, encodeJournalEntry(entry));
    // Remembered first, so that this entry found on the remote later (its answer lost, or a crash
    // before the state below was saved) is known for this device's own.
    // Bounded: the first attempts (one of which may be stored) and the latest.
    const tried = ctx.state.creating?.seq === seq ? ctx.state.creating.hashes : [];
    const earlier = tried.length >= 64 ? [...tried.slice(0, 32), ...tried.slice(-31)] : tried;
    ctx.state = { ...ctx.state, creating: { seq, hashes: [...earlier, sealedHash(sealed)] } };
    await ctx.save();
    try {
      await ctx.backend.createExclusive(remoteKeys.journal(entry.device, seq), sealed, { signal });
    } catch (err) {
      if (!isCofferError(err, 'REMOTE_EXISTS')) throw err;
      await adoptOwnEntry(ctx, seq, signal);
      continue;
    }
    // The merger may have raised the clock while this entry was on its way: never lower it.
    ctx.state = { ...ctx.state, seq, hash: sealedHash(sealed), clock: Math.max(ctx.state.clock, clock), lastPublishMs: Date.now(), creating: undefined };
    await ctx.save();
    ctx.log.debug(`published journal entry ${seq}`, { op: 'publish', seq, records: records.length, bytes: sealed.length });
    return { seq, hash: sealedHash(sealed), bytes: sealed.length };
  }
}

/**
 * The key of this device's next entry is taken. If it holds the entry this device last tried to
 * create there (an attempt whose answer was lost, or a crash before the state file was written),
 * it is taken as published; anything else means another copy of this device (a copied vault
 * directory), whose journal would fork: refused.
 */
async function adoptOwnEntry(ctx: JournalContext, seq: number, signal: AbortSignal): Promise<void> {
  const sealed = await ctx.backend.get(remoteKeys.journal(ctx.state.device, seq), { signal });
  let entry: JournalEntry;
  try {
    entry = decodeJournalEntry(openObject(ctx.metadataContext, ObjectType.JournalEntry, journalObjectId(ctx.state.device, seq), sealed), ctx.state.device, seq);
  } catch (err) {
    throw new CofferError('REMOTE_CONFLICT', `entry ${seq} of this device's journal is already on the remote and is not this device's: ${(err as Error).message}`);
  }
  if (entry.previous !== ctx.state.hash || ctx.state.creating?.seq !== seq || !ctx.state.creating.hashes.includes(sealedHash(sealed))) {
    throw new CofferError(
      'REMOTE_CONFLICT',
      `entry ${seq} of this device's journal was written by another copy of this device (was the vault directory copied? clone it instead so that each copy is a device of its own)`,
    );
  }
  ctx.index.replica.applyRecords(entry.records, Date.now(), { device: ctx.state.device, seq, hash: sealedHash(sealed) });
  ctx.index.replica.rebaseOnOwn(entry.records);
  ctx.state = { ...ctx.state, seq, hash: sealedHash(sealed), clock: Math.max(ctx.state.clock, entry.clock), creating: undefined };
  await ctx.save();
  ctx.log.info(`journal entry ${seq} on the remote is this device's own earlier publish; continuing after it`, { op: 'publish', seq });
}
