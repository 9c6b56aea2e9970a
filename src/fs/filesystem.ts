/**
 * The filesystem as the kernel sees it: path-based FUSE operations on top of the
 * index (names, attributes, xattrs) and FileData (contents). Errors are thrown as
 * FsError and mapped to errno by the FUSE adapter; nothing here knows the network.
 */
import { statfs as statfsAsync } from 'node:fs/promises';
import { FsError } from '../errors.js';
import { ROOT_INO } from '../index/schema.js';
import { S_IFDIR, S_IFLNK, S_IFMT, S_IFREG, isDir, type Inode, type VaultIndex } from '../index/vault-index.js';
import type { FileData } from './file-data.js';
import type { FuseHandlers, Stat, StatFs } from './fuse.js';

const NAME_MAX = 255;
const S_ISGID = 0o2000;
const XATTR_CREATE = 1;
const XATTR_REPLACE = 2;
const XATTR_SIZE_MAX = 65536;
/** What cp and friends use as their I/O size: one FUSE write. */
const PREFERRED_IO_SIZE = 131072;
/** uid_t/gid_t -1: leave unchanged. */
const UNCHANGED_ID = 0xffffffff;
const UNLIMITED_INODES = 0xffffffff;
/** The block size statfs reports a remote quota in. */
const STATFS_BLOCK = 4096;

/** The extended attribute that tells a file's sync state (read-only, not listed, so copies do not carry it). */
export const SYNC_STATE_XATTR = 'user.coffer.state';

export interface FilesystemOptions {
  /** Where the vault lives; statfs reports this disk. */
  vaultDir: string;
  /** The sync state of a file for SYNC_STATE_XATTR; supplied by whoever knows the remote. */
  syncState?: (ino: number) => string;
  /**
   * The remote account's byte quota and what writes may still add to it, when it has one;
   * supplied by whoever knows the remote. statfs then reports these instead of the vault disk.
   */
  capacity?: () => { totalBytes: number; freeBytes: number } | undefined;
  uid: number;
  gid: number;
  now?: () => number;
}

interface Handle {
  ino: number;
}

export class Filesystem implements FuseHandlers {
  private readonly handles = new Map<number, Handle>();
  private nextHandle = 1;
  private readonly now: () => number;

  constructor(
    private readonly index: VaultIndex,
    private readonly data: FileData,
    private readonly options: FilesystemOptions,
  ) {
    this.now = options.now ?? Date.now;
  }

  // ---- path resolution ----

  private resolve(path: string): number {
    let ino = ROOT_INO;
    for (const name of components(path)) {
      const inode = this.index.getInode(ino);
      if (!inode || !isDir(inode.mode)) throw new FsError('ENOTDIR');
      const next = this.index.lookup(ino, name);
      if (next === undefined) throw new FsError('ENOENT');
      ino = next;
    }
    return ino;
  }

  private resolveParent(path: string): { parent: number; name: string } {
    const parts = components(path);
    const name = parts.pop();
    if (name === undefined) throw new FsError('EINVAL', 'the root has no parent');
    if (Buffer.byteLength(name) > NAME_MAX) throw new FsError('ENAMETOOLONG');
    const parent = this.resolve('/' + parts.join('/'));
    const inode = this.index.getInode(parent);
    if (!inode || !isDir(inode.mode)) throw new FsError('ENOTDIR');
    return { parent, name };
  }

  private inode(ino: number): Inode {
    const inode = this.index.getInode(ino);
    if (!inode) throw new FsError('ENOENT');
    return inode;
  }

  private handle(fh: number): Handle {
    const handle = this.handles.get(fh);
    if (!handle) throw new FsError('EBADF');
    return handle;
  }

  private stat(inode: Inode): Stat {
    const overlay = this.data.overlay(inode.ino);
    const size = isDir(inode.mode) ? 4096 : (overlay?.size ?? inode.size);
    const mtimeMs = overlay?.mtimeMs ?? inode.mtimeMs;
    return {
      mode: inode.mode,
      uid: inode.uid,
      gid: inode.gid,
      size,
      nlink: inode.nlink,
      ino: inode.ino,
      rdev: inode.rdev,
      blksize: PREFERRED_IO_SIZE,
      blocks: Math.ceil(size / 512),
      atimeMs: inode.atimeMs,
      mtimeMs,
      ctimeMs: Math.max(inode.ctimeMs, overlay ? mtimeMs : 0),
    };
  }

