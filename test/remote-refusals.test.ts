/**
 * What the drive does when a real `coffer serve` says no, or is not there: a refused token is
 * never taken for an outage (a mount is refused, a running drive shows it and `sync --wait` ends
 * with exit 1), a full account ends `sync --wait` naming the quota, `--timeout` bounds every
 * wait, and the remote-space guard follows the server's answers: it learns the quota once a
 * server that was down at mount answers, lets writes in again as soon as the server reports
 * room, stays consistent while a quota is raised, and lets at most the stated bound past a
 * lowered quota, losing nothing. Another writer on the same vault (a file:// remote) ends
 * `sync --wait` the same way.
 */
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { HttpBackend } from '../src/remote/http-backend.js';
import { OVERSHOOT_BOUND_BYTES } from '../src/sync/remote-space.js';
import { coffer, cofferOk, isMounted, Workspace, writeAcknowledged } from './helpers/drive.js';
import { addServeAccount, startServe, type ServeProcess } from './helpers/serve.js';

const MiB = 1024 * 1024;

let dir: string;
let data: string;
let server: ServeProcess | undefined;
let base = '';
const workspaces: Workspace[] = [];

interface SpaceStatus {
  usedBytes: number;
  quotaBytes: number;
  freeBytes: number | null;
  full: boolean;
}

interface Status {
  pendingChunks: number;
  remoteSpace: SpaceStatus | null;
  sync: { refused: { code: string; message: string }[]; pausedUntilMs: number | null; lastError: string | null };
}

const account = (name: string, extra: string[] = []) => addServeAccount(['--data', data], name, extra);
const serveAccount = (args: string[]) => cofferOk(['serve', 'account', ...args, '--data', data]);

async function status(ws: Workspace): Promise<Status> {
  return JSON.parse((await cofferOk(['status', ws.mnt, '--json'])).stdout) as Status;
}

/** Polls `check` every 200 ms until it returns true; fails after `timeoutMs`, saying what it waited for. */
async function until(what: string, check: () => Promise<boolean> | boolean, timeoutMs: number): Promise<number> {
  const started = Date.now();
  while (!(await check())) {
    if (Date.now() - started > timeoutMs) throw new Error(`${what}: not within ${timeoutMs / 1000} s`);
    await new Promise((r) => setTimeout(r, 200));
  }
  return Date.now() - started;
}

/** The account's figures as the server reports them. */
async function serverSpace(token: string) {
  return (await new HttpBackend({ url: `${base}/`, token }).space())!;
}


/** Writes 1 MiB files until one is refused (at most `limit`); what was acknowledged, by name. */
function fill(ws: Workspace, prefix: string, limit: number): { acknowledged: Map<string, Buffer>; error?: string } {
  const acknowledged = new Map<string, Buffer>();
  for (let i = 0; i < limit; i++) {
    const body = randomBytes(MiB);
    const result = writeAcknowledged(ws.path(`${prefix}${i}`), body);
    acknowledged.set(`${prefix}${i}`, body.subarray(0, result.written));
    if (result.error) return { acknowledged, error: result.error };
  }
  return { acknowledged };
}

const total = (files: Map<string, Buffer>) => [...files.values()].reduce((sum, body) => sum + body.length, 0);

async function driveOn(name: string, token: string, mountFlags: string[] = []): Promise<{ ws: Workspace; url: string }> {
  const ws = new Workspace(`coffer-refusal-${name}-`);
  workspaces.push(ws);
  const url = `${base}/${name}-vault/`;
  // init keeps the token in config.json: later commands need no environment.
  await cofferOk(['init', ws.vault, '--remote', url], { env: { COFFER_TOKEN: token } });
  await ws.mount(ws.mnt, undefined, mountFlags);
  return { ws, url };
}

/** A fresh machine with the server and the passphrase reads every acknowledged byte. */
async function expectCloneHas(url: string, token: string, files: Map<string, Buffer>): Promise<void> {
  const copy = new Workspace('coffer-refusal-clone-');
  workspaces.push(copy);
  await cofferOk(['clone', url, copy.vault], { env: { COFFER_TOKEN: token } });
  await copy.mount();
  for (const [name, body] of files) expect(fs.readFileSync(copy.path(name)).equals(body), name).toBe(true);
}

beforeAll(async () => {
  dir = fs.mkdtempSync(join(tmpdir(), 'coffer-refusal-'));
  data = join(dir, 'data');
  await account('nobody'); // creates the data directory
  server = await startServe(['--listen', '127.0.0.1:0', '--data', data]);
  base = server.base;
});

afterEach(async () => {
  while (workspaces.length > 0) await workspaces.pop()!.cleanup();
});

afterAll(async () => {
  await server?.stop();
  fs.rmSync(dir, { recursive: true, force: true });
});

