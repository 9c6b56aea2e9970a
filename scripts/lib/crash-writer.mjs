#!/usr/bin/env node
/**
 * The writer of the crash harness: changes files under <dir> until its filesystem goes
 * away, and records in a journal (on another disk, fsynced) what it was about to do and
 * what the filesystem acknowledged. Every content is derived from (seed, path, version),
 * so the checker can rebuild any version without the writer.
 *
 *   node crash-writer.mjs <dir> <journal> <content-seed> <decision-seed> <max-ms>
 *
 * Journal lines (JSON): {op:'begin', ...} before an operation, {op:'ack', ...} after its
 * fsync returned. At most one operation is in flight at a time.
 */
import * as fs from 'node:fs';
import { join } from 'node:path';
import { versionContent, appendContent, overwriteContent, NAMES, readJournal, rng } from './crash-model.mjs';

const [dir, journalPath, seedText, decisionSeedText, maxMsText] = process.argv.slice(2);
const seed = Number(seedText);
const deadline = Date.now() + Number(maxMsText);
const journal = fs.openSync(journalPath, 'a');
const random = rng(Number(decisionSeedText));

/** The writer's own view of each file: what was last acknowledged. */
const files = readJournal(fs.readFileSync(journalPath, 'utf8')).acked;

function log(entry) {
  fs.writeSync(journal, JSON.stringify(entry) + '\n');
  fs.fsyncSync(journal);
}

function fsyncPath(path) {
  const fd = fs.openSync(path, 'r');
  try {
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
}

function writeFileSynced(path, data) {
  const fd = fs.openSync(path, 'w');
  try {
    fs.writeSync(fd, data);
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
}

const pick = (list) => list[Math.floor(random() * list.length)];

function step() {
  const name = pick(NAMES);
  const path = join(dir, name);
  const current = files.get(name); // { version, kind, length } or undefined
  const roll = random();
  if (!current || roll < 0.3) {
    const version = (current?.version ?? 0) + 1;
    const length = Math.floor(random() ** 2 * 3 * 1024 * 1024);
    const next = { origin: name, base: version, baseLength: length, version, length, appends: [], overwrites: [] };
    log({ op: 'begin', kind: 'save', name, next });
    writeFileSynced(`${path}.tmp`, versionContent(seed, next));
    fs.renameSync(`${path}.tmp`, path);
    fsyncPath(dir);
    files.set(name, next);
    log({ op: 'ack', name, file: next });
  } else if (roll < 0.55) {
    const add = Math.floor(random() * 600_000) + 1;
    const next = { ...current, version: current.version + 1, length: current.length + add, appends: [...current.appends, { version: current.version + 1, length: add }] };
    log({ op: 'begin', kind: 'append', name, next });
    const fd = fs.openSync(path, 'a');
    try {
      fs.writeSync(fd, appendContent(seed, current.origin, next.version, add));
      fs.fsyncSync(fd);
    } finally {
      fs.closeSync(fd);
    }
    files.set(name, next);
    log({ op: 'ack', name, file: next });
  } else if (roll < 0.75 && current.length > 0) {
    const offset = Math.floor(random() * current.length);
    const length = Math.min(current.length - offset, Math.floor(random() * 1_500_000) + 1);
    const next = { ...current, version: current.version + 1, overwrites: [...current.overwrites, { version: current.version + 1, offset, length }] };
    log({ op: 'begin', kind: 'overwrite', name, next });
    const fd = fs.openSync(path, 'r+');
    try {
      fs.writeSync(fd, overwriteContent(seed, current.origin, next.version, length), 0, length, offset);
      fs.fsyncSync(fd);
    } finally {
      fs.closeSync(fd);
    }
    files.set(name, next);
    log({ op: 'ack', name, file: next });
  } else if (roll < 0.9) {
    const target = pick(NAMES.filter((n) => n !== name));
    log({ op: 'begin', kind: 'rename', name, target });
    fs.renameSync(path, join(dir, target));
    fsyncPath(dir);
    files.set(target, current);
    files.delete(name);
    log({ op: 'ack', kind: 'rename', name, target });
  } else {
    log({ op: 'begin', kind: 'unlink', name });
    fs.unlinkSync(path);
    fsyncPath(dir);
    files.delete(name);
    log({ op: 'ack', kind: 'unlink', name });
  }
}

fs.mkdirSync(dir, { recursive: true });
try {
  while (Date.now() < deadline) step();
  process.exit(0);
} catch (err) {
  // The filesystem went away under us (the daemon was killed): that is the point.
  process.stderr.write(`writer stopped: ${err.code ?? err.message}\n`);
  process.exit(3);
}
