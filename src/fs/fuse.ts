/**
 * Coffer's binding to the kernel through fuse-native: the only module in src/ that loads it.
 *
 * fuse-native is used as a transport only. Every `_op_*` method is overridden below so that one
 * adapter owns the calling conventions (what each native signal must be given, so a bad value
 * can never leave a kernel request unanswered or throw inside a nextTick), and the C source is
 * patched at install time by native/build-fuse.mjs (utimens lost mtime; NULL paths on unlinked
 * open files crashed or failed). Mounting and unmounting go through mountinfo.ts so nothing here
 * needs a `fusermount` binary.
 */
import { statSync } from 'node:fs';
import { stat } from 'node:fs/promises';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import { FsError } from '../errors.js';
import { toErrno } from './errno.js';
import type { OpStats } from './op-stats.js';
import type { LogFn } from '../logging.js';
import { detachMount, findMount, waitUntilUnmounted } from './mountinfo.js';

export interface Stat {
  mode: number;
  uid: number;
  gid: number;
  size: number;
  nlink: number;
  /** Must fit in 32 bits: fuse-native carries st_ino as a uint32 (larger values fail with EIO). */
  ino: number;
  rdev?: number;
  /** 0 or absent: the kernel's default (4096). */
  blksize?: number;
  /** 512-byte blocks; absent: derived from size. */
  blocks?: number;
  atimeMs: number;
  mtimeMs: number;
  ctimeMs: number;
}

/** Counts are carried as uint32 by fuse-native; larger values are clamped. */
export interface StatFs {
  bsize: number;
  frsize: number;
  blocks: number;
  bfree: number;
  bavail: number;
  files: number;
  ffree: number;
  favail: number;
  namemax: number;
}

/**
 * Operations the kernel asks for. Throw (or reject with) an FsError for a POSIX failure; anything
 * else is logged and reported as EIO (see errno.ts). `path` is null only for operations on a file
 * handle whose file was unlinked while open (hard_remove): use the handle. Buffers passed in
 * (`read`, `write`) are kernel memory that is detached once the promise settles or the operation
 * times out: never keep them.
 */
export interface FuseHandlers {
  getattr(path: string): Promise<Stat>;
  fgetattr(path: string | null, fh: number): Promise<Stat>;
  statfs(path: string): Promise<StatFs>;
  /** `stats`, when given, must match `names` one to one. Include '.' and '..' to have them listed. */
  readdir(path: string): Promise<{ names: string[]; stats?: Stat[] }>;
  /** Returns a file handle, an integer in [1, 2^31 - 1]. */
  open(path: string, flags: number): Promise<number>;
  /** Returns a file handle, an integer in [1, 2^31 - 1]. */
  create(path: string, mode: number): Promise<number>;
  /** Returns the number of bytes placed in `buf` (0 at end of file). */
  read(path: string | null, fh: number, buf: Buffer, length: number, position: number): Promise<number>;
  /** Returns the number of bytes taken from `buf`. */
  write(path: string | null, fh: number, buf: Buffer, length: number, position: number): Promise<number>;
  flush(path: string | null, fh: number): Promise<void>;
  fsync(path: string | null, datasync: boolean, fh: number): Promise<void>;
  release(path: string | null, fh: number): Promise<void>;
  opendir?(path: string, flags: number): Promise<number>;
  releasedir?(path: string | null, fh: number): Promise<void>;
  fsyncdir?(path: string | null, datasync: boolean, fh: number): Promise<void>;
  truncate(path: string, size: number): Promise<void>;
  ftruncate(path: string | null, fh: number, size: number): Promise<void>;
  /**
   * Millisecond precision. Always both times: one the caller left unchanged (`touch -m`) is
   * read back through getattr first, so the two calls are not atomic.
   */
  utimens(path: string, atimeMs: number, mtimeMs: number): Promise<void>;
  readlink(path: string): Promise<string>;
  chown(path: string, uid: number, gid: number): Promise<void>;
  chmod(path: string, mode: number): Promise<void>;
  mknod(path: string, mode: number, dev: number): Promise<void>;
  /** `value` is a private copy. `flags`: XATTR_CREATE (1) / XATTR_REPLACE (2). */
  setxattr(path: string, name: string, value: Buffer, flags: number): Promise<void>;
  /** Throw FsError('ENODATA') when the attribute is absent. */
  getxattr(path: string, name: string): Promise<Buffer>;
  listxattr(path: string): Promise<string[]>;
  removexattr(path: string, name: string): Promise<void>;
  unlink(path: string): Promise<void>;
  rename(src: string, dest: string): Promise<void>;
  link(existingPath: string, newPath: string): Promise<void>;
  symlink(target: string, linkPath: string): Promise<void>;
  mkdir(path: string, mode: number): Promise<void>;
  rmdir(path: string): Promise<void>;
}

