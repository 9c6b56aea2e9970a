#!/usr/bin/env node
// The readers scripts/thumbnail-scan.mjs runs in child processes (never in its own process,
// which must not touch a mount). Each prints one JSON object on stdout; times are epoch ms.
//
//   node scan-reader.mjs scan <dir> <parallel> <bytes> [direct]
//     Like a file manager's thumbnailer: lists <dir>, then <parallel> workers take the files
//     in listing order and each stats it, opens it, reads its first <bytes> bytes and closes
//     it. Reports the listing time and every file's read latency. `direct` opens with
//     O_DIRECT: the reads bypass the page cache and its readahead.
//     Run it with UV_THREADPOOL_SIZE >= <parallel>: Node does file I/O on that pool (4 threads
//     by default), which would otherwise cap the concurrency.
//
//   node scan-reader.mjs user <delay-ms> <gap-ms> <file>...
//     Like the user opening documents: waits <delay-ms>, then reads each file whole, one after
//     another with <gap-ms> between them. Reports each read's start and latency.
import { constants } from 'node:fs';
import { open, readdir, readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';

const now = () => performance.timeOrigin + performance.now();
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function scan(dir, parallel, bytes, direct) {
  const startedAt = now();
  const names = (await readdir(dir)).sort();
  const listedAt = now();
  const reads = [];
  const errors = [];
  let next = 0;
  const worker = async () => {
    // O_DIRECT wants an aligned buffer: take a page-aligned slice of a larger one.
    const raw = Buffer.alloc(bytes + 4096);
    const buf = raw.subarray((4096 - (raw.byteOffset % 4096)) % 4096).subarray(0, bytes);
    while (next < names.length) {
      const name = names[next++];
      const path = join(dir, name);
      const t0 = now();
      try {
        await stat(path);
        const fh = await open(path, direct ? constants.O_RDONLY | constants.O_DIRECT : 'r');
        try {
          await fh.read(buf, 0, bytes, 0);
        } finally {
          await fh.close();
        }
        reads.push({ name, start: t0, ms: now() - t0 });
      } catch (err) {
        errors.push({ name, start: t0, ms: now() - t0, error: err.code ?? err.message });
      }
    }
  };
  await Promise.all(Array.from({ length: parallel }, worker));
  return { startedAt, listMs: listedAt - startedAt, endedAt: now(), files: names.length, reads, errors };
}

async function user(delayMs, gapMs, files) {
  await sleep(delayMs);
  const reads = [];
  for (const [i, file] of files.entries()) {
    if (i > 0) await sleep(gapMs);
    const start = now();
    try {
      const data = await readFile(file);
      reads.push({ file, start, ms: now() - start, bytes: data.length });
    } catch (err) {
      reads.push({ file, start, ms: now() - start, error: err.code ?? err.message });
    }
  }
  return { reads };
}

const [mode, ...args] = process.argv.slice(2);
let result;
if (mode === 'scan') result = await scan(args[0], Number(args[1]), Number(args[2]), args[3] === 'direct');
else if (mode === 'user') result = await user(Number(args[0]), Number(args[1]), args.slice(2));
else {
  process.stderr.write('usage: scan-reader.mjs scan <dir> <parallel> <bytes> | user <delay-ms> <gap-ms> <file>...\n');
  process.exit(2);
}
process.stdout.write(JSON.stringify(result) + '\n');
