#!/usr/bin/env node
// The ceiling of Coffer's stack: a filesystem that does as little as a filesystem can, served
// through Coffer's own FUSE binding (dist/fs/fuse.js) with the options the daemon mounts a vault
// with. Whatever a workload achieves here is the most any drive built on this binding can reach
// on this machine; scripts/bench.mjs reports every target against it.
//
//   node scripts/lib/null-fs.mjs <mountpoint>
//
// Names, modes, owners, times and sizes are kept in memory, so that stat, ls, delete, rename
// and untar behave as on a real filesystem; file contents are not: writes are counted and
// dropped, reads return zeros up to the file's size. Prints one JSON line {"ready":true,...} once
// mounted; SIGTERM or SIGINT unmounts and exits 0.
//
// The serving process must never touch its own mount (DESIGN.md §3): drive it from another one.
import { FsError } from '../../dist/errors.js';
import { mountFuse } from '../../dist/fs/fuse.js';
import { vaultMountOptions } from '../../dist/fs/mount-options.js';

const S_IFMT = 0o170000;
const S_IFDIR = 0o040000;
const S_IFREG = 0o100000;
const S_IFLNK = 0o120000;
const UNCHANGED_ID = 0xffffffff;

const isDir = (node) => (node.mode & S_IFMT) === S_IFDIR;

let lastIno = 1;

/** A node: what stat shows, plus the children of a directory or the target of a symlink. */
function newNode(mode, uid, gid) {
  const now = Date.now();
  return {
    ino: lastIno++,
    mode,
    uid,
    gid,
    size: 0,
    nlink: (mode & S_IFMT) === S_IFDIR ? 2 : 1,
    atimeMs: now,
    mtimeMs: now,
    ctimeMs: now,
    entries: (mode & S_IFMT) === S_IFDIR ? new Map() : undefined,
    target: undefined,
  };
}

const root = newNode(S_IFDIR | 0o755, process.getuid?.() ?? 0, process.getgid?.() ?? 0);

function resolvePath(path) {
  let node = root;
  for (const name of path.split('/')) {
    if (name === '') continue;
    if (!node.entries) throw new FsError('ENOTDIR');
    node = node.entries.get(name);
    if (!node) throw new FsError('ENOENT');
  }
  return node;
}

/** The directory that holds `path` and the last name in it. */
function resolveParent(path) {
  const slash = path.lastIndexOf('/');
  const name = path.slice(slash + 1);
  if (!name) throw new FsError('EINVAL');
  const dir = resolvePath(path.slice(0, slash));
  if (!dir.entries) throw new FsError('ENOTDIR');
  return { dir, name };
}

function touch(node, ...fields) {
  const now = Date.now();
  for (const field of fields) node[field] = now;
}

function addEntry(path, node) {
  const { dir, name } = resolveParent(path);
  if (dir.entries.has(name)) throw new FsError('EEXIST');
  dir.entries.set(name, node);
  if (isDir(node)) dir.nlink++;
  touch(dir, 'mtimeMs', 'ctimeMs');
  return node;
}

function statOf(node) {
  return {
    mode: node.mode,
    uid: node.uid,
    gid: node.gid,
    size: isDir(node) ? 4096 : node.size,
    nlink: node.nlink,
    ino: node.ino,
    atimeMs: node.atimeMs,
    mtimeMs: node.mtimeMs,
    ctimeMs: node.ctimeMs,
  };
}

// Open files by handle: the node, so a file unlinked while open still answers.
const openFiles = new Map();
let lastHandle = 0;

function openHandle(node) {
  lastHandle = lastHandle >= 0x7fff_ffff ? 1 : lastHandle + 1;
  openFiles.set(lastHandle, node);
  return lastHandle;
}

function nodeOf(path, fh) {
  const node = openFiles.get(fh);
  if (node) return node;
  if (path === null) throw new FsError('EBADF');
  return resolvePath(path);
}

function setSize(node, size) {
  if (isDir(node)) throw new FsError('EISDIR');
  node.size = size;
  touch(node, 'mtimeMs', 'ctimeMs');
}

