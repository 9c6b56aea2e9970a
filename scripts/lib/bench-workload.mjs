#!/usr/bin/env node
// The I/O half of scripts/bench.mjs. bench.mjs runs every workload in a child like this one
// so that no I/O on a Coffer mount ever happens in the process that drives the benchmark, and
// so that the plain directory and the mount are exercised by byte-for-byte the same code.
//
// Each command prints one JSON line on stdout. Timed commands measure only their I/O loop:
// node's start-up (~50 ms) would otherwise be a visible share of the small-file workload.
//
//   bench-workload.mjs source <path> <bytes>            random file, fsynced; prints its sha256 (untimed)
//   bench-workload.mjs warm <path>                      read a file once so it sits in the page cache
//   bench-workload.mjs write <source> <dest>            copy in 1 MiB writes, then fsync (timed)
//   bench-workload.mjs read <path>                      read in 1 MiB reads, discard (timed)
//   bench-workload.mjs hash <path>                      sha256 of a file (untimed)
//   bench-workload.mjs files <dir> <count> <bytes>      create <count> files of random content (timed)
import { createHash, randomFillSync } from 'node:crypto';
import { closeSync, fsyncSync, mkdirSync, openSync, readSync, readdirSync, writeSync } from 'node:fs';
import { join } from 'node:path';

const BLOCK = 1024 * 1024;

const now = () => process.hrtime.bigint();
const seconds = (start) => Number(now() - start) / 1e9;

function writeAll(fd, buf, length) {
  // A FUSE filesystem may accept fewer bytes than asked; a short write is not an error.
  for (let off = 0; off < length; ) off += writeSync(fd, buf, off, length - off);
}

/** Calls `each(buffer, length)` for every block of the file, in order; returns the byte count. */
function readBlocks(path, each) {
  const buf = Buffer.allocUnsafe(BLOCK);
  const fd = openSync(path, 'r');
  let total = 0;
  try {
    for (;;) {
      const n = readSync(fd, buf, 0, BLOCK, null);
      if (n === 0) break;
      each(buf, n);
      total += n;
    }
  } finally {
    closeSync(fd);
  }
  return total;
}

const commands = {
  source(path, bytesArg) {
    // Random data: a sequence of zeros or a repeated block would flatter any
    // filesystem that compresses or deduplicates (Coffer addresses chunks by content).
    const bytes = Number(bytesArg);
    const buf = Buffer.allocUnsafe(BLOCK);
    const hash = createHash('sha256');
    const fd = openSync(path, 'w');
    try {
      for (let done = 0; done < bytes; ) {
        const n = Math.min(BLOCK, bytes - done);
        randomFillSync(buf, 0, n);
        hash.update(buf.subarray(0, n));
        writeAll(fd, buf, n);
        done += n;
      }
      // Otherwise the kernel would write this file back during the first timed workload.
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    return { bytes, sha256: hash.digest('hex') };
  },

  warm(path) {
    return { bytes: readBlocks(path, () => {}) };
  },

  write(source, dest) {
    const buf = Buffer.allocUnsafe(BLOCK);
    const start = now();
    const inFd = openSync(source, 'r');
    const outFd = openSync(dest, 'w');
    let bytes = 0;
    try {
      for (;;) {
        const n = readSync(inFd, buf, 0, BLOCK, null);
        if (n === 0) break;
        writeAll(outFd, buf, n);
        bytes += n;
      }
      // The figure is meant to count data that survives a crash, not data parked in a buffer.
      fsyncSync(outFd);
    } finally {
      closeSync(inFd);
      closeSync(outFd);
    }
    return { bytes, seconds: seconds(start) };
  },

  read(path) {
    // No hashing here: sha256 runs at about the speed of a fast disk and would cap the figure.
    const start = now();
    const bytes = readBlocks(path, () => {});
    return { bytes, seconds: seconds(start) };
  },

  hash(path) {
    const hash = createHash('sha256');
    const bytes = readBlocks(path, (buf, n) => hash.update(buf.subarray(0, n)));
    return { bytes, sha256: hash.digest('hex') };
  },

  files(dir, countArg, bytesArg) {
    const count = Number(countArg);
    const size = Number(bytesArg);
    // Distinct content per file, prepared before the clock starts, so that neither the
    // random generator nor content deduplication shows up in the figure.
    const payload = Buffer.allocUnsafe(count * size);
    randomFillSync(payload);
    mkdirSync(dir, { recursive: true });
    const start = now();
    for (let i = 0; i < count; i++) {
      const fd = openSync(join(dir, `f${String(i).padStart(6, '0')}`), 'wx');
      try {
        writeAll(fd, payload.subarray(i * size, (i + 1) * size), size);
      } finally {
        closeSync(fd);
      }
    }
    const elapsed = seconds(start);
    const listed = readdirSync(dir).length;
    if (listed !== count) throw new Error(`created ${count} files in ${dir} but the directory lists ${listed}`);
    return { files: count, bytes: count * size, seconds: elapsed };
  },
};

const [name, ...args] = process.argv.slice(2);
const command = commands[name];
if (!command) {
  process.stderr.write(`bench-workload.mjs: unknown command ${JSON.stringify(name)}; one of ${Object.keys(commands).join(', ')}\n`);
  process.exit(2);
}
try {
  process.stdout.write(JSON.stringify(command(...args)) + '\n');
} catch (err) {
  // fs errors already start with their code (ENOTCONN: ...).
  process.stderr.write(`bench-workload.mjs ${name}: ${err?.message ?? err}\n`);
  process.exit(1);
}
