/**
 * Sync through real mounts with a file:// remote outside the vault: publishing,
 * recovery on a "fresh machine", the bounded cache, offline work, crash recovery
 * of the upload queue, rollback refusal and fsck.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { coffer, cofferOk, isMounted, Workspace } from './helpers/drive.js';

const workspaces: Workspace[] = [];
afterEach(async () => {
  while (workspaces.length > 0) await workspaces.pop()!.cleanup();
});

/** A workspace whose remote is a folder beside the vault, so the vault can be deleted alone. */
async function vaultWithRemote(extra: string[] = []): Promise<{ ws: Workspace; remote: string; url: string }> {
  const ws = new Workspace();
  workspaces.push(ws);
  const remote = join(ws.dir, 'remote');
  const url = `file://${remote}`;
  await ws.init(['--remote', url, ...extra]);
  return { ws, remote, url };
}

function sha(path: string): string {
  return createHash('sha256').update(fs.readFileSync(path)).digest('hex');
}

function treeDigest(root: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const entry of fs.readdirSync(root, { recursive: true, withFileTypes: true })) {
    const path = join(entry.parentPath, entry.name);
    const rel = path.slice(root.length);
    const st = fs.lstatSync(path);
    out[rel] = entry.isSymbolicLink()
      ? `link:${fs.readlinkSync(path)}`
      : entry.isFile()
        ? `${(st.mode & 0o7777).toString(8)}:${st.mtimeMs}:${sha(path)}`
        : `dir:${(st.mode & 0o7777).toString(8)}`;
  }
  return out;
}

function duBytes(dir: string): number {
  let total = 0;
  for (const entry of fs.readdirSync(dir, { recursive: true, withFileTypes: true })) {
    if (entry.isFile()) total += fs.statSync(join(entry.parentPath, entry.name)).size;
  }
  return total;
}

/** Makes a file:// remote unreachable: a file where its folder should be. */
function takeDown(remote: string): void {
  fs.renameSync(remote, `${remote}.away`);
  fs.writeFileSync(remote, 'the remote is down');
}

function bringBack(remote: string): void {
  fs.rmSync(remote);
  fs.renameSync(`${remote}.away`, remote);
}

async function status(target: string): Promise<Record<string, any>> {
  return JSON.parse((await cofferOk(['status', target, '--json'])).stdout);
}