const handlers = {
  async getattr(path) {
    return statOf(resolvePath(path));
  },
  async fgetattr(path, fh) {
    return statOf(nodeOf(path, fh));
  },
  async statfs() {
    // Plenty of room, so that no workload is refused for space the filesystem does not use.
    return { bsize: 4096, frsize: 4096, blocks: 2 ** 31, bfree: 2 ** 31, bavail: 2 ** 31, files: 2 ** 31, ffree: 2 ** 31, favail: 2 ** 31, namemax: 255 };
  },
  async readdir(path) {
    // Names only, as Coffer answers: every caller that wants more asks getattr for each.
    const dir = resolvePath(path);
    if (!dir.entries) throw new FsError('ENOTDIR');
    return { names: ['.', '..', ...dir.entries.keys()] };
  },
  async open(path) {
    return openHandle(resolvePath(path));
  },
  async create(path, mode) {
    return openHandle(addEntry(path, newNode(S_IFREG | (mode & 0o7777), root.uid, root.gid)));
  },
  async read(path, fh, buf, length, position) {
    const node = nodeOf(path, fh);
    const n = Math.max(0, Math.min(length, node.size - position));
    // The kernel's buffer may hold anything: zeros make the read well defined.
    buf.fill(0, 0, n);
    return n;
  },
  async write(path, fh, buf, length, position) {
    const node = nodeOf(path, fh);
    if (position + length > node.size) node.size = position + length;
    touch(node, 'mtimeMs', 'ctimeMs');
    return length;
  },
  async flush() {},
  async fsync() {},
  async release(path, fh) {
    openFiles.delete(fh);
  },
  // Coffer implements fsyncdir but not opendir/releasedir: the same set keeps the kernel's
  // traffic the same.
  async fsyncdir() {},
  async truncate(path, size) {
    setSize(resolvePath(path), size);
  },
  async ftruncate(path, fh, size) {
    setSize(nodeOf(path, fh), size);
  },
  async utimens(path, atimeMs, mtimeMs) {
    const node = resolvePath(path);
    node.atimeMs = atimeMs;
    node.mtimeMs = mtimeMs;
    touch(node, 'ctimeMs');
  },
  async readlink(path) {
    const node = resolvePath(path);
    if (node.target === undefined) throw new FsError('EINVAL');
    return node.target;
  },
  async chown(path, uid, gid) {
    const node = resolvePath(path);
    if (uid !== UNCHANGED_ID) node.uid = uid;
    if (gid !== UNCHANGED_ID) node.gid = gid;
    touch(node, 'ctimeMs');
  },
  async chmod(path, mode) {
    const node = resolvePath(path);
    node.mode = (node.mode & S_IFMT) | (mode & 0o7777);
    touch(node, 'ctimeMs');
  },
  async mknod(path, mode) {
    if ((mode & S_IFMT) !== S_IFREG) throw new FsError('EPERM');
    addEntry(path, newNode(mode, root.uid, root.gid));
  },
  // No extended attributes: none of the workloads set any.
  async setxattr() {
    throw new FsError('ENOTSUP');
  },
  async getxattr() {
    throw new FsError('ENODATA');
  },
  async listxattr() {
    return [];
  },
  async removexattr() {
    throw new FsError('ENODATA');
  },
  async unlink(path) {
    const { dir, name } = resolveParent(path);
    const node = dir.entries.get(name);
    if (!node) throw new FsError('ENOENT');
    if (isDir(node)) throw new FsError('EISDIR');
    dir.entries.delete(name);
    node.nlink--;
    touch(node, 'ctimeMs');
    touch(dir, 'mtimeMs', 'ctimeMs');
  },
  async rename(src, dest) {
    const from = resolveParent(src);
    const to = resolveParent(dest);
    const node = from.dir.entries.get(from.name);
    if (!node) throw new FsError('ENOENT');
    const replaced = to.dir.entries.get(to.name);
    if (replaced === node) return;
    if (replaced) {
      if (isDir(replaced) !== isDir(node)) throw new FsError(isDir(node) ? 'ENOTDIR' : 'EISDIR');
      if (replaced.entries?.size) throw new FsError('ENOTEMPTY');
      if (isDir(replaced)) to.dir.nlink--;
      replaced.nlink--;
    }
    from.dir.entries.delete(from.name);
    to.dir.entries.set(to.name, node);
    if (isDir(node)) {
      from.dir.nlink--;
      to.dir.nlink++;
    }
    touch(node, 'ctimeMs');
    touch(from.dir, 'mtimeMs', 'ctimeMs');
    touch(to.dir, 'mtimeMs', 'ctimeMs');
  },
  async link(existing, created) {
    const node = resolvePath(existing);
    if (isDir(node)) throw new FsError('EPERM');
    addEntry(created, node);
    node.nlink++;
    touch(node, 'ctimeMs');
  },
  async symlink(target, linkPath) {
    const node = newNode(S_IFLNK | 0o777, root.uid, root.gid);
    node.target = target;
    node.size = Buffer.byteLength(target);
    addEntry(linkPath, node);
  },
  async mkdir(path, mode) {
    addEntry(path, newNode(S_IFDIR | (mode & 0o7777), root.uid, root.gid));
  },
  async rmdir(path) {
    const { dir, name } = resolveParent(path);
    const node = dir.entries.get(name);
    if (!node) throw new FsError('ENOENT');
    if (!isDir(node)) throw new FsError('ENOTDIR');
    if (node.entries.size > 0) throw new FsError('ENOTEMPTY');
    dir.entries.delete(name);
    dir.nlink--;
    touch(dir, 'mtimeMs', 'ctimeMs');
  },
};

const mountpoint = process.argv[2];
if (!mountpoint) {
  console.error('usage: null-fs.mjs <mountpoint>');
  process.exit(2);
}

const log = (message, fields) => console.error(`[null-fs] ${message}${fields?.err ? `: ${fields.err.message ?? fields.err}` : ''}`);
// The daemon's options, under a name of its own: `coffer ls-mounts` must not take this for a vault.
const options = { ...vaultMountOptions(log), fsname: 'coffer-null', subtype: 'coffer-null' };

let session;
try {
  session = await mountFuse(mountpoint, handlers, options);
} catch (err) {
  log(err.message);
  process.exit(1);
}

let stopping = false;
async function stop() {
  if (stopping) return;
  stopping = true;
  try {
    await session.unmount();
    process.exit(0);
  } catch (err) {
    log(`unmount failed: ${err.message}`);
    process.exit(1);
  }
}
process.on('SIGTERM', stop);
process.on('SIGINT', stop);

console.log(JSON.stringify({ ready: true, pid: process.pid, mountpoint: session.mountpoint }));
