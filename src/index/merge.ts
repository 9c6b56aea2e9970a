/**
 * How concurrent versions of one node become one state: the rules every device applies the same
 * way, so that the same set of versions gives the same tree everywhere (docs/FORMAT.md, "Merging").
 *
 * - The version with the highest stamp wins what both sides changed; what only one side changed
 *   since their common ancestor is kept (three-way, per group: place, attributes, contents, xattrs).
 * - Contents changed on both sides, differently: the winner keeps the node, each losing version
 *   becomes a conflicted copy beside it (a node of its own whose id derives from the version).
 * - An edit beats a concurrent delete: the edited node stays.
 *
 * Pure functions of their inputs: no I/O, no clock, no randomness.
 */
import { createHash } from 'node:crypto';
import type { NodeBody, NodeRecord, Stamp } from '../format/journal.js';

/** What is known of a version: what it superseded and what it held. */
export interface KnownVersion {
  stamp: Stamp;
  prev: Stamp[];
  body: NodeBody;
}

export interface Merged {
  body: NodeBody;
  /** When the node was put where it is (`body.placed`): decides which of two same-named nodes keeps the name. */
  placeStamp: Stamp;
  /** Versions folded into `body`: a new local version supersedes exactly these. */
  absorbed: Stamp[];
  /** Losing versions whose contents become conflicted copies. */
  copies: KnownVersion[];
}

/** The stamp a local change not yet published is merged with: above every published one. */
export const PENDING_STAMP: Stamp = 'ffffffffffff.' + 'f'.repeat(32);

/** How far back common ancestors are looked for; past it, two versions are treated as unrelated. */
const ANCESTOR_SEARCH_LIMIT = 4096;

function sameContent(a: NodeBody, b: NodeBody): boolean {
  if (a.size !== b.size || a.chunks.length !== b.chunks.length || a.target !== b.target) return false;
  for (let i = 0; i < a.chunks.length; i++) {
    if (a.chunks[i]![0] !== b.chunks[i]![0] || a.chunks[i]![1] !== b.chunks[i]![1]) return false;
  }
  return true;
}

function samePlace(a: NodeBody, b: NodeBody): boolean {
  return a.deleted === b.deleted && JSON.stringify(a.names) === JSON.stringify(b.names);
}

function sameAttrs(a: NodeBody, b: NodeBody): boolean {
  return a.mode === b.mode && a.uid === b.uid && a.gid === b.gid && a.rdev === b.rdev;
}

function sameXattrs(a: NodeBody, b: NodeBody): boolean {
  return JSON.stringify(a.xattrs) === JSON.stringify(b.xattrs);
}

function ancestors(start: Stamp[], version: (stamp: Stamp) => KnownVersion | undefined): Map<Stamp, number> {
  const depth = new Map<Stamp, number>();
  let frontier = start;
  for (let d = 0; frontier.length > 0 && depth.size < ANCESTOR_SEARCH_LIMIT; d++) {
    const next: Stamp[] = [];
    for (const s of frontier) {
      if (depth.has(s)) continue;
      depth.set(s, d);
      for (const p of version(s)?.prev ?? []) next.push(p);
    }
    frontier = next;
  }
  return depth;
}

/** The newest version both `a` and `b` descend from (or are), if one is known. */
export function commonAncestor(a: KnownVersion, b: KnownVersion, version: (stamp: Stamp) => KnownVersion | undefined): KnownVersion | undefined {
  const lookup = (s: Stamp) => (s === a.stamp ? a : s === b.stamp ? b : version(s));
  const ofA = ancestors([a.stamp], lookup);
  const ofB = ancestors([b.stamp], lookup);
  let best: Stamp | undefined;
  for (const s of ofB.keys()) if (ofA.has(s) && (best === undefined || s > best)) best = s;
  return best === undefined ? undefined : lookup(best);
}

/**
 * Merges the current versions of one node (`heads`, at least one). `version` finds earlier
 * versions for common ancestors; unknown ones count as unrelated.
 */