describe('publishing and recovery', () => {
  it('recovers every file from the remote and the passphrase alone after the vault is deleted', async () => {
    const { ws, url } = await vaultWithRemote();
    await ws.mount();
    fs.mkdirSync(ws.path('photos/2026'), { recursive: true });
    fs.writeFileSync(ws.path('photos/2026/a.jpg'), randomBytes(3_000_000));
    fs.writeFileSync(ws.path('notes.txt'), 'remember the milk');
    fs.chmodSync(ws.path('notes.txt'), 0o600);
    fs.symlinkSync('notes.txt', ws.path('link'));
    execFileSync('python3', ['-c', 'import os,sys; os.setxattr(sys.argv[1], "user.k", b"v")', ws.path('notes.txt')]);
    fs.utimesSync(ws.path('photos/2026/a.jpg'), new Date('2020-01-01T00:00:00.250Z'), new Date('2021-01-01T00:00:00.500Z'));
    const before = treeDigest(ws.mnt);
    const synced = await cofferOk(['sync', ws.mnt, '--wait']);
    expect(synced.stderr).toMatch(/Synced/);
    await ws.unmount();

    fs.rmSync(ws.vault, { recursive: true });
    const clone = await cofferOk(['clone', url, ws.vault]);
    expect(clone.stderr).toMatch(/Cloned .* 2 files/);
    expect(fs.readdirSync(join(ws.vault, 'cache'))).toEqual([]);
    await ws.mount();
    expect(treeDigest(ws.mnt)).toEqual(before);
    expect(execFileSync('python3', ['-c', 'import os,sys; print(os.getxattr(sys.argv[1], "user.k").decode())', ws.path('notes.txt')], { encoding: 'utf8' }).trim()).toBe('v');
  });

  it('refuses to clone with a wrong passphrase or from a remote without a vault', async () => {
    const { ws, url } = await vaultWithRemote();
    const target = join(ws.dir, 'other');
    const wrong = await coffer(['clone', url, target], { passphrase: 'wrong' });
    expect(wrong.code).toBe(1);
    expect(wrong.stderr).toMatch(/wrong passphrase/);
    expect(fs.existsSync(join(target, 'vault.json'))).toBe(false);
    const empty = await coffer(['clone', `file://${join(ws.dir, 'nothing')}`, target]);
    expect(empty.code).toBe(1);
    expect(empty.stderr).toMatch(/holds no Coffer vault/);
  });

  it('resumes uploads after the daemon is killed with uploads pending, losing nothing', async () => {
    const { ws, remote, url } = await vaultWithRemote();
    await ws.mount();
    takeDown(remote);
    const data = randomBytes(5_000_000);
    const fd = fs.openSync(ws.path('pending'), 'w');
    fs.writeSync(fd, data);
    fs.fsyncSync(fd);
    fs.closeSync(fd);
    expect((await status(ws.mnt)).pendingChunks).toBe(5);
    process.kill(await ws.daemonPid(), 'SIGKILL');
    await new Promise((r) => setTimeout(r, 300));
    bringBack(remote);
    await ws.mount();
    await cofferOk(['sync', ws.mnt, '--wait']);
    expect((await status(ws.mnt)).pendingChunks).toBe(0);
    await ws.unmount();
    // Prove the remote alone has it.
    const fresh = join(ws.dir, 'fresh');
    const mnt = join(ws.dir, 'fresh-mnt');
    fs.mkdirSync(mnt);
    await cofferOk(['clone', url, fresh]);
    await cofferOk(['mount', fresh, mnt]);
    try {
      expect(fs.readFileSync(join(mnt, 'pending')).equals(data)).toBe(true);
    } finally {
      await cofferOk(['unmount', mnt]);
    }
  });

  it('refuses a remote that withholds or rolls back entries of its journal', async () => {
    const { ws, remote } = await vaultWithRemote();
    await ws.mount();
    fs.writeFileSync(ws.path('one'), 'first');
    await cofferOk(['sync', ws.mnt, '--wait']);
    fs.writeFileSync(ws.path('two'), 'second');
    await cofferOk(['sync', ws.mnt, '--wait']);
    await ws.unmount();
    const [device] = fs.readdirSync(join(remote, 'journals'));
    const journal = join(remote, 'journals', device!);
    const entries = fs.readdirSync(journal).sort();
    expect(entries.length).toBeGreaterThanOrEqual(2);
    const newest = join(journal, entries.at(-1)!);
    const saved = fs.readFileSync(newest);
    fs.rmSync(newest); // withheld: the remote now offers only older entries
    const refused = await coffer(['mount', ws.vault, ws.mnt]);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toMatch(/rolled back|withholding/);
    expect(isMounted(ws.mnt)).toBe(false);
    // An older entry filed under the newest number does not pass either.
    fs.writeFileSync(newest, fs.readFileSync(join(journal, entries.at(-2)!)));
    expect((await coffer(['mount', ws.vault, ws.mnt])).code).toBe(1);
    fs.writeFileSync(newest, saved);
    await ws.mount();
    expect(fs.readFileSync(ws.path('two'), 'utf8')).toBe('second');
  });
});

describe('remote space', () => {
  it('deletes from the remote the chunks no published state needs any more (a vault with one device)', async () => {
    const { ws, remote } = await vaultWithRemote();
    await ws.mount();
    const count = (dir: string) => (fs.existsSync(join(remote, dir)) ? fs.readdirSync(join(remote, dir), { recursive: true, withFileTypes: true }).filter((e) => e.isFile()).length : 0);
    fs.writeFileSync(ws.path('f'), randomBytes(2 * 1024 * 1024));
    await cofferOk(['sync', ws.mnt, '--wait']);
    expect(count('chunks')).toBe(2);
    for (let round = 0; round < 3; round++) {
      fs.writeFileSync(ws.path('f'), randomBytes(2 * 1024 * 1024));
      await cofferOk(['sync', ws.mnt, '--wait']);
    }
    // Released chunks are forgotten after a grace period; the publish after that deletes them.
    for (let i = 0; i < 60 && count('chunks') > 2; i++) {
      await new Promise((r) => setTimeout(r, 500));
      await cofferOk(['sync', ws.mnt, '--wait']);
    }
    expect(count('chunks')).toBe(2);
    await ws.unmount();
    expect((await coffer(['fsck', ws.vault, '--remote'])).code).toBe(0);
  });
});

