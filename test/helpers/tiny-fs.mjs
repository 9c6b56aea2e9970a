// A small in-memory filesystem served through Coffer's FUSE binding, for tests that drive a real
// mount from another process (the serving process must never touch its own mount).
//
//   node test/helpers/tiny-fs.mjs <mountpoint>
//
// Prints one JSON line `{"ready":true,...}` on stdout once mounted; SIGTERM/SIGINT unmount
// through FuseSession.unmount() and exit 0. Imports the compiled binding from dist/.
// Env: TINY_FS_TIMEOUT_MS sets MountOptions.timeoutMs. Special names exercise error paths:
//   /slow      reads take TINY_FS_SLOW_MS (default 3000) ms
//   /boom      getattr rejects with a plain Error (must become EIO, logged)
//   /sync-throw  getattr throws synchronously (must become EIO, not crash)
import { setTimeout as sleep } from 'node:timers/promises';
import { FsError } from '../../dist/errors.js';
import { mountFuse } from '../../dist/fs/fuse.js';

const S_IFMT = 0o170000;
const S_IFDIR = 0o040000;
const S_IFREG = 0o100000;
const S_IFLNK = 0o120000;

let nextIno = 2;
let nextFh = 1;
const uid = process.getuid?.() ?? 0;
const gid = process.getgid?.() ?? 0;

function makeNode(mode, ino = nextIno++) {
  const now = Date.now();
  return {
    ino,
    mode,
    uid,
    gid,
    nlink: (mode & S_IFMT) === S_IFDIR ? 2 : 1,
    data: Buffer.alloc(0),
    target: '',
    xattrs: new Map(),
    children: (mode & S_IFMT) === S_IFDIR ? new Map() : null,
    atimeMs: now,
    mtimeMs: now,
    ctimeMs: now,
  };
}

const root = makeNode(S_IFDIR | 0o755, 1);
let slowIno = 0;
const handles = new Map();

function split(p) {
  return p.split('/').filter(Boolean);
}

function lookup(p) {
  let node = root;
  for (const part of split(p)) {
    if (!node.children) throw new FsError('ENOTDIR');
    node = node.children.get(part);
    if (!node) throw new FsError('ENOENT');
  }
  return node;
}

function parentOf(p) {
  const parts = split(p);
  const name = parts.pop();
  if (!name) throw new FsError('EINVAL');
  const dir = lookup(`/${parts.join('/')}`);
  if (!dir.children) throw new FsError('ENOTDIR');
  return { dir, name };
}

function statOf(node) {
  return {
    mode: node.mode,
    uid: node.uid,
    gid: node.gid,
    size: node.children ? 4096 : (node.mode & S_IFMT) === S_IFLNK ? Buffer.byteLength(node.target) : node.data.length,
    nlink: node.nlink,
    ino: node.ino,
    atimeMs: node.atimeMs,
    mtimeMs: node.mtimeMs,
    ctimeMs: node.ctimeMs,
  };
}

function byHandle(fh) {
  const node = handles.get(fh);
  if (!node) throw new FsError('EBADF');
  return node;
}

function insert(p, node) {
  const { dir, name } = parentOf(p);
  if (dir.children.has(name)) throw new FsError('EEXIST');
  dir.children.set(name, node);
  if (node.children) dir.nlink++;
  dir.mtimeMs = dir.ctimeMs = Date.now();
  return node;
}

function resize(node, size) {
  if (size > node.data.length) {
    node.data = Buffer.concat([node.data, Buffer.alloc(size - node.data.length)]);
  } else {
    node.data = Buffer.from(node.data.subarray(0, size));
  }
  node.mtimeMs = node.ctimeMs = Date.now();
}

// Operations that reached a handler with a null path (a file unlinked while open), reported once
// each on stderr so a test can see the binding passed null through instead of failing.
const sawNullPath = new Set();
function notePath(op, p) {
  if (p === null && !sawNullPath.has(op)) {
    sawNullPath.add(op);
    console.error(`[tiny-fs] null path: ${op}`);
  }
}

