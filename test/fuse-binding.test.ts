/**
 * The FUSE binding end to end: test/helpers/tiny-fs.mjs serves an in-memory filesystem through
 * mountFuse() in a child process, and this process drives the mount through the kernel (the
 * serving process must never touch its own mount). Needs root and /dev/fuse, and fuse-native
 * rebuilt by native/build-fuse.mjs (the npm postinstall).
 */
import { type ChildProcess, execFileSync, spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync } from 'node:fs';
import fsp from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildFuseOptionString, mountFuse, type FuseHandlers } from '../src/fs/fuse.js';
import { findMount, forceUnmount, isStaleMount, parseMountinfo } from '../src/fs/mountinfo.js';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const HELPER = path.join(ROOT, 'test', 'helpers', 'tiny-fs.mjs');
const OP_TIMEOUT_MS = 1_000;
const SLOW_READ_MS = 5_000;

/** The helper runs compiled code: rebuild dist/ when a source it depends on is newer. */
function ensureDist(): void {
  const pairs = [
    ['src/fs/fuse.ts', 'dist/fs/fuse.js'],
    ['src/fs/mountinfo.ts', 'dist/fs/mountinfo.js'],
    ['src/fs/errno.ts', 'dist/fs/errno.js'],
    ['src/errors.ts', 'dist/errors.js'],
  ].map(([src, out]) => [path.join(ROOT, src!), path.join(ROOT, out!)] as const);
  const stale = pairs.some(([src, out]) => !existsSync(out) || statSync(out).mtimeMs < statSync(src).mtimeMs);
  if (!stale) return;
  // Other parts of src/ may fail type-checking mid-edit; tsc still emits, and the outputs we
  // need are checked below.
  spawnSync('npx', ['tsc', '-p', 'tsconfig.json'], { cwd: ROOT, stdio: 'ignore' });
  for (const [src, out] of pairs) {
    if (!existsSync(out) || statSync(out).mtimeMs < statSync(src).mtimeMs) {
      throw new Error(`${path.relative(ROOT, out)} was not rebuilt by \`npx tsc -p tsconfig.json\``);
    }
  }
}

interface Served {
  mountpoint: string;
  child: ChildProcess;
  stdout: string[];
  stderr: string[];
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

const served: Served[] = [];
const tempDirs: string[] = [];

function tempMountpoint(): string {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'coffer-fuse-'));
  tempDirs.push(dir);
  return dir;
}

function serve(mountpoint: string, env: Record<string, string> = {}): Promise<Served> {
  const child = spawn(process.execPath, [HELPER, mountpoint], {
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.once('exit', (code, signal) => resolve({ code, signal })),
  );
  const s: Served = { mountpoint, child, stdout: [], stderr: [], exited };
  served.push(s);
  child.stderr!.setEncoding('utf8').on('data', (d: string) => s.stderr.push(d));
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`tiny-fs did not mount within 20 s: ${s.stderr.join('')}`)), 20_000);
    child.stdout!.setEncoding('utf8').on('data', (d: string) => {
      s.stdout.push(d);
      if (s.stdout.join('').includes('"ready":true')) {
        clearTimeout(timer);
        resolve(s);
      }
    });
    void exited.then(({ code, signal }) => {
      clearTimeout(timer);
      reject(new Error(`tiny-fs exited (${code ?? signal}) before mounting: ${s.stderr.join('')}`));
    });
  });
}