describe('cache and offline', () => {
  it('keeps the local cache within its limit while writing three times as much, and reads everything back', async () => {
    const { ws } = await vaultWithRemote(['--cache-size', '8M']);
    await ws.mount();
    const files: Record<string, string> = {};
    for (let i = 0; i < 6; i++) {
      const data = randomBytes(4 * 1024 * 1024);
      fs.writeFileSync(ws.path(`f${i}`), data);
      files[`f${i}`] = createHash('sha256').update(data).digest('hex');
    }
    await cofferOk(['sync', ws.mnt, '--wait']);
    for (let i = 0; i < 50 && duBytes(join(ws.vault, 'cache')) > 8 * 1024 * 1024; i++) await new Promise((r) => setTimeout(r, 100));
    expect(duBytes(join(ws.vault, 'cache'))).toBeLessThanOrEqual(8 * 1024 * 1024);
    const st = await status(ws.mnt);
    expect(st.cacheBytes).toBeLessThanOrEqual(st.cacheLimitBytes);
    await ws.remount(); // cold memory cache: evicted chunks come back from the remote
    for (const [name, digest] of Object.entries(files)) expect(sha(ws.path(name))).toBe(digest);
    expect(duBytes(join(ws.vault, 'cache'))).toBeLessThanOrEqual(8 * 1024 * 1024 + 1024 * 1024);
  });

  it('mounts and writes with the remote down, fails remote-only reads with EIO in bounded time, and catches up', async () => {
    const { ws, remote, url } = await vaultWithRemote();
    await ws.mount();
    fs.writeFileSync(ws.path('old'), randomBytes(2_000_000));
    await cofferOk(['sync', ws.mnt, '--wait']);
    await ws.unmount();
    // A clone holds no chunks: reading needs the remote.
    const clone = join(ws.dir, 'clone');
    await cofferOk(['clone', url, clone]);
    takeDown(remote);
    const mnt = join(ws.dir, 'clone-mnt');
    fs.mkdirSync(mnt);
    await cofferOk(['mount', clone, mnt]);
    try {
      const started = Date.now();
      const cat = spawnSync('cat', [join(mnt, 'old')]);
      expect(cat.status).not.toBe(0);
      expect(cat.stderr.toString()).toMatch(/Input\/output error/);
      expect(Date.now() - started).toBeLessThan(14_000);
      fs.writeFileSync(join(mnt, 'new'), 'written offline');
      expect(fs.readFileSync(join(mnt, 'new'), 'utf8')).toBe('written offline');
      const offline = await status(mnt);
      expect(offline.pendingChunks).toBe(1);
      bringBack(remote);
      await cofferOk(['sync', mnt, '--wait']);
      expect((await status(mnt)).pendingChunks).toBe(0);
      expect(fs.readFileSync(join(mnt, 'old')).length).toBe(2_000_000);
    } finally {
      await coffer(['unmount', mnt]);
    }
  });

  it('says at unmount how much is not yet uploaded, and waits for it with --wait-sync', async () => {
    const { ws, remote } = await vaultWithRemote();
    await ws.mount();
    takeDown(remote);
    fs.writeFileSync(ws.path('f'), randomBytes(1_500_000));
    const out = await cofferOk(['unmount', ws.mnt]);
    expect(out.stderr).toMatch(/Not on the remote yet: 1 file \([\d.]+ MiB in 2 chunks\)\. This stays queued .* uploads at the next mount/);
    bringBack(remote);
    await ws.mount();
    fs.writeFileSync(ws.path('g'), randomBytes(100_000));
    const waited = await cofferOk(['unmount', ws.mnt, '--wait-sync']);
    expect(waited.stderr).toMatch(/Synced/);
    expect(waited.stderr).not.toMatch(/not on the remote yet/i);
    expect((await status(ws.vault)).pendingChunks).toBe(0);
  });
});

describe('fsck', () => {
  it('passes a healthy vault and names the file and range a damaged or missing chunk affects', async () => {
    const { ws, remote } = await vaultWithRemote();
    await ws.mount();
    fs.mkdirSync(ws.path('dir'));
    fs.writeFileSync(ws.path('dir/victim'), randomBytes(1_500_000));
    fs.writeFileSync(ws.path('fine'), 'ok');
    await cofferOk(['sync', ws.mnt, '--wait']);
    await ws.unmount();
    expect((await coffer(['fsck', ws.vault, '--remote'])).code).toBe(0);

    const cacheFiles = fs.readdirSync(join(ws.vault, 'cache'), { recursive: true, withFileTypes: true }).filter((e) => e.isFile());
    const bySize = cacheFiles.map((e) => join(e.parentPath, e.name)).sort((a, b) => fs.statSync(b).size - fs.statSync(a).size);
    const first = bySize[0]!; // a full 1 MiB chunk of the victim
    const bytes = fs.readFileSync(first);
    bytes[500]! ^= 0xff;
    fs.writeFileSync(first, bytes);
    const report = await coffer(['fsck', ws.vault, '--json']);
    expect(report.code).toBe(1);
    const parsed = JSON.parse(report.stdout);
    expect(parsed.problems[0].kind).toBe('chunk-corrupt');
    expect(parsed.problems[0].affected).toEqual([{ path: '/dir/victim', offset: 0, length: 1024 * 1024 }]);

    const id = first.split('/').pop()!;
    fs.rmSync(join(remote, 'chunks', id.slice(0, 2), id));
    const remoteReport = await coffer(['fsck', ws.vault, '--remote']);
    expect(remoteReport.code).toBe(1);
    expect(remoteReport.stderr).toMatch(/missing from the remote/);
    expect(remoteReport.stderr).toMatch(/affects \/dir\/victim bytes 0\.\.1048576/);
  });
});
