/**
 * Unmounting, the three ways Coffer must support it, through the real CLI and real mounts:
 * as root with no fusermount reachable (`umount -l`), as root with Debian's fuse3 `fusermount`,
 * and as a normal user, who can only mount and unmount through the setuid `fusermount`.
 * Each case also kills the daemon with SIGKILL and has `coffer unmount` clean the stale mount.
 *
 * Runs as root: it creates the test user, and bind-mounts the checkout for that user when the
 * checkout sits under a directory the user cannot enter (e.g. a clone in /root). Needs Debian's
 * fuse3 and a /dev/fuse every user may open; .ci/run provides both. Missing either is a failure
 * with a message, not a skip.
 */
import { execFile, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { CLI, PASSPHRASE, ROOT, isMounted } from './helpers/drive.js';

const SYSTEM_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';
const TEST_USER = 'coffer-test';
const CLI_IN_CHECKOUT = CLI.slice(ROOT.length); // "/dist/cli/main.js"

/** Who runs the CLI (and so the daemon it spawns) and with which environment. */
interface Runner {
  env: NodeJS.ProcessEnv;
  cli: string;
  uid?: number;
  gid?: number;
}

interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

function run(file: string, args: string[], as: Runner, timeoutMs = 30_000): Promise<RunResult> {
  return new Promise((resolve) => {
    // cwd '/': the vitest cwd (the checkout) may be a directory the test user cannot enter.
    const child = execFile(file, args, { env: as.env, uid: as.uid, gid: as.gid, cwd: '/', timeout: timeoutMs, killSignal: 'SIGKILL' }, (err, stdout, stderr) => {
      const code = !err ? 0 : typeof err.code === 'number' ? err.code : -1;
      resolve({ code, stdout: String(stdout), stderr: String(stderr) + (err && code === -1 ? err.message : '') });
    });
    child.stdin?.end();
  });
}

function cli(as: Runner, args: string[]): Promise<RunResult> {
  return run(process.execPath, [as.cli, ...args], as);
}

async function cliOk(as: Runner, args: string[], vault?: string): Promise<RunResult> {
  const result = await cli(as, args);
  if (result.code !== 0) {
    const log = vault && fs.existsSync(join(vault, 'logs', 'daemon.log')) ? fs.readFileSync(join(vault, 'logs', 'daemon.log'), 'utf8') : '(no daemon log)';
    throw new Error(`coffer ${args.join(' ')} failed (${result.code}): ${result.stderr}\ndaemon log:\n${log}`);
  }
  return result;
}

/** The first executable `name` in `searchPath`, as a shell's `command -v` would find it. */
function which(name: string, searchPath: string): string | undefined {
  for (const dir of searchPath.split(':').filter(Boolean)) {
    const file = join(dir, name);
    try {
      fs.accessSync(file, fs.constants.X_OK);
      if (fs.statSync(file).isFile()) return file;
    } catch {
      // not here
    }
  }
  return undefined;
}

/** Whether /bin/sh resolves any of `names` with PATH=`searchPath`. */
function shellFinds(names: string[], searchPath: string): boolean {
  return spawnSync('/bin/sh', ['-c', `command -v ${names.join(' ')}`], { env: { PATH: searchPath } }).status === 0;
}

/** A directory holding `name` scripts that log their arguments to `log` and run the real tool. */
function wrapperDir(dir: string, tools: Record<string, string>, log: string): string {
  fs.mkdirSync(dir, { mode: 0o755 });
  for (const [name, real] of Object.entries(tools)) {
    fs.writeFileSync(join(dir, name), `#!/bin/sh\necho "${name} $*" >> '${log}'\nexec '${real}' "$@"\n`, { mode: 0o755 });
  }
  return dir;
}

function requireRoot(): void {
  if (process.getuid?.() !== 0) throw new Error('test/unmount.test.ts must run as root (it creates a user and mounts); CI runs it as root');
}

function requireTool(name: string): string {
  const found = which(name, SYSTEM_PATH);
  if (!found) throw new Error(`\`${name}\` is not installed (looked in ${SYSTEM_PATH})`);
  return found;
}

/** Debian's fuse3 `fusermount` (a link to the setuid fusermount3); libfuse2 runs it by that name. */
function requireFusermount(): string {
  const found = which('fusermount', SYSTEM_PATH);
  if (!found) throw new Error(`no \`fusermount\` on ${SYSTEM_PATH}: install Debian's fuse3 (apt-get install fuse3; .ci/run does), never the \`fuse\` package`);
  const st = fs.statSync(found);
  if (st.uid !== 0 || (st.mode & 0o4000) === 0) throw new Error(`${found} is not setuid root, so a normal user cannot mount with it`);
  return found;
}

const workspaces: Array<() => Promise<void>> = [];

afterEach(async () => {
  while (workspaces.length > 0) await workspaces.pop()!();
});

interface Ws {
  dir: string;
  vault: string;
  mnt: string;
  as: Runner;
}

/** A temp dir with a mountpoint, owned by `owner`; always unmounted in teardown, as `as` first. */
function workspace(as: (dir: string) => Runner, owner?: { uid: number; gid: number }): Ws {
  const dir = fs.mkdtempSync('/tmp/coffer-unmount-');
  const mnt = join(dir, 'mnt');
  fs.mkdirSync(mnt);
  if (owner) {
    fs.chownSync(dir, owner.uid, owner.gid);
    fs.chownSync(mnt, owner.uid, owner.gid);
  }
  const ws: Ws = { dir, vault: join(dir, 'vault'), mnt, as: as(dir) };
  workspaces.push(async () => {
    if (isMounted(mnt)) {
      const result = await cli(ws.as, ['unmount', mnt]);
      if (result.code !== 0 || isMounted(mnt)) spawnSync('umount', ['-l', mnt], { env: { PATH: SYSTEM_PATH } });
    }
    fs.rmSync(dir, { recursive: true, force: true });
  });
  return ws;
}

/** Per-workspace environment: nothing inherited but what is named, registry records inside `dir`. */
function envFor(dir: string, searchPath: string): NodeJS.ProcessEnv {
  return { PATH: searchPath, HOME: dir, XDG_RUNTIME_DIR: join(dir, 'run'), COFFER_PASSPHRASE: PASSPHRASE };
}

async function daemonPid(ws: Ws): Promise<number> {
  const status = JSON.parse((await cliOk(ws.as, ['status', ws.vault, '--json'], ws.vault)).stdout) as { mounted: boolean; pid: number };
  expect(status.mounted).toBe(true);
  return status.pid;
}

const STAT_PROBE = `require('node:fs').stat(process.argv[1], (err) => process.exit(!err ? 0 : err.code === 'ENOTCONN' ? 3 : 4));`;

/** After SIGKILL the mount stays listed but answers ENOTCONN (as seen by the mount's owner). */
async function waitUntilStale(ws: Ws): Promise<void> {
  const deadline = Date.now() + 5_000;
  for (;;) {
    const probe = await run(process.execPath, ['-e', STAT_PROBE, ws.mnt], ws.as, 5_000);
    if (probe.code === 3) return;
    if (Date.now() > deadline) throw new Error(`${ws.mnt} never became stale after SIGKILL of its daemon (stat exit ${probe.code})`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

function superOptions(mnt: string): string {
  const line = fs.readFileSync('/proc/self/mountinfo', 'utf8').split('\n').find((l) => l.split(' ')[4] === mnt);
  if (!line) throw new Error(`${mnt} is not mounted`);
  const fields = line.split(' ');
  const dash = fields.indexOf('-', 6);
  return `${fields[dash + 1]} ${fields[dash + 3]}`;
}

/**
 * Mount, write, `coffer unmount`; mount again (the write survived), kill -9 the daemon,
 * `coffer unmount` cleans the stale mount. Root reads and writes the mount directly.
 */
async function rootFlow(ws: Ws, onDaemon: (pid: number) => void, afterCleanUnmount: () => void): Promise<void> {
  await cliOk(ws.as, ['init', ws.vault], ws.vault);
  await cliOk(ws.as, ['mount', ws.vault, ws.mnt], ws.vault);
  expect(superOptions(ws.mnt)).toMatch(/^fuse\.coffer /);
  onDaemon(await daemonPid(ws));
  fs.writeFileSync(join(ws.mnt, 'hello.txt'), 'hello from root');
  expect(fs.readFileSync(join(ws.mnt, 'hello.txt'), 'utf8')).toBe('hello from root');

  const unmount = await cliOk(ws.as, ['unmount', ws.mnt], ws.vault);
  expect(unmount.stderr).toMatch(/^Unmounted /m);
  expect(isMounted(ws.mnt)).toBe(false);
  afterCleanUnmount();

  await cliOk(ws.as, ['mount', ws.vault, ws.mnt], ws.vault);
  expect(fs.readFileSync(join(ws.mnt, 'hello.txt'), 'utf8')).toBe('hello from root');
  const pid = await daemonPid(ws);
  onDaemon(pid);
  process.kill(pid, 'SIGKILL');
  await waitUntilStale(ws);
  expect(isMounted(ws.mnt)).toBe(true);

  const cleanup = await cliOk(ws.as, ['unmount', ws.mnt], ws.vault);
  expect(cleanup.stderr).toMatch(/stale mount/);
  expect(isMounted(ws.mnt)).toBe(false);
}

function daemonPathOf(pid: number): string | undefined {
  const environ = fs.readFileSync(`/proc/${pid}/environ`, 'utf8').split('\0');
  return environ.find((v) => v.startsWith('PATH='))?.slice(5);
}

function readLog(log: string): string[] {
  return fs.existsSync(log) ? fs.readFileSync(log, 'utf8').split('\n').filter(Boolean) : [];
}

describe('unmount as root without fusermount', () => {
  it('unmounts with umount -l, and cleans a stale mount after kill -9', async () => {
    requireRoot();
    let binDir = '';
    let toolLog = '';
    const ws = workspace((dir) => {
      toolLog = join(dir, 'tools.log');
      // Coffer spawns only `umount` by name (fusermount when present); node itself is
      // process.execPath. A logging wrapper proves which tool did the detaching.
      binDir = wrapperDir(join(dir, 'bin'), { umount: requireTool('umount') }, toolLog);
      return { env: envFor(dir, binDir), cli: CLI };
    });
    expect(which('fusermount', binDir)).toBeUndefined();
    expect(which('fusermount3', binDir)).toBeUndefined();
    expect(shellFinds(['fusermount'], binDir)).toBe(false);
    expect(shellFinds(['fusermount3'], binDir)).toBe(false);

    await rootFlow(
      ws,
      (pid) => expect(daemonPathOf(pid), 'the daemon must see the same PATH').toBe(binDir),
      () => expect(readLog(toolLog)).toContain(`umount -l ${ws.mnt}`),
    );
    expect(readLog(toolLog).filter((l) => l === `umount -l ${ws.mnt}`).length).toBeGreaterThanOrEqual(2);
  }, 30_000);
});

describe('unmount as root with fusermount', () => {
  it('unmounts with fusermount -u -z, and cleans a stale mount after kill -9', async () => {
    requireRoot();
    const fusermount = requireFusermount();
    let binDir = '';
    let toolLog = '';
    const ws = workspace((dir) => {
      toolLog = join(dir, 'tools.log');
      binDir = wrapperDir(join(dir, 'bin'), { fusermount }, toolLog);
      return { env: envFor(dir, `${binDir}:${SYSTEM_PATH}`), cli: CLI };
    });
    expect(shellFinds(['fusermount'], `${binDir}:${SYSTEM_PATH}`)).toBe(true);

    await rootFlow(
      ws,
      () => {},
      () => expect(readLog(toolLog)).toContain(`fusermount -u -z ${ws.mnt}`),
    );
    expect(readLog(toolLog).filter((l) => l === `fusermount -u -z ${ws.mnt}`).length).toBeGreaterThanOrEqual(2);
  }, 30_000);
});

describe('a normal user with fusermount', () => {
  let user: { uid: number; gid: number };
  let cliPath = CLI;
  let bindMount: string | undefined;

  function idOf(flag: '-u' | '-g'): number | undefined {
    const result = spawnSync('id', [flag, TEST_USER], { encoding: 'utf8', env: { PATH: SYSTEM_PATH } });
    return result.status === 0 ? Number(result.stdout.trim()) : undefined;
  }

  /** A system user with no home and no login, created once and kept (idempotent). */
  function ensureUser(): { uid: number; gid: number } {
    if (idOf('-u') === undefined) {
      const created = spawnSync('useradd', ['--system', '--user-group', '--no-create-home', '--home-dir', '/nonexistent', '--shell', '/usr/sbin/nologin', TEST_USER], {
        encoding: 'utf8',
        env: { PATH: SYSTEM_PATH },
      });
      // A concurrent run may have created it first: only the lookup decides.
      if (idOf('-u') === undefined) throw new Error(`cannot create the user ${TEST_USER}: ${created.stderr || created.error?.message}`);
    }
    return { uid: idOf('-u')!, gid: idOf('-g')! };
  }

  /** Empty when `user` can read the CLI, the daemon and the native modules under `root`. */
  function unreadable(root: string): string {
    const files = [CLI_IN_CHECKOUT, '/dist/daemon/main.js', '/node_modules/fuse-native/package.json', '/node_modules/better-sqlite3/package.json'].map((f) => root + f);
    const probe = spawnSync(process.execPath, ['-e', `for (const f of process.argv.slice(1)) require('node:fs').accessSync(f, require('node:fs').constants.R_OK)`, ...files], {
      uid: user.uid,
      gid: user.gid,
      cwd: '/',
      env: { PATH: SYSTEM_PATH },
      encoding: 'utf8',
    });
    if (probe.error) return `${process.execPath} cannot be run as ${TEST_USER}: ${probe.error.message}`;
    return probe.status === 0 ? '' : probe.stderr.trim().split('\n').find((l) => l.startsWith('Error')) ?? probe.stderr.trim();
  }

  beforeAll(() => {
    requireRoot();
    requireFusermount();
    const dev = fs.statSync('/dev/fuse');
    if ((dev.mode & 0o006) !== 0o006) {
      throw new Error(`/dev/fuse is mode ${(dev.mode & 0o777).toString(8)}: a normal user cannot mount; make it 0666 as Debian's udev does (.ci/run does)`);
    }
    user = ensureUser();
    const problem = unreadable(ROOT);
    if (problem) {
      // E.g. a clone under /root (0700): show the user the same checkout at a path it can reach.
      bindMount = fs.mkdtempSync('/tmp/coffer-checkout-');
      const bound = spawnSync('mount', ['--bind', ROOT, bindMount], { encoding: 'utf8', env: { PATH: SYSTEM_PATH } });
      if (bound.status !== 0) throw new Error(`${TEST_USER} cannot read the checkout (${problem}) and bind-mounting it failed: ${bound.stderr}`);
      const still = unreadable(bindMount);
      if (still) throw new Error(`${TEST_USER} cannot read the checkout even through ${bindMount}: ${still}`);
      cliPath = bindMount + CLI_IN_CHECKOUT;
    }
  });

  afterAll(() => {
    if (!bindMount) return;
    spawnSync('umount', ['-l', bindMount], { env: { PATH: SYSTEM_PATH } });
    fs.rmSync(bindMount, { recursive: true, force: true });
  });

  // The user's FUSE mount is closed to every other user, root included (no allow_other):
  // everything that touches it runs as the user.
  const FILE_IO = `const fs = require('node:fs');
const [file, text] = process.argv.slice(1);
fs.writeFileSync(file, text);
const st = fs.statSync(file);
process.stdout.write(JSON.stringify({ text: fs.readFileSync(file, 'utf8'), uid: st.uid }));`;
  const READ = `process.stdout.write(require('node:fs').readFileSync(process.argv[1], 'utf8'))`;

  it('inits, mounts, writes and reads, unmounts, and cleans its stale mount after kill -9', async () => {
    const fusermount = requireFusermount();
    let searchPath = '';
    let toolLog = '';
    const ws = workspace((dir) => {
      toolLog = join(dir, 'tools.log');
      // A script that execs the setuid binary still gets its privileges: the wrapper proves
      // fusermount did the mounting (libfuse2 runs it by that name) and the unmounting.
      // Debian's setuid umount also unmounts a user's own FUSE mount, so without this log the
      // test could not tell the two apart.
      searchPath = `${wrapperDir(join(dir, 'bin'), { fusermount }, toolLog)}:${SYSTEM_PATH}`;
      return { env: envFor(dir, searchPath), cli: cliPath, uid: user.uid, gid: user.gid };
    }, user);
    expect(shellFinds(['fusermount'], searchPath)).toBe(true);

    await cliOk(ws.as, ['init', ws.vault], ws.vault);
    expect(fs.statSync(join(ws.vault, 'vault.json')).uid).toBe(user.uid);
    await cliOk(ws.as, ['mount', ws.vault, ws.mnt], ws.vault);
    expect(superOptions(ws.mnt)).toMatch(new RegExp(`^fuse\\.coffer .*\\buser_id=${user.uid}\\b`));
    const io = await run(process.execPath, ['-e', FILE_IO, join(ws.mnt, 'note.txt'), 'written by a normal user'], ws.as);
    expect(io.code, io.stderr).toBe(0);
    expect(JSON.parse(io.stdout)).toEqual({ text: 'written by a normal user', uid: user.uid });

    const unmount = await cliOk(ws.as, ['unmount', ws.mnt], ws.vault);
    expect(unmount.stderr).toMatch(/^Unmounted /m);
    expect(isMounted(ws.mnt)).toBe(false);
    const unmountLine = `fusermount -u -z ${ws.mnt}`;
    expect(readLog(toolLog).some((l) => l.startsWith('fusermount -o ') && l.endsWith(ws.mnt)), 'mounted through fusermount').toBe(true);
    expect(readLog(toolLog)).toContain(unmountLine);

    await cliOk(ws.as, ['mount', ws.vault, ws.mnt], ws.vault);
    const read = await run(process.execPath, ['-e', READ, join(ws.mnt, 'note.txt')], ws.as);
    expect(read.stdout, read.stderr).toBe('written by a normal user');
    // Root has no record of the user's daemon, but the mount is alive: not root's to detach.
    const byRoot = await run(process.execPath, [CLI, 'unmount', ws.mnt], { env: { ...process.env, PATH: SYSTEM_PATH }, cli: CLI });
    expect(byRoot.code).toBe(1);
    expect(byRoot.stderr).toMatch(new RegExp(`not yours \\(user id ${user.uid}\\)`));
    expect(isMounted(ws.mnt)).toBe(true);
    const pid = await daemonPid(ws);
    expect(fs.statSync(`/proc/${pid}`).uid).toBe(user.uid);
    process.kill(pid, 'SIGKILL');
    await waitUntilStale(ws);
    expect(isMounted(ws.mnt)).toBe(true);

    const before = readLog(toolLog).filter((l) => l === unmountLine).length;
    const cleanup = await cliOk(ws.as, ['unmount', ws.mnt], ws.vault);
    expect(cleanup.stderr).toMatch(/stale mount/);
    expect(isMounted(ws.mnt)).toBe(false);
    expect(readLog(toolLog).filter((l) => l === unmountLine).length).toBe(before + 1);
  }, 30_000);
});
