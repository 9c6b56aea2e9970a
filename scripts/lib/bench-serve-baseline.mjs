#!/usr/bin/env node
// The baseline for scripts/bench-server.mjs: the least an HTTP object server on this machine
// must do for the same requests, and nothing more. Plain node:http, no accounts, tokens, keys
// checks, limits or metrics; a PUT streams to a temp file, fsyncs it, renames it into place and
// fsyncs the directory (what `coffer serve` does for durability, so the disk work is the same);
// GET (with one bytes= range), HEAD and a one-level LIST read the same files.
//
//   node scripts/lib/bench-serve-baseline.mjs DATA_DIR   -> prints "listening on http://127.0.0.1:PORT/"
import { randomBytes } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdir, open, readdir, rename, stat, unlink } from 'node:fs/promises';
import { createServer } from 'node:http';
import { dirname, join } from 'node:path';

const root = process.argv[2];
if (!root) {
  process.stderr.write('usage: bench-serve-baseline.mjs DATA_DIR\n');
  process.exit(2);
}
const tmp = join(root, 'tmp');
await mkdir(tmp, { recursive: true });

async function syncDir(dir) {
  const handle = await open(dir, 'r');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

function answer(res, status, body) {
  const text = body === undefined ? '' : JSON.stringify(body);
  res.writeHead(status, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(text) });
  res.end(text);
}

async function put(req, res, path) {
  const temp = join(tmp, `${randomBytes(8).toString('hex')}.tmp`);
  const handle = await open(temp, 'wx', 0o600);
  try {
    for await (const piece of req) await handle.write(piece);
    await handle.sync();
  } finally {
    await handle.close();
  }
  await mkdir(dirname(path), { recursive: true });
  await rename(temp, path);
  await syncDir(dirname(path));
  res.writeHead(201, { 'Content-Length': 0 }).end();
}

async function get(req, res, path, headOnly) {
  const info = await stat(path).catch(() => undefined);
  if (!info) return answer(res, 404, { error: { code: 'NOT_FOUND' } });
  let start = 0;
  let end = info.size - 1;
  let status = 200;
  const match = /^bytes=(\d+)-(\d*)$/.exec(req.headers.range ?? '');
  if (match) {
    start = Number(match[1]);
    end = match[2] === '' ? end : Math.min(Number(match[2]), end);
    status = 206;
    res.setHeader('Content-Range', `bytes ${start}-${end}/${info.size}`);
  }
  res.writeHead(status, { 'Content-Type': 'application/octet-stream', 'Content-Length': Math.max(0, end - start + 1) });
  if (headOnly || end < start) return res.end();
  createReadStream(path, { start, end }).on('error', () => res.destroy()).pipe(res);
}

async function list(res, prefix) {
  // The bench lists "c<n>/": one directory level is enough.
  const dir = join(root, 'objects', prefix);
  const names = await readdir(dir).catch(() => []);
  const objects = [];
  for (const name of names.sort()) {
    const info = await stat(join(dir, name)).catch(() => undefined);
    if (info?.isFile()) objects.push({ key: prefix + name, size: info.size });
  }
  answer(res, 200, { objects, next: null });
}

const server = createServer({ keepAliveTimeout: 5_000 }, (req, res) => {
  const url = new URL(req.url ?? '/', 'http://baseline.invalid');
  const handle = async () => {
    if (url.pathname === '/v1/objects') return list(res, url.searchParams.get('prefix') ?? '');
    if (!url.pathname.startsWith('/v1/objects/') || url.pathname.includes('..')) return answer(res, 404, { error: { code: 'NOT_FOUND' } });
    const path = join(root, 'objects', decodeURIComponent(url.pathname.slice('/v1/objects/'.length)));
    if (req.method === 'PUT') return put(req, res, path);
    if (req.method === 'GET' || req.method === 'HEAD') return get(req, res, path, req.method === 'HEAD');
    if (req.method === 'DELETE') {
      await unlink(path).catch(() => {});
      return res.writeHead(204).end();
    }
    return answer(res, 405, { error: { code: 'METHOD_NOT_ALLOWED' } });
  };
  handle().catch((err) => {
    process.stderr.write(`baseline: ${err?.stack ?? err}\n`);
    if (res.headersSent) res.destroy();
    else answer(res, 500, { error: { code: 'INTERNAL' } });
  });
});
server.listen(0, '127.0.0.1', () => process.stdout.write(`listening on http://127.0.0.1:${server.address().port}/\n`));
for (const signal of ['SIGTERM', 'SIGINT']) process.on(signal, () => server.close(() => process.exit(0)) && server.closeAllConnections());
