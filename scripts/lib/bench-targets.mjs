// The filesystems scripts/bench.mjs measures, each behind one small interface:
//
//   name, what                    how the report names and describes it
//   install                       the Debian package that provides it (peers only)
//   missing()                     why it cannot run here (undefined when it can)
//   start(ctx)                    sets it up in ctx.dir; resolves to an instance:
//     root                        the directory the workloads use
//     pid                         the process that serves it (for its memory), if any
//     version                     what exactly ran
//     discardsData                reads return zeros (the ceiling): content cannot be verified
//     settle(limitMs)             waits until its background work is done; resolves to seconds
//     stop()                      its own clean unmount (the bench's cleanup falls back to umount -l)
//
// Every mount is registered with ctx.own() before it is attempted, so that an interrupt or a
// failure at any point still finds it and unmounts it.
import { randomBytes } from 'node:crypto';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import {
  Interrupted, ROOT, coffer as cofferCli, daemonInfo, describeExit, haveCommand, interruptedBy, isMounted, mustRun, processAlive, progress, run,
  sleep, startServer, waitForMount,
} from './harness.mjs';

const NULL_FS = join(ROOT, 'scripts', 'lib', 'null-fs.mjs');
// cryfs derives its key with scrypt at ~1 GiB; on a busy machine that takes a while.
const MOUNT_WAIT_MS = 120_000;

const notInstalled = (pkg) => async () => ((await haveCommand(pkg)) ? undefined : `not installed (install with: apt-get install ${pkg})`);

/** The first line a command prints about its version, or undefined. */
async function versionOf(cmd, args) {
  const r = await run(cmd, args, { timeoutMs: 30_000 }).catch(() => undefined);
  return r?.code === 0 ? (r.stdout || r.stderr).trim().split('\n')[0] : undefined;
}

/**
 * Starts a FUSE daemon in the foreground and waits for its mount. The mount is registered
 * first; a daemon that ends before mounting fails the start with the end of its log.
 */
async function serveMount(ctx, { mountpoint, cmd, args, env, input, logName }) {
  const logFile = join(ctx.dir, `${logName}.log`);
  const server = startServer(cmd, args, { env, input, logFile });
  const owned = ctx.own({ mountpoint, pid: server.pid, gracefulStop: () => fusermountUnmount(mountpoint, server) });
  try {
    await waitForMount(mountpoint, MOUNT_WAIT_MS, () => server.exit === undefined);
  } catch (err) {
    if (err instanceof Interrupted) throw err;
    throw new Error(`${cmd} did not mount ${mountpoint}: ${err.message}${server.exit ? ` (${describeExit(server.exit)})` : ''}${server.logTail()}`);
  }
  return { server, owned };
}

/** Unmounts a FUSE mount the way its own tools do, and waits for its daemon to end. */
async function fusermountUnmount(mountpoint, server) {
  if (isMounted(mountpoint)) await mustRun(`fusermount -u ${mountpoint}`, 'fusermount', ['-u', mountpoint], 120_000, { cleanup: true, killOnInterrupt: false });
  if (!(await server.waitForExit(30_000))) throw new Error(`pid ${server.pid} still runs 30 s after its unmount`);
}

// ---------------------------------------------------------------------------------------------

const plain = {
  name: 'plain',
  what: 'a plain directory on the workdir\'s filesystem',
  missing: async () => undefined,
  async start(ctx) {
    const root = join(ctx.dir, 'dir');
    mkdirSync(root);
    return { root, version: ctx.workdirFilesystem, stop: async () => {} };
  },
};

