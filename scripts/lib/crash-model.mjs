/**
 * The crash harness's model of the files the writer changes: every byte is derived from
 * (seed, name, version), so any acknowledged or in-flight version can be rebuilt, and a
 * file found after a crash can be judged exactly.
 *
 * A file is { origin, base, baseLength, appends: [{version, length}], overwrites: [{version, offset, length}],
 * version, length }: the base content, then the appends in order, then the overwrites in order.
 */
import { createCipheriv, createHash } from 'node:crypto';
import { mulberry32 } from '../../dist/seeded-random.js';

export const NAMES = ['a', 'b', 'c', 'd', 'e'];

/** Deterministic decisions (mulberry32). */
export const rng = mulberry32;

function bytes(seed, name, version, tag, length) {
  const key = createHash('sha256').update(`${seed}/${name}/${version}/${tag}`).digest();
  return createCipheriv('aes-256-ctr', key, Buffer.alloc(16)).update(Buffer.alloc(length));
}

export const appendContent = (seed, name, version, length) => bytes(seed, name, version, 'append', length);
export const overwriteContent = (seed, name, version, length) => bytes(seed, name, version, 'overwrite', length);

/** A file's bytes; `origin` is the name it was created under (renames keep it). */
export function versionContent(seed, file) {
  const parts = [bytes(seed, file.origin, file.base, 'base', file.baseLength)];
  for (const a of file.appends) parts.push(appendContent(seed, file.origin, a.version, a.length));
  const content = Buffer.concat(parts);
  for (const o of file.overwrites) overwriteContent(seed, file.origin, o.version, o.length).copy(content, o.offset);
  return content;
}

/** Reads the journal: acknowledged states, and the operation in flight when the writer stopped. */
export function readJournal(text) {
  const acked = new Map();
  let inflight;
  for (const line of text.split('\n').filter(Boolean)) {
    const entry = JSON.parse(line);
    if (entry.op === 'state') {
      if (entry.file) acked.set(entry.name, entry.file);
    } else if (entry.op === 'begin') {
      inflight = entry;
    } else if (entry.op === 'ack') {
      inflight = undefined;
      if (entry.kind === 'rename') {
        acked.set(entry.target, acked.get(entry.name));
        acked.delete(entry.name);
      } else if (entry.kind === 'unlink') {
        acked.delete(entry.name);
      } else {
        acked.set(entry.name, entry.file);
      }
    }
  }
  return { acked, inflight };
}

const same = (a, b) => (a === null && b === null) || (a !== null && b !== null && a.equals(b));

/**
 * Judges what was found after a crash. `found` maps names to contents (null: absent).
 * Returns the state to carry on from (`states`: name → file model or null) and `violations`:
 * anything that contradicts an acknowledged fsync. A file left half-way by the operation in
 * flight (allowed: it was never acknowledged) is reported in `mixed`, to be removed.
 */
export function judge(seed, found, { acked, inflight }) {
  const violations = [];
  const states = new Map();
  const mixed = [];
  const expect = (name) => {
    const file = acked.get(name);
    return file ? versionContent(seed, file) : null;
  };
  const touched = new Set(inflight ? [inflight.name, inflight.target].filter(Boolean) : []);
  for (const name of NAMES) {
    if (touched.has(name)) continue;
    const want = expect(name);
    if (!same(found.get(name) ?? null, want)) {
      violations.push(`${name}: ${describe(found.get(name))} but the last acknowledged state is ${describe(want)}`);
    }
    states.set(name, acked.get(name) ?? null);
  }
  if (!inflight) return { states, violations, mixed };

  const { name, kind } = inflight;
  const got = found.get(name) ?? null;
  const old = expect(name);
  if (kind === 'save' || kind === 'unlink') {
    const next = kind === 'save' ? versionContent(seed, inflight.next) : null;
    if (same(got, old)) states.set(name, acked.get(name) ?? null);
    else if (same(got, next)) states.set(name, kind === 'save' ? inflight.next : null);
    else violations.push(`${name}: ${describe(got)} after an interrupted ${kind}; expected the old ${describe(old)} or the new ${describe(next)}`);
  } else if (kind === 'rename') {
    const target = inflight.target;
    const gotTarget = found.get(target) ?? null;
    const oldTarget = expect(target);
    if (same(got, old) && same(gotTarget, oldTarget)) {
      states.set(name, acked.get(name) ?? null);
      states.set(target, acked.get(target) ?? null);
    } else if (got === null && same(gotTarget, old)) {
      states.set(name, null);
      states.set(target, acked.get(name) ?? null);
    } else {
      violations.push(`rename ${name} → ${target} interrupted: found ${describe(got)} / ${describe(gotTarget)}, neither before nor after`);
    }
  } else {
    // append or overwrite: every byte is the old one or the new one (an unacknowledged
    // extension may also read as zeros); everything acknowledged before must be intact.
    const next = versionContent(seed, inflight.next);
    if (got === null || old === null) {
      violations.push(`${name}: ${describe(got)} after an interrupted ${kind} of ${describe(old)}`);
    } else if (same(got, old)) {
      states.set(name, acked.get(name));
    } else if (same(got, next)) {
      states.set(name, inflight.next);
    } else {
      let bad = -1;
      if (got.length < old.length || got.length > next.length) bad = Math.min(got.length, old.length);
      for (let i = 0; bad < 0 && i < got.length; i++) {
        const o = i < old.length ? old[i] : 0;
        if (got[i] !== o && got[i] !== next[i] && !(i >= old.length && got[i] === 0)) bad = i;
      }
      if (bad >= 0) violations.push(`${name}: byte ${bad} is neither the acknowledged nor the in-flight value after an interrupted ${kind}`);
      else mixed.push(name);
      states.set(name, null);
    }
  }
  return { states, violations, mixed };
}

function describe(content) {
  if (content === null || content === undefined) return 'absent';
  return `${content.length} bytes sha256 ${createHash('sha256').update(content).digest('hex').slice(0, 12)}`;
}