export interface MountOptions {
  /**
   * Shown as the mount source (`fsname=`), e.g. by df and findmnt: any text without control
   * characters. Commas and backslashes are escaped for libfuse's option parser, which hands the
   * name to the kernel unchanged.
   */
  fsname: string;
  /** Shown as the type: `fuse.<subtype>`. */
  subtype: string;
  /** More FUSE 2 `-o` options, one per element (e.g. `allow_other`, `attr_timeout=1`). */
  extraOptions?: string[];
  /** How long one operation may take before the kernel gets ETIMEDOUT. Default 60 s. */
  timeoutMs?: number;
  log: LogFn;
  /** Where each operation's answer time is counted. */
  opStats?: OpStats;
}

export interface FuseSession {
  readonly mountpoint: string;
  /** Detaches the mount and resolves once it has left mountinfo. Safe to call more than once. */
  unmount(): Promise<void>;
}

/** Must equal PATCH_LEVEL in native/build-fuse.mjs. */
const NATIVE_PATCH_LEVEL = 3;
const DEFAULT_TIMEOUT_MS = 60_000;
/** fuse-native copies the `-o` string and the mountpoint into `char[1024]` and silently truncates. */
const NATIVE_STRING_MAX_BYTES = 1023;
/**
 * big_writes,max_write: 128 KiB writes instead of 4 KiB ones (10-20x the throughput here).
 * use_ino: our inode numbers reach stat and readdir. hard_remove: unlink really unlinks instead of
 * renaming open files to .fuse_hidden*, which would otherwise show up in listings and the index.
 * default_permissions: the kernel checks modes, so no handler needs an `access` operation.
 */
const BIG_WRITES = ['big_writes', 'max_write=131072'];
const SEMANTICS = ['use_ino', 'hard_remove', 'default_permissions'];

const ERRNO = os.constants.errno;
const EIO = -ERRNO.EIO;
const ERANGE = -ERRNO.ERANGE;
const UINT32_MAX = 0xffff_ffff;
const FH_MAX = 0x7fff_ffff;

// ---------------------------------------------------------------------------------------------
// Loading fuse-native

type Signal = (code: number, ...rest: unknown[]) => void;
type NodeCallback = (err: Error | null) => void;

interface NativeBinding {
  fuse_native_unmount(mountpoint: string, thread: Buffer): void;
  coffer_patch_level?: number;
}

/** The part of fuse-native's Fuse class this module relies on. */
interface FuseNativeInstance {
  readonly mnt: string;
  _thread: Buffer | null;
  mount(cb: NodeCallback): void;
}

type FuseNativeClass = new (mountpoint: string, ops: Record<string, unknown>, opts: Record<string, unknown>) => FuseNativeInstance;

interface Loaded {
  Fuse: FuseNativeClass;
  binding: NativeBinding;
}

let loaded: Loaded | undefined;

/**
 * The addon links against libfuse.so.2 but has no RPATH, and the copy bundled by
 * fuse-shared-library-linux is named libfuse.so (soname libfuse.so.2). Loading that file
 * RTLD_GLOBAL first lets the dynamic linker satisfy the addon's dependency by soname, with no
 * system libfuse. RTLD_NODELETE keeps it loaded after Node rejects it as "not a Node module".
 */
function preloadLibfuse(libfuse: string): void {
  const RTLD_NODELETE = 0x1000;
  const flags = os.constants.dlopen.RTLD_NOW! | os.constants.dlopen.RTLD_GLOBAL! | RTLD_NODELETE;
  try {
    process.dlopen({ exports: {} } as NodeJS.Module, libfuse, flags);
  } catch (err) {
    if (!/did not self-register/.test((err as Error).message)) {
      throw new Error(`cannot load the bundled libfuse at ${libfuse}: ${(err as Error).message}`, { cause: err });
    }
  }
}