const ceiling = {
  name: 'ceiling',
  what: 'a do-nothing filesystem (scripts/lib/null-fs.mjs) through Coffer\'s FUSE binding, mounted with the daemon\'s options',
  missing: async () => undefined,
  async start(ctx) {
    const mountpoint = join(ctx.dir, 'mnt');
    mkdirSync(mountpoint);
    const server = startServer(process.execPath, [NULL_FS, mountpoint], { logFile: join(ctx.dir, 'null-fs.log') });
    // SIGTERM is null-fs's own clean unmount.
    const owned = ctx.own({
      mountpoint,
      pid: server.pid,
      gracefulStop: async () => {
        if (server.exit === undefined) process.kill(server.pid, 'SIGTERM');
        if (!(await server.waitForExit(30_000))) throw new Error(`null-fs (pid ${server.pid}) still runs 30 s after SIGTERM`);
      },
    });
    try {
      await waitForMount(mountpoint, MOUNT_WAIT_MS, () => server.exit === undefined);
    } catch (err) {
      if (err instanceof Interrupted) throw err;
      throw new Error(`null-fs did not mount: ${err.message}${server.logTail()}`);
    }
    return { root: mountpoint, pid: server.pid, version: 'null-fs', discardsData: true, stop: owned.gracefulStop };
  },
};

// ---------------------------------------------------------------------------------------------
// Coffer

let callDaemon;

/** Coffer's control socket, through Coffer's own module: a status in milliseconds, without a CLI start-up. */
async function daemonStatus(socket) {
  callDaemon ??= (await import(pathToFileURL(join(ROOT, 'dist', 'daemon', 'control.js')).href)).callDaemon;
  return callDaemon(socket, { op: 'status' }, 30_000);
}

/**
 * Waits until the daemon has no buffered data, no chunk waiting for the remote and no
 * unpublished change; returns how long that took. Upload failures are the remote's business,
 * not the benchmark's, so they end the wait once nothing moves any more; without failures, a
 * backlog that stops shrinking for two minutes ends it too. Both leave a note.
 */
async function settleCoffer(socket, pid, limitMs, notes) {
  const started = Date.now();
  let last;
  let lastMoveAt = started;
  let lastStatusOkAt = started;
  for (;;) {
    const askedAt = Date.now();
    let s;
    try {
      s = await daemonStatus(socket);
    } catch (err) {
      // Status only observes: one slow answer must not end a run that is otherwise fine.
      if (!processAlive(pid)) throw new Error(`the Coffer daemon (pid ${pid}) died`);
      if (Date.now() - lastStatusOkAt > 60_000) throw err;
      await sleep(1000);
      continue;
    }
    lastStatusOkAt = Date.now();
    if (s.bufferedBytes === 0 && s.pendingChunks === 0 && s.sync?.uploading === 0 && !s.sync?.publishPending) return (askedAt - started) / 1000;
    const backlog = `${s.pendingChunks} chunks pending, ${s.bufferedBytes} bytes buffered`;
    if (backlog !== last) [last, lastMoveAt] = [backlog, Date.now()];
    const failing = s.failedChunks > 0 || s.sync?.lastError;
    const stuck = Date.now() - lastMoveAt > (failing ? 60_000 : 120_000);
    if (stuck || Date.now() - started > limitMs) {
      const why = stuck
        ? failing
          ? `its uploads are failing (${s.failedChunks} chunks; last error ${JSON.stringify(s.sync?.lastError)})`
          : `its backlog stopped shrinking for ${Math.round((Date.now() - lastMoveAt) / 1000)} s`
        : `it was still busy after ${Math.round(limitMs / 1000)} s`;
      notes.push(`coffer: stopped waiting for the daemon's background work because ${why}, with ${backlog}; later figures may include that work`);
      return (Date.now() - started) / 1000;
    }
    if (interruptedBy()) throw new Interrupted(interruptedBy());
    await sleep(200);
  }
}

async function gitCommit() {
  const r = await run('git', ['--no-optional-locks', '-C', ROOT, 'rev-parse', '--short', 'HEAD'], { timeoutMs: 30_000 }).catch(() => undefined);
  return r?.code === 0 ? r.stdout.trim() : undefined;
}