function openHandle(node) {
  const fh = nextFh++;
  handles.set(fh, node);
  return fh;
}

const handlers = {
  getattr(p) {
    if (p === '/sync-throw') throw new Error('synchronous failure inside a handler');
    if (p === '/boom') return Promise.reject(new Error('asynchronous failure inside a handler'));
    return Promise.resolve(statOf(lookup(p)));
  },
  async fgetattr(p, fh) {
    notePath('fgetattr', p);
    return statOf(handles.get(fh) ?? lookup(p));
  },
  async statfs() {
    return { bsize: 4096, frsize: 4096, blocks: 1 << 20, bfree: 1 << 19, bavail: 1 << 19, files: 1 << 16, ffree: 1 << 15, favail: 1 << 15, namemax: 255 };
  },
  async readdir(p) {
    const dir = lookup(p);
    if (!dir.children) throw new FsError('ENOTDIR');
    const parent = p === '/' ? root : parentOf(p).dir;
    const names = ['.', '..', ...dir.children.keys()];
    const stats = [statOf(dir), statOf(parent), ...[...dir.children.values()].map(statOf)];
    return { names, stats };
  },
  async open(p) {
    return openHandle(lookup(p));
  },
  async create(p, mode) {
    return openHandle(insert(p, makeNode(S_IFREG | (mode & 0o7777))));
  },
  async read(p, fh, buf, length, position) {
    notePath('read', p);
    const node = byHandle(fh);
    if (node.ino === slowIno) await sleep(Number(process.env.TINY_FS_SLOW_MS ?? 3000));
    if (position >= node.data.length) return 0;
    return node.data.copy(buf, 0, position, Math.min(node.data.length, position + length));
  },
  async write(p, fh, buf, length, position) {
    notePath('write', p);
    const node = byHandle(fh);
    if (position + length > node.data.length) resize(node, position + length);
    buf.copy(node.data, position, 0, length);
    node.mtimeMs = node.ctimeMs = Date.now();
    return length;
  },
  async flush(p) {
    notePath('flush', p);
  },
  async fsync(p) {
    notePath('fsync', p);
  },
  async release(p, fh) {
    notePath('release', p);
    handles.delete(fh);
  },
  async truncate(p, size) {
    resize(lookup(p), size);
  },
  async ftruncate(p, fh, size) {
    notePath('ftruncate', p);
    resize(byHandle(fh), size);
  },
  async utimens(p, atimeMs, mtimeMs) {
    const node = lookup(p);
    node.atimeMs = atimeMs;
    node.mtimeMs = mtimeMs;
    node.ctimeMs = Date.now();
  },
  async readlink(p) {
    const node = lookup(p);
    if ((node.mode & S_IFMT) !== S_IFLNK) throw new FsError('EINVAL');
    return node.target;
  },
  async chown(p, u, g) {
    const node = lookup(p);
    if (u !== 0xffffffff) node.uid = u;
    if (g !== 0xffffffff) node.gid = g;
    node.ctimeMs = Date.now();
  },
  async chmod(p, mode) {
    const node = lookup(p);
    node.mode = (node.mode & S_IFMT) | (mode & 0o7777);
    node.ctimeMs = Date.now();
  },
  async mknod(p, mode) {
    if ((mode & S_IFMT) !== S_IFREG) throw new FsError('EPERM');
    insert(p, makeNode(mode));
  },
  async setxattr(p, name, value, flags) {
    const node = lookup(p);
    if (flags === 1 && node.xattrs.has(name)) throw new FsError('EEXIST');
    if (flags === 2 && !node.xattrs.has(name)) throw new FsError('ENODATA');
    node.xattrs.set(name, value);
  },
  async getxattr(p, name) {
    const value = lookup(p).xattrs.get(name);
    if (!value) throw new FsError('ENODATA');
    return value;
  },
  async listxattr(p) {
    return [...lookup(p).xattrs.keys()];
  },
  async removexattr(p, name) {
    if (!lookup(p).xattrs.delete(name)) throw new FsError('ENODATA');
  },
  async unlink(p) {
    const { dir, name } = parentOf(p);
    const node = dir.children.get(name);
    if (!node) throw new FsError('ENOENT');
    if (node.children) throw new FsError('EISDIR');
    dir.children.delete(name);
    node.nlink--;
    node.ctimeMs = dir.mtimeMs = dir.ctimeMs = Date.now();
  },
  async rename(src, dest) {
    const from = parentOf(src);
    const to = parentOf(dest);
    const node = from.dir.children.get(from.name);
    if (!node) throw new FsError('ENOENT');
    const replaced = to.dir.children.get(to.name);
    if (replaced === node) return;
    if (replaced) {
      if (replaced.children && replaced.children.size > 0) throw new FsError('ENOTEMPTY');
      if (!!replaced.children !== !!node.children) throw new FsError(node.children ? 'ENOTDIR' : 'EISDIR');
      replaced.nlink = replaced.children ? 0 : replaced.nlink - 1;
      if (replaced.children) to.dir.nlink--;
    }
    from.dir.children.delete(from.name);
    to.dir.children.set(to.name, node);
    if (node.children && from.dir !== to.dir) {
      from.dir.nlink--;
      to.dir.nlink++;
    }
    node.ctimeMs = Date.now();
  },
  async link(existingPath, newPath) {
    const node = lookup(existingPath);
    if (node.children) throw new FsError('EPERM');
    insert(newPath, node);
    node.nlink++;
    node.ctimeMs = Date.now();
  },
  async symlink(target, linkPath) {
    const node = makeNode(S_IFLNK | 0o777);
    node.target = target;
    insert(linkPath, node);
  },
  async mkdir(p, mode) {
    insert(p, makeNode(S_IFDIR | (mode & 0o7777)));
  },
  async rmdir(p) {
    const { dir, name } = parentOf(p);
    const node = dir.children.get(name);
    if (!node) throw new FsError('ENOENT');
    if (!node.children) throw new FsError('ENOTDIR');
    if (node.children.size > 0) throw new FsError('ENOTEMPTY');
    dir.children.delete(name);
    dir.nlink--;
    node.nlink = 0;
  },
};

