/**
 * Merging: other devices' new journal entries are fetched, checked and applied to the index
 * (docs/FORMAT.md, "Reading journals"). For each device, entries are applied in order, each only
 * if it authenticates as that device's entry at that number and names the previous one's hash;
 * what this device has applied of each is its high-water mark (device-state.ts).
 *
 * What the remote cannot do unnoticed: roll a device's journal back below the mark or swap an
 * applied entry (REMOTE_ROLLBACK, naming the device), forge or move an entry (authentication
 * fails), or replay or reorder entries (the number and the hash chain). It can withhold entries;
 * a gap stops that device's entries until the missing one appears, and status says so.
 */
import { CofferError, isCofferError } from '../errors.js';
import type { JournalContext } from './journal-context.js';

export interface PullResult {
  entries: number;
  nodes: number;
  conflicts: number;
  /** Devices whose journal cannot be applied now, and why (a gap, an entry that fails authentication). */
  stuck: { device: string; reason: string }[];
  /** Objects under devices/ that are not a device of this vault (they do not authenticate): never read further. */
  ignored: { device: string; reason: string }[];
}

/** Applies every new entry of every other device. Throws REMOTE_ROLLBACK when a journal went back. */
export async function pullChanges(ctx: JournalContext, signal: AbortSignal): Promise<PullResult> {
  const result: PullResult = { entries: 0, nodes: 0, conflicts: 0, stuck: [], ignored: [] };
  const devices = await ctx.listDevices(signal);
  const known = new Set(Object.keys(ctx.state.seen));
  for (const device of devices) {
    if (device === ctx.state.device) continue;
    if (!known.has(device)) {
      try {
        const record = await ctx.readDevice(device, signal);
        ctx.index.replica.setDeviceName(device, record.name);
        ctx.state.seen[device] = { seq: 0, hash: null, publishedMs: null, heardMs: null };
        await ctx.save();
      } catch (err) {
        if (isCofferError(err, 'REMOTE_UNAVAILABLE') || signal.aborted) throw err;
        result.ignored.push({ device, reason: `its device record cannot be read: ${(err as Error).message}` });
        continue;
      }
    }
  }
  for (const device of Object.keys(ctx.state.seen)) {
    const seen = ctx.state.seen[device]!;
    // From the applied entry on: it must still be listed (or a later one), or the journal went back.
    const listed = await ctx.listJournal(device, signal, Math.max(1, seen.seq));
    const newest = listed.at(-1) ?? 0;
    if (newest < seen.seq) throw await rollback(ctx, device, seen.seq, signal);
    const present = new Set(listed);
    for (let seq = seen.seq + 1; seq <= newest; seq++) {
      signal.throwIfAborted();
      if (!present.has(seq)) {
        result.stuck.push({ device, reason: `entry ${seq} of its journal is missing on the remote while later ones are there (withheld?)` });
        break;
      }
      let read;
      try {
        read = await ctx.readEntry(device, seq, signal);
      } catch (err) {
        if (isCofferError(err, 'REMOTE_UNAVAILABLE') || signal.aborted) throw err;
        ctx.log.error(`entry ${seq} of device ${deviceLabel(ctx, device)}'s journal is refused: ${(err as Error).message}`, { op: 'merge', device, seq });
        result.stuck.push({ device, reason: `entry ${seq} of its journal is refused: ${(err as Error).message}` });
        break;
      }
      if (read.entry.previous !== ctx.state.seen[device]!.hash) {
        const reason = `entry ${seq} of its journal does not follow entry ${seq - 1} as this device saw it (replayed, reordered or swapped by the remote)`;
        ctx.log.error(`device ${deviceLabel(ctx, device)}: ${reason}`, { op: 'merge', device, seq });
        result.stuck.push({ device, reason });
        break;
      }
      const merged = ctx.index.replica.applyRecords(read.entry.records, Date.now(), { device, seq, hash: read.hash });
      result.entries++;
      result.nodes += merged.nodes;
      result.conflicts += merged.conflicts;
      const createdMs = Date.parse(read.entry.created);
      ctx.state.seen[device] = { seq, hash: read.hash, publishedMs: Number.isFinite(createdMs) ? createdMs : null, heardMs: Date.now() };
      ctx.state.clock = Math.max(ctx.state.clock, read.entry.clock);
      await ctx.save();
    }
  }
  return result;
}

/**
 * At mount: this device's own journal and every device's seen entry are still on the remote as
 * they were (a rollback or a swap is refused before anything is merged).
 */
export async function checkJournals(ctx: JournalContext, signal?: AbortSignal): Promise<void> {
  const marks: [string, number, string | null][] = [[ctx.state.device, ctx.state.seq, ctx.state.hash], ...Object.entries(ctx.state.seen).map(([d, s]): [string, number, string | null] => [d, s.seq, s.hash])];
  for (const [device, seq, hash] of marks) {
    if (seq === 0) continue;
    const listed = await ctx.listJournal(device, signal, seq);
    const newest = listed.at(-1) ?? 0;
    if (newest < seq) throw await rollback(ctx, device, seq, signal);
    // A body cut in transit is not a rollback: ask again before concluding.
    for (let attempt = 1; ; attempt++) {
      let found: string | undefined;
      try {
        found = (await ctx.readEntry(device, seq, signal)).hash;
      } catch (err) {
        if (isCofferError(err, 'REMOTE_UNAVAILABLE')) throw err;
      }
      if (found === hash) break;
      if (attempt >= 3) throw new CofferError('REMOTE_ROLLBACK', `entry ${seq} of ${journalOwner(ctx, device)}'s journal on the remote ${ctx.backend.description} is not the one this device ${device === ctx.state.device ? 'published' : 'applied'}; refusing to use it`);
    }
  }
}

/** REMOTE_ROLLBACK for a journal that no longer reaches entry `seq`, saying where it ends now. */
async function rollback(ctx: JournalContext, device: string, seq: number, signal?: AbortSignal): Promise<CofferError> {
  const newest = (await ctx.listJournal(device, signal)).at(-1) ?? 0;
  return new CofferError(
    'REMOTE_ROLLBACK',
    `the remote ${ctx.backend.description} offers entries up to ${newest} of ${journalOwner(ctx, device)}'s journal, but this device already ${device === ctx.state.device ? 'published' : 'applied'} entry ${seq}: the remote was rolled back or is withholding data; refusing to use it`,
  );
}

const journalOwner = (ctx: JournalContext, device: string) => (device === ctx.state.device ? 'this device' : `device ${deviceLabel(ctx, device)}`);

export function deviceLabel(ctx: JournalContext, device: string): string {
  return `"${ctx.index.replica.deviceName(device)}" (${device.slice(0, 8)})`;
}
