#!/usr/bin/env node
// The I/O half of scripts/bench.mjs. bench.mjs runs every workload in a child like this one
// so that no I/O on a mount ever happens in the process that drives the benchmark (or in the
// one that serves the mount), and so that every target is exercised by byte-for-byte the same
// code.
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
//   bench-workload.mjs randread <path> <ops> <seed>     4 KiB preads at random aligned offsets (timed)
//   bench-workload.mjs randwrite <path> <ops> <seed>    4 KiB pwrites at random aligned offsets, then fsync (timed)
//   bench-workload.mjs stat <dir> <count>               lstat every entry of a directory (timed)
//   bench-workload.mjs delete <dir> <count>             unlink every entry of a directory, then rmdir it (timed)
//   bench-workload.mjs readtree <dir>                   read every file under a directory (timed)
import { createHash, randomFillSync } from 'node:crypto';
import { closeSync, fstatSync, fsyncSync, lstatSync, mkdirSync, openSync, readSync, readdirSync, rmdirSync, unlinkSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { mulberry32 } from '../../dist/seeded-random.js';

const BLOCK = 1024 * 1024;
const PAGE = 4096;

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

/** `ops` page-aligned offsets inside a file of `bytes`, drawn from `seed`. */
function randomOffsets(bytes, ops, seed) {
  const pages = Math.floor(bytes / PAGE);
  if (pages < 1) throw new Error(`the file has ${bytes} bytes, less than one ${PAGE}-byte block`);
  // mulberry32, so that every target gets the same offsets in the same order and a run can be
  // repeated exactly; next() is its 32-bit integer.
  const draw = mulberry32(seed);
  const next = () => draw() * 2 ** 32;
  // Two draws per offset: a single 32-bit draw could not reach every page of files above 16 TiB.
  return Float64Array.from({ length: ops }, () => ((next() * 2 ** 32 + next()) % pages) * PAGE);
}

/** The names `files` and `entries` create: sorted order is creation order. */
const entryName = (i) => `f${String(i).padStart(7, '0')}`;

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
      const fd = openSync(join(dir, entryName(i)), 'wx');
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

  randread(path, opsArg, seedArg) {
    const fd = openSync(path, 'r');
    try {
      const offsets = randomOffsets(fstatSync(fd).size, Number(opsArg), Number(seedArg));
      const buf = Buffer.allocUnsafe(PAGE);
      const start = now();
      for (const offset of offsets) {
        const n = readSync(fd, buf, 0, PAGE, offset);
        if (n !== PAGE) throw new Error(`short read at ${offset}: ${n} of ${PAGE} bytes`);
      }
      return { ops: offsets.length, bytes: offsets.length * PAGE, seconds: seconds(start) };
    } finally {
      closeSync(fd);
    }
  },

  randwrite(path, opsArg, seedArg) {
    const fd = openSync(path, 'r+');
    try {
      const offsets = randomOffsets(fstatSync(fd).size, Number(opsArg), Number(seedArg));
      // Fresh random content for every write, made before the clock starts: a repeated block
      // would let a deduplicating filesystem skip work.
      const payload = Buffer.allocUnsafe(offsets.length * PAGE);
      randomFillSync(payload);
      const start = now();
      offsets.forEach((offset, i) => {
        for (let done = 0; done < PAGE; ) done += writeSync(fd, payload, i * PAGE + done, PAGE - done, offset + done);
      });
      // IOPS that survive a crash: the writes count once they are durable.
      fsyncSync(fd);
      return { ops: offsets.length, bytes: offsets.length * PAGE, seconds: seconds(start) };
    } finally {
      closeSync(fd);
    }
  },

  stat(dir, countArg) {
    // Listing and lstat of every entry, as `ls -l` or a backup tool walks a directory.
    const start = now();
    const names = readdirSync(dir);
    for (const name of names) lstatSync(join(dir, name));
    const elapsed = seconds(start);
    if (names.length !== Number(countArg)) throw new Error(`${dir} lists ${names.length} entries, expected ${countArg}`);
    return { files: names.length, seconds: elapsed };
  },

  delete(dir, countArg) {
    const count = Number(countArg);
    // The names are known: `files` made them. Listing them is not part of deleting.
    const start = now();
    for (let i = 0; i < count; i++) unlinkSync(join(dir, entryName(i)));
    rmdirSync(dir);
    return { files: count, seconds: seconds(start) };
  },

  readtree(dir) {
    // Depth-first, in listing order, every regular file read to its end.
    const buf = Buffer.allocUnsafe(BLOCK);
    let files = 0;
    let bytes = 0;
    const start = now();
    const walk = (d) => {
      for (const entry of readdirSync(d, { withFileTypes: true })) {
        const path = join(d, entry.name);
        if (entry.isDirectory()) walk(path);
        else if (entry.isFile()) {
          const fd = openSync(path, 'r');
          try {
            for (let n; (n = readSync(fd, buf, 0, BLOCK, null)) > 0; ) bytes += n;
          } finally {
            closeSync(fd);
          }
          files++;
        }
      }
    };
    walk(dir);
    return { files, bytes, seconds: seconds(start) };
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
