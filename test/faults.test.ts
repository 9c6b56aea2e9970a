/**
 * A mounted drive whose remote misbehaves (COFFER_FAULTS, see src/remote/faulty-backend.ts),
 * one fault kind per test. Whatever the remote does, Coffer must keep four promises:
 * (a) data acknowledged by fsync and close is never lost, and reaches the remote once the
 *     fault is over;
 * (b) no operation on the mount blocks past its bound: local work stays fast, and a read
 *     that needs the remote fails with EIO after about remoteReadTimeoutMs rather than hanging;
 * (c) the upload queue drains once the fault ends;
 * (d) while uploads fail, `coffer status` says so.
 *
 * Every test starts from a copy of one seed vault whose files are already on the remote,
 * with nothing cached locally, so reading those files must go to the faulty remote.
 * The faults are switched on and off from here through a file the daemon checks on every
 * remote call, so each test controls exactly when its fault starts and ends.
 */
import { spawnSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as fsp from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { coffer, isMounted, readLogEntries, Workspace, type CliResult } from './helpers/drive.js';

const CHUNK = 1024 * 1024;
/** Written to the vault config: short, so reads that must fail fail quickly. */
const REMOTE_READ_TIMEOUT_MS = 2000;
/** The most any single operation on the mount may take: one remote read timeout and slack. */
const OP_BOUND_MS = REMOTE_READ_TIMEOUT_MS + 1500;
/** How long a test waits for status to show a fault before giving up on it. */
const STATUS_WAIT_MS = 10_000;

/** Files on the remote before any fault: reading them back needs the remote. */
const SEED_FILES: Record<string, number> = { 'old/small': 300_000, 'old/a': 900_000, 'old/b': 900_000, 'old/multi': 2_500_000 };

interface Drive {
  ws: Workspace;
  remote: string;
  url: string;
  /** Switches the fault on while it exists. */
  gate: string;
  /** Everything this test wrote, by path under the mount. */
  files: Map<string, Buffer>;
  ops: OpRecord[];
  pid: number;
}

interface OpRecord {
  op: string;
  ms: number;
  outcome: string;
}

let seed: { ws: Workspace; vault: string; remote: string; files: Map<string, Buffer> };
let current: { ws: Workspace; mounts: string[]; cleanups: (() => Promise<void>)[] } | undefined;

/** Unmounts what a test left mounted before its folder goes (rm -r must never reach into a mount). */
async function unmountAll(mounts: string[]): Promise<void> {
  for (const mnt of mounts) {
    if (!isMounted(mnt)) continue;
    const result = await cli(['unmount', mnt]);
    if (result.code !== 0 || isMounted(mnt)) spawnSync('umount', ['-l', mnt]);
  }
}

/** Commands that must see no faults even if the developer's shell has COFFER_FAULTS set. */
function cli(args: string[], options: { faults?: string; timeoutMs?: number } = {}): Promise<CliResult> {
  return coffer(args, { env: { COFFER_FAULTS: options.faults ?? '' }, timeoutMs: options.timeoutMs });
}

async function cliOk(args: string[], options: { faults?: string; timeoutMs?: number } = {}): Promise<CliResult> {
  const result = await cli(args, options);
  if (result.code !== 0) throw new Error(`coffer ${args.join(' ')} failed (${result.code}): ${result.stderr}`);
  return result;
}

async function status(target: string): Promise<Record<string, any>> {
  return JSON.parse((await cliOk(['status', target, '--json'])).stdout);
}

const sha = (data: Buffer) => createHash('sha256').update(data).digest('hex');

beforeAll(async () => {
  const ws = new Workspace('coffer-faults-seed-');
  seed = { ws, vault: ws.vault, remote: join(ws.dir, 'remote'), files: new Map() };
  const remote = join(ws.dir, 'remote');
  await cliOk(['init', ws.vault, '--remote', `file://${remote}`]);
  await cliOk(['mount', ws.vault, ws.mnt]);
  const files = new Map<string, Buffer>();
  await fsp.mkdir(ws.path('old'));
  for (const [name, size] of Object.entries(SEED_FILES)) {
    const data = randomBytes(size);
    await fsp.writeFile(ws.path(name), data);
    files.set(name, data);
  }
  await cliOk(['sync', ws.mnt, '--wait']);
  await cliOk(['unmount', ws.mnt]);
  seed.files = files;
});

afterEach(async () => {
  if (!current) return;
  for (const cleanup of current.cleanups) await cleanup();
  await unmountAll(current.mounts);
  await current.ws.cleanup();
  current = undefined;
});

afterAll(async () => {
  if (!seed) return;
  await unmountAll([seed.ws.mnt]);
  await seed.ws.cleanup();
});

/**
 * A fresh copy of the seed vault and its remote, mounted with `faults` (the gate file is
 * added by the caller's plan) and nothing cached: every seed file is on the remote only.
 */
async function mountWithFaults(faults: (gate: string) => string): Promise<Drive> {
  const ws = new Workspace('coffer-faults-');
  current = { ws, mounts: [ws.mnt], cleanups: [] };
  const remote = join(ws.dir, 'remote');
  const url = `file://${remote}`;
  fs.cpSync(seed.vault, ws.vault, { recursive: true });
  fs.cpSync(seed.remote, remote, { recursive: true });
  // Nothing cached, as after `coffer clone`: the seed files can only come from the remote,
  // while what the test writes stays local (a small cache limit would evict that too).
  fs.rmSync(join(ws.vault, 'cache'), { recursive: true });
  fs.mkdirSync(join(ws.vault, 'cache'));
  const configPath = join(ws.vault, 'config.json');
  const config = JSON.parse(fs.readFileSync(configPath, 'utf8'));
  fs.writeFileSync(configPath, JSON.stringify({ ...config, remote: url, remoteReadTimeoutMs: REMOTE_READ_TIMEOUT_MS }, null, 2));
  const gate = join(ws.dir, 'fault-on');
  await cliOk(['mount', ws.vault, ws.mnt], { faults: faults(gate) });
  const drive: Drive = { ws, remote, url, gate, files: new Map(seed.files), ops: [], pid: 0 };
  const st = await status(ws.mnt);
  expect(st.remote).toMatch(/with injected faults/);
  drive.pid = st.pid;
  return drive;
}

/**
 * Times one operation on the mount. If it blocks far past the bound the test fails here
 * rather than hanging (the operation itself stays stuck in a libuv thread).
 */
async function timed<T>(drive: Drive, op: string, fn: () => Promise<T>): Promise<T> {
  const started = performance.now();
  let timer: NodeJS.Timeout | undefined;
  let outcome = 'ok';
  try {
    return await Promise.race([
      fn(),
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`${op} still blocked after ${3 * OP_BOUND_MS} ms`)), 3 * OP_BOUND_MS);
      }),
    ]);
  } catch (err) {
    outcome = (err as NodeJS.ErrnoException).code ?? (err as Error).message;
    throw err;
  } finally {
    clearTimeout(timer);
    drive.ops.push({ op, ms: Math.round(performance.now() - started), outcome });
  }
}