// A file whose reads outlast a short timeout.
const slow = insert('/slow', makeNode(S_IFREG | 0o644));
slow.data = Buffer.from('slow data');
slowIno = slow.ino;
insert('/boom', makeNode(S_IFREG | 0o644));
insert('/sync-throw', makeNode(S_IFREG | 0o644));

const mountpoint = process.argv[2];
if (!mountpoint) {
  console.error('usage: tiny-fs.mjs <mountpoint>');
  process.exit(2);
}

const timeoutMs = process.env.TINY_FS_TIMEOUT_MS ? Number(process.env.TINY_FS_TIMEOUT_MS) : undefined;
const log = (message) => console.error(`[tiny-fs] ${message}`);

let session;
try {
  session = await mountFuse(mountpoint, handlers, { fsname: 'coffer-test', subtype: 'coffer', timeoutMs, log });
} catch (err) {
  console.error(`[tiny-fs] ${err.message}`);
  process.exit(1);
}

let stopping = false;
async function stop(signal) {
  if (stopping) return;
  stopping = true;
  try {
    await session.unmount();
    await session.unmount(); // idempotent
    console.log(JSON.stringify({ unmounted: true, signal }));
    process.exit(0);
  } catch (err) {
    console.error(`[tiny-fs] unmount failed: ${err.message}`);
    process.exit(1);
  }
}
process.on('SIGTERM', () => void stop('SIGTERM'));
process.on('SIGINT', () => void stop('SIGINT'));

console.log(JSON.stringify({ ready: true, pid: process.pid, mountpoint: session.mountpoint }));