  private openHandle(ino: number): number {
    const fh = this.nextHandle++;
    this.handles.set(fh, { ino });
    this.data.opened(ino);
    return fh;
  }

  // ---- attributes ----

  async getattr(path: string): Promise<Stat> {
    return this.stat(this.inode(this.resolve(path)));
  }

  async fgetattr(path: string | null, fh: number): Promise<Stat> {
    const handle = this.handles.get(fh);
    if (handle) return this.stat(this.inode(handle.ino));
    if (path === null) throw new FsError('EBADF');
    return this.getattr(path);
  }

  async statfs(): Promise<StatFs> {
    // Inodes are only index rows, so there is no fixed supply to report.
    const remote = this.options.capacity?.();
    if (remote) {
      // The account's quota is what bounds the drive: the local disk only caches, and the cache
      // evicts what is uploaded, so it is not capped by the local disk as well (a full local
      // disk still fails writes with ENOSPC on its own).
      return {
        bsize: STATFS_BLOCK,
        frsize: STATFS_BLOCK,
        blocks: Math.floor(remote.totalBytes / STATFS_BLOCK),
        bfree: Math.floor(remote.freeBytes / STATFS_BLOCK),
        bavail: Math.floor(remote.freeBytes / STATFS_BLOCK),
        files: UNLIMITED_INODES,
        ffree: UNLIMITED_INODES,
        favail: UNLIMITED_INODES,
        namemax: NAME_MAX,
      };
    }
    // Without a quota, space is the vault disk's.
    const disk = await statfsAsync(this.options.vaultDir);
    return {
      bsize: disk.bsize,
      frsize: disk.bsize,
      blocks: disk.blocks,
      bfree: disk.bfree,
      bavail: disk.bavail,
      files: UNLIMITED_INODES,
      ffree: UNLIMITED_INODES,
      favail: UNLIMITED_INODES,
      namemax: NAME_MAX,
    };
  }

  async chmod(path: string, mode: number): Promise<void> {
    const inode = this.inode(this.resolve(path));
    this.index.setAttributes(inode.ino, { mode: (inode.mode & S_IFMT) | (mode & 0o7777), ctimeMs: this.now() });
  }

  async chown(path: string, uid: number, gid: number): Promise<void> {
    const ino = this.resolve(path);
    this.index.setAttributes(ino, {
      uid: uid === UNCHANGED_ID || uid === -1 ? undefined : uid,
      gid: gid === UNCHANGED_ID || gid === -1 ? undefined : gid,
      ctimeMs: this.now(),
    });
  }

  async utimens(path: string, atimeMs: number, mtimeMs: number): Promise<void> {
    const ino = this.resolve(path);
    const now = this.now();
    await this.data.flush(ino);
    this.index.setAttributes(ino, { atimeMs: Math.round(atimeMs), mtimeMs: Math.round(mtimeMs), ctimeMs: now });
  }

  // ---- namespace ----

  async readdir(path: string): Promise<{ names: string[] }> {
    const ino = this.resolve(path);
    if (!isDir(this.inode(ino).mode)) throw new FsError('ENOTDIR');
    return { names: ['.', '..', ...this.index.listEntries(ino).map((e) => e.name)] };
  }

  async create(path: string, mode: number): Promise<number> {
    const { parent, name } = this.resolveParent(path);
    const inode = this.index.createNode(parent, name, this.newNode(parent, S_IFREG | (mode & 0o7777)), this.now());
    return this.openHandle(inode.ino);
  }

  async mknod(path: string, mode: number, dev: number): Promise<void> {
    const { parent, name } = this.resolveParent(path);
    const type = mode & S_IFMT || S_IFREG;
    if (type === S_IFDIR || type === S_IFLNK) throw new FsError('EINVAL');
    this.index.createNode(parent, name, { ...this.newNode(parent, type | (mode & 0o7777)), rdev: dev }, this.now());
  }

  async mkdir(path: string, mode: number): Promise<void> {
    const { parent, name } = this.resolveParent(path);
    this.index.createNode(parent, name, this.newNode(parent, S_IFDIR | (mode & 0o7777)), this.now());
  }

  async symlink(target: string, linkPath: string): Promise<void> {
    const { parent, name } = this.resolveParent(linkPath);
    this.index.createNode(parent, name, { ...this.newNode(parent, S_IFLNK | 0o777), target }, this.now());
  }

  async readlink(path: string): Promise<string> {
    const inode = this.inode(this.resolve(path));
    if ((inode.mode & S_IFMT) !== S_IFLNK || inode.target === null) throw new FsError('EINVAL');
    return inode.target;
  }