export function mergeVersions(heads: KnownVersion[], version: (stamp: Stamp) => KnownVersion | undefined): Merged {
  const sorted = [...heads].sort((x, y) => (x.stamp < y.stamp ? 1 : x.stamp > y.stamp ? -1 : 0));
  const winner = sorted[0]!;
  const body: NodeBody = { ...winner.body };
  const absorbed = [winner.stamp];
  const copies: KnownVersion[] = [];
  // Which groups still hold the winner's values (a later loser may not overwrite a taken one).
  let placeTaken = false;
  let attrsTaken = false;
  let contentTaken = false;
  let xattrsTaken = false;
  for (const other of sorted.slice(1)) {
    const base = commonAncestor(winner, other, version);
    const otherChangedContent = !base || !sameContent(other.body, base.body);
    const winnerChangedContent = !base || !sameContent(winner.body, base.body);
    if (!other.body.deleted && !sameContent(other.body, body)) {
      if (otherChangedContent && !winnerChangedContent && !contentTaken) {
        body.size = other.body.size;
        body.chunks = other.body.chunks;
        body.target = other.body.target;
        body.mtimeMs = other.body.mtimeMs;
        contentTaken = true;
      } else if (otherChangedContent) {
        copies.push(other);
        continue; // the rest of that version lives on in its copy
      }
    }
    absorbed.push(other.stamp);
    if (body.deleted && !other.body.deleted && otherChangedContent) {
      // An edit beats a concurrent delete.
      body.deleted = false;
      body.names = other.body.names;
      body.placed = other.body.placed;
      placeTaken = true;
    } else if (!placeTaken && base && samePlace(winner.body, base.body) && !samePlace(other.body, base.body) && !(other.body.deleted && winnerChangedContent)) {
      body.names = other.body.names;
      body.deleted = other.body.deleted;
      body.placed = other.body.placed;
      placeTaken = true;
    }
    if (!attrsTaken && base && sameAttrs(winner.body, base.body) && !sameAttrs(other.body, base.body)) {
      body.mode = other.body.mode;
      body.uid = other.body.uid;
      body.gid = other.body.gid;
      body.rdev = other.body.rdev;
      attrsTaken = true;
    }
    if (!xattrsTaken && base && sameXattrs(winner.body, base.body) && !sameXattrs(other.body, base.body)) {
      body.xattrs = other.body.xattrs;
      xattrsTaken = true;
    }
    body.atimeMs = Math.max(body.atimeMs, other.body.atimeMs);
    body.ctimeMs = Math.max(body.ctimeMs, other.body.ctimeMs);
  }
  return { body, placeStamp: body.placed, absorbed, copies };
}

/** The node id of the conflicted copy a losing version becomes: the same on every device. */
export function copyNodeId(nodeId: string, stamp: Stamp): string {
  return createHash('sha256').update(`coffer-conflict-copy:${nodeId}:${stamp}`).digest('hex').slice(0, 32);
}

/**
 * `name (conflicted copy YYYY-MM-DD HHMMSS from DEVICE).ext`, the time in UTC. The extension is
 * what follows the last dot, unless the name starts with its only dot (`.bashrc`).
 */
export function conflictedName(name: string, timeMs: number, deviceName: string, attempt = 1): string {
  const iso = new Date(timeMs).toISOString();
  const when = `${iso.slice(0, 10)} ${iso.slice(11, 13)}${iso.slice(14, 16)}${iso.slice(17, 19)}`;
  const dot = name.lastIndexOf('.');
  const [stem, ext] = dot > 0 ? [name.slice(0, dot), name.slice(dot)] : [name, ''];
  const device = deviceName.replace(/[/\0]/g, '_');
  const suffix = attempt > 1 ? ` ${attempt}` : '';
  const full = `${stem} (conflicted copy ${when} from ${device}${suffix})${ext}`;
  // Names are at most 255 bytes: shorten the stem, never the part that says what this is.
  const over = Buffer.byteLength(full) - 255;
  if (over <= 0) return full;
  const cut = Buffer.from(stem).subarray(0, Math.max(1, Buffer.byteLength(stem) - over)).toString('utf8').replace(/\uFFFD+$/, '');
  return `${cut} (conflicted copy ${when} from ${device}${suffix})${ext}`.slice(0, 255);
}

/** A record's body alone. */
export function bodyOf(record: NodeRecord): NodeBody {
  const { id: _id, stamp: _stamp, prev: _prev, time: _time, retires: _retires, ...body } = record;
  return body;
}
