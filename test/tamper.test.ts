/**
 * A remote that lies. Each case tampers with what the remote holds, then reads through
 * a clone (an empty cache, so every byte comes from the remote) and expects detection:
 * EIO (or a refusal to clone or mount), a log line naming the object, and never a wrong
 * byte served or cached.
 */
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { coffer, cofferOk, isMounted, Workspace } from './helpers/drive.js';

const MiB = 1024 * 1024;
let ws: Workspace;
let other: Workspace; // a second vault, for objects copied in from elsewhere
let pristine: string; // a copy of the untouched remote
const files: Record<string, Buffer> = {};
const remote = () => join(ws.dir, 'remote');

function chunkKeys(root: string): string[] {
  const dir = join(root, 'chunks');
  return fs.readdirSync(dir, { recursive: true, withFileTypes: true }).filter((e) => e.isFile()).map((e) => join(e.parentPath, e.name).slice(root.length + 1));
}

/** The remote key of chunk `idx` of each file. */
const chunkOf: Record<string, string[]> = {};

function resetRemote(): void {
  fs.rmSync(remote(), { recursive: true, force: true });
  fs.cpSync(pristine, remote(), { recursive: true });
}

/** Clones the (tampered) remote into a fresh vault and mounts it; returns the mountpoint. */
async function cloneAndMount(name: string): Promise<{ vault: string; mnt: string; log: string }> {
  const vault = join(ws.dir, `clone-${name}`);
  const mnt = join(ws.dir, `mnt-${name}`);
  fs.mkdirSync(mnt);
  await cofferOk(['clone', `file://${remote()}`, vault]);
  await cofferOk(['mount', vault, mnt]);
  mounts.push(mnt);
  return { vault, mnt, log: join(vault, 'logs', 'daemon.log') };
}
const mounts: string[] = [];

function readRange(path: string, offset: number, length: number): { ok: boolean; bytes?: Buffer; stderr: string } {
  const dd = spawnSync('dd', [`if=${path}`, 'bs=64K', `skip=${offset / (64 * 1024)}`, `count=${length / (64 * 1024)}`, 'status=none'], { maxBuffer: 64 * MiB });
  return { ok: dd.status === 0, bytes: dd.stdout, stderr: dd.stderr.toString() };
}

function expectEio(path: string): void {
  const cat = spawnSync('cat', [path], { maxBuffer: 64 * MiB });
  expect(cat.status).not.toBe(0);
  expect(cat.stderr.toString()).toMatch(/Input\/output error/);
}

beforeAll(async () => {
  ws = new Workspace();
  await ws.init(['--remote', `file://${remote()}`]);
  await ws.mount();
  files.A = randomBytes(3 * MiB);
  files.B = randomBytes(3 * MiB);
  files.C = randomBytes(5000);
  for (const [name, data] of Object.entries(files)) fs.writeFileSync(ws.path(name), data);
  await cofferOk(['sync', ws.mnt, '--wait']);
  await ws.unmount();
  // Which remote object holds which chunk of which file: straight from the (local, unmounted) index.
  const index = new Database(join(ws.vault, 'index.db'), { readonly: true });
  const rows = index
    .prepare<[], { name: string; idx: number; id: string }>('SELECT e.name, f.idx, lower(hex(f.chunk)) AS id FROM file_chunks f JOIN entries e ON e.ino = f.ino')
    .all();
  index.close();
  for (const { name, idx, id } of rows) (chunkOf[name] ??= [])[idx] = `chunks/${id.slice(0, 2)}/${id}`;
  expect(chunkOf.A).toHaveLength(3);
  expect(chunkOf.C).toHaveLength(1);
  pristine = join(ws.dir, 'pristine');
  fs.cpSync(remote(), pristine, { recursive: true });

  other = new Workspace();
  await other.init(['--remote', `file://${join(other.dir, 'remote')}`]);
  await other.mount();
  fs.writeFileSync(other.path('X'), randomBytes(3 * MiB));
  await cofferOk(['sync', other.mnt, '--wait']);
  await other.unmount();
}, 300_000);

afterAll(async () => {
  for (const mnt of mounts) if (isMounted(mnt)) await coffer(['unmount', mnt]);
  await other?.cleanup();
  await ws?.cleanup();
}, 120_000);