  async link(existingPath: string, newPath: string): Promise<void> {
    const ino = this.resolve(existingPath);
    if (isDir(this.inode(ino).mode)) throw new FsError('EPERM');
    const { parent, name } = this.resolveParent(newPath);
    this.index.link(ino, parent, name, this.now());
  }

  async unlink(path: string): Promise<void> {
    const { parent, name } = this.resolveParent(path);
    const ino = this.index.lookup(parent, name);
    if (ino === undefined) throw new FsError('ENOENT');
    if (isDir(this.inode(ino).mode)) throw new FsError('EISDIR');
    this.index.unlink(parent, name, this.now(), (i) => this.data.isOpen(i));
  }

  async rmdir(path: string): Promise<void> {
    const { parent, name } = this.resolveParent(path);
    this.index.rmdir(parent, name, this.now());
  }

  async rename(src: string, dest: string): Promise<void> {
    const from = this.resolveParent(src);
    const to = this.resolveParent(dest);
    this.index.rename(from.parent, from.name, to.parent, to.name, this.now(), (i) => this.data.isOpen(i));
  }

  /** A setgid directory gives new entries its group, and new subdirectories its setgid bit. */
  private newNode(parent: number, mode: number) {
    const dir = this.inode(parent);
    if (!(dir.mode & S_ISGID)) return { mode, uid: this.options.uid, gid: this.options.gid };
    return { mode: isDir(mode) ? mode | S_ISGID : mode, uid: this.options.uid, gid: dir.gid };
  }

  // ---- xattrs ----

  async setxattr(path: string, name: string, value: Buffer, flags: number): Promise<void> {
    const ino = this.resolve(path);
    if (name === SYNC_STATE_XATTR) throw new FsError('EPERM', `${SYNC_STATE_XATTR} is maintained by Coffer`);
    if (value.length > XATTR_SIZE_MAX) throw new FsError('E2BIG');
    if (name.length === 0 || Buffer.byteLength(name) > NAME_MAX) throw new FsError('ERANGE');
    const mode = flags & XATTR_CREATE ? 'create' : flags & XATTR_REPLACE ? 'replace' : 'either';
    this.index.setXattr(ino, name, Buffer.from(value), mode, this.now());
  }

  async getxattr(path: string, name: string): Promise<Buffer> {
    const ino = this.resolve(path);
    if (name === SYNC_STATE_XATTR && this.options.syncState) return Buffer.from(this.options.syncState(ino));
    const value = this.index.getXattr(ino, name);
    if (!value) throw new FsError('ENODATA');
    return value;
  }

  async listxattr(path: string): Promise<string[]> {
    return this.index.listXattrs(this.resolve(path));
  }

  async removexattr(path: string, name: string): Promise<void> {
    this.index.removeXattr(this.resolve(path), name, this.now());
  }

  // ---- contents ----

  async open(path: string, _flags: number): Promise<number> {
    const ino = this.resolve(path);
    if (isDir(this.inode(ino).mode)) throw new FsError('EISDIR');
    return this.openHandle(ino);
  }

  async read(_path: string | null, fh: number, buf: Buffer, length: number, position: number): Promise<number> {
    return this.data.read(this.handle(fh).ino, buf, length, position);
  }

  async write(_path: string | null, fh: number, buf: Buffer, length: number, position: number): Promise<number> {
    return this.data.write(this.handle(fh).ino, buf.subarray(0, length), position);
  }

  async truncate(path: string, size: number): Promise<void> {
    const inode = this.inode(this.resolve(path));
    if (isDir(inode.mode)) throw new FsError('EISDIR');
    await this.data.truncate(inode.ino, size);
  }

  async ftruncate(_path: string | null, fh: number, size: number): Promise<void> {
    await this.data.truncate(this.handle(fh).ino, size);
  }

  async flush(_path: string | null, fh: number): Promise<void> {
    await this.data.flush(this.handle(fh).ino);
  }

  async fsync(_path: string | null, _datasync: boolean, fh: number): Promise<void> {
    await this.data.fsync(this.handle(fh).ino);
  }

  async fsyncdir(): Promise<void> {
    this.index.makeDurable(this.now());
  }

  async release(_path: string | null, fh: number): Promise<void> {
    const handle = this.handles.get(fh);
    if (!handle) return;
    this.handles.delete(fh);
    await this.data.closed(handle.ino);
  }
}

function components(path: string): string[] {
  return path.split('/').filter((part) => part.length > 0);
}