describe('a token the server refuses', () => {
  it('is refused at init and at mount with exit 1 and what to fix, and nothing is mounted', async () => {
    const ws = new Workspace('coffer-refusal-token-');
    workspaces.push(ws);
    const wrongInit = await coffer(['init', ws.vault, '--remote', `${base}/typo-vault/`], { env: { COFFER_TOKEN: 'cft_typo' } });
    expect(wrongInit.code, wrongInit.stderr).toBe(1);
    expect(wrongInit.stderr).toMatch(/401 UNAUTHORIZED.*COFFER_TOKEN/);

    const token = await account('alice');
    await cofferOk(['init', ws.vault, '--remote', `${base}/alice-vault/`], { env: { COFFER_TOKEN: token } });
    // A mistyped token in the environment (it wins over config.json).
    const typo = await coffer(['mount', ws.vault, ws.mnt], { env: { COFFER_TOKEN: 'cft_typo' } });
    expect(typo.code, typo.stderr).toBe(1);
    expect(typo.stderr).toMatch(/refuses this drive, so nothing was mounted: .*401 UNAUTHORIZED/);
    expect(typo.stderr).toMatch(/COFFER_TOKEN or "token" in the vault's config\.json.*\/vault\/config\.json/);
    expect(isMounted(ws.mnt)).toBe(false);

    // The token in config.json, revoked on the server.
    await serveAccount(['revoke', 'alice']);
    await new Promise((r) => setTimeout(r, 1500)); // the server applies it within a second
    const started = Date.now();
    const revoked = await coffer(['mount', ws.vault, ws.mnt]);
    expect(revoked.code, revoked.stderr).toBe(1);
    expect(revoked.stderr).toMatch(/nothing was mounted: .*401 UNAUTHORIZED/);
    expect(Date.now() - started).toBeLessThan(15_000);
    expect(isMounted(ws.mnt)).toBe(false);
  });

  it('revoked while mounted: status names it, sync --wait exits 1 at once, unmount promises no upload, and a new token loses nothing', async () => {
    const token = await account('bob');
    const { ws, url } = await driveOn('bob', token);
    const files = new Map<string, Buffer>([['before', randomBytes(300_000)]]);
    fs.writeFileSync(ws.path('before'), files.get('before')!);
    await cofferOk(['sync', ws.mnt, '--wait']);

    await serveAccount(['revoke', 'bob']);
    // Idle, the drive still notices within its question interval.
    await until('status shows the refused token while idle', async () => (await status(ws)).sync.refused.some((r) => r.code === 'REMOTE_UNAUTHORIZED'), 30_000);
    expect((await cofferOk(['status', ws.mnt])).stdout).toMatch(/^remote refused: the remote refuses this drive's token or credentials \(.*401 UNAUTHORIZED/m);

    files.set('after', randomBytes(200_000));
    fs.writeFileSync(ws.path('after'), files.get('after')!);
    const started = Date.now();
    const waited = await coffer(['sync', ws.mnt, '--wait', '--timeout', '120']);
    expect(waited.code, waited.stderr).toBe(1);
    expect(Date.now() - started).toBeLessThan(20_000);
    expect(waited.stderr).toMatch(/Not synced: the remote refuses this drive's token/);
    expect(waited.stderr).toMatch(/Not on the remote yet: 1 file/);
    // The upload the sync started is refused too: uploads pause instead of retrying like an outage.
    await until('uploads pause', async () => (await status(ws)).sync.pausedUntilMs !== null, 10_000);
    expect((await status(ws)).pendingChunks).toBeGreaterThan(0);

    const unmounted = await ws.unmount();
    expect(unmounted.stderr).toMatch(/stays queued in .*, but cannot upload while the remote refuses this drive's token/);
    expect(unmounted.stderr).not.toMatch(/uploads at the next mount/);

    // A new token in config.json: everything queued goes up.
    const fresh = JSON.parse((await serveAccount(['token', 'bob', '--json'])).stdout) as { token: string };
    ws.editConfig({ token: fresh.token });
    await ws.mount();
    await cofferOk(['sync', ws.mnt, '--wait', '--timeout', '60']);
    await ws.unmount();
    await expectCloneHas(url, fresh.token, files);
  }, 180_000);
});

describe('a quota that changes under a mounted drive', () => {
  it('lets at most the stated bound past a lowered quota, ends sync --wait naming the quota, stays consistent while it is raised, and loses nothing', async () => {
    const token = await account('carol', ['--quota-bytes', String(256 * MiB)]);
    // Uploads slowed down, so data is still queued when the quota drops.
    const { ws, url } = await driveOn('carol', token, ['--upload-limit', '1M']);
    const first = fill(ws, 'a', 4);
    expect(first.error).toBeUndefined();

    await serveAccount(['set', 'carol', '--quota-bytes', String(2 * MiB)]);
    await until('the server applies the lower quota', async () => (await serverSpace(token)).quotaBytes === 2 * MiB, 10_000);
    // Writes as fast as they go: the drive learns the lower quota from its next question at the
    // latest after ASK_EVERY_BYTES, and from a refused upload at once.
    const past = fill(ws, 'b', 40);
    expect(past.error).toBe('ENOSPC');
    expect(total(past.acknowledged)).toBeLessThanOrEqual(OVERSHOOT_BOUND_BYTES);

    // Retrying cannot make room: sync --wait ends, saying so and what waits.
    const started = Date.now();
    const waited = await coffer(['sync', ws.mnt, '--wait', '--timeout', '120'], { timeoutMs: 150_000 });
    expect(waited.code, waited.stderr).toBe(1);
    expect(Date.now() - started).toBeLessThan(60_000);
    expect(waited.stderr).toMatch(/Not synced: the remote account is full \(.* used of its quota of 2\.0 MiB\)/);
    expect(waited.stderr).toMatch(/Not on the remote yet: \d+ files/);
    expect((await cofferOk(['status', ws.mnt])).stdout).toMatch(/^remote refused: the remote account is full/m);

    // Raised: every status on the way is consistent, and the drive ends with room and nothing refused.
    await serveAccount(['set', 'carol', '--quota-bytes', String(512 * MiB)]);
    const polls: SpaceStatus[] = [];
    await until(
      'the drive sees the raised quota',
      async () => {
        const space = (await status(ws)).remoteSpace!;
        polls.push(space);
        return space.quotaBytes === 512 * MiB && !space.full;
      },
      15_000,
    );
    for (const space of polls) {
      if (space.quotaBytes > 2 * MiB) expect(space.usedBytes, JSON.stringify(space)).toBeLessThanOrEqual(space.quotaBytes);
      expect(space.freeBytes!, JSON.stringify(space)).toBeLessThanOrEqual(Math.max(0, space.quotaBytes - space.usedBytes));
      if (space.freeBytes === 0) expect(space.full, JSON.stringify(space)).toBe(true);
    }
    const after = fill(ws, 'c', 2);
    expect(after.error).toBeUndefined();
    await cofferOk(['sync', ws.mnt, '--wait', '--timeout', '120'], { timeoutMs: 150_000 });
    const synced = await status(ws);
    expect(synced.pendingChunks).toBe(0);
    expect(synced.sync.refused).toEqual([]);
    await ws.unmount();
    await expectCloneHas(url, token, new Map([...first.acknowledged, ...past.acknowledged, ...after.acknowledged]));
  }, 300_000);

  it('lets writes in again as soon as the server reports room after files are deleted, without a remount', async () => {
    const QUOTA = 8 * MiB;
    const token = await account('erin', ['--quota-bytes', String(QUOTA)]);
    const { ws } = await driveOn('erin', token);
    const filled = fill(ws, 'f', 16);
    expect(filled.error).toBe('ENOSPC');
    await cofferOk(['sync', ws.mnt, '--wait', '--timeout', '60']);
    expect((await status(ws)).remoteSpace).toMatchObject({ full: true });

    for (const name of [...filled.acknowledged.keys()].slice(0, 4)) fs.unlinkSync(ws.path(name));
    await until('the server counts the deleted chunks as free', async () => (await serverSpace(token)).usedBytes < QUOTA - 4 * MiB, 30_000);
    const started = Date.now();
    let result = writeAcknowledged(ws.path('again'), randomBytes(MiB));
    while (result.error && Date.now() - started < 2000) {
      await new Promise((r) => setTimeout(r, 100));
      result = writeAcknowledged(ws.path('again'), randomBytes(MiB));
    }
    expect(result.error).toBeUndefined();
    expect(Date.now() - started).toBeLessThan(2000);
    expect((await status(ws)).remoteSpace).toMatchObject({ quotaBytes: QUOTA });
  }, 180_000);
});

describe('a server that is down', () => {
  it('mounts offline, --timeout bounds sync --wait, the quota is learned once the server answers, and deletes make room again', async () => {
    const QUOTA = 6 * MiB;
    const token = await account('dave', ['--quota-bytes', String(QUOTA)]);
    const own = await startServe(['--listen', '127.0.0.1:0', '--data', data]);
    const port = own.port;
    let restarted: ServeProcess | undefined;
    try {
      const ws = new Workspace('coffer-refusal-offline-');
      workspaces.push(ws);
      const url = `${own.base}/dave-vault/`;
      await cofferOk(['init', ws.vault, '--remote', url], { env: { COFFER_TOKEN: token } });
      await own.stop();

      const mounted = await ws.mount();
      expect(mounted.stderr).toMatch(/could not be reached at mount .*working offline/);
      expect((await status(ws)).remoteSpace).toBeNull();
      // Offline no limit is known: more than the quota is accepted, and kept.
      const offline = fill(ws, 'offline', 8);
      expect(offline.error).toBeUndefined();

      const started = Date.now();
      const bounded = await coffer(['sync', ws.mnt, '--wait', '--timeout', '2']);
      expect(bounded.code, bounded.stderr).toBe(1);
      expect(Date.now() - started).toBeLessThan(8000);
      expect(bounded.stderr).toMatch(/Not synced: stopped waiting after 2 s \(--timeout\)/);
      expect(bounded.stderr).toMatch(/Not on the remote yet: 8 files/);
      const badTimeout = await coffer(['sync', ws.mnt, '--wait', '--timeout', '-1']);
      expect(badTimeout.code).toBe(2);

      restarted = await startServe(['--listen', `127.0.0.1:${port}`, '--data', data]);
      await until('the drive learns the quota', async () => (await status(ws)).remoteSpace?.quotaBytes === QUOTA, 15_000);
      expect(writeAcknowledged(ws.path('past'), randomBytes(MiB)).error).toBe('ENOSPC');
      // What went past the quota offline cannot go up, and nothing this drive can do frees room.
      const waited = await coffer(['sync', ws.mnt, '--wait', '--timeout', '120'], { timeoutMs: 150_000 });
      expect(waited.code, waited.stderr).toBe(1);
      expect(waited.stderr).toMatch(/Not synced: the remote account is full \(.* used of its quota of 6\.0 MiB\)/);

      // Deleting the files status names as not fitting, and a few more, makes room: writes are
      // accepted again, without a remount.
      const stuck = new Set(((await status(ws)) as Status & { uploadErrors: { paths: string[] }[] }).uploadErrors.flatMap((e) => e.paths.map((p) => p.slice(1))));
      expect(stuck.size).toBeGreaterThan(0);
      const others = [...offline.acknowledged.keys()].filter((name) => !stuck.has(name));
      const removed = new Set([...stuck, ...others.slice(0, 3)]);
      const kept = new Map([...offline.acknowledged].filter(([name]) => !removed.has(name)));
      for (const name of removed) fs.unlinkSync(ws.path(name));
      await until('writes are accepted again', () => !writeAcknowledged(ws.path('again'), randomBytes(MiB)).error, 60_000);
      kept.set('again', fs.readFileSync(ws.path('again')));
      await cofferOk(['sync', ws.mnt, '--wait', '--timeout', '60']);
      const synced = await status(ws);
      expect(synced.sync.lastError).toBeNull();
      expect(synced.sync.refused).toEqual([]);
      await ws.unmount();
      await expectCloneHas(url, token, kept);
    } finally {
      await own.stop();
      await restarted?.stop();
    }
  }, 240_000);
});

describe('a copied vault directory', () => {
  // Two copies of one vault directory are one device twice: their journals would fork. The copy
  // that publishes second finds its entry number taken by the other and stops, naming it.
  it('ends sync --wait with exit 1 naming it, and unmount promises no upload', async () => {
    const a = new Workspace('coffer-refusal-writer-a-');
    const b = new Workspace('coffer-refusal-writer-b-');
    workspaces.push(a, b);
    const url = `file://${join(a.dir, 'remote')}`;
    await cofferOk(['init', a.vault, '--remote', url]);
    await a.mount();
    fs.writeFileSync(a.path('first'), 'from a');
    await cofferOk(['sync', a.mnt, '--wait', '--timeout', '60']);
    await a.unmount();
    fs.cpSync(a.vault, b.vault, { recursive: true });
    await a.mount();
    await b.mount();
    fs.writeFileSync(a.path('a.txt'), 'a again');
    await cofferOk(['sync', a.mnt, '--wait', '--timeout', '60']);

    fs.writeFileSync(b.path('b.txt'), 'from b');
    const started = Date.now();
    const waited = await coffer(['sync', b.mnt, '--wait', '--timeout', '120'], { timeoutMs: 150_000 });
    expect(waited.code, waited.stderr).toBe(1);
    expect(Date.now() - started).toBeLessThan(30_000);
    expect(waited.stderr).toMatch(/Not synced: another copy of this device wrote to its journal: entry \d+ of this device's journal was written by another copy of this device/);
    const unmounted = await b.unmount();
    expect(unmounted.stderr).toMatch(/cannot upload while another copy of this device wrote to its journal/);
    expect(unmounted.stderr).not.toMatch(/uploads at the next mount/);
  }, 120_000);
});
