#!/usr/bin/env node
// Writes test/fixtures/journal-v2.json: known-answer vectors for format 2's metadata
// (docs/FORMAT.md, "Journals", "Checkpoints"): a device record and two chained journal entries
// sealed with fixed keys and nonces, their hashes and object ids, stamps in order, conflicted
// copies' ids and names, and a checkpoint of two parts covering both entries. Every input is fixed, so running it again reproduces the file byte for byte;
// run it only when a new format version is introduced (then write journal-v<N>.json beside it).
//
// Usage: npx tsc -p tsconfig.json && node scripts/make-journal-vectors.mjs
import { writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const dist = new URL('../dist/', import.meta.url);
const { loadSodium, sodium } = await import(new URL('crypto/sodium.js', dist).href);
const { deriveVaultKeys } = await import(new URL('crypto/keys.js', dist).href);
const { ObjectType, sealObjectWithNonce } = await import(new URL('crypto/objects.js', dist).href);
const journal = await import(new URL('format/journal.js', dist).href);
const checkpoint = await import(new URL('format/checkpoint.js', dist).href);
const { conflictedName, copyNodeId } = await import(new URL('index/merge.js', dist).href);

await loadSodium();
const s = sodium();
const hex = (b) => Buffer.from(b).toString('hex');
function fixed(label, length) {
  return Buffer.from(s.crypto_generichash(length, `coffer-journal-vector:${label}`, null));
}

const masterKey = fixed('master key', 32);
const vaultId = fixed('vault id', 16);
const keys = deriveVaultKeys(masterKey);
const context = { vaultId, keyEpoch: 1, key: keys.metadata };
const device = hex(fixed('device', 16));
const fileId = hex(fixed('file node', 16));
const dirId = hex(fixed('dir node', 16));
const chunk = hex(fixed('chunk id', 32));

const deviceRecord = { format: 'coffer-device', version: 2, device, name: 'laptop', created: '2026-01-02T03:04:05.000Z' };
const sealedDevice = sealObjectWithNonce(context, ObjectType.DeviceRecord, journal.deviceObjectId(device), journal.encodeDeviceRecord(deviceRecord), fixed('nonce device', 24), { pad: true });

const body = (over) => ({
  mode: 0o100644, uid: 1000, gid: 1000, rdev: 0, atimeMs: 1767322800000, mtimeMs: 1767322800000, ctimeMs: 1767322800000,
  target: null, size: 0, chunks: [], xattrs: [], names: [], deleted: false, placed: journal.makeStamp(1, device), ...over,
});
const entry1 = {
  format: 'coffer-journal', version: 2, device, seq: 1, previous: null, created: '2026-01-02T03:04:05.000Z', clock: 1,
  records: [
    { id: dirId, stamp: journal.makeStamp(1, device), prev: [], time: 1767322800000, ...body({ mode: 0o040755, names: [[journal.ROOT_NODE_ID, 'Documents']] }) },
    { id: fileId, stamp: journal.makeStamp(1, device), prev: [], time: 1767322800000, ...body({ size: 5, chunks: [[0, chunk, 5, 4148]], xattrs: [['user.color', Buffer.from('blue').toString('base64')]], names: [[dirId, 'notes.txt']] }) },
  ],
};
const sealed1 = sealObjectWithNonce(context, ObjectType.JournalEntry, journal.journalObjectId(device, 1), journal.encodeJournalEntry(entry1), fixed('nonce entry 1', 24), { pad: true });
const entry2 = {
  format: 'coffer-journal', version: 2, device, seq: 2, previous: journal.sealedHash(sealed1), created: '2026-01-02T03:05:00.000Z', clock: 2,
  records: [{ id: fileId, stamp: journal.makeStamp(2, device), prev: [journal.makeStamp(1, device)], time: 1767322860000, ...body({ deleted: true, names: [[dirId, 'notes.txt']] }) }],
};
const sealed2 = sealObjectWithNonce(context, ObjectType.JournalEntry, journal.journalObjectId(device, 2), journal.encodeJournalEntry(entry2), fixed('nonce entry 2', 24), { pad: true });

// A checkpoint of the state after both entries: two parts (devices, inodes), then its head.
const partRows = [
  ['devices', [[device, 'laptop']]],
  ['inodes', [[journal.ROOT_NODE_ID, 0o040755, 1000, 1000, 3, 0, 0, 1767322800000, 1767322800000, 1767322800000, null], [dirId, 0o040755, 1000, 1000, 2, 0, 0, 1767322800000, 1767322800000, 1767322800000, null]]],
];
const parts = partRows.map(([table, rows], part) => {
  const deflated = checkpoint.encodeCheckpointPart({ device, seq: 1, part, table }, rows.map((r) => JSON.stringify(r)).join(','));
  const objectId = checkpoint.checkpointPartObjectId(device, 1, part);
  const nonce = fixed(`nonce checkpoint part ${part}`, 24);
  const sealed = sealObjectWithNonce(context, ObjectType.CheckpointPart, objectId, deflated, nonce, { pad: true });
  return { part, table, rows, objectId: hex(objectId), nonce: hex(nonce), sealed: hex(sealed), hash: journal.sealedHash(sealed) };
});
const head = {
  format: 'coffer-checkpoint', version: 2, device, seq: 1, created: '2026-01-02T03:06:00.000Z', clock: 2,
  covers: { [device]: { seq: 2, hash: journal.sealedHash(sealed2) } },
  parts: parts.map((p) => p.hash),
  rows: { devices: 1, inodes: 2 },
};
const headNonce = fixed('nonce checkpoint head', 24);
const sealedHead = sealObjectWithNonce(context, ObjectType.CheckpointHead, checkpoint.checkpointObjectId(device, 1), checkpoint.encodeCheckpointHead(head), headNonce, { pad: true });

const out = {
  description: 'Coffer format 2 metadata vectors (docs/FORMAT.md, Journals); written by scripts/make-journal-vectors.mjs',
  masterKey: hex(masterKey),
  vaultId: hex(vaultId),
  metadataKey: hex(keys.metadata),
  deviceRecord: { device, objectId: hex(journal.deviceObjectId(device)), nonce: hex(fixed('nonce device', 24)), plaintext: deviceRecord, sealed: hex(sealedDevice) },
  entries: [
    { seq: 1, objectId: hex(journal.journalObjectId(device, 1)), nonce: hex(fixed('nonce entry 1', 24)), plaintext: entry1, sealed: hex(sealed1), hash: journal.sealedHash(sealed1) },
    { seq: 2, objectId: hex(journal.journalObjectId(device, 2)), nonce: hex(fixed('nonce entry 2', 24)), plaintext: entry2, sealed: hex(sealed2), hash: journal.sealedHash(sealed2) },
  ],
  checkpoint: {
    seq: 1,
    objectId: hex(checkpoint.checkpointObjectId(device, 1)),
    nonce: hex(headNonce),
    plaintext: head,
    sealed: hex(sealedHead),
    // Parts are raw DEFLATE inside: another zlib may compress the same JSON to other bytes, so a
    // reader checks what a part opens and inflates to, not how it was compressed.
    parts,
  },
  stampsInOrder: [journal.makeStamp(1, 'f'.repeat(32)), journal.makeStamp(2, '0'.repeat(32)), journal.makeStamp(2, device), journal.makeStamp(255, '0'.repeat(32))],
  conflictCopies: [
    { node: fileId, stamp: journal.makeStamp(2, device), copyId: copyNodeId(fileId, journal.makeStamp(2, device)) },
  ],
  conflictedNames: [
    { name: 'notes.txt', timeMs: 1767322860000, device: 'laptop', copy: conflictedName('notes.txt', 1767322860000, 'laptop') },
    { name: '.bashrc', timeMs: 1767322860000, device: 'desk', copy: conflictedName('.bashrc', 1767322860000, 'desk') },
    { name: 'archive.tar.gz', timeMs: 0, device: 'a/b', copy: conflictedName('archive.tar.gz', 0, 'a/b', 2) },
  ],
};
const path = fileURLToPath(new URL('../test/fixtures/journal-v2.json', import.meta.url));
writeFileSync(path, JSON.stringify(out, null, 2) + '\n');
process.stdout.write(`wrote ${path}\n`);