/** Writes, fsyncs and closes a file during the fault: from then on it must never be lost. */
async function writeDurably(drive: Drive, name: string, data: Buffer): Promise<void> {
  const path = drive.ws.path(name);
  const handle = await timed(drive, `open ${name} for writing`, () => fsp.open(path, 'w'));
  try {
    await timed(drive, `write ${name}`, () => handle.writeFile(data));
    await timed(drive, `fsync ${name}`, () => handle.sync());
  } finally {
    await timed(drive, `close ${name}`, () => handle.close());
  }
  drive.files.set(name, data);
}

/**
 * Reads a file a chunk per call, timing each call. Returns the bytes, or 'EIO' if the
 * drive could not get them; any other failure, or wrong bytes, fails the test.
 */
async function readBack(drive: Drive, name: string): Promise<Buffer | 'EIO'> {
  const handle = await timed(drive, `open ${name}`, () => fsp.open(drive.ws.path(name), 'r'));
  try {
    const parts: Buffer[] = [];
    const size = drive.files.get(name)!.length;
    // A read that fails part-way returns what it got, as on any filesystem: go on from there.
    for (let offset = 0; ; ) {
      const buf = Buffer.alloc(CHUNK);
      let bytesRead: number;
      try {
        ({ bytesRead } = await timed(drive, `read ${name} @${offset}`, () => handle.read(buf, 0, CHUNK, offset)));
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'EIO') return 'EIO';
        throw err;
      }
      if (bytesRead === 0) break;
      if (bytesRead < CHUNK && offset + bytesRead < size) drive.ops.at(-1)!.outcome = `short read of ${bytesRead}`;
      parts.push(buf.subarray(0, bytesRead));
      offset += bytesRead;
    }
    const data = Buffer.concat(parts);
    expect(sha(data), `${name} read back different bytes`).toBe(sha(drive.files.get(name)!));
    return data;
  } finally {
    await timed(drive, `close ${name}`, () => handle.close());
  }
}