const coffer = {
  name: 'coffer',
  what: 'Coffer: a vault with its embedded file:// remote, mounted with `coffer mount`',
  missing: async () => undefined,
  async start(ctx) {
    const vault = join(ctx.dir, 'vault');
    const mountpoint = join(ctx.dir, 'mnt');
    mkdirSync(mountpoint);
    // A throwaway vault: a random passphrase, handed only to the coffer CLI children.
    const env = { ...process.env, COFFER_PASSPHRASE: randomBytes(24).toString('hex') };
    progress('coffer: creating a vault (Argon2id takes a second or two)');
    await cofferCli(['init', vault], { env });
    const owned = ctx.own({
      mountpoint,
      gracefulStop: () => cofferCli(['unmount', mountpoint], { env, timeoutMs: 120_000, cleanup: true }),
      daemonLog: join(vault, 'logs', 'daemon.log'),
    });
    try {
      await cofferCli(['mount', vault, mountpoint], { env });
    } finally {
      owned.pid = daemonInfo(vault)?.pid;
    }
    const info = daemonInfo(vault);
    if (!info || !processAlive(info.pid)) throw new Error(`coffer mount returned, but no live daemon is registered in ${vault}/state/daemon.json`);
    if (!isMounted(mountpoint)) throw new Error(`coffer mount returned, but ${mountpoint} is not in /proc/self/mountinfo`);
    const version = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')).version;
    const commit = await gitCommit();
    return {
      root: mountpoint,
      pid: info.pid,
      version: `coffer ${version}${commit ? ` (${commit})` : ''}`,
      settle: (limitMs) => settleCoffer(info.socket, info.pid, limitMs, ctx.notes),
      // The final commit of every buffer happens here; a long one is a finding of its own.
      stop: () => cofferCli(['unmount', mountpoint], { env, timeoutMs: 600_000 }),
    };
  },
};

// ---------------------------------------------------------------------------------------------
// Peers

const gocryptfs = {
  name: 'gocryptfs',
  install: 'gocryptfs',
  what: 'gocryptfs with its default settings over a directory on the workdir\'s filesystem',
  missing: notInstalled('gocryptfs'),
  async start(ctx) {
    const cipher = join(ctx.dir, 'cipher');
    const mountpoint = join(ctx.dir, 'mnt');
    const passfile = join(ctx.dir, 'passphrase');
    mkdirSync(cipher);
    mkdirSync(mountpoint);
    writeFileSync(passfile, `${ctx.passphrase}\n`, { mode: 0o600 });
    await mustRun('gocryptfs -init', 'gocryptfs', ['-init', '-q', '-passfile', passfile, cipher], 120_000, { killOnInterrupt: false });
    const { server } = await serveMount(ctx, { mountpoint, logName: 'gocryptfs', cmd: 'gocryptfs', args: ['-fg', '-q', '-passfile', passfile, cipher, mountpoint] });
    return {
      root: mountpoint,
      pid: server.pid,
      version: await versionOf('gocryptfs', ['-version']),
      stop: () => fusermountUnmount(mountpoint, server),
    };
  },
};

const cryfs = {
  name: 'cryfs',
  install: 'cryfs',
  what: 'CryFS with its default settings (noninteractive) over a directory on the workdir\'s filesystem',
  missing: notInstalled('cryfs'),
  async start(ctx) {
    const basedir = join(ctx.dir, 'cipher');
    const mountpoint = join(ctx.dir, 'mnt');
    mkdirSync(basedir);
    mkdirSync(mountpoint);
    // Noninteractive: the passphrase comes from stdin and a new filesystem gets the defaults;
    // CryFS keeps its per-user state under $HOME, so give it one of its own.
    const home = join(ctx.dir, 'home');
    mkdirSync(home);
    const env = { ...process.env, CRYFS_FRONTEND: 'noninteractive', CRYFS_NO_UPDATE_CHECK: 'true', HOME: home };
    const { server } = await serveMount(ctx, { mountpoint, logName: 'cryfs', cmd: 'cryfs', args: ['-f', basedir, mountpoint], env, input: `${ctx.passphrase}\n` });
    return {
      root: mountpoint,
      pid: server.pid,
      version: await versionOf('cryfs', ['--version']),
      stop: () => fusermountUnmount(mountpoint, server),
    };
  },
};

const RCLONE_REMOTE = 'cofferbench';

