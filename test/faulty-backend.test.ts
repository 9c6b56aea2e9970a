/**
 * FaultyBackend on its own: the plan grammar, reproducibility with a seed, and each fault
 * kind's contract (what it throws, when, and that an aborted signal still wins). The
 * effect of faults on a mounted drive is in faults.test.ts.
 */
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { CofferError, RemoteError } from '../src/errors.js';
import type { RemoteBackend } from '../src/remote/backend.js';
import { FaultyBackend, formatFaultPlan, parseFaultPlan, type FaultPlan } from '../src/remote/faulty-backend.js';
import { FileBackend } from '../src/remote/file-backend.js';
import { openBackend } from '../src/remote/open-backend.js';
import { RetryingBackend } from '../src/remote/retrying-backend.js';
import { openConfiguredBackend } from '../src/vault/config.js';
import { remoteConformance } from './helpers/remote-conformance.js';

const dirs: string[] = [];
afterAll(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));

function tempDir(): string {
  const dir = mkdtempSync(join(tmpdir(), 'coffer-faulty-'));
  dirs.push(dir);
  return dir;
}

async function fileRemote(): Promise<FileBackend> {
  return new FileBackend(join(tempDir(), 'remote'));
}

function badArgument(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(CofferError);
    expect((err as CofferError).code).toBe('BAD_ARGUMENT');
    return (err as Error).message;
  }
  throw new Error('expected BAD_ARGUMENT');
}

/** What happened to each of `count` sequential gets: ok, a truncated length, or the error. */
async function fates(backend: RemoteBackend, count: number): Promise<string[]> {
  const out: string[] = [];
  for (let i = 0; i < count; i++) {
    try {
      const body = await backend.get('k');
      out.push(body.length === 1000 ? 'ok' : `short:${body.length}`);
    } catch (err) {
      out.push(err instanceof RemoteError ? `${err.code}:${err.message.replace(/^injected fault: get k: /, '')}` : String(err));
    }
  }
  return out;
}

// With no faults planned the wrapper must be invisible: the full backend contract holds.
remoteConformance('faulty (empty plan) over file', async () => new FaultyBackend(await fileRemote(), {}));

describe('fault plan grammar', () => {
  it('parses every key', () => {
    const now = 1_000_000;
    const plan = parseFaultPlan(
      'latency=50:20, fail=0.1,429=0.05,timeout=0.05,hang=2s,reset=0.1:after,truncate=0.1,outage=+5000:+15000,outage-file=/tmp/x y,during=2000000:3000000,during-file=/tmp/g,ops=get+PUT+create,seed=7',
      now,
    );
    expect(plan).toEqual({
      latencyMs: 50,
      jitterMs: 20,
      fail: 0.1,
      rateLimit: 0.05,
      timeout: 0.05,
      hangMs: 2000,
      reset: 0.1,
      resetPhase: 'after',
      truncate: 0.1,
      outage: { start: now + 5000, end: now + 15000 },
      outageFile: '/tmp/x y',
      during: { start: 2_000_000, end: 3_000_000 },
      duringFile: '/tmp/g',
      ops: ['get', 'put', 'createExclusive'],
      seed: 7,
    } satisfies FaultPlan);
    expect(parseFaultPlan(formatFaultPlan(plan))).toEqual(plan);
    expect(parseFaultPlan('rate-limit=0.5')).toEqual({ rateLimit: 0.5 });
    expect(parseFaultPlan('latency=1.5s')).toEqual({ latencyMs: 1500 });
    expect(parseFaultPlan('ops=createExclusive+delete')).toEqual({ ops: ['createExclusive', 'delete'] });
  });

  it('refuses malformed plans with a message that names the problem', () => {
    expect(badArgument(() => parseFaultPlan(''))).toMatch(/empty/);
    expect(badArgument(() => parseFaultPlan('fail'))).toMatch(/key=value/);
    expect(badArgument(() => parseFaultPlan('fial=0.3'))).toMatch(/unknown key "fial"/);
    expect(badArgument(() => parseFaultPlan('fail=1.5'))).toMatch(/fail must be a probability/);
    expect(badArgument(() => parseFaultPlan('fail=-0.1'))).toMatch(/probability/);
    expect(badArgument(() => parseFaultPlan('fail=abc'))).toMatch(/probability/);
    expect(badArgument(() => parseFaultPlan('fail=0.6,timeout=0.6'))).toMatch(/add up to 1\.2/);
    expect(badArgument(() => parseFaultPlan('fail=0.1,fail=0.2'))).toMatch(/given twice/);
    expect(badArgument(() => parseFaultPlan('429=0.1,rate-limit=0.2'))).toMatch(/given twice/);
    expect(badArgument(() => parseFaultPlan('latency=fast'))).toMatch(/latency must be a duration/);
    expect(badArgument(() => parseFaultPlan('latency=1:2:3'))).toMatch(/MS:JITTER/);
    expect(badArgument(() => parseFaultPlan('reset=0.5:sometimes'))).toMatch(/before, P:after/);
    expect(badArgument(() => parseFaultPlan('ops=get+fetch'))).toMatch(/unknown operation "fetch"/);
    expect(badArgument(() => parseFaultPlan('outage=+5000'))).toMatch(/START:END/);
    expect(badArgument(() => parseFaultPlan('outage=+5000:+1000'))).toMatch(/must end after it starts/);
    expect(badArgument(() => parseFaultPlan('seed=-1'))).toMatch(/seed/);
    expect(badArgument(() => parseFaultPlan('seed=1.5'))).toMatch(/seed/);
    expect(badArgument(() => parseFaultPlan('fail=0.1,'))).toMatch(/key=value/);
    expect(badArgument(() => parseFaultPlan('hang='))).toMatch(/no value/);
    expect(badArgument(() => new FaultyBackend(new FileBackend('/nonexistent'), { fail: 2 }))).toMatch(/probability/);
  });
});

