/**
 * The daemon log on its own: JSON lines with levels and fields, rotation at a size with three
 * old files kept, everything written on close and synchronously on a fatal error, and calls
 * that return at once even when the file cannot be written (the FUSE thread must never wait).
 */
import { execFileSync, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { createLogger } from '../src/daemon/log.js';
import { formatLogLine } from '../src/daemon/log-format.js';
import { ROOT } from './helpers/drive.js';

const dirs: string[] = [];
afterEach(() => {
  while (dirs.length > 0) fs.rmSync(dirs.pop()!, { recursive: true, force: true });
});

function tempDir(): string {
  const dir = fs.mkdtempSync(join(tmpdir(), 'coffer-log-'));
  dirs.push(dir);
  return dir;
}

const lines = (path: string) =>
  fs
    .readFileSync(path, 'utf8')
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l) as Record<string, unknown>);

describe('daemon log', () => {
  it('writes JSON lines with level, time, pid, message and fields; drops lines below its level', async () => {
    const path = join(tempDir(), 'logs', 'daemon.log');
    const log = createLogger(path, { level: 'info' });
    log.debug('not kept');
    log.info('mounted', { path: '/a', op: 'mount' });
    const err = Object.assign(new Error('bad bytes'), { code: 'EIO' });
    log.error('read: bad bytes', { op: 'read', chunk: 'ab'.repeat(32), err });
    await log.close();
    const [info, error, ...rest] = lines(path);
    expect(rest).toEqual([]);
    expect(info).toMatchObject({ level: 'info', pid: process.pid, msg: 'mounted', path: '/a', op: 'mount' });
    expect(new Date(info!.time as string).getTime()).toBeGreaterThan(Date.now() - 60_000);
    expect(error).toMatchObject({ level: 'error', op: 'read', chunk: 'ab'.repeat(32), err: { type: 'Error', message: 'bad bytes', code: 'EIO' } });
    expect((error!.err as { stack: string }).stack).toMatch(/log\.test\.ts/);
  });

  it('formats lines for people, and passes anything else through', () => {
    const line = JSON.stringify({ level: 'warn', time: '2025-01-01T00:00:00.000Z', pid: 9, op: 'get', err: { message: 'timed out' }, msg: 'fetching: timed out' });
    expect(formatLogLine(line)).toBe('2025-01-01T00:00:00.000Z WARN  [9] fetching: timed out  op=get');
    expect(formatLogLine(JSON.stringify({ level: 30, time: 0, msg: 'x', n: 1, s: 'two words' }))).toBe('1970-01-01T00:00:00.000Z INFO  x  n=1 s="two words"');
    expect(formatLogLine('Segmentation fault')).toBe('Segmentation fault');
  });

  it('rotates at maxBytes, keeping three old files, and loses no line it keeps', async () => {
    const dir = tempDir();
    const path = join(dir, 'daemon.log');
    const log = createLogger(path, { level: 'info', maxBytes: 2048 });
    const count = 300;
    for (let i = 0; i < count; i++) {
      log.info(`line ${i}`, { i });
      if (i % 10 === 9) await new Promise((r) => setTimeout(r, 2));
    }
    await log.close();
    const files = fs.readdirSync(dir).sort();
    expect(files).toEqual(['daemon.log', 'daemon.log.1', 'daemon.log.2', 'daemon.log.3']);
    // Oldest first, the kept lines are a contiguous run ending with the last one logged.
    const kept = ['daemon.log.3', 'daemon.log.2', 'daemon.log.1', 'daemon.log'].flatMap((f) => lines(join(dir, f)).map((e) => e.i as number));
    expect(kept.at(-1)).toBe(count - 1);
    expect(kept).toEqual(Array.from({ length: kept.length }, (_, n) => kept[0]! + n));
    // Past maxBytes by at most one write batch (16 KiB) and what was logged during a rename.
    for (const f of files.slice(1)) expect(fs.statSync(join(dir, f)).size).toBeLessThan(2048 + 16 * 1024 + 4096);
  });

  it('writes what is queued synchronously when the process dies of a fatal error', () => {
    const path = join(tempDir(), 'daemon.log');
    const script = `
      import { createLogger } from ${JSON.stringify(join(ROOT, 'dist', 'daemon', 'log.js'))};
      const log = createLogger(${JSON.stringify(path)});
      await new Promise((r) => setTimeout(r, 100)); // the file is open
      for (let i = 0; i < 5000; i++) log.info('line ' + i, { i });
      log.fatal('giving up', { err: new Error('boom') });
      process.exit(1);
    `;
    const result = spawnSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8' });
    expect(result.status, result.stderr).toBe(1);
    const entries = lines(path);
    expect(entries.length).toBe(5001);
    expect(entries.at(-1)).toMatchObject({ level: 'fatal', msg: 'giving up', err: { message: 'boom' } });
  });

  it('never makes the caller wait for the file: logging to a pipe nobody reads returns at once', async () => {
    const fifo = join(tempDir(), 'daemon.log');
    execFileSync('mkfifo', [fifo]);
    // Opening a FIFO for writing blocks until a reader comes: only a thread-pool thread waits.
    const log = createLogger(fifo, { maxBytes: 0 });
    const started = performance.now();
    for (let i = 0; i < 2000; i++) log.info(`line ${i}`, { i });
    const spent = performance.now() - started;
    const timerStarted = performance.now();
    await new Promise((r) => setTimeout(r, 20));
    expect(spent).toBeLessThan(1000);
    expect(performance.now() - timerStarted, 'the event loop kept turning').toBeLessThan(500);
    // A reader comes: every queued line arrives.
    const reader = fs.createReadStream(fifo, { encoding: 'utf8' });
    let text = '';
    reader.on('data', (d) => (text += d));
    const ended = new Promise<void>((r) => reader.on('close', () => r()));
    await log.close();
    await ended;
    expect(text.split('\n').filter(Boolean).length).toBe(2000);
  });
});