function findBundledLibfuse(fuseNativeDir: string, fuseNativeRequire: NodeJS.Require): string {
  const candidates: string[] = [];
  try {
    const shared = createRequire(fuseNativeRequire.resolve('fuse-shared-library/package.json'));
    candidates.push(path.join(path.dirname(shared.resolve('fuse-shared-library-linux/package.json')), 'libfuse', 'lib', 'libfuse.so'));
  } catch {
    // fall through to the copy fuse-native's build places next to the addon
  }
  candidates.push(path.join(fuseNativeDir, 'build', 'Release', 'libfuse.so'));
  const found = candidates.find((file) => {
    try {
      return statSync(file).isFile();
    } catch {
      return false;
    }
  });
  if (!found) throw new Error(`the bundled libfuse was not found (looked at ${candidates.join(', ')})`);
  return found;
}

function loadFuseNative(): Loaded {
  if (loaded) return loaded;
  if (process.platform !== 'linux') throw new Error(`Coffer's FUSE binding supports Linux only, not ${process.platform}`);
  const require = createRequire(import.meta.url);
  const packageJson = require.resolve('fuse-native/package.json');
  const dir = path.dirname(packageJson);
  const fuseNativeRequire = createRequire(packageJson);
  preloadLibfuse(findBundledLibfuse(dir, fuseNativeRequire));
  const Fuse = require('fuse-native') as FuseNativeClass;
  // node-gyp-build resolves to the file fuse-native already loaded, so this is the same binding.
  const binding = (fuseNativeRequire('node-gyp-build') as (dir: string) => NativeBinding)(dir);
  if (binding.coffer_patch_level !== NATIVE_PATCH_LEVEL) {
    throw new Error(
      `fuse-native at ${dir} is not built with Coffer's native fixes (patch level ${binding.coffer_patch_level ?? 'none'}, ` +
        `need ${NATIVE_PATCH_LEVEL}): run \`node native/build-fuse.mjs\``,
    );
  }
  loaded = { Fuse: defineCofferFuse(Fuse), binding };
  return loaded;
}

// ---------------------------------------------------------------------------------------------
// Value conversions for the native side

function u32(value: number | undefined): number {
  if (value === undefined || !Number.isFinite(value) || value <= 0) return 0;
  return Math.min(Math.floor(value), UINT32_MAX);
}

function setUint64(ints: Uint32Array, index: number, value: number): void {
  const v = Number.isFinite(value) && value > 0 ? Math.min(Math.floor(value), Number.MAX_SAFE_INTEGER) : 0;
  ints[index] = v % 0x1_0000_0000;
  ints[index + 1] = Math.floor(v / 0x1_0000_0000);
}

/** Times go to the native side as signed 64-bit milliseconds (two's complement), so 1969 stays 1969. */
function setInt64(ints: Uint32Array, index: number, value: number): void {
  if (!Number.isFinite(value) || value >= 0) return setUint64(ints, index, value);
  const v = Math.max(Math.ceil(value), -Number.MAX_SAFE_INTEGER);
  const high = Math.floor(v / 0x1_0000_0000);
  ints[index] = v - high * 0x1_0000_0000;
  ints[index + 1] = high + 0x1_0000_0000;
}

function uint64FromArgs(low: number, high: number): number {
  return low + high * 0x1_0000_0000;
}

/** Times arrive as a signed 64-bit count of milliseconds: before 1970 they are negative. */
function int64FromArgs(low: number, high: number): number {
  return high >= 0x8000_0000 ? low + (high - 0x1_0000_0000) * 0x1_0000_0000 : uint64FromArgs(low, high);
}

/** Layout read by populate_stat() in fuse-native.c. Unlike fuse-native's, keeps nlink 0 as 0. */
function statArray(st: Stat): Uint32Array {
  if (!Number.isInteger(st.ino) || st.ino < 0 || st.ino > UINT32_MAX) {
    throw new Error(`inode number ${st.ino} does not fit the 32 bits fuse-native can pass`);
  }
  const ints = new Uint32Array(18);
  ints[0] = u32(st.mode);
  ints[1] = u32(st.uid);
  ints[2] = u32(st.gid);
  setUint64(ints, 3, st.size);
  ints[5] = 0; // st_dev: the kernel assigns it
  ints[6] = u32(st.nlink);
  ints[7] = st.ino;
  ints[8] = u32(st.rdev);
  ints[9] = u32(st.blksize);
  setUint64(ints, 10, st.blocks ?? Math.ceil(st.size / 512));
  setInt64(ints, 12, st.atimeMs);
  setInt64(ints, 14, st.mtimeMs);
  setInt64(ints, 16, st.ctimeMs);
  return ints;
}