function hasCommand(name: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${name}`], { stdio: 'ignore' }).status === 0;
}

function errnoCode(promise: Promise<unknown>): Promise<string | undefined> {
  return promise.then(
    () => undefined,
    (err: NodeJS.ErrnoException) => err.code,
  );
}

beforeAll(() => {
  ensureDist();
}, 120_000);

afterAll(async () => {
  // Whatever happened above, leave no process and no mount behind.
  for (const s of served) {
    if (s.child.exitCode === null && s.child.signalCode === null) s.child.kill('SIGKILL');
    await s.exited;
  }
  for (const s of served) await forceUnmount(s.mountpoint).catch(() => undefined);
  for (const dir of tempDirs) {
    if (!(await findMount(dir))) rmSync(dir, { recursive: true, force: true });
  }
}, 60_000);

describe('mount options and mountinfo parsing', () => {
  it('emits exactly Coffer\'s -o string and refuses one fuse-native would truncate', () => {
    expect(buildFuseOptionString({ fsname: 'coffer', subtype: 'coffer' })).toBe(
      '-obig_writes,max_write=131072,fsname=coffer,subtype=coffer,use_ino,hard_remove,default_permissions',
    );
    expect(buildFuseOptionString({ fsname: 'v1', subtype: 'coffer', extraOptions: ['allow_other', 'attr_timeout=1'] })).toBe(
      '-obig_writes,max_write=131072,fsname=v1,subtype=coffer,use_ino,hard_remove,default_permissions,allow_other,attr_timeout=1',
    );
    expect(() => buildFuseOptionString({ fsname: 'c', subtype: 'coffer', extraOptions: ['x'.repeat(1000)] })).toThrow(/1023/);
    // A volume name may hold commas, spaces and backslashes: escaped for libfuse, which unescapes them.
    expect(buildFuseOptionString({ fsname: 'My Photos, 2024 \\ x', subtype: 'coffer' })).toContain(',fsname=My Photos\\, 2024 \\\\ x,subtype=coffer,');
    expect(() => buildFuseOptionString({ fsname: 'a\nb', subtype: 'coffer' })).toThrow(/fsname/);
    expect(() => buildFuseOptionString({ fsname: '', subtype: 'coffer' })).toThrow(/fsname/);
    expect(() => buildFuseOptionString({ fsname: 'c', subtype: 'a,b' })).toThrow(/subtype/);
    expect(() => buildFuseOptionString({ fsname: 'c', subtype: 'coffer', extraOptions: ['ro,allow_other'] })).toThrow(/one option/);
  });

  it('decodes octal escapes and combines per-mount and superblock options', () => {
    const [entry] = parseMountinfo(
      '43 27 0:40 / /tmp/a\\040b\\134c rw,nosuid,nodev,relatime shared:1 - fuse.coffer my\\040vault rw,user_id=0,group_id=0\n',
    );
    expect(entry).toEqual({
      mountpoint: '/tmp/a b\\c',
      fstype: 'fuse.coffer',
      source: 'my vault',
      options: 'rw,nosuid,nodev,relatime,rw,user_id=0,group_id=0',
    });
  });
});

describe('a filesystem served by mountFuse, driven through the kernel', () => {
  let fsInfo: Served;
  let mnt: string;
  const at = (name: string): string => path.join(mnt, name);

  beforeAll(async () => {
    mnt = tempMountpoint();
    fsInfo = await serve(mnt, { TINY_FS_TIMEOUT_MS: String(OP_TIMEOUT_MS), TINY_FS_SLOW_MS: String(SLOW_READ_MS) });
  }, 60_000);

  it('is listed in mountinfo as fuse.coffer with our fsname', async () => {
    const entry = await findMount(mnt);
    expect(entry).toBeDefined();
    expect(entry!.fstype).toBe('fuse.coffer');
    expect(entry!.source).toBe('coffer-test');
    expect(entry!.options).toContain('default_permissions');
    expect(await isStaleMount(mnt)).toBe(false);
  }, 30_000);

  it('lets 64 background requests (read-ahead) reach the filesystem at once, not the kernel default of 12', async (ctx) => {
    // The kernel shows each FUSE connection under fusectl, named by the mount's device number.
    const connections = '/sys/fs/fuse/connections';
    // Mounted here only if nobody had: then it is ours to unmount, whatever the outcome.
    const mountedHere =
      existsSync(connections) && readdirSync(connections).length === 0 && spawnSync('mount', ['-t', 'fusectl', 'none', connections]).status === 0;
    try {
      const dir = path.join(connections, String(statSync(mnt).dev));
      if (!existsSync(dir)) ctx.skip(`fusectl is not available here (${connections})`);
      expect(readFileSync(path.join(dir, 'max_background'), 'utf8').trim()).toBe('64');
      expect(readFileSync(path.join(dir, 'congestion_threshold'), 'utf8').trim()).toBe('48');
    } finally {
      if (mountedHere) spawnSync('umount', [connections]);
    }
  });

  it('refuses a second mount on the same mountpoint and a missing mountpoint, with clear messages', async () => {
    const opts = { fsname: 'c', subtype: 'coffer', log: () => undefined };
    // Rejected from mountinfo alone, before anything touches the mount or loads fuse-native.
    await expect(mountFuse(mnt, {} as FuseHandlers, opts)).rejects.toThrow(/already mounted/);
    await expect(mountFuse(path.join(mnt, '..', 'no-such-dir-here'), {} as FuseHandlers, opts)).rejects.toThrow(/does not exist/);
    await expect(mountFuse(HELPER, {} as FuseHandlers, opts)).rejects.toThrow(/not a directory/);
    await expect(mountFuse(tempMountpoint(), {} as FuseHandlers, { ...opts, timeoutMs: 0 })).rejects.toThrow(/timeoutMs/);
  }, 30_000);

  it('creates, writes, reads and stats files with the values the handlers give', async () => {
    await fsp.writeFile(at('hello.txt'), 'hello, coffer\n');
    expect(await fsp.readFile(at('hello.txt'), 'utf8')).toBe('hello, coffer\n');

    const st = await fsp.stat(at('hello.txt'));
    expect(st.isFile()).toBe(true);
    expect(st.size).toBe(14);
    expect(st.mode & 0o777).toBe(0o666 & ~process.umask());
    expect(st.nlink).toBe(1);
    expect(st.uid).toBe(process.getuid!());
    expect(st.ino).toBeGreaterThan(1);
    expect((await fsp.stat(at('hello.txt'))).ino).toBe(st.ino); // use_ino: our numbers, stable

    // Larger than max_write, at an odd offset: exercises big writes and 64-bit offsets split in two.
    const big = randomBytes(3 * 1024 * 1024 + 17);
    await fsp.writeFile(at('big.bin'), big);
    expect((await fsp.readFile(at('big.bin'))).equals(big)).toBe(true);
    const fh = await fsp.open(at('big.bin'), 'r+');
    try {
      await fh.write(Buffer.from('PATCH'), 0, 5, 1_000_003);
      const back = Buffer.alloc(9);
      await fh.read(back, 0, 9, 1_000_001);
      expect(back.equals(Buffer.concat([big.subarray(1_000_001, 1_000_003), Buffer.from('PATCH'), big.subarray(1_000_008, 1_000_010)]))).toBe(true);
      await fh.truncate(10);
      expect((await fh.stat()).size).toBe(10);
    } finally {
      await fh.close();
    }

    const entries = await fsp.readdir(mnt, { withFileTypes: true });
    const names = entries.map((e) => e.name);
    expect(names).toEqual(expect.arrayContaining(['hello.txt', 'big.bin', 'slow']));
    expect(entries.find((e) => e.name === 'hello.txt')!.isFile()).toBe(true);

    const sfs = await fsp.statfs(mnt);
    expect(sfs.bsize).toBe(4096);
    expect(sfs.blocks).toBe(1 << 20);
  }, 60_000);

  it('sets atime and mtime independently (the patched utimens)', async () => {
    const file = at('times.txt');
    await fsp.writeFile(file, 'x');
    const atime = new Date('2001-09-09T01:46:40.500Z');
    const mtime = new Date('2017-07-14T02:40:00.250Z');
    await fsp.utimes(file, atime, mtime);
    let st = await fsp.stat(file);
    expect(st.atimeMs).toBe(atime.getTime());
    expect(st.mtimeMs).toBe(mtime.getTime());

    // UTIME_OMIT for the other time: only mtime, then only atime, changes.
    execFileSync('touch', ['-m', '-d', '2010-01-01T00:00:00Z', file]);
    st = await fsp.stat(file);
    expect(st.atimeMs).toBe(atime.getTime());
    expect(st.mtimeMs).toBe(Date.parse('2010-01-01T00:00:00Z'));
    execFileSync('touch', ['-a', '-d', '2011-01-01T00:00:00Z', file]);
    st = await fsp.stat(file);
    expect(st.atimeMs).toBe(Date.parse('2011-01-01T00:00:00Z'));
    expect(st.mtimeMs).toBe(Date.parse('2010-01-01T00:00:00Z'));

    // UTIME_NOW for both.
    const before = Date.now();
    execFileSync('touch', [file]);
    st = await fsp.stat(file);
    expect(st.mtimeMs).toBeGreaterThanOrEqual(before - 5);
    expect(st.atimeMs).toBe(st.mtimeMs);
  }, 30_000);

  it('passes link, symlink, rename, mkdir, rmdir, chmod and truncate arguments in POSIX order', async () => {
    await fsp.writeFile(at('orig.txt'), 'linked');
    await fsp.link(at('orig.txt'), at('hard.txt'));
    const [a, b] = await Promise.all([fsp.stat(at('orig.txt')), fsp.stat(at('hard.txt'))]);
    expect(b.ino).toBe(a.ino);
    expect(b.nlink).toBe(2);

    await fsp.symlink('orig.txt', at('sym'));
    expect(await fsp.readlink(at('sym'))).toBe('orig.txt');
    expect((await fsp.lstat(at('sym'))).isSymbolicLink()).toBe(true);
    expect(await fsp.readFile(at('sym'), 'utf8')).toBe('linked');

    await fsp.rename(at('hard.txt'), at('moved.txt'));
    expect(existsSync(at('hard.txt'))).toBe(false);
    expect(await fsp.readFile(at('moved.txt'), 'utf8')).toBe('linked');

    await fsp.mkdir(at('dir'), { mode: 0o750 });
    expect((await fsp.stat(at('dir'))).mode & 0o7777).toBe(0o750 & ~process.umask());
    await fsp.writeFile(at('dir/inner'), '');
    expect(await errnoCode(fsp.rmdir(at('dir')))).toBe('ENOTEMPTY');
    await fsp.unlink(at('dir/inner'));
    await fsp.rmdir(at('dir'));
    expect(existsSync(at('dir'))).toBe(false);

    await fsp.chmod(at('orig.txt'), 0o600);
    expect((await fsp.stat(at('orig.txt'))).mode & 0o7777).toBe(0o600);
    await fsp.truncate(at('orig.txt'), 3);
    expect(await fsp.readFile(at('orig.txt'), 'utf8')).toBe('lin');

    expect(await errnoCode(fsp.stat(at('missing')))).toBe('ENOENT');
  }, 30_000);

  it.skipIf(!hasCommand('setfattr') || !hasCommand('getfattr'))('stores extended attributes (setfattr/getfattr)', async () => {
    const file = at('xattr.txt');
    await fsp.writeFile(file, '');
    execFileSync('setfattr', ['-n', 'user.colour', '-v', 'blue', file]);
    expect(execFileSync('getfattr', ['-n', 'user.colour', '--only-values', file], { encoding: 'utf8' })).toBe('blue');
    const missing = spawnSync('getfattr', ['-n', 'user.none', file], { encoding: 'utf8' });
    expect(missing.status).not.toBe(0);
    expect(missing.stderr).toMatch(/No such attribute/);
    execFileSync('setfattr', ['-x', 'user.colour', file]);
    expect(execFileSync('getfattr', ['--absolute-names', '-d', file], { encoding: 'utf8' })).not.toContain('user.colour');
  }, 30_000);

  it.skipIf(!hasCommand('python3'))('answers ERANGE when a value or list outgrows the caller\'s buffer', async () => {
    const file = at('xattr-sizes.txt');
    await fsp.writeFile(file, '');
    // CPython's os.getxattr/listxattr first try a 128/256-byte buffer and retry bigger on ERANGE,
    // so these values only come back whole if the binding signals ERANGE instead of truncating.
    const script = `
import os, sys, json
p = sys.argv[1]
os.setxattr(p, 'user.big', b'v' * 300)
for i in range(30):
    os.setxattr(p, 'user.attribute-name-%02d' % i, b'1')
try:
    os.setxattr(p, 'user.big', b'x', os.XATTR_CREATE)
    create = 'ok'
except OSError as e:
    create = e.errno
try:
    os.getxattr(p, 'user.none')
    none = 'ok'
except OSError as e:
    none = e.errno
print(json.dumps({'big': len(os.getxattr(p, 'user.big')), 'names': sorted(os.listxattr(p)), 'create': create, 'none': none}))
`;
    const out = JSON.parse(execFileSync('python3', ['-c', script, file], { encoding: 'utf8' })) as {
      big: number;
      names: string[];
      create: number;
      none: number;
    };
    expect(out.big).toBe(300);
    expect(out.names).toHaveLength(31);
    expect(out.names).toContain('user.attribute-name-29');
    expect(out.create).toBe(os.constants.errno.EEXIST);
    expect(out.none).toBe(os.constants.errno.ENODATA);
  }, 30_000);

  it('keeps an unlinked open file usable through its descriptor (hard_remove, null paths)', async () => {
    const file = at('unlinked.txt');
    const fh = await fsp.open(file, 'w+');
    try {
      await fh.write('still here');
      await fsp.unlink(file);
      expect(existsSync(file)).toBe(false);
      expect((await fsp.readdir(mnt)).includes('unlinked.txt')).toBe(false);

      const buf = Buffer.alloc(32);
      const { bytesRead } = await fh.read(buf, 0, 32, 0);
      expect(buf.subarray(0, bytesRead).toString()).toBe('still here');
      await fh.write('!', 10);
      await fh.truncate(5); // libfuse answers ftruncate with fgetattr(null, fh)
      const again = Buffer.alloc(32);
      const second = await fh.read(again, 0, 32, 0);
      expect(again.subarray(0, second.bytesRead).toString()).toBe('still');
      await fh.sync();

      // fstat is the one call that cannot work here: the kernel sends GETATTR without a file
      // handle, and libfuse 2 then needs a path the unlinked node no longer has, so it answers
      // ENOENT itself without calling any Coffer code. If this starts passing, update the docs.
      expect(await errnoCode(fh.stat())).toBe('ENOENT');
    } finally {
      await fh.close();
    }
    const log = () => fsInfo.stderr.join('');
    await expect.poll(log, { timeout: 5_000 }).toContain('null path: release');
    for (const op of ['read', 'write', 'ftruncate', 'fgetattr', 'fsync']) expect(log()).toContain(`null path: ${op}`);
  }, 30_000);

  it('maps handler failures to EIO, logs them, and keeps serving', async () => {
    expect(await errnoCode(fsp.stat(at('boom')))).toBe('EIO');
    expect(await errnoCode(fsp.stat(at('sync-throw')))).toBe('EIO');
    expect(fsInfo.stderr.join('')).toContain('asynchronous failure inside a handler');
    expect(fsInfo.stderr.join('')).toContain('synchronous failure inside a handler');
    expect(await fsp.readFile(at('hello.txt'), 'utf8')).toBe('hello, coffer\n');
  }, 30_000);

  it('answers ETIMEDOUT when a handler outlasts timeoutMs, and survives its late reply', async () => {
    const started = Date.now();
    expect(await errnoCode(fsp.readFile(at('slow')))).toBe('ETIMEDOUT');
    expect(Date.now() - started).toBeLessThan(SLOW_READ_MS);
    // Let the late reply arrive at a buffer the native side has already detached.
    await new Promise((resolve) => setTimeout(resolve, SLOW_READ_MS - (Date.now() - started) + 500));
    expect(fsInfo.child.exitCode).toBeNull();
    expect(await fsp.readFile(at('hello.txt'), 'utf8')).toBe('hello, coffer\n');
  }, 30_000);

  it('unmounts on SIGTERM through FuseSession.unmount()', async () => {
    fsInfo.child.kill('SIGTERM');
    const { code } = await fsInfo.exited;
    expect(code).toBe(0);
    expect(fsInfo.stdout.join('')).toContain('"unmounted":true');
    expect(await findMount(mnt)).toBeUndefined();
  }, 30_000);
});

describe('a mount whose daemon was killed with SIGKILL', () => {
  it('is detected as stale and cleaned by forceUnmount', async () => {
    const mnt = tempMountpoint();
    const s = await serve(mnt);
    s.child.kill('SIGKILL');
    expect((await s.exited).signal).toBe('SIGKILL');

    expect((await findMount(mnt))?.fstype).toBe('fuse.coffer');
    expect(await isStaleMount(mnt)).toBe(true);
    await forceUnmount(mnt);
    expect(await findMount(mnt)).toBeUndefined();
    expect(await isStaleMount(mnt)).toBe(false);
    await forceUnmount(mnt); // nothing mounted: a no-op
    await expect(forceUnmount('/proc')).rejects.toThrow(/not FUSE/);
  }, 60_000);
});