describe('tampered chunks', () => {
  const damage: Record<string, (bytes: Buffer) => Buffer> = {
    'a flipped bit': (b) => {
      const copy = Buffer.from(b);
      copy[copy.length >> 1]! ^= 0x10;
      return copy;
    },
    truncation: (b) => b.subarray(0, b.length - 100),
    extension: (b) => Buffer.concat([b, Buffer.from('extra')]),
    emptying: () => Buffer.alloc(0),
    zeros: (b) => Buffer.alloc(b.length),
  };
  for (const [what, change] of Object.entries(damage)) {
    it(`detects ${what}: EIO for that range, a log line naming the chunk, other data intact`, async () => {
      resetRemote();
      const key = join(remote(), chunkOf.A![1]!);
      fs.writeFileSync(key, change(fs.readFileSync(key)));
      const { mnt, log } = await cloneAndMount(what.replace(/\s/g, '-'));
      expectEio(join(mnt, 'A'));
      const before = readRange(join(mnt, 'A'), 0, MiB);
      expect(before.ok).toBe(true);
      expect(before.bytes!.equals(files.A!.subarray(0, MiB))).toBe(true);
      const after = readRange(join(mnt, 'A'), 2 * MiB, MiB);
      expect(after.bytes!.equals(files.A!.subarray(2 * MiB))).toBe(true);
      expect(readRange(join(mnt, 'A'), MiB, MiB).ok).toBe(false);
      expect(fs.readFileSync(join(mnt, 'B')).equals(files.B!)).toBe(true);
      expect(fs.readFileSync(log, 'utf8')).toContain(chunkOf.A![1]!.split('/').pop());
      // Nothing forged reached the cache: the second read fails the same way.
      expectEio(join(mnt, 'A'));
    });
  }

  it('detects chunks swapped within a file and between files of the same size', async () => {
    resetRemote();
    const swap = (x: string, y: string) => {
      const a = fs.readFileSync(join(remote(), x));
      fs.writeFileSync(join(remote(), x), fs.readFileSync(join(remote(), y)));
      fs.writeFileSync(join(remote(), y), a);
    };
    swap(chunkOf.A![0]!, chunkOf.A![1]!);
    swap(chunkOf.A![2]!, chunkOf.B![2]!);
    const { mnt } = await cloneAndMount('swapped');
    for (const offset of [0, MiB, 2 * MiB]) expect(readRange(join(mnt, 'A'), offset, MiB).ok).toBe(false);
    expect(readRange(join(mnt, 'B'), 2 * MiB, MiB).ok).toBe(false);
    expect(readRange(join(mnt, 'B'), 0, MiB).bytes!.equals(files.B!.subarray(0, MiB))).toBe(true);
  });

  it('fails only the range of a deleted chunk, and fsck names the file and range', async () => {
    resetRemote();
    fs.rmSync(join(remote(), chunkOf.B![1]!));
    const { vault, mnt } = await cloneAndMount('deleted');
    expect(readRange(join(mnt, 'B'), MiB, MiB).ok).toBe(false);
    expect(readRange(join(mnt, 'B'), 0, MiB).bytes!.equals(files.B!.subarray(0, MiB))).toBe(true);
    await cofferOk(['unmount', mnt]);
    const report = await coffer(['fsck', vault, '--remote']);
    expect(report.code).toBe(1);
    expect(report.stderr).toMatch(/affects \/B bytes 1048576\.\.2097152/);
  });

  it('rejects a chunk copied in from another vault, or an object of another type', async () => {
    resetRemote();
    const foreign = chunkKeys(join(other.dir, 'remote'))[0]!;
    fs.writeFileSync(join(remote(), chunkOf.A![0]!), fs.readFileSync(join(other.dir, 'remote', foreign)));
    const [device] = fs.readdirSync(join(remote(), 'journals'));
    const entry = fs.readdirSync(join(remote(), 'journals', device!))[0]!;
    fs.writeFileSync(join(remote(), chunkOf.C![0]!), fs.readFileSync(join(remote(), 'journals', device!, entry)));
    const { mnt, log } = await cloneAndMount('foreign');
    expect(readRange(join(mnt, 'A'), 0, MiB).ok).toBe(false);
    expectEio(join(mnt, 'C'));
    expect(fs.readFileSync(log, 'utf8')).toMatch(/failed authentication/);
  });
});