/** Layout read by populate_statvfs(). */
function statfsArray(s: StatFs): Uint32Array {
  const ints = new Uint32Array(11);
  ints[0] = u32(s.bsize);
  ints[1] = u32(s.frsize);
  ints[2] = u32(s.blocks);
  ints[3] = u32(s.bfree);
  ints[4] = u32(s.bavail);
  ints[5] = u32(s.files);
  ints[6] = u32(s.ffree);
  ints[7] = u32(s.favail);
  // 8: fsid, 9: flag: left 0
  ints[10] = u32(s.namemax);
  return ints;
}

function fileHandle(fh: unknown, op: string): number {
  if (typeof fh !== 'number' || !Number.isInteger(fh) || fh < 1 || fh > FH_MAX) {
    throw new Error(`${op} returned ${String(fh)}, not a file handle in [1, ${FH_MAX}]`);
  }
  return fh;
}

function byteCount(n: unknown, length: number, op: string): number {
  if (typeof n !== 'number' || !Number.isInteger(n) || n < 0 || n > length) {
    throw new Error(`${op} returned ${String(n)}, not a byte count in [0, ${length}]`);
  }
  return n;
}

/** For operations libfuse never calls without a path; a null here would be a libfuse change. */
function needPath(p: string | null): string {
  if (p === null) throw new FsError('ENOENT', 'operation without a path');
  return p;
}

// ---------------------------------------------------------------------------------------------
// The fuse-native subclass

interface Binding {
  handlers: FuseHandlers;
  log: MountOptions['log'];
  optionString: string;
  opStats?: OpStats;
}

/** Which operations fuse-native registers with libfuse; it only tests these for truthiness. */
function implementedOps(handlers: FuseHandlers): Record<string, true> {
  const names = [
    'getattr', 'fgetattr', 'statfs', 'readdir', 'open', 'create', 'read', 'write', 'flush', 'fsync', 'release',
    'truncate', 'ftruncate', 'utimens', 'readlink', 'chown', 'chmod', 'mknod', 'setxattr', 'getxattr',
    'listxattr', 'removexattr', 'unlink', 'rename', 'link', 'symlink', 'mkdir', 'rmdir',
  ];
  if (handlers.opendir) names.push('opendir');
  if (handlers.releasedir) names.push('releasedir');
  if (handlers.fsyncdir) names.push('fsyncdir');
  return Object.fromEntries(names.map((name) => [name, true]));
}

const EMPTY_STAT = new Uint32Array(18);
const EMPTY_STATFS = new Uint32Array(11);

