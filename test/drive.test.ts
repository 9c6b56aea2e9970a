/**
 * The drive as a user meets it: init, mount, use, unmount, mount again; what lands
 * on disk outside the index; and every way a mount can be refused or go wrong.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { coffer, cofferOk, isMounted, readLogEntries, Workspace } from './helpers/drive.js';

const workspaces: Workspace[] = [];
async function workspace(): Promise<Workspace> {
  const ws = new Workspace();
  workspaces.push(ws);
  await ws.init();
  return ws;
}

afterEach(async () => {
  while (workspaces.length > 0) await workspaces.pop()!.cleanup();
});

function listFiles(dir: string): string[] {
  const out: string[] = [];
  for (const entry of fs.readdirSync(dir, { withFileTypes: true, recursive: true })) {
    if (entry.isFile()) out.push(join(entry.parentPath, entry.name));
  }
  return out;
}

function snapshotTree(root: string): Record<string, unknown> {
  const tree: Record<string, unknown> = {};
  const xattrs = (path: string) =>
    execFileSync('python3', ['-c', 'import os,sys\nfor n in sorted(os.listxattr(sys.argv[1], follow_symlinks=False)): print(n, os.getxattr(sys.argv[1], n, follow_symlinks=False).hex())', path], {
      encoding: 'utf8',
    });
  const walk = (rel: string) => {
    const path = join(root, rel);
    const st = fs.lstatSync(path);
    const entry: Record<string, unknown> = { mode: st.mode, uid: st.uid, gid: st.gid, nlink: st.nlink, size: st.size, mtimeMs: st.mtimeMs, atimeMs: st.atimeMs };
    if (st.isSymbolicLink()) entry.target = fs.readlinkSync(path);
    else entry.xattrs = xattrs(path);
    if (st.isFile()) entry.sha = createHash('sha256').update(fs.readFileSync(path)).digest('hex');
    tree[rel || '/'] = entry;
    if (st.isDirectory()) for (const name of fs.readdirSync(path).sort()) walk(join(rel, name));
  };
  walk('');
  return tree;
}

describe('a vault across mounts', () => {
  it('gives every byte, name, mode, time, link and xattr back after unmount and mount', async () => {
    const ws = await workspace();
    await ws.mount();
    const m = (...p: string[]) => ws.path(...p);
    fs.mkdirSync(m('docs/deep'), { recursive: true });
    fs.writeFileSync(m('docs/readme.txt'), 'hello');
    fs.writeFileSync(m('docs/deep/blob'), randomBytes(2_500_000));
    fs.chmodSync(m('docs/readme.txt'), 0o600);
    fs.linkSync(m('docs/readme.txt'), m('hardlink'));
    fs.symlinkSync('docs/readme.txt', m('symlink'));
    execFileSync('python3', ['-c', 'import os,sys; os.setxattr(sys.argv[1], "user.tag", b"important")', m('docs/deep/blob')]);
    fs.utimesSync(m('docs/deep/blob'), new Date('2020-05-06T07:08:09.123Z'), new Date('2019-01-02T03:04:05.678Z'));
    const sparse = fs.openSync(m('sparse'), 'w');
    fs.writeSync(sparse, 'tail', 5 * 1024 * 1024);
    fs.closeSync(sparse);
    const before = snapshotTree(ws.mnt);

    await ws.unmount();
    expect(isMounted(ws.mnt)).toBe(false);
    expect(fs.readdirSync(ws.mnt)).toEqual([]);
    await ws.mount();
    expect(snapshotTree(ws.mnt)).toEqual(before);
  });

  it('writes and reads back a 256 MiB file byte for byte, across a remount', async () => {
    const ws = await workspace();
    await ws.mount();
    const source = join(ws.dir, 'big.src');
    execFileSync('dd', ['if=/dev/urandom', `of=${source}`, 'bs=1M', 'count=256', 'status=none']);
    const expected = execFileSync('sha256sum', [source], { encoding: 'utf8' }).split(' ')[0];
    execFileSync('dd', [`if=${source}`, `of=${ws.path('big')}`, 'bs=1M', 'conv=fsync', 'status=none']);
    expect(execFileSync('sha256sum', [ws.path('big')], { encoding: 'utf8' }).split(' ')[0]).toBe(expected);
    await ws.remount();
    expect(execFileSync('sha256sum', [ws.path('big')], { encoding: 'utf8' }).split(' ')[0]).toBe(expected);
    const status = JSON.parse((await cofferOk(['status', ws.mnt, '--json'])).stdout);
    expect(status.bytes).toBe(256 * 1024 * 1024);
    expect(status.chunks).toBe(256);
  });

  it('stores identical chunks once', async () => {
    const ws = await workspace();
    await ws.mount();
    const data = randomBytes(4 * 1024 * 1024);
    fs.writeFileSync(ws.path('one'), data);
    fs.writeFileSync(ws.path('two'), data);
    const status = JSON.parse((await cofferOk(['status', ws.mnt, '--json'])).stdout);
    expect(status.files).toBe(2);
    expect(status.chunks).toBe(4);
  });
});

describe('what leaves the index', () => {
  it('holds no plaintext byte and no file name outside the index', async () => {
    const ws = await workspace();
    await ws.mount();
    const marker = `COFFER-MARKER-${randomBytes(8).toString('hex')}`;
    const names = ['Quarterly-Secret-Report.txt', 'Private-Folder-Name'];
    fs.mkdirSync(ws.path(names[1]!));
    fs.writeFileSync(ws.path(names[1]!, names[0]!), `${marker}\n`.repeat(50_000));
    fs.writeFileSync(ws.path('small.txt'), marker);
    execFileSync('python3', ['-c', `import os,sys; os.setxattr(sys.argv[1], "user.${marker}", b"${marker}")`, ws.path('small.txt')]);
    await cofferOk(['unmount', ws.mnt]); // commits and lets the syncer finish its round
    await ws.mount();
    // Wait until the remote has everything, so the check covers uploaded chunks and the snapshot.
    for (let i = 0; i < 100; i++) {
      const status = JSON.parse((await cofferOk(['status', ws.mnt, '--json'])).stdout);
      if (status.pendingChunks === 0 && !status.sync.publishPending && status.sync.publishedSeq > 0) break;
      await new Promise((r) => setTimeout(r, 200));
    }
    await ws.unmount();
    const remoteFiles = listFiles(join(ws.vault, 'remote'));
    const cacheFiles = listFiles(join(ws.vault, 'cache'));
    expect(remoteFiles.some((f) => f.includes('/journals/'))).toBe(true);
    expect(remoteFiles.some((f) => f.includes('/devices/'))).toBe(true);
    expect(remoteFiles.filter((f) => f.includes('/chunks/')).length).toBeGreaterThan(0);
    for (const file of [...remoteFiles, ...cacheFiles]) {
      const content = fs.readFileSync(file);
      expect(content.includes(marker), file).toBe(false);
      for (const name of names) expect(content.includes(name), `${file} names ${name}`).toBe(false);
      expect(file.includes(marker) || names.some((n) => file.includes(n))).toBe(false);
    }
  });
});

describe('tampering and failures', () => {
  it('fails a read with EIO, never wrong bytes, when a stored chunk was altered, and logs the chunk', async () => {
    const ws = await workspace();
    await ws.mount();
    fs.writeFileSync(ws.path('victim'), randomBytes(100_000));
    fs.writeFileSync(ws.path('bystander'), 'fine');
    await ws.unmount();
    const chunks = listFiles(join(ws.vault, 'cache'));
    expect(chunks.length).toBe(2);
    // Find the victim's chunk: the larger one.
    const victim = chunks.sort((a, b) => fs.statSync(b).size - fs.statSync(a).size)[0]!;
    const bytes = fs.readFileSync(victim);
    bytes[bytes.length - 100]! ^= 0x01;
    fs.writeFileSync(victim, bytes);
    // The remote holds the same sealed bytes; alter it too so no good copy exists anywhere.
    for (const f of listFiles(join(ws.vault, 'remote'))) if (f.endsWith(victim.split('/').pop()!)) fs.writeFileSync(f, bytes);

    await ws.mount();
    const cat = spawnSync('cat', [ws.path('victim')]);
    expect(cat.status).not.toBe(0);
    expect(cat.stderr.toString()).toMatch(/Input\/output error/);
    expect(cat.stdout.length).toBe(0);
    expect(fs.readFileSync(ws.path('bystander'), 'utf8')).toBe('fine');
    const chunkId = victim.split('/').pop()!;
    expect(fs.readFileSync(ws.log, 'utf8')).toContain(chunkId);
    // Structured: an error line whose chunk field names it, with the inode and the chunk's index in the file.
    const line = readLogEntries(ws.log).find((e) => e.level === 'error' && e.chunk === chunkId);
    expect(line, 'an error line with chunk = the damaged chunk').toMatchObject({ index: 0, err: { type: 'AuthenticationError' } });
    expect(typeof line!.ino).toBe('number');
  });

  it('refuses a wrong passphrase before mounting anything', async () => {
    const ws = await workspace();
    const result = await coffer(['mount', ws.vault, ws.mnt], { passphrase: 'not the passphrase' });
    expect(result.code).toBe(1);
    expect(result.stderr).toMatch(/wrong passphrase/);
    expect(isMounted(ws.mnt)).toBe(false);
  });

  it('refuses a second mount of a mounted vault', async () => {
    const ws = await workspace();
    await ws.mount();
    const other = join(ws.dir, 'mnt2');
    fs.mkdirSync(other);
    const result = await coffer(['mount', ws.vault, other]);
    expect(result.code).toBe(1);
    expect(result.stderr).toMatch(/already mounted/);
    expect(isMounted(other)).toBe(false);
    fs.writeFileSync(ws.path('still-works'), 'yes');
    expect(fs.readFileSync(ws.path('still-works'), 'utf8')).toBe('yes');
  });

  it('cleans up after a daemon killed with SIGKILL, keeping what was fsynced', async () => {
    const ws = await workspace();
    await ws.mount();
    const data = randomBytes(3_000_000);
    const fd = fs.openSync(ws.path('durable'), 'w');
    fs.writeSync(fd, data);
    fs.fsyncSync(fd);
    fs.closeSync(fd);
    const pid = await ws.daemonPid();
    process.kill(pid, 'SIGKILL');
    await new Promise((r) => setTimeout(r, 300));
    expect(isMounted(ws.mnt)).toBe(true);
    expect(spawnSync('stat', [ws.mnt]).stderr.toString()).toMatch(/Transport endpoint is not connected/);
    const unmount = await coffer(['unmount', ws.mnt]);
    expect(unmount.code, unmount.stderr).toBe(0);
    expect(isMounted(ws.mnt)).toBe(false);
    await ws.mount();
    expect(fs.readFileSync(ws.path('durable')).equals(data)).toBe(true);
  });

  it('mounts over a stale mount left by a killed daemon', async () => {
    const ws = await workspace();
    await ws.mount();
    fs.writeFileSync(ws.path('f'), 'x');
    process.kill(await ws.daemonPid(), 'SIGKILL');
    await new Promise((r) => setTimeout(r, 300));
    await ws.mount();
    expect(fs.readFileSync(ws.path('f'), 'utf8')).toBe('x');
  });
});

describe('command line', () => {
  it('fails clearly without a passphrase and without a terminal', async () => {
    const ws = new Workspace();
    workspaces.push(ws);
    const result = await coffer(['init', ws.vault], { passphrase: null });
    expect(result.code).toBe(1);
    expect(result.stderr).toMatch(/COFFER_PASSPHRASE/);
    expect(fs.existsSync(join(ws.vault, 'vault.json'))).toBe(false);
  });

  it('reads the passphrase from a file', async () => {
    const ws = new Workspace();
    workspaces.push(ws);
    const file = join(ws.dir, 'pass');
    fs.writeFileSync(file, 'from a file\n');
    await cofferOk(['init', ws.vault, '--passphrase-file', file], { passphrase: null });
    await cofferOk(['mount', ws.vault, ws.mnt, '--passphrase-file', file], { passphrase: null });
    await ws.unmount();
    const wrong = await coffer(['mount', ws.vault, ws.mnt], { passphrase: 'from a file\n' });
    expect(wrong.code).toBe(1);
  });

  it('leaves nothing behind when init cannot reach the remote, so the same init can be retried', async () => {
    const ws = new Workspace();
    workspaces.push(ws);
    // Nothing listens on port 1: the remote is unreachable.
    const failed = await coffer(['init', ws.vault, '--remote', 'http://127.0.0.1:1/v/'], { env: { COFFER_TOKEN: 'cft_x' } });
    expect(failed.code).toBe(1);
    expect(failed.stderr).toMatch(/ECONNREFUSED/);
    expect(fs.existsSync(ws.vault)).toBe(false);
    // An empty directory the user made stays, empty.
    fs.mkdirSync(ws.vault);
    expect((await coffer(['init', ws.vault, '--remote', 'http://127.0.0.1:1/v/'], { env: { COFFER_TOKEN: 'cft_x' } })).code).toBe(1);
    expect(fs.readdirSync(ws.vault)).toEqual([]);
    await cofferOk(['init', ws.vault]);
    await ws.mount();
    fs.writeFileSync(ws.path('f'), 'retried');
    await ws.unmount();
  });

  it('rejects bad arguments with usage errors', async () => {
    expect((await coffer([])).code).toBe(2);
    expect((await coffer(['frobnicate'])).code).toBe(2);
    expect((await coffer(['mount', '/tmp'])).code).toBe(2);
    const ws = await workspace();
    const missing = await coffer(['mount', ws.vault, join(ws.dir, 'no-such-dir')]);
    expect(missing.code).toBe(2);
    expect(missing.stderr).toMatch(/does not exist/);
    const notVault = await coffer(['mount', ws.dir, ws.mnt]);
    expect(notVault.code).toBe(1);
    expect(notVault.stderr).toMatch(/not a Coffer vault/);
    const again = await coffer(['init', ws.vault]);
    expect(again.code).toBe(1);
    expect(again.stderr).toMatch(/already holds a vault/);
    const notMounted = await coffer(['unmount', ws.mnt]);
    expect(notMounted.code).toBe(1);
    expect(notMounted.stderr).toMatch(/nothing is mounted/);
  });

  it('reports status as text and JSON, mounted or not', async () => {
    const ws = await workspace();
    const offline = JSON.parse((await cofferOk(['status', ws.vault, '--json'])).stdout);
    expect(offline).toMatchObject({ mounted: false, files: 0, chunks: 0 });
    await ws.mount();
    fs.writeFileSync(ws.path('a'), randomBytes(1_500_000));
    const online = JSON.parse((await cofferOk(['status', ws.mnt, '--json'])).stdout);
    expect(online).toMatchObject({ mounted: true, files: 1, bytes: 1_500_000, chunks: 2 });
    expect(typeof online.pendingChunks).toBe('number');
    // How long each kind of request took: 1.5 MB in writes of at most 128 KiB, then a close.
    const { write, release } = online.fuseOps;
    expect(write.count).toBeGreaterThanOrEqual(12);
    expect(write.errors).toBe(0);
    expect(release.count).toBe(1);
    expect(write.p50Us).toBeGreaterThan(0);
    expect(write.p50Us).toBeLessThanOrEqual(write.p99Us);
    expect(write.p99Us).toBeLessThanOrEqual(write.maxUs);
    const text = (await cofferOk(['status', ws.vault])).stdout;
    expect(text).toMatch(/mounted:\s+yes/);
    expect(text).toMatch(/files:\s+1/);
    await ws.unmount();
    expect((await cofferOk(['status', ws.vault])).stdout).toMatch(/mounted:\s+no/);
  });

  it('unmounts by vault directory too', async () => {
    const ws = await workspace();
    await ws.mount();
    await cofferOk(['unmount', ws.vault]);
    expect(isMounted(ws.mnt)).toBe(false);
  });

  it('keeps a foreground daemon attached until it is unmounted', async () => {
    const ws = await workspace();
    const { spawn } = await import('node:child_process');
    const { CLI, PASSPHRASE } = await import('./helpers/drive.js');
    const child = spawn(process.execPath, [CLI, 'mount', ws.vault, ws.mnt, '--foreground'], {
      env: { ...process.env, COFFER_PASSPHRASE: PASSPHRASE },
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    let stderr = '';
    child.stderr.on('data', (d) => (stderr += d));
    const exited = new Promise<number | null>((r) => child.on('exit', (code) => r(code)));
    for (let i = 0; i < 100 && !isMounted(ws.mnt); i++) await new Promise((r) => setTimeout(r, 100));
    expect(isMounted(ws.mnt)).toBe(true);
    fs.writeFileSync(ws.path('fg'), 'foreground');
    await cofferOk(['unmount', ws.mnt]);
    expect(await exited).toBe(0);
    expect(stderr).toMatch(/Mounted/);
    // The log goes to stderr too, as lines for people (the file keeps JSON).
    expect(stderr).toMatch(/^\S+Z INFO  \[\d+\] mounted \S+ as ".*" at /m);
    expect(stderr).toMatch(/^\S+Z INFO  \[\d+\] unmounted /m);
    expect(stderr).not.toMatch(/^\{/m);
  });
});
