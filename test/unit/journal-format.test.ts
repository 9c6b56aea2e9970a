/**
 * Format 2's metadata against its known-answer vectors (test/fixtures/journal-v2.json): the sealed
 * device record and entries open, decode and re-seal to the same bytes, the hash chain holds, and
 * stamps, conflicted copies' ids and names come out as specified. Plus what decoding refuses.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { loadSodium } from '../../src/crypto/sodium.js';
import { ObjectType, openObject, sealObjectWithNonce } from '../../src/crypto/objects.js';
import {
  decodeDeviceRecord,
  decodeJournalEntry,
  deviceObjectId,
  encodeDeviceRecord,
  encodeJournalEntry,
  journalObjectId,
  sealedHash,
  type JournalEntry,
} from '../../src/format/journal.js';
import { conflictedName, copyNodeId } from '../../src/index/merge.js';
import {
  checkpointObjectId,
  checkpointPartObjectId,
  decodeCheckpointHead,
  decodeCheckpointPart,
  encodeCheckpointHead,
  encodeCheckpointPart,
} from '../../src/format/checkpoint.js';
import { ROOT } from '../helpers/drive.js';

const v = JSON.parse(readFileSync(join(ROOT, 'test', 'fixtures', 'journal-v2.json'), 'utf8'));
const unhex = (h: string) => Buffer.from(h, 'hex');
let context: { vaultId: Buffer; keyEpoch: number; key: Buffer };

beforeAll(async () => {
  await loadSodium();
  context = { vaultId: unhex(v.vaultId), keyEpoch: 1, key: unhex(v.metadataKey) };
});

describe('format 2 metadata vectors', () => {
  it('opens and reproduces the device record', () => {
    const d = v.deviceRecord;
    expect(deviceObjectId(d.device).toString('hex')).toBe(d.objectId);
    const plain = openObject(context, ObjectType.DeviceRecord, unhex(d.objectId), unhex(d.sealed));
    expect(decodeDeviceRecord(plain, d.device)).toEqual(d.plaintext);
    expect(sealObjectWithNonce(context, ObjectType.DeviceRecord, unhex(d.objectId), encodeDeviceRecord(d.plaintext), unhex(d.nonce), { pad: true }).toString('hex')).toBe(d.sealed);
  });

  it('opens, decodes and reproduces the entries, and their hash chain holds', () => {
    let previous: string | null = null;
    for (const e of v.entries) {
      const device = e.plaintext.device as string;
      expect(journalObjectId(device, e.seq).toString('hex')).toBe(e.objectId);
      const entry = decodeJournalEntry(openObject(context, ObjectType.JournalEntry, unhex(e.objectId), unhex(e.sealed)), device, e.seq);
      expect(entry).toEqual(e.plaintext);
      expect(entry.previous).toBe(previous);
      expect(sealedHash(unhex(e.sealed))).toBe(e.hash);
      expect(sealObjectWithNonce(context, ObjectType.JournalEntry, unhex(e.objectId), encodeJournalEntry(e.plaintext), unhex(e.nonce), { pad: true }).toString('hex')).toBe(e.sealed);
      previous = e.hash;
    }
  });

  it('an entry moved to another number or device fails authentication', () => {
    const [first] = v.entries;
    const device = first.plaintext.device as string;
    expect(() => openObject(context, ObjectType.JournalEntry, journalObjectId(device, 2), unhex(first.sealed))).toThrow(/failed authentication/);
    expect(() => openObject(context, ObjectType.JournalEntry, journalObjectId('0'.repeat(32), 1), unhex(first.sealed))).toThrow(/failed authentication/);
    expect(() => openObject(context, ObjectType.DeviceRecord, journalObjectId(device, 1), unhex(first.sealed))).toThrow(/failed authentication/);
  });

  it('orders stamps by clock, then device, as strings', () => {
    expect([...v.stampsInOrder].sort()).toEqual(v.stampsInOrder);
  });

  it('names conflicted copies and derives their ids as specified', () => {
    for (const c of v.conflictCopies) expect(copyNodeId(c.node, c.stamp)).toBe(c.copyId);
    expect(conflictedName('notes.txt', 1767322860000, 'laptop')).toBe(v.conflictedNames[0].copy);
    expect(conflictedName('.bashrc', 1767322860000, 'desk')).toBe(v.conflictedNames[1].copy);
    expect(conflictedName('archive.tar.gz', 0, 'a/b', 2)).toBe(v.conflictedNames[2].copy);
    expect(Buffer.byteLength(conflictedName('x'.repeat(250) + '.txt', 0, 'laptop'))).toBeLessThanOrEqual(255);
  });

  it('refuses entries that are not what they claim, field by field', () => {
    const base = v.entries[0].plaintext as JournalEntry;
    const device = base.device;
    const bad = (change: (e: Record<string, any>) => void, seq = 1) => {
      const e = structuredClone(base) as Record<string, any>;
      change(e);
      return () => decodeJournalEntry(Buffer.from(JSON.stringify(e)), device, seq);
    };
    expect(bad(() => {}, 2)).toThrow(/says it is entry 1/);
    expect(bad((e) => (e.version = 3))).toThrow(/version 3/);
    expect(bad((e) => (e.previous = 'ab'))).toThrow(/previous/);
    expect(bad((e) => (e.records[0].stamp = e.records[0].stamp.replace(device, 'f'.repeat(32))))).toThrow(/not of device/);
    expect(bad((e) => (e.records[0].stamp = '0000000000ff.' + device))).toThrow(/past the entry's clock/);
    expect(bad((e) => (e.records[1].names = [['x', 'a/b']]))).toThrow(/names/);
    expect(bad((e) => (e.records[1].chunks = [[0, 'zz', 1, 1]]))).toThrow(/chunk/);
    expect(bad((e) => e.records.push(e.records[0]))).toThrow(/appears twice/);
    expect(() => decodeJournalEntry(Buffer.from('not json'), device, 1)).toThrow(/not JSON/);
  });

  it('opens and decodes the checkpoint and its parts; a part moved to another number or checkpoint fails', () => {
    const c = v.checkpoint;
    const device = c.plaintext.device as string;
    expect(checkpointObjectId(device, c.seq).toString('hex')).toBe(c.objectId);
    const head = decodeCheckpointHead(openObject(context, ObjectType.CheckpointHead, unhex(c.objectId), unhex(c.sealed)), device, c.seq);
    expect(head).toEqual(c.plaintext);
    expect(sealObjectWithNonce(context, ObjectType.CheckpointHead, unhex(c.objectId), encodeCheckpointHead(c.plaintext), unhex(c.nonce), { pad: true }).toString('hex')).toBe(c.sealed);
    // It covers the vectors' last entry.
    expect(head.covers[device]).toEqual({ seq: 2, hash: v.entries[1].hash });
    for (const p of c.parts) {
      expect(checkpointPartObjectId(device, c.seq, p.part).toString('hex')).toBe(p.objectId);
      expect(sealedHash(unhex(p.sealed))).toBe(head.parts[p.part]);
      const part = decodeCheckpointPart(openObject(context, ObjectType.CheckpointPart, unhex(p.objectId), unhex(p.sealed)), device, c.seq, p.part);
      expect(part.table).toBe(p.table);
      expect(part.rows).toEqual(p.rows);
    }
    const [first] = c.parts;
    expect(() => openObject(context, ObjectType.CheckpointPart, checkpointPartObjectId(device, c.seq, 1), unhex(first.sealed))).toThrow(/failed authentication/);
    expect(() => openObject(context, ObjectType.CheckpointPart, checkpointPartObjectId(device, c.seq + 1, 0), unhex(first.sealed))).toThrow(/failed authentication/);
    expect(() => openObject(context, ObjectType.CheckpointHead, checkpointPartObjectId(device, c.seq, 0), unhex(first.sealed))).toThrow(/failed authentication/);
  });

  it('refuses checkpoints that are not what they claim', () => {
    const device = v.checkpoint.plaintext.device as string;
    const head = (change: (h: Record<string, any>) => void, seq = 1) => {
      const h = structuredClone(v.checkpoint.plaintext) as Record<string, any>;
      change(h);
      return () => decodeCheckpointHead(Buffer.from(JSON.stringify(h)), device, seq);
    };
    expect(head(() => {}, 2)).toThrow(/says it is checkpoint 1/);
    expect(head((h) => (h.version = 3))).toThrow(/version 3/);
    expect(head((h) => (h.covers[device].seq = 0))).toThrow(/covers/);
    expect(head((h) => (h.parts = ['zz']))).toThrow(/parts/);
    const part = (table: string, rows: string, meta: { seq?: number; part?: number } = {}) => () =>
      decodeCheckpointPart(encodeCheckpointPart({ device, seq: meta.seq ?? 1, part: meta.part ?? 0, table: table as 'devices' }, rows), device, 1, 0);
    expect(part('devices', '["a","b"]')()).toMatchObject({ table: 'devices', rows: [['a', 'b']] });
    expect(part('passwords', '["a"]')).toThrow(/unknown table/);
    expect(part('devices', '1')).toThrow(/rows must be lists/);
    expect(part('devices', '["a"]', { part: 1 })).toThrow(/says it is part 1/);
    expect(() => decodeCheckpointPart(Buffer.from('not deflate at all'), device, 1, 0)).toThrow(/cannot be read/);
  });
});