async function expectAllIntact(drive: Drive, root = drive.ws.mnt): Promise<void> {
  for (const [name, data] of drive.files) {
    const got = await fsp.readFile(join(root, name));
    expect(sha(got), `${name} under ${root}`).toBe(sha(data));
  }
}

/** Local metadata operations: none of them may wait for the remote. */
async function browse(drive: Drive): Promise<void> {
  const names = await timed(drive, 'readdir /', () => fsp.readdir(drive.ws.mnt));
  expect(names).toEqual(expect.arrayContaining(['old']));
  await timed(drive, 'readdir old', () => fsp.readdir(drive.ws.path('old'), { withFileTypes: true }));
  for (const name of drive.files.keys()) {
    const st = await timed(drive, `stat ${name}`, () => fsp.stat(drive.ws.path(name)));
    expect(st.size).toBe(drive.files.get(name)!.length);
  }
}

/** Polls status until `test` holds; returns that status, or the last one seen when time runs out. */
async function watchStatus(mnt: string, test: (st: Record<string, any>) => boolean, timeoutMs = STATUS_WAIT_MS): Promise<Record<string, any>> {
  const deadline = Date.now() + timeoutMs;
  let st = await status(mnt);
  while (!test(st) && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 200));
    st = await status(mnt);
  }
  return st;
}

const showsUploadTrouble = (st: Record<string, any>) => st.uploadErrors.length > 0 || st.sync.lastError !== null;

/**
 * Watches status for the whole fault, as a user running `coffer status` would: a failed
 * upload that is retried and succeeds leaves status again, so a single look afterwards
 * could miss it.
 */
function watchForTrouble(mnt: string): { seen: () => Record<string, any> | undefined; stop: () => Promise<Record<string, any>> } {
  let first: Record<string, any> | undefined;
  let last: Record<string, any> = {};
  let failure: unknown;
  let stopped = false;
  const loop = (async () => {
    try {
      while (!stopped) {
        last = await status(mnt);
        if (!first && showsUploadTrouble(last)) first = last;
        await new Promise((r) => setTimeout(r, 250));
      }
    } catch (err) {
      failure = err;
    }
  })();
  const stop = async () => {
    stopped = true;
    await loop;
    if (failure && !first) throw failure;
    return first ?? last;
  };
  // A test that fails mid-fault must not leave this polling a mount that is gone.
  current?.cleanups.push(() => stop().then(() => {}, () => {}));
  return { seen: () => first, stop };
}

interface FaultRun {
  /** Reads of seed files made while the fault was on. */
  remoteReads: (Buffer | 'EIO')[];
  /** The first status during the fault that showed upload trouble, else the last one seen. */
  faultStatus: Record<string, any>;
}

/**
 * The common course of a test: switch the fault on, write and fsync new files, read them
 * back, browse, read seed files from the remote, watch status; switch it off; then sync,
 * and check the queue drained and every byte is there.
 */
async function runFault(
  drive: Drive,
  options: { expectUploadTrouble: boolean; minFaultMs?: number; readRounds?: number },
): Promise<FaultRun> {
  const { ws } = drive;
  fs.writeFileSync(drive.gate, '');
  const faultStarted = Date.now();
  const watcher = watchForTrouble(ws.mnt);
  await timed(drive, 'mkdir new', () => fsp.mkdir(ws.path('new')));
  const sizes = [1_200_000, 40_000, 2_100_000, 700_000, 5];
  for (const [i, size] of sizes.entries()) {
    await writeDurably(drive, `new/f${i}`, randomBytes(size));
    // Written a moment ago and fsynced: served locally whatever the remote does.
    const back = await readBack(drive, `new/f${i}`);
    expect(back, `new/f${i} was written locally but could not be read`).not.toBe('EIO');
  }
  await browse(drive);
  const remoteReads: (Buffer | 'EIO')[] = [];
  for (let round = 0; round < (options.readRounds ?? 1); round++) {
    for (const name of Object.keys(SEED_FILES)) remoteReads.push(await readBack(drive, name));
  }
  if (options.expectUploadTrouble) {
    for (const deadline = Date.now() + STATUS_WAIT_MS; !watcher.seen() && Date.now() < deadline; ) await new Promise((r) => setTimeout(r, 200));
  }
  const left = (options.minFaultMs ?? 0) - (Date.now() - faultStarted);
  if (left > 0) await new Promise((r) => setTimeout(r, left));
  await browse(drive);
  const faultStatus = await watcher.stop();
  fs.rmSync(drive.gate);
  expect(showsUploadTrouble(faultStatus), `status during the fault: ${JSON.stringify(faultStatus)}`).toBe(options.expectUploadTrouble);

  const started = Date.now();
  const synced = await cli(['sync', ws.mnt, '--wait'], { timeoutMs: 60_000 });
  expect(synced.code, `sync --wait after the fault: ${synced.stderr.slice(-500)}`).toBe(0);
  drive.ops.push({ op: 'coffer sync --wait after the fault', ms: Date.now() - started, outcome: 'ok' });
  const after = await status(ws.mnt);
  expect(after.pendingChunks).toBe(0);
  expect(after.uploadErrors).toEqual([]);
  expect(after.sync.publishPending).toBe(false);
  await expectAllIntact(drive);
  return { remoteReads, faultStatus };
}