/** Asks a running `rclone mount` for its VFS state through its remote-control API. */
async function rcloneVfsStats(rcUrl) {
  let response;
  try {
    response = await fetch(new URL('vfs/stats', rcUrl), { method: 'POST', signal: AbortSignal.timeout(30_000) });
  } catch (err) {
    throw new Error(`rclone's remote control at ${rcUrl} did not answer vfs/stats: ${err.cause?.message ?? err.message}`);
  }
  if (!response.ok) throw new Error(`rclone's remote control at ${rcUrl} answered vfs/stats with HTTP ${response.status}`);
  return response.json();
}

/** Waits until rclone has written every file in its VFS cache back to the remote. */
async function settleRclone(rcUrl, limitMs, notes) {
  const started = Date.now();
  for (;;) {
    const askedAt = Date.now();
    const { diskCache } = await rcloneVfsStats(rcUrl);
    if (!diskCache || diskCache.uploadsInProgress + diskCache.uploadsQueued === 0) return (askedAt - started) / 1000;
    if (Date.now() - started > limitMs) {
      notes.push(`rclone: stopped waiting for its uploads after ${Math.round(limitMs / 1000)} s (${diskCache.uploadsInProgress} in progress, ${diskCache.uploadsQueued} queued); later figures may include that work`);
      return (Date.now() - started) / 1000;
    }
    if (interruptedBy()) throw new Interrupted(interruptedBy());
    await sleep(200);
  }
}

const rclone = {
  name: 'rclone',
  install: 'rclone',
  what: 'rclone mount of a crypt remote over a local folder, --vfs-cache-mode full',
  missing: notInstalled('rclone'),
  async start(ctx) {
    const remote = join(ctx.dir, 'remote');
    const cache = join(ctx.dir, 'cache');
    const mountpoint = join(ctx.dir, 'mnt');
    const config = join(ctx.dir, 'rclone.conf');
    for (const dir of [remote, cache, mountpoint]) mkdirSync(dir);
    // An empty config file of its own, so the user's rclone.conf plays no part; the crypt
    // remote is defined by environment variables, its password in rclone's obscured form.
    writeFileSync(config, '');
    const obscured = (await mustRun('rclone obscure', 'rclone', ['obscure', '-'], 30_000, { input: ctx.passphrase })).stdout.trim();
    const key = RCLONE_REMOTE.toUpperCase();
    const env = {
      ...process.env,
      RCLONE_CONFIG: config,
      [`RCLONE_CONFIG_${key}_TYPE`]: 'crypt',
      [`RCLONE_CONFIG_${key}_REMOTE`]: remote,
      [`RCLONE_CONFIG_${key}_PASSWORD`]: obscured,
    };
    // The remote-control API on a free port, to see when uploads are done.
    const args = ['mount', `${RCLONE_REMOTE}:`, mountpoint, '--vfs-cache-mode', 'full', '--cache-dir', cache, '--rc', '--rc-addr', '127.0.0.1:0', '--rc-no-auth'];
    if (ctx.smoke) {
      // rclone uploads a closed file 5 s after its last change; a smoke run would spend most
      // of its time waiting for that.
      args.push('--vfs-write-back', '1s');
      ctx.notes.push('rclone: --vfs-write-back 1s instead of the default 5s in this smoke run, to keep it short');
    }
    const { server } = await serveMount(ctx, { mountpoint, logName: 'rclone', cmd: 'rclone', args, env });
    const rcUrl = /Serving remote control on (http:\/\/\S+)/.exec(readFileSync(join(ctx.dir, 'rclone.log'), 'utf8'))?.[1];
    return {
      root: mountpoint,
      pid: server.pid,
      version: await versionOf('rclone', ['version']),
      settle: rcUrl ? (limitMs) => settleRclone(rcUrl, limitMs, ctx.notes) : undefined,
      stop: () => fusermountUnmount(mountpoint, server),
    };
  },
};

/** Every target, in the order the report lists them. */
export const TARGETS = [plain, ceiling, coffer, gocryptfs, cryfs, rclone];