function defineCofferFuse(Fuse: FuseNativeClass): FuseNativeClass {
  // `_op_<name>(signal, ...native args)` is what fuse-native's dispatcher calls for each request;
  // the native argument order is the one fuse-native.c builds (checked against its source).
  class CofferFuse extends Fuse {
    #binding: Binding;

    constructor(mountpoint: string, binding: Binding, timeoutMs: number) {
      super(mountpoint, implementedOps(binding.handlers), { timeout: timeoutMs });
      this.#binding = binding;
    }

    _fuseOptions(): string {
      return this.#binding.optionString;
    }

    /**
     * The one adapter between fuse-native's callbacks and the async handlers: replies exactly
     * once, turns every failure (sync throw, rejection, malformed result) into a negative errno
     * via toErrno, and always hands the native side the extra values it dereferences even on
     * error (`onError`), since a missing one would throw in a nextTick or leave the kernel waiting.
     */
    #settle<T>(signal: Signal, op: string, path: string | null, run: () => Promise<T>, onOk: (value: T) => unknown[], onError: unknown[] = []): void {
      const log: LogFn = (message, fields) => this.#binding.log(message, path === null ? fields : { path, ...fields });
      const started = process.hrtime.bigint();
      let replied = false;
      const reply = (args: unknown[]): void => {
        if (replied) return;
        replied = true;
        try {
          const [code, ...rest] = args;
          this.#binding.opStats?.record(op, Number(process.hrtime.bigint() - started) / 1000, (code as number) < 0);
          signal(code as number, ...rest);
        } catch (err) {
          log(`${op}: replying to the kernel failed`, { op, err });
        }
      };
      const replyError = (err: unknown): void => {
        let code: number;
        try {
          code = toErrno(err, op, log);
        } catch {
          code = EIO;
        }
        reply([Number.isInteger(code) && code < 0 ? code : EIO, ...onError]);
      };
      let pending: Promise<T>;
      try {
        pending = run();
      } catch (err) {
        replyError(err);
        return;
      }
      Promise.resolve(pending)
        .then((value) => reply(onOk(value)), replyError)
        .catch(replyError);
    }

    _op_getattr(signal: Signal, p: string | null): void {
      this.#settle(signal, 'getattr', p, () => this.#binding.handlers.getattr(needPath(p)), (st) => [0, statArray(st)], [EMPTY_STAT]);
    }

    // Upstream calls ops.getattr(path) here and drops the file handle.
    _op_fgetattr(signal: Signal, p: string | null, fh: number): void {
      this.#settle(signal, 'fgetattr', p, () => this.#binding.handlers.fgetattr(p, fh), (st) => [0, statArray(st)], [EMPTY_STAT]);
    }

    _op_statfs(signal: Signal, p: string | null): void {
      this.#settle(signal, 'statfs', p, () => this.#binding.handlers.statfs(p ?? '/'), (s) => [0, statfsArray(s)], [EMPTY_STATFS]);
    }

    _op_readdir(signal: Signal, p: string | null): void {
      this.#settle(
        signal,
        'readdir',
        p,
        // A directory removed while open lists as empty, as on a local filesystem.
        async (): Promise<{ names: string[]; stats?: Stat[] }> => (p === null ? { names: [] } : this.#binding.handlers.readdir(p)),
        ({ names, stats }) => {
          if (!Array.isArray(names) || names.some((n) => typeof n !== 'string')) throw new Error('readdir returned names that are not strings');
          // The native side uses stats only when the counts match; otherwise it lists names alone.
          const arrays = stats && stats.length === names.length ? stats.map(statArray) : [];
          return [0, names, arrays];
        },
        [[], []],
      );
    }

    _op_open(signal: Signal, p: string | null, flags: number): void {
      this.#settle(signal, 'open', p, () => this.#binding.handlers.open(needPath(p), flags), (fh) => [0, fileHandle(fh, 'open')], [0]);
    }

    // Native passes (path, fh, flags); upstream reads the (always 0) fh as the flags.
    _op_opendir(signal: Signal, p: string | null, _fh: number, flags: number): void {
      const { opendir } = this.#binding.handlers;
      this.#settle(signal, 'opendir', p, () => opendir!.call(this.#binding.handlers, needPath(p), flags), (fh) => [0, fileHandle(fh, 'opendir')], [0]);
    }

    _op_create(signal: Signal, p: string | null, mode: number): void {
      this.#settle(signal, 'create', p, () => this.#binding.handlers.create(needPath(p), mode), (fh) => [0, fileHandle(fh, 'create')], [0]);
    }

    // The byte count goes in the result slot; the ArrayBuffer is passed so the native side can
    // detach it before the kernel reuses the memory.
    _op_read(signal: Signal, p: string | null, fh: number, buf: Buffer, len: number, offLow: number, offHigh: number): void {
      this.#settle(
        signal,
        'read',
        p,
        () => this.#binding.handlers.read(p, fh, buf, len, uint64FromArgs(offLow, offHigh)),
        (n) => {
          const count = byteCount(n, len, 'read');
          return [count, count, buf.buffer];
        },
        [0, buf.buffer],
      );
    }

    _op_write(signal: Signal, p: string | null, fh: number, buf: Buffer, len: number, offLow: number, offHigh: number): void {
      this.#settle(
        signal,
        'write',
        p,
        () => this.#binding.handlers.write(p, fh, buf, len, uint64FromArgs(offLow, offHigh)),
        (n) => {
          const count = byteCount(n, len, 'write');
          return [count, count, buf.buffer];
        },
        [0, buf.buffer],
      );
    }

    _op_flush(signal: Signal, p: string | null, fh: number): void {
      this.#settle(signal, 'flush', p, () => this.#binding.handlers.flush(p, fh), () => [0]);
    }

    _op_fsync(signal: Signal, p: string | null, datasync: number, fh: number): void {
      this.#settle(signal, 'fsync', p, () => this.#binding.handlers.fsync(p, datasync !== 0, fh), () => [0]);
    }

    _op_fsyncdir(signal: Signal, p: string | null, datasync: number, fh: number): void {
      const { fsyncdir } = this.#binding.handlers;
      this.#settle(signal, 'fsyncdir', p, () => fsyncdir!.call(this.#binding.handlers, p, datasync !== 0, fh), () => [0]);
    }

    _op_release(signal: Signal, p: string | null, fh: number): void {
      this.#settle(signal, 'release', p, () => this.#binding.handlers.release(p, fh), () => [0]);
    }

    _op_releasedir(signal: Signal, p: string | null, fh: number): void {
      const { releasedir } = this.#binding.handlers;
      this.#settle(signal, 'releasedir', p, () => releasedir!.call(this.#binding.handlers, p, fh), () => [0]);
    }

    _op_truncate(signal: Signal, p: string | null, sizeLow: number, sizeHigh: number): void {
      this.#settle(signal, 'truncate', p, () => this.#binding.handlers.truncate(needPath(p), uint64FromArgs(sizeLow, sizeHigh)), () => [0]);
    }

    _op_ftruncate(signal: Signal, p: string | null, fh: number, sizeLow: number, sizeHigh: number): void {
      this.#settle(signal, 'ftruncate', p, () => this.#binding.handlers.ftruncate(p, fh, uint64FromArgs(sizeLow, sizeHigh)), () => [0]);
    }

    // The patched native side sends UINT64_MAX for a time the caller left alone (UTIME_OMIT, as
    // in `touch -m`); handlers always get both times, the kept one read back through getattr.
    _op_utimens(signal: Signal, p: string | null, aLow: number, aHigh: number, mLow: number, mHigh: number): void {
      const { handlers } = this.#binding;
      this.#settle(
        signal,
        'utimens',
        p,
        async () => {
          const target = needPath(p);
          const keepAtime = aLow === UINT32_MAX && aHigh === UINT32_MAX;
          const keepMtime = mLow === UINT32_MAX && mHigh === UINT32_MAX;
          if (keepAtime && keepMtime) return;
          let atimeMs = int64FromArgs(aLow, aHigh);
          let mtimeMs = int64FromArgs(mLow, mHigh);
          if (keepAtime || keepMtime) {
            const current = await handlers.getattr(target);
            if (keepAtime) atimeMs = current.atimeMs;
            if (keepMtime) mtimeMs = current.mtimeMs;
          }
          await handlers.utimens(target, atimeMs, mtimeMs);
        },
        () => [0],
      );
    }

    _op_readlink(signal: Signal, p: string | null): void {
      this.#settle(
        signal,
        'readlink',
        p,
        () => this.#binding.handlers.readlink(needPath(p)),
        (target) => {
          if (typeof target !== 'string') throw new Error('readlink returned a non-string');
          return [0, target];
        },
        [''],
      );
    }

    _op_chown(signal: Signal, p: string | null, uid: number, gid: number): void {
      this.#settle(signal, 'chown', p, () => this.#binding.handlers.chown(needPath(p), uid, gid), () => [0]);
    }

    _op_chmod(signal: Signal, p: string | null, mode: number): void {
      this.#settle(signal, 'chmod', p, () => this.#binding.handlers.chmod(needPath(p), mode), () => [0]);
    }

    _op_mknod(signal: Signal, p: string | null, mode: number, dev: number): void {
      this.#settle(signal, 'mknod', p, () => this.#binding.handlers.mknod(needPath(p), mode, dev), () => [0]);
    }

    // On Linux the native side passes position 0; the value is kernel memory, so handlers get a copy.
    _op_setxattr(signal: Signal, p: string | null, name: string, value: Buffer, _position: number, flags: number): void {
      this.#settle(
        signal,
        'setxattr',
        p,
        () => this.#binding.handlers.setxattr(needPath(p), name, Buffer.from(value), flags),
        () => [0, value.buffer],
        [value.buffer],
      );
    }

    // Upstream truncates a value longer than the kernel's buffer and still reports the full
    // length, which makes libfuse reply with bytes past the end of that buffer. A zero-length
    // buffer is the kernel asking for the size.
    _op_getxattr(signal: Signal, p: string | null, name: string, dest: Buffer, _position: number): void {
      this.#settle(
        signal,
        'getxattr',
        p,
        () => this.#binding.handlers.getxattr(needPath(p), name),
        (value) => {
          if (!(value instanceof Uint8Array)) throw new Error('getxattr returned a non-buffer');
          if (dest.length === 0) return [value.length, dest.buffer];
          if (value.length > dest.length) return [ERANGE, dest.buffer];
          dest.set(value);
          return [value.length, dest.buffer];
        },
        [dest.buffer],
      );
    }

    // Same contract as getxattr; upstream also adds 128 bytes of slack to the size (a macOS need).
    _op_listxattr(signal: Signal, p: string | null, dest: Buffer): void {
      this.#settle(
        signal,
        'listxattr',
        p,
        () => this.#binding.handlers.listxattr(needPath(p)),
        (names) => {
          if (!Array.isArray(names) || names.some((n) => typeof n !== 'string' || n.length === 0 || n.includes('\0'))) {
            throw new Error('listxattr returned invalid names');
          }
          const list = Buffer.from(names.map((n) => `${n}\0`).join(''));
          if (dest.length === 0) return [list.length, dest.buffer];
          if (list.length > dest.length) return [ERANGE, dest.buffer];
          list.copy(dest);
          return [list.length, dest.buffer];
        },
        [dest.buffer],
      );
    }

    _op_removexattr(signal: Signal, p: string | null, name: string): void {
      this.#settle(signal, 'removexattr', p, () => this.#binding.handlers.removexattr(needPath(p), name), () => [0]);
    }

    _op_unlink(signal: Signal, p: string | null): void {
      this.#settle(signal, 'unlink', p, () => this.#binding.handlers.unlink(needPath(p)), () => [0]);
    }

    _op_rename(signal: Signal, src: string | null, dest: string): void {
      this.#settle(signal, 'rename', src, () => this.#binding.handlers.rename(needPath(src), dest), () => [0]);
    }

    // libfuse calls link(oldpath, newpath): the existing file first.
    _op_link(signal: Signal, existing: string | null, created: string): void {
      this.#settle(signal, 'link', existing, () => this.#binding.handlers.link(needPath(existing), created), () => [0]);
    }

    // libfuse calls symlink(target, linkpath): the link's content first, then where it goes.
    _op_symlink(signal: Signal, target: string | null, linkPath: string): void {
      this.#settle(signal, 'symlink', linkPath, () => this.#binding.handlers.symlink(needPath(target), linkPath), () => [0]);
    }

    _op_mkdir(signal: Signal, p: string | null, mode: number): void {
      this.#settle(signal, 'mkdir', p, () => this.#binding.handlers.mkdir(needPath(p), mode), () => [0]);
    }

    _op_rmdir(signal: Signal, p: string | null): void {
      this.#settle(signal, 'rmdir', p, () => this.#binding.handlers.rmdir(needPath(p)), () => [0]);
    }
  }
  // The constructor takes a Binding rather than fuse-native's ops object.
  return CofferFuse as unknown as FuseNativeClass;
}