describe('tampered metadata', () => {
  const journalDir = () => {
    const [device] = fs.readdirSync(join(remote(), 'journals'));
    return join(remote(), 'journals', device!);
  };

  it('refuses a journal entry replaced by another vault’s, moved to another number or cut short', async () => {
    const theirsDir = join(other.dir, 'remote', 'journals', fs.readdirSync(join(other.dir, 'remote', 'journals'))[0]!);
    const theirs = fs.readFileSync(join(theirsDir, fs.readdirSync(theirsDir).sort()[0]!));
    const tamperings: [string, (entries: string[]) => void][] = [
      ['another vault', (entries) => fs.writeFileSync(join(journalDir(), entries[0]!), theirs)],
      ['moved', (entries) => fs.renameSync(join(journalDir(), entries[0]!), join(journalDir(), String(entries.length + 1).padStart(20, '0')))],
      ['cut', (entries) => fs.truncateSync(join(journalDir(), entries[0]!), 100)],
    ];
    for (const [what, tamper] of tamperings) {
      resetRemote();
      tamper(fs.readdirSync(journalDir()).sort());
      const vault = join(ws.dir, `clone-journal-${what.replace(' ', '-')}`);
      const result = await coffer(['clone', `file://${remote()}`, vault]);
      expect(result.code, what).toBe(1);
      expect(result.stderr, what).toMatch(/failed authentication|missing on the remote/);
      expect(fs.existsSync(join(vault, 'vault.json')), what).toBe(false);
    }
  });

  it('skips injected objects that do not authenticate, and never shows their contents', async () => {
    resetRemote();
    const stranger = 'e'.repeat(32);
    fs.writeFileSync(join(remote(), 'devices', stranger), randomBytes(5000));
    fs.mkdirSync(join(remote(), 'journals', stranger), { recursive: true });
    fs.writeFileSync(join(remote(), 'journals', stranger, '1'.padStart(20, '0')), randomBytes(5000));
    fs.mkdirSync(join(remote(), 'chunks', 'ff'), { recursive: true });
    fs.writeFileSync(join(remote(), 'chunks', 'ff', 'f'.repeat(64)), randomBytes(70_000));
    const vault = join(ws.dir, 'clone-injected');
    const clone = await cofferOk(['clone', `file://${remote()}`, vault]);
    expect(clone.stderr).toMatch(new RegExp(`skipping devices/${stranger}`));
    const mnt = join(ws.dir, 'mnt-injected');
    fs.mkdirSync(mnt);
    await cofferOk(['mount', vault, mnt]);
    mounts.push(mnt);
    expect(fs.readdirSync(mnt).sort()).toEqual(['A', 'B', 'C']);
    for (const [name, data] of Object.entries(files)) expect(fs.readFileSync(join(mnt, name)).equals(data)).toBe(true);
    // Publishing goes on past the objects in its way.
    fs.writeFileSync(join(mnt, 'D'), 'after the injection');
    await cofferOk(['sync', mnt, '--wait']);
    const devices = fs.readdirSync(join(remote(), 'journals'));
    expect(devices.length).toBe(3);
  });

  it('refuses a replaced vault header: weak KDF, another key, another version', async () => {
    const header = () => JSON.parse(fs.readFileSync(join(pristine, 'coffer-vault.json'), 'utf8'));
    const cases: [string, (h: any) => void, RegExp][] = [
      ['weak KDF', (h) => (h.kdf.memLimitBytes = 8 * MiB), /below|floor|weak/i],
      ['another wrapped key', (h) => (h.wrappedKey = JSON.parse(fs.readFileSync(join(other.dir, 'remote', 'coffer-vault.json'), 'utf8')).wrappedKey), /wrong passphrase/],
      ['another version', (h) => (h.version = 3), /version|unsupported/i],
    ];
    for (const [what, change, message] of cases) {
      resetRemote();
      const h = header();
      change(h);
      fs.writeFileSync(join(remote(), 'coffer-vault.json'), JSON.stringify(h));
      const result = await coffer(['clone', `file://${remote()}`, join(ws.dir, `clone-h-${what.replace(/\s/g, '-')}`)]);
      expect(result.code, what).toBe(1);
      expect(result.stderr, what).toMatch(message);
    }
    // The same checks guard the local copy of the header.
    resetRemote();
    const local = join(ws.vault, 'vault.json');
    const saved = fs.readFileSync(local);
    const h = JSON.parse(saved.toString());
    h.kdf.opsLimit = 1;
    fs.writeFileSync(local, JSON.stringify(h));
    const mount = await coffer(['mount', ws.vault, ws.mnt]);
    fs.writeFileSync(local, saved);
    expect(mount.code).toBe(1);
    expect(mount.stderr).toMatch(/below|floor|weak/i);
    expect(isMounted(ws.mnt)).toBe(false);
  });
});