/** (b) and the daemon's health: nothing blocked past its bound, no crash, nothing unexpected logged. */
async function expectHealthy(drive: Drive): Promise<void> {
  const slow = drive.ops.filter((r) => r.ms > OP_BOUND_MS && !r.op.startsWith('coffer '));
  expect(slow, 'operations on the mount that blocked past their bound').toEqual([]);
  expect((await status(drive.ws.mnt)).pid, 'the daemon was replaced: it crashed').toBe(drive.pid);
  const entries = readLogEntries(drive.ws.log);
  expect(entries.filter((e) => e.level === 'fatal' || /unhandled|unexpected error|daemon failed/i.test(e.msg ?? e.unstructured ?? ''))).toEqual([]);
}

/** Proves the remote alone holds every file: a clone on a "new machine" reads them all. */
async function expectCloneIntact(drive: Drive): Promise<void> {
  const fresh = join(drive.ws.dir, 'clone');
  const mnt = join(drive.ws.dir, 'clone-mnt');
  fs.mkdirSync(mnt);
  await cliOk(['clone', drive.url, fresh]);
  current?.mounts.push(mnt);
  await cliOk(['mount', fresh, mnt]);
  await expectAllIntact(drive, mnt);
  await cliOk(['unmount', mnt]);
}

function summary(drive: Drive): string {
  const worst = [...drive.ops].sort((a, b) => b.ms - a.ms).slice(0, 3);
  return worst.map((r) => `${r.op}: ${r.ms} ms (${r.outcome})`).join('; ');
}