// ---------------------------------------------------------------------------------------------
// Mounting

function checkOptionWord(what: string, value: string): void {
  if (!value || /[,\s\\="']/.test(value) || value.includes('\0')) {
    throw new Error(`invalid ${what} ${JSON.stringify(value)}: use a non-empty name without commas, spaces, quotes, '=' or '\\'`);
  }
}

/**
 * An option value as libfuse 2.9's option parser (and fusermount's, for mounts by a normal user)
 * reads it: a backslash makes the next character literal, so `\,` is a comma that does not
 * end the option. Control characters cannot be carried (and a name has no use for them).
 */
export function escapeOptionValue(what: string, value: string): string {
  if (!value || /[\p{Cc}]/u.test(value)) {
    throw new Error(`invalid ${what} ${JSON.stringify(value)}: use a non-empty name without control characters`);
  }
  return value.replace(/[\\,]/g, (ch) => `\\${ch}`);
}

/** The exact `-o` argument fuse-native hands to libfuse. Exported for tests. */
export function buildFuseOptionString(options: Pick<MountOptions, 'fsname' | 'subtype' | 'extraOptions'>): string {
  const fsname = escapeOptionValue('fsname', options.fsname);
  checkOptionWord('subtype', options.subtype);
  const extra = options.extraOptions ?? [];
  for (const option of extra) {
    if (!option || option.includes(',') || /\s/.test(option) || option.includes('\0')) {
      throw new Error(`invalid FUSE option ${JSON.stringify(option)}: pass one option per array element`);
    }
  }
  const all = [...BIG_WRITES, `fsname=${fsname}`, `subtype=${options.subtype}`, ...SEMANTICS, ...extra];
  const optionString = `-o${all.join(',')}`;
  const bytes = Buffer.byteLength(optionString);
  if (bytes > NATIVE_STRING_MAX_BYTES) {
    throw new Error(`FUSE options are ${bytes} bytes; fuse-native truncates them beyond ${NATIVE_STRING_MAX_BYTES}`);
  }
  return optionString;
}

function resolveTimeout(timeoutMs: number | undefined): number {
  if (timeoutMs === undefined) return DEFAULT_TIMEOUT_MS;
  // 0 or false would switch fuse-native's timeout off, and one hung handler would then hang
  // every process touching the mount; setTimeout cannot go beyond 2^31 - 1 ms.
  if (!Number.isInteger(timeoutMs) || timeoutMs < 1 || timeoutMs > 0x7fff_ffff) {
    throw new Error(`timeoutMs must be an integer in [1, ${0x7fff_ffff}], got ${String(timeoutMs)}`);
  }
  return timeoutMs;
}

class Session implements FuseSession {
  #unmounting: Promise<void> | undefined;
  #nativeReleased = false;

  constructor(
    readonly mountpoint: string,
    private readonly fuse: FuseNativeInstance,
    private readonly binding: NativeBinding,
  ) {}

  unmount(): Promise<void> {
    this.#unmounting ??= this.#unmount().catch((err: unknown) => {
      this.#unmounting = undefined; // let a later call retry
      throw err;
    });
    return this.#unmounting;
  }

  async #unmount(): Promise<void> {
    // Not fuse-native's unmount: it needs a fusermount binary and, when that fails, never
    // releases the addon's handles.
    if (await findMount(this.mountpoint)) await detachMount(this.mountpoint);
    if (!this.#nativeReleased && this.fuse._thread) {
      this.#nativeReleased = true;
      // Unrefs the addon's wakeup handle so the event loop can end; the FUSE thread stops by
      // itself once the kernel closes the connection.
      this.binding.fuse_native_unmount(this.mountpoint, this.fuse._thread);
    }
    await waitUntilUnmounted(this.mountpoint);
  }
}