describe('fault injection', () => {
  async function seeded(plan: FaultPlan): Promise<FaultyBackend> {
    const remote = await fileRemote();
    await remote.put('k', randomBytes(1000));
    return new FaultyBackend(remote, plan);
  }

  it('is reproducible with a seed, differs between seeds, and keeps to the probabilities', async () => {
    const plan: FaultPlan = { fail: 0.2, rateLimit: 0.1, reset: 0.1, resetPhase: 'before', truncate: 0.2 };
    const a = await fates(await seeded({ ...plan, seed: 42 }), 400);
    const b = await fates(await seeded({ ...plan, seed: 42 }), 400);
    const c = await fates(await seeded({ ...plan, seed: 43 }), 400);
    expect(a).toEqual(b);
    expect(a).not.toEqual(c);
    const share = (pattern: RegExp) => a.filter((f) => pattern.test(f)).length / a.length;
    expect(share(/503 Service Unavailable/)).toBeCloseTo(0.2, 1);
    expect(share(/429 Too Many Requests \(rate limited\)/)).toBeCloseTo(0.1, 1);
    expect(share(/ECONNRESET/)).toBeCloseTo(0.1, 1);
    expect(share(/^short:/)).toBeCloseTo(0.2, 1);
    expect(share(/^ok$/)).toBeCloseTo(0.4, 1);
    for (const fate of a.filter((f) => f.startsWith('REMOTE_'))) expect(fate).toMatch(/^REMOTE_UNAVAILABLE:/);
  });

  it('cuts only gets short, always to a strict prefix of the real body', async () => {
    const remote = await fileRemote();
    const body = randomBytes(5000);
    await remote.put('k', body);
    const faulty = new FaultyBackend(remote, { truncate: 1, seed: 1 });
    for (let i = 0; i < 20; i++) {
      const got = await faulty.get('k');
      expect(got.length).toBeLessThan(body.length);
      expect(got.equals(body.subarray(0, got.length))).toBe(true);
    }
    await faulty.put('other', body); // truncation never touches writes
    expect((await remote.get('other')).equals(body)).toBe(true);
    expect(faulty.injected.truncate).toBe(20);
  });

  it('hangs a timed-out call until its signal fires, or until the hang limit', async () => {
    const faulty = await seeded({ timeout: 1, hangMs: 300 });
    let started = Date.now();
    const reason = new Error('caller gave up');
    const controller = new AbortController();
    setTimeout(() => controller.abort(reason), 100);
    await expect(faulty.get('k', { signal: controller.signal })).rejects.toBe(reason);
    expect(Date.now() - started).toBeLessThan(280);
    started = Date.now();
    await expect(faulty.get('k')).rejects.toThrow(/no answer within 300 ms \(timed out\)/);
    expect(Date.now() - started).toBeGreaterThanOrEqual(290);
    const aborted = AbortSignal.abort(reason);
    await expect(faulty.get('k', { signal: aborted })).rejects.toBe(reason);
  });

  it('adds latency with jitter, which an abort cuts short', async () => {
    const faulty = await seeded({ latencyMs: 150, jitterMs: 100, seed: 3 });
    const started = Date.now();
    await faulty.get('k');
    const took = Date.now() - started;
    expect(took).toBeGreaterThanOrEqual(145);
    expect(took).toBeLessThan(600);
    const aborted = Date.now();
    await expect(faulty.get('k', { signal: AbortSignal.timeout(30) })).rejects.toMatchObject({ name: 'TimeoutError' });
    expect(Date.now() - aborted).toBeLessThan(140);
  });

  it('resets before the remote acts, or after it acted and the answer was lost', async () => {
    const before = new FaultyBackend(await fileRemote(), { reset: 1, resetPhase: 'before' });
    await expect(before.put('x', Buffer.from('1'))).rejects.toThrow(/ECONNRESET/);
    await expect(before.inner.head('x')).rejects.toMatchObject({ code: 'REMOTE_NOT_FOUND' });
    const after = new FaultyBackend(await fileRemote(), { reset: 1, resetPhase: 'after' });
    const err = await after.put('x', Buffer.from('1')).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'REMOTE_UNAVAILABLE' });
    expect(((err as Error).cause as NodeJS.ErrnoException).code).toBe('ECONNRESET');
    expect((await after.inner.get('x')).toString()).toBe('1');
  });

  it('fails everything inside an outage window or while the outage file exists, and only the chosen ops', async () => {
    let now = 1000;
    const dir = tempDir();
    const toggle = join(dir, 'down');
    const remote = await fileRemote();
    await remote.put('k', Buffer.from('v'));
    const faulty = new FaultyBackend(remote, { outage: { start: 2000, end: 3000 }, outageFile: toggle, ops: ['get'] }, { now: () => now });
    expect((await faulty.get('k')).toString()).toBe('v');
    now = 2000;
    await expect(faulty.get('k')).rejects.toThrow(/unreachable \(outage\)/);
    await expect(faulty.head('k')).resolves.toEqual({ key: 'k', size: 1 }); // not an affected op
    now = 3000;
    expect((await faulty.get('k')).toString()).toBe('v');
    writeFileSync(toggle, '');
    await expect(faulty.get('k')).rejects.toMatchObject({ code: 'REMOTE_UNAVAILABLE' });
    rmSync(toggle);
    expect((await faulty.get('k')).toString()).toBe('v');
    expect(faulty.injected.outage).toBe(2);
  });

  it('applies random faults only while a gate is open, when one is given', async () => {
    const dir = tempDir();
    const gate = join(dir, 'on');
    const faulty = await seeded({ fail: 1, duringFile: gate });
    await expect(faulty.get('k')).resolves.toHaveLength(1000);
    writeFileSync(gate, '');
    await expect(faulty.get('k')).rejects.toThrow(/503/);
    let now = 0;
    const windowed = new FaultyBackend(faulty.inner, { fail: 1, during: { start: 10, end: 20 } }, { now: () => now });
    await expect(windowed.get('k')).resolves.toHaveLength(1000);
    now = 15;
    await expect(windowed.get('k')).rejects.toThrow(/503/);
  });

  it('sits beneath the retries, so a retried call outlives a transient fault', async () => {
    const opened = openBackend(`file://${join(tempDir(), 'r')}`, { wrap: (inner) => new FaultyBackend(inner, { fail: 0.5, seed: 9 }) });
    expect(opened).toBeInstanceOf(FaultyBackend);
    const faulty = new FaultyBackend(await fileRemote(), { fail: 0.5, seed: 9 });
    const retrying = new RetryingBackend(faulty, { attempts: 30, baseDelayMs: 0 });
    for (let i = 0; i < 20; i++) await retrying.put(`k${i}`, Buffer.from(String(i)));
    expect(faulty.injected['5xx']).toBeGreaterThan(0);
    const s3 = openBackend('s3://bucket/p', { env: { AWS_ACCESS_KEY_ID: 'a', AWS_SECRET_ACCESS_KEY: 'b' }, wrap: (inner) => new FaultyBackend(inner, {}) });
    expect(s3).toBeInstanceOf(RetryingBackend);
    expect((s3 as RetryingBackend).inner).toBeInstanceOf(FaultyBackend);
  });

  it('is switched on by COFFER_FAULTS and names itself in the description', () => {
    const saved = process.env.COFFER_FAULTS;
    try {
      process.env.COFFER_FAULTS = 'fail=0.25,seed=1';
      const backend = openConfiguredBackend({ remote: 'file:///tmp/coffer-faulty-x' });
      expect(backend).toBeInstanceOf(FaultyBackend);
      expect(backend.description).toBe('file:///tmp/coffer-faulty-x (with injected faults: fail=0.25,seed=1)');
      process.env.COFFER_FAULTS = 's3=yes';
      expect(badArgument(() => openConfiguredBackend({ remote: 'file:///tmp/x' }))).toMatch(/COFFER_FAULTS: unknown key "s3"/);
      process.env.COFFER_FAULTS = ' ';
      expect(openConfiguredBackend({ remote: 'file:///tmp/x' })).toBeInstanceOf(FileBackend);
    } finally {
      if (saved === undefined) delete process.env.COFFER_FAULTS;
      else process.env.COFFER_FAULTS = saved;
    }
  });
});