describe('remote faults through a mounted drive', () => {
  it('latency: everything works, only slower; nothing fails', async () => {
    const drive = await mountWithFaults((gate) => `latency=400:300,seed=1,during-file=${gate}`);
    const { remoteReads, faultStatus } = await runFault(drive, { expectUploadTrouble: false });
    // 700 ms at worst is well inside the read timeout: no read may fail.
    expect(remoteReads.filter((r) => r === 'EIO')).toEqual([]);
    expect(faultStatus.uploadErrors).toEqual([]);
    const remoteRead = drive.ops.find((r) => r.op === 'read old/small @0')!;
    expect(remoteRead.ms).toBeGreaterThanOrEqual(390);
    await expectHealthy(drive);
    console.log(`latency: ${summary(drive)}`);
  });

  it('5xx: uploads fail and are retried, reads fail cleanly or succeed, nothing is lost', async () => {
    const drive = await mountWithFaults((gate) => `fail=0.6,seed=2,during-file=${gate}`);
    const { faultStatus } = await runFault(drive, { expectUploadTrouble: true });
    expect(JSON.stringify(faultStatus)).toMatch(/503 Service Unavailable/);
    await expectHealthy(drive);
    console.log(`5xx: ${summary(drive)}`);
  });

  it('429: rate limiting is reported as such and outlived', async () => {
    const drive = await mountWithFaults((gate) => `429=0.6,seed=3,during-file=${gate}`);
    const { faultStatus } = await runFault(drive, { expectUploadTrouble: true });
    expect(JSON.stringify(faultStatus)).toMatch(/rate limited/);
    await expectHealthy(drive);
    console.log(`429: ${summary(drive)}`);
  });

  it('timeout: a hanging remote fails reads with EIO in bounded time, and uploads recover', async () => {
    const drive = await mountWithFaults((gate) => `timeout=0.5,hang=2500,seed=4,during-file=${gate}`);
    const { remoteReads, faultStatus } = await runFault(drive, { expectUploadTrouble: true });
    expect(JSON.stringify(faultStatus)).toMatch(/timed out/);
    expect(remoteReads.length).toBe(Object.keys(SEED_FILES).length);
    const timedOut = drive.ops.filter((r) => r.outcome === 'EIO');
    for (const r of timedOut) expect(r.ms).toBeGreaterThanOrEqual(REMOTE_READ_TIMEOUT_MS - 100);
    await expectHealthy(drive);
    console.log(`timeout: ${timedOut.length} reads timed out; ${summary(drive)}`);
  });

  it('reset: lost connections and lost answers lose no data, and the remote alone restores it', async () => {
    const drive = await mountWithFaults((gate) => `reset=0.5,ops=get+put+createExclusive+head+list+delete,seed=5,during-file=${gate}`);
    const { faultStatus } = await runFault(drive, { expectUploadTrouble: true });
    expect(JSON.stringify(faultStatus)).toMatch(/ECONNRESET/);
    await expectHealthy(drive);
    await cliOk(['unmount', drive.ws.mnt]);
    await expectCloneIntact(drive);
    console.log(`reset: ${summary(drive)}`);
  });

  it('truncate: a short body never authenticates, is never served or cached, and is fetched again', async () => {
    const drive = await mountWithFaults((gate) => `truncate=0.7,ops=get,seed=6,during-file=${gate}`);
    const { remoteReads, faultStatus } = await runFault(drive, { expectUploadTrouble: false, readRounds: 2 });
    // readBack already failed the test on any wrong byte; here: the cuts did reach the data path.
    expect(remoteReads.filter((r) => r === 'EIO').length).toBeGreaterThan(0);
    expect(faultStatus.uploadErrors).toEqual([]); // uploads were never touched
    const refused = readLogEntries(drive.ws.log).filter((e) => /failed authentication/.test(`${e.msg} ${(e.err as { message?: string } | undefined)?.message}`));
    expect(refused.length).toBeGreaterThan(0);
    expect(refused.every((e) => e.level === 'error' && typeof e.chunk === 'string'), 'each such line names its chunk').toBe(true);
    await expectHealthy(drive);
    console.log(`truncate: ${remoteReads.filter((r) => r === 'EIO').length}/${remoteReads.length} remote reads refused; ${summary(drive)}`);
  });

  it('outage: ten seconds without a remote; local work goes on, remote reads fail fast, all catches up', async () => {
    const drive = await mountWithFaults((gate) => `outage-file=${gate}`);
    const { remoteReads, faultStatus } = await runFault(drive, { expectUploadTrouble: true, minFaultMs: 10_000 });
    expect(remoteReads.every((r) => r === 'EIO')).toBe(true);
    expect(faultStatus.pendingChunks).toBeGreaterThan(0);
    expect(JSON.stringify(faultStatus)).toMatch(/outage/);
    await expectHealthy(drive);
    await cliOk(['unmount', drive.ws.mnt]);
    await expectCloneIntact(drive);
    console.log(`outage: ${summary(drive)}`);
  });
});

describe('regressions under remote faults', () => {
  // The kernel retries a page right after its readahead fails; that retry must not wait for
  // the hanging remote a second time (it once took twice remoteReadTimeoutMs).
  it('a read of a chunk from a hanging remote fails within remoteReadTimeoutMs', async () => {
    const drive = await mountWithFaults((gate) => `timeout=1,hang=60000,ops=get,during-file=${gate}`);
    fs.writeFileSync(drive.gate, '');
    const handle = await fsp.open(drive.ws.path('old/a'), 'r');
    try {
      const started = performance.now();
      await expect(handle.read(Buffer.alloc(CHUNK), 0, CHUNK, 0)).rejects.toMatchObject({ code: 'EIO' });
      expect(performance.now() - started).toBeLessThan(REMOTE_READ_TIMEOUT_MS + 1000);
    } finally {
      await handle.close();
    }
  });

  // When the answer to a journal entry's exclusive create is lost (the remote stored it, the
  // connection dropped), the next publish finds its number taken by its own entry: it must
  // recognise it (same device, same predecessor) and go on after it.
  it('a lost answer to a journal entry create does not stop publishing', async () => {
    const drive = await mountWithFaults((gate) => `reset=1:after,ops=createExclusive,during-file=${gate}`);
    fs.writeFileSync(drive.gate, '');
    await writeDurably(drive, 'late', randomBytes(10_000));
    await cliOk(['sync', drive.ws.mnt]);
    const during = await watchStatus(drive.ws.mnt, (st) => /ECONNRESET/.test(st.sync.lastError ?? ''));
    expect(during.sync.lastError).toMatch(/ECONNRESET/);
    fs.rmSync(drive.gate);
    const synced = await cli(['sync', drive.ws.mnt, '--wait'], { timeoutMs: 20_000 });
    expect(synced.code, synced.stderr.slice(-300)).toBe(0);
    await cliOk(['unmount', drive.ws.mnt]);
    await expectCloneIntact(drive);
  });
});