async function checkMountpoint(mountpoint: string): Promise<void> {
  if (Buffer.byteLength(mountpoint) > NATIVE_STRING_MAX_BYTES) {
    throw new Error(`mountpoint path is longer than ${NATIVE_STRING_MAX_BYTES} bytes`);
  }
  // Checked before stat: a stale FUSE mount answers stat with ENOTCONN, a hung one not at all.
  const existing = await findMount(mountpoint);
  if (existing) {
    throw new Error(
      `something is already mounted there (${existing.fstype} from ${existing.source}); ` +
        'if it is a stale Coffer mount, unmount it first',
    );
  }
  let st;
  try {
    st = await stat(mountpoint);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') throw new Error('the mountpoint does not exist', { cause: err });
    throw new Error(`the mountpoint cannot be examined: ${(err as Error).message}`, { cause: err });
  }
  if (!st.isDirectory()) throw new Error('the mountpoint is not a directory');
}

/**
 * Mounts `handlers` at `mountpoint` and resolves once the kernel has initialised the connection.
 * The calling process must never access the mount itself (synchronous access deadlocks; see
 * DESIGN.md §3): drive it from another process.
 */
export async function mountFuse(mountpoint: string, handlers: FuseHandlers, options: MountOptions): Promise<FuseSession> {
  const mnt = path.resolve(mountpoint);
  const fail = (err: unknown): Error => new Error(`cannot mount Coffer at ${mnt}: ${(err as Error)?.message ?? String(err)}`, { cause: err });

  let optionString: string;
  let timeoutMs: number;
  let native: Loaded;
  try {
    optionString = buildFuseOptionString(options);
    timeoutMs = resolveTimeout(options.timeoutMs);
    await checkMountpoint(mnt);
    native = loadFuseNative();
  } catch (err) {
    throw fail(err);
  }

  const Ctor = native.Fuse as unknown as new (mnt: string, binding: Binding, timeoutMs: number) => FuseNativeInstance;
  const fuse = new Ctor(mnt, { handlers, log: options.log, optionString, opStats: options.opStats }, timeoutMs);
  try {
    await new Promise<void>((resolve, reject) => fuse.mount((err) => (err ? reject(err) : resolve())));
  } catch (err) {
    // fuse_mount can succeed and a later step fail (e.g. an option fuse_new rejects), leaving a
    // mount no one serves.
    try {
      if (await findMount(mnt)) {
        await detachMount(mnt);
        await waitUntilUnmounted(mnt);
      }
    } catch (cleanupErr) {
      options.log(`mount failed and ${mnt} could not be cleaned up`, { mountpoint: mnt, err: cleanupErr });
    }
    const message = (err as Error)?.message === 'fuse failed' ? 'libfuse refused the mount or its options' : (err as Error)?.message;
    throw fail(new Error(message, { cause: err }));
  }
  return new Session(mnt, fuse, native.binding);
}
