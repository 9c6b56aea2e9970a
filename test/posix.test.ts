/**
 * POSIX behaviour through a real mount: every operation goes through the kernel
 * into a daemon running in its own process.
 */
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Workspace } from './helpers/drive.js';

let ws: Workspace;
const p = (...parts: string[]) => ws.path(...parts);

function errnoOf(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (err) {
    return (err as NodeJS.ErrnoException).code;
  }
  return undefined;
}

function xattr(op: 'set' | 'get' | 'list' | 'remove', path: string, name = '', value = ''): string {
  const script = {
    set: `os.setxattr(sys.argv[1], sys.argv[2], sys.argv[3].encode())`,
    get: `print(os.getxattr(sys.argv[1], sys.argv[2]).decode(), end='')`,
    list: `print(','.join(sorted(os.listxattr(sys.argv[1]))), end='')`,
    remove: `os.removexattr(sys.argv[1], sys.argv[2])`,
  }[op];
  return execFileSync('python3', ['-c', `import os, sys\n${script}`, path, name, value], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

beforeAll(async () => {
  ws = new Workspace();
  await ws.init();
  await ws.mount();
});

afterAll(async () => {
  await ws?.cleanup();
});

describe('files', () => {
  it('creates, reads and overwrites at any offset', () => {
    fs.writeFileSync(p('a.txt'), 'hello world');
    expect(fs.readFileSync(p('a.txt'), 'utf8')).toBe('hello world');
    const fd = fs.openSync(p('a.txt'), 'r+');
    fs.writeSync(fd, 'WORLD', 0, 'utf8');
    fs.writeSync(fd, '!', 11, 'utf8');
    fs.closeSync(fd);
    expect(fs.readFileSync(p('a.txt'), 'utf8')).toBe('WORLD world!');
    expect(fs.statSync(p('a.txt')).size).toBe(12);
  });

  it('appends', () => {
    fs.writeFileSync(p('log'), 'one\n');
    fs.appendFileSync(p('log'), 'two\n');
    const fd = fs.openSync(p('log'), 'a');
    fs.writeSync(fd, 'three\n');
    fs.closeSync(fd);
    expect(fs.readFileSync(p('log'), 'utf8')).toBe('one\ntwo\nthree\n');
  });

  it('writes across chunk boundaries and reads back exactly', () => {
    const data = randomBytes(3 * 1024 * 1024 + 12345);
    fs.writeFileSync(p('multi'), data);
    expect(fs.readFileSync(p('multi')).equals(data)).toBe(true);
    // Overwrite a range that straddles the first chunk boundary.
    const patch = randomBytes(200_000);
    const fd = fs.openSync(p('multi'), 'r+');
    fs.writeSync(fd, patch, 0, patch.length, 1024 * 1024 - 100_000);
    fs.closeSync(fd);
    patch.copy(data, 1024 * 1024 - 100_000);
    expect(fs.readFileSync(p('multi')).equals(data)).toBe(true);
  });

  it('keeps sparse files sparse and reads holes as zeros', () => {
    const fd = fs.openSync(p('sparse'), 'w');
    fs.writeSync(fd, 'end', 0, 'utf8');
    fs.writeSync(fd, 'far', 10 * 1024 * 1024, 'utf8');
    fs.closeSync(fd);
    const st = fs.statSync(p('sparse'));
    expect(st.size).toBe(10 * 1024 * 1024 + 3);
    const buf = Buffer.alloc(16);
    const rd = fs.openSync(p('sparse'), 'r');
    fs.readSync(rd, buf, 0, 16, 5 * 1024 * 1024);
    expect(buf.equals(Buffer.alloc(16))).toBe(true);
    fs.readSync(rd, buf, 0, 3, 10 * 1024 * 1024);
    expect(buf.subarray(0, 3).toString()).toBe('far');
    fs.closeSync(rd);
  });

  it('truncates and ftruncates, growing and shrinking, with zeros past the old end', () => {
    const data = randomBytes(2 * 1024 * 1024 + 500);
    fs.writeFileSync(p('trunc'), data);
    fs.truncateSync(p('trunc'), 1024 * 1024 + 10);
    expect(fs.readFileSync(p('trunc')).equals(data.subarray(0, 1024 * 1024 + 10))).toBe(true);
    fs.truncateSync(p('trunc'), 1024 * 1024 + 5000);
    const grown = fs.readFileSync(p('trunc'));
    expect(grown.length).toBe(1024 * 1024 + 5000);
    expect(grown.subarray(0, 1024 * 1024 + 10).equals(data.subarray(0, 1024 * 1024 + 10))).toBe(true);
    expect(grown.subarray(1024 * 1024 + 10).equals(Buffer.alloc(4990))).toBe(true);
    const fd = fs.openSync(p('trunc'), 'r+');
    fs.ftruncateSync(fd, 3);
    expect(fs.fstatSync(fd).size).toBe(3);
    fs.closeSync(fd);
    expect(fs.readFileSync(p('trunc')).equals(data.subarray(0, 3))).toBe(true);
    fs.writeFileSync(p('trunc'), ''); // O_TRUNC
    expect(fs.statSync(p('trunc')).size).toBe(0);
  });

  it('keeps an unlinked file readable through its open descriptor', () => {
    fs.writeFileSync(p('ghost'), 'still here');
    const fd = fs.openSync(p('ghost'), 'r+');
    fs.unlinkSync(p('ghost'));
    expect(fs.existsSync(p('ghost'))).toBe(false);
    expect(fs.readdirSync(p('.'))).not.toContain('ghost');
    const buf = Buffer.alloc(10);
    fs.readSync(fd, buf, 0, 10, 0);
    expect(buf.toString()).toBe('still here');
    fs.writeSync(fd, '!', 10);
    const again = Buffer.alloc(11);
    expect(fs.readSync(fd, again, 0, 11, 0)).toBe(11);
    expect(again.toString()).toBe('still here!');
    fs.closeSync(fd);
  });

  it('fsyncs files and directories', () => {
    const fd = fs.openSync(p('synced'), 'w');
    fs.writeSync(fd, randomBytes(300_000));
    fs.fsyncSync(fd);
    fs.fdatasyncSync(fd);
    fs.closeSync(fd);
    const dir = fs.openSync(p('.'), 'r');
    fs.fsyncSync(dir);
    fs.closeSync(dir);
  });
});

describe('directories and names', () => {
  it('makes, lists and removes directories', () => {
    fs.mkdirSync(p('d1/d2/d3'), { recursive: true });
    fs.writeFileSync(p('d1/d2/f'), 'x');
    expect(fs.readdirSync(p('d1/d2')).sort()).toEqual(['d3', 'f']);
    expect(fs.statSync(p('d1')).nlink).toBe(3);
    expect(errnoOf(() => fs.rmdirSync(p('d1/d2')))).toBe('ENOTEMPTY');
    fs.rmSync(p('d1'), { recursive: true });
    expect(fs.existsSync(p('d1'))).toBe(false);
  });

  it('renames files and directories, replacing targets atomically', () => {
    fs.writeFileSync(p('r1'), 'one');
    fs.writeFileSync(p('r2'), 'two');
    fs.renameSync(p('r1'), p('r2'));
    expect(fs.readFileSync(p('r2'), 'utf8')).toBe('one');
    expect(fs.existsSync(p('r1'))).toBe(false);
    fs.mkdirSync(p('rd/sub'), { recursive: true });
    fs.writeFileSync(p('rd/sub/f'), 'deep');
    fs.mkdirSync(p('other'));
    fs.renameSync(p('rd'), p('other/rd2'));
    expect(fs.readFileSync(p('other/rd2/sub/f'), 'utf8')).toBe('deep');
    fs.mkdirSync(p('emptydir'));
    fs.renameSync(p('other/rd2'), p('emptydir')); // replaces an empty directory
    expect(fs.readFileSync(p('emptydir/sub/f'), 'utf8')).toBe('deep');
    expect(errnoOf(() => fs.renameSync(p('emptydir'), p('emptydir/sub/inside')))).toBe('EINVAL');
    fs.mkdirSync(p('full/x'), { recursive: true });
    expect(errnoOf(() => fs.renameSync(p('emptydir'), p('full')))).toBe('ENOTEMPTY');
    expect(errnoOf(() => fs.renameSync(p('r2'), p('full')))).toBe('EISDIR');
    expect(errnoOf(() => fs.renameSync(p('full'), p('r2')))).toBe('ENOTDIR');
  });

  it('keeps hard link counts right', () => {
    fs.writeFileSync(p('h1'), 'linked');
    fs.linkSync(p('h1'), p('h2'));
    fs.linkSync(p('h1'), p('h3'));
    expect(fs.statSync(p('h2')).nlink).toBe(3);
    expect(fs.statSync(p('h1')).ino).toBe(fs.statSync(p('h3')).ino);
    fs.unlinkSync(p('h1'));
    expect(fs.statSync(p('h2')).nlink).toBe(2);
    fs.writeFileSync(p('h3'), 'changed');
    expect(fs.readFileSync(p('h2'), 'utf8')).toBe('changed');
    fs.renameSync(p('h2'), p('h3')); // same inode: a no-op
    expect(fs.existsSync(p('h2'))).toBe(true);
  });

  it('makes and reads symlinks', () => {
    fs.writeFileSync(p('target'), 'pointed at');
    fs.symlinkSync('target', p('link'));
    expect(fs.readlinkSync(p('link'))).toBe('target');
    expect(fs.lstatSync(p('link')).isSymbolicLink()).toBe(true);
    expect(fs.readFileSync(p('link'), 'utf8')).toBe('pointed at');
    fs.symlinkSync('/nowhere/at/all', p('dangling'));
    expect(errnoOf(() => fs.readFileSync(p('dangling')))).toBe('ENOENT');
  });

  it('returns the right errno for bad requests', () => {
    expect(errnoOf(() => fs.readFileSync(p('missing')))).toBe('ENOENT');
    expect(errnoOf(() => fs.mkdirSync(p('target')))).toBe('EEXIST');
    expect(errnoOf(() => fs.writeFileSync(p('target/child'), 'x'))).toBe('ENOTDIR');
    fs.mkdirSync(p('adir'), { recursive: true });
    expect(errnoOf(() => fs.unlinkSync(p('adir')))).toBe('EISDIR');
    expect(errnoOf(() => fs.rmdirSync(p('target')))).toBe('ENOTDIR');
    expect(errnoOf(() => fs.writeFileSync(p('n'.repeat(256)), 'x'))).toBe('ENAMETOOLONG');
    expect(errnoOf(() => fs.readlinkSync(p('target')))).toBe('EINVAL');
    expect(errnoOf(() => fs.linkSync(p('adir'), p('adirlink')))).toBe('EPERM');
    const fd = fs.openSync(p('adir'), 'r');
    expect(errnoOf(() => fs.readSync(fd, Buffer.alloc(1)))).toBe('EISDIR');
    fs.closeSync(fd);
  });
});

describe('attributes', () => {
  it('changes modes, owners and times', () => {
    fs.writeFileSync(p('attrs'), 'x');
    fs.chmodSync(p('attrs'), 0o640);
    expect(fs.statSync(p('attrs')).mode & 0o7777).toBe(0o640);
    fs.chownSync(p('attrs'), 1234, 5678);
    expect(fs.statSync(p('attrs')).uid).toBe(1234);
    expect(fs.statSync(p('attrs')).gid).toBe(5678);
    const before = fs.statSync(p('attrs')).ctimeMs;
    fs.utimesSync(p('attrs'), new Date('2001-02-03T04:05:06.789Z'), new Date('2011-12-13T14:15:16.125Z'));
    const st = fs.statSync(p('attrs'));
    expect(st.atime.toISOString()).toBe('2001-02-03T04:05:06.789Z');
    expect(st.mtime.toISOString()).toBe('2011-12-13T14:15:16.125Z');
    expect(st.ctimeMs).toBeGreaterThanOrEqual(before);
  });

  it('updates mtime on write', async () => {
    fs.writeFileSync(p('mt'), 'a');
    fs.utimesSync(p('mt'), new Date(1_000_000), new Date(1_000_000));
    fs.appendFileSync(p('mt'), 'b');
    expect(fs.statSync(p('mt')).mtimeMs).toBeGreaterThan(Date.now() - 60_000);
  });

  it('stores extended attributes', () => {
    fs.writeFileSync(p('xa'), 'x');
    xattr('set', p('xa'), 'user.colour', 'blue');
    xattr('set', p('xa'), 'user.shape', 'round');
    expect(xattr('get', p('xa'), 'user.colour')).toBe('blue');
    expect(xattr('list', p('xa'))).toBe('user.colour,user.shape');
    xattr('remove', p('xa'), 'user.shape');
    expect(xattr('list', p('xa'))).toBe('user.colour');
    expect(() => xattr('get', p('xa'), 'user.shape')).toThrow(/No data available|ENODATA|Errno 61/);
  });

  it('reports filesystem statistics', () => {
    const st = fs.statfsSync(ws.mnt);
    expect(st.bsize).toBeGreaterThan(0);
    expect(st.blocks).toBeGreaterThan(0);
  });
});

describe('shell tools', () => {
  it('copies trees in and out with cp and checks them with diff', () => {
    const src = `${ws.dir}/src-tree`;
    fs.mkdirSync(`${src}/a/b`, { recursive: true });
    for (let i = 0; i < 20; i++) fs.writeFileSync(`${src}/a/b/f${i}`, randomBytes(i * 5000));
    fs.symlinkSync('b/f1', `${src}/a/l`);
    execFileSync('cp', ['-a', src, p('tree')]);
    execFileSync('diff', ['-r', '--no-dereference', src, p('tree')]);
    execFileSync('cp', ['-a', p('tree'), `${ws.dir}/back`]);
    execFileSync('diff', ['-r', '--no-dereference', src, `${ws.dir}/back`]);
  });
});
