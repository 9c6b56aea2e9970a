/**
 * The command line beyond mount and unmount: volume names, passwd, ls-mounts, logs,
 * status --watch, completion, help, and the per-file sync state a file manager can show.
 */
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { CLI, coffer, cofferOk, PASSPHRASE, readLogEntries, Workspace } from './helpers/drive.js';
import { findMount } from '../src/fs/mountinfo.js';

const workspaces: Workspace[] = [];
afterEach(async () => {
  while (workspaces.length > 0) await workspaces.pop()!.cleanup();
});

async function vault(extra: string[] = []): Promise<{ ws: Workspace; remote: string }> {
  const ws = new Workspace();
  workspaces.push(ws);
  const remote = join(ws.dir, 'remote');
  await ws.init(['--remote', `file://${remote}`, ...extra]);
  return { ws, remote };
}

const state = (path: string) =>
  execFileSync('python3', ['-c', 'import os,sys; print(os.getxattr(sys.argv[1], "user.coffer.state").decode())', path], { encoding: 'utf8' }).trim();

/** Every file under `dir`, recursively. */
function filesUnder(dir: string): string[] {
  return fs.readdirSync(dir, { recursive: true, encoding: 'utf8' }).map((f) => join(dir, f)).filter((f) => fs.statSync(f).isFile());
}

describe('volume name', () => {
  it('is set at init, shown by the mount, status and ls-mounts, and never reaches the remote', async () => {
    const name = 'My Photos, 2024 \\ ünïcode';
    const { ws, remote } = await vault(['--name', name]);
    expect(JSON.parse(fs.readFileSync(join(ws.vault, 'config.json'), 'utf8')).name).toBe(name);
    await ws.mount();
    const entry = await findMount(ws.mnt);
    expect(entry).toMatchObject({ source: name, fstype: 'fuse.coffer' });
    const findmnt = spawnSync('findmnt', ['-n', '-o', 'SOURCE,FSTYPE', ws.mnt], { encoding: 'utf8', env: { ...process.env, LC_ALL: 'C.UTF-8' } });
    if (findmnt.status === 0) expect(findmnt.stdout.trim()).toMatch(/^My Photos, 2024 \\ ünïcode\s+fuse\.coffer$/);
    const live = JSON.parse((await cofferOk(['status', ws.mnt, '--json'])).stdout);
    expect(live).toMatchObject({ mounted: true, name });
    expect((await cofferOk(['status', ws.mnt])).stdout).toContain(`name:       ${name}\n`);
    const mounts = JSON.parse((await cofferOk(['ls-mounts', '--json'])).stdout) as { mountpoint: string; name: string }[];
    expect(mounts.find((m) => m.mountpoint === ws.mnt)?.name).toBe(name);
    expect((await cofferOk(['ls-mounts'])).stdout).toMatch(/^NAME +MOUNTPOINT/);
    fs.writeFileSync(ws.path('f'), 'data');
    await cofferOk(['sync', ws.mnt, '--wait']);
    await ws.unmount();
    expect(JSON.parse((await cofferOk(['status', ws.vault, '--json'])).stdout)).toMatchObject({ mounted: false, name });
    // The remote holds sealed objects and the public header only: no trace of the name.
    const needle = Buffer.from('My Photos');
    for (const file of filesUnder(remote)) expect(fs.readFileSync(file).includes(needle), file).toBe(false);
  });

  it("defaults to the vault directory's name, also for vaults made before names existed", async () => {
    const { ws } = await vault();
    const configPath = join(ws.vault, 'config.json');
    expect(JSON.parse(fs.readFileSync(configPath, 'utf8')).name).toBe('vault');
    const { name: _dropped, ...older } = JSON.parse(fs.readFileSync(configPath, 'utf8'));
    fs.writeFileSync(configPath, JSON.stringify(older, null, 2));
    expect(JSON.parse((await cofferOk(['status', ws.vault, '--json'])).stdout).name).toBe('vault');
    await ws.mount();
    expect((await findMount(ws.mnt))?.source).toBe('vault');
    await ws.unmount();
    // A hand-edited name that is not valid is reported with the way out.
    fs.writeFileSync(configPath, JSON.stringify({ ...older, name: ' ' }, null, 2));
    const bad = await coffer(['status', ws.vault]);
    expect(bad.code).toBe(1);
    expect(bad.stderr).toMatch(/"name" must be .*remove the key/);
  });

  it('refuses bad names as a bad command line, before asking for a passphrase', async () => {
    const ws = new Workspace();
    workspaces.push(ws);
    for (const bad of ['', '   ', 'tab\there', 'line\nbreak', 'x'.repeat(65)]) {
      const result = await coffer(['init', ws.vault, '--name', bad], { passphrase: null });
      expect(result.code, JSON.stringify(bad)).toBe(2);
      expect(result.stderr).toMatch(/volume name/);
    }
    expect(fs.existsSync(ws.vault)).toBe(false);
    // Clones get a name of their own: names are never on the remote.
    const { ws: source, remote } = await vault(['--name', 'Original']);
    await cofferOk(['clone', `file://${remote}`, join(source.dir, 'copy'), '--name', 'Copy']);
    expect(JSON.parse((await cofferOk(['status', join(source.dir, 'copy'), '--json'])).stdout).name).toBe('Copy');
  });
});

describe('coffer passwd', () => {
  it('changes the passphrase here and on the remote; the old one opens neither', async () => {
    const { ws, remote } = await vault();
    await ws.mount();
    fs.writeFileSync(ws.path('f'), 'kept');
    await cofferOk(['sync', ws.mnt, '--wait']);
    await ws.unmount();
    await cofferOk(['passwd', ws.vault], { env: { COFFER_NEW_PASSPHRASE: 'a brand new passphrase' } });
    expect((await coffer(['mount', ws.vault, ws.mnt])).stderr).toMatch(/wrong passphrase/);
    await cofferOk(['mount', ws.vault, ws.mnt], { passphrase: 'a brand new passphrase' });
    expect(fs.readFileSync(ws.path('f'), 'utf8')).toBe('kept');
    await cofferOk(['unmount', ws.mnt]);
    const old = await coffer(['clone', `file://${remote}`, join(ws.dir, 'old')]);
    expect(old.stderr).toMatch(/wrong passphrase/);
    await cofferOk(['clone', `file://${remote}`, join(ws.dir, 'new')], { passphrase: 'a brand new passphrase' });
    const missing = await coffer(['passwd', ws.vault], { passphrase: 'a brand new passphrase' });
    expect(missing.code).toBe(1);
    expect(missing.stderr).toMatch(/COFFER_NEW_PASSPHRASE/);
  });
});

describe('per-file sync state', () => {
  it('reads pending, synced and remote-only from user.coffer.state, and refuses to set it', async () => {
    const { ws, remote } = await vault(['--cache-size', '1M']);
    await ws.mount();
    fs.renameSync(remote, `${remote}.away`);
    fs.writeFileSync(remote, 'down');
    fs.writeFileSync(ws.path('small'), 'hello');
    // Not on the remote: waiting, or already failing against the unreachable remote.
    expect(['pending', 'uploading', 'error']).toContain(state(ws.path('small')));
    for (let i = 0; i < 50 && state(ws.path('small')) !== 'error'; i++) await new Promise((r) => setTimeout(r, 100));
    expect(state(ws.path('small'))).toBe('error');
    fs.rmSync(remote);
    fs.renameSync(`${remote}.away`, remote);
    await cofferOk(['sync', ws.mnt, '--wait']);
    expect(state(ws.path('small'))).toBe('synced');
    // A cache of 1 MiB cannot keep 3 MiB: after upload, the older chunks leave the disk.
    fs.writeFileSync(ws.path('big'), randomBytes(3 * 1024 * 1024));
    await cofferOk(['sync', ws.mnt, '--wait']);
    let seen = '';
    for (let i = 0; i < 50 && seen !== 'remote-only' && seen !== 'cached'; i++) {
      seen = state(ws.path('small'));
      await new Promise((r) => setTimeout(r, 100));
    }
    expect(seen).toBe('remote-only');
    expect(['cached', 'remote-only']).toContain(state(ws.path('big')));
    const setIt = spawnResult('python3', ['-c', 'import os,sys; os.setxattr(sys.argv[1], "user.coffer.state", b"synced")', ws.path('small')]);
    expect(setIt).toMatch(/Operation not permitted/);
    // Not listed, so copies do not try to carry it.
    expect(execFileSync('python3', ['-c', 'import os,sys; print(os.listxattr(sys.argv[1]))', ws.path('small')], { encoding: 'utf8' }).trim()).toBe('[]');
  });
});

function spawnResult(cmd: string, args: string[]): string {
  try {
    execFileSync(cmd, args, { stdio: 'pipe' });
    return '';
  } catch (err) {
    return String((err as { stderr?: Buffer }).stderr ?? err);
  }
}

describe('coffer ls-mounts, logs and status --watch', () => {
  it('lists live and stale mounts', async () => {
    const { ws } = await vault();
    await ws.mount();
    const live = JSON.parse((await cofferOk(['ls-mounts', '--json'])).stdout) as { mountpoint: string; state: string; vault: string }[];
    expect(live.find((m) => m.mountpoint === ws.mnt)).toMatchObject({ state: 'live', vault: ws.vault });
    process.kill(await ws.daemonPid(), 'SIGKILL');
    await new Promise((r) => setTimeout(r, 300));
    const stale = JSON.parse((await cofferOk(['ls-mounts', '--json'])).stdout) as { mountpoint: string; state: string }[];
    expect(stale.find((m) => m.mountpoint === ws.mnt)?.state).toBe('stale');
    expect((await cofferOk(['ls-mounts'])).stdout).toMatch(/stale.*\n.*coffer unmount/s);
    await cofferOk(['unmount', ws.mnt]);
  });

  it('shows the daemon log and refreshes status', async () => {
    const { ws } = await vault();
    await ws.mount();
    const logs = await cofferOk(['logs', ws.vault, '-n', '5']);
    expect(logs.stdout).toMatch(/^\S+Z INFO  \[\d+\] mounted /m);
    // The file itself holds JSON lines.
    expect(readLogEntries(ws.log).find((e) => /^mounted /.test(e.msg ?? ''))).toMatchObject({ level: 'info', mountpoint: ws.mnt, vault: ws.vault });
    const watcher = spawn(process.execPath, [CLI, 'status', ws.mnt, '--watch', '--json'], { env: { ...process.env, COFFER_PASSPHRASE: PASSPHRASE } });
    let out = '';
    watcher.stdout.on('data', (d) => (out += d));
    await new Promise((r) => setTimeout(r, 2600));
    watcher.kill('SIGINT');
    const lines = out.trim().split('\n').map((l) => JSON.parse(l));
    expect(lines.length).toBeGreaterThanOrEqual(2);
    expect(lines[0].mounted).toBe(true);
  });

  it('names the files a failing upload holds up, counts pending files, and shows the upload rate', async () => {
    const { ws } = await vault();
    const gate = join(ws.dir, 'remote-down');
    fs.writeFileSync(gate, '');
    await ws.mount(ws.mnt, { COFFER_FAULTS: `outage-file=${gate}` });
    fs.mkdirSync(ws.path('docs'));
    fs.writeFileSync(ws.path('docs/report.txt'), randomBytes(3000));
    await cofferOk(['sync', ws.mnt]);
    let status: { pendingFiles: number; uploadErrors: { paths: string[] }[] } | undefined;
    for (let tries = 0; tries < 100 && !status?.uploadErrors.length; tries++) {
      await new Promise((r) => setTimeout(r, 100));
      status = JSON.parse((await cofferOk(['status', ws.mnt, '--json'])).stdout);
    }
    expect(status!.pendingFiles).toBe(1);
    expect(status!.uploadErrors[0]!.paths).toEqual(['/docs/report.txt']);
    const text = (await cofferOk(['status', ws.mnt])).stdout;
    expect(text).toMatch(/not yet on the remote: 1 files, 1 chunks/);
    expect(text).toMatch(/failing upload: chunk [0-9a-f]+… of \/docs\/report\.txt after \d+ attempts/);

    // Once the remote is back, the upload goes through at a rate status can show.
    fs.rmSync(gate);
    fs.writeFileSync(ws.path('big'), randomBytes(8 * 1024 * 1024));
    await cofferOk(['sync', ws.mnt, '--wait']);
    await new Promise((r) => setTimeout(r, 1100));
    const after = JSON.parse((await cofferOk(['status', ws.mnt, '--json'])).stdout);
    expect(after).toMatchObject({ pendingFiles: 0, uploadErrors: [] });
    expect(after.uploadRate).toBeGreaterThan(0);
    expect(after.uploadEtaSeconds).toBeNull();
  });
});

describe('coffer logs', () => {
  const at = (second: number) => new Date(Date.UTC(2025, 0, 1, 0, 0, second)).toISOString();
  const entry = (n: number, extra: Record<string, unknown> = {}) => JSON.stringify({ level: 'info', time: at(n), pid: 7, ...extra, msg: `line ${n}` }) + '\n';

  async function until(what: string, check: () => boolean, ms = 10_000): Promise<void> {
    for (const started = Date.now(); !check(); await new Promise((r) => setTimeout(r, 50))) {
      if (Date.now() - started > ms) throw new Error(`timed out waiting for ${what}`);
    }
  }

  it('reads rotated files in order, and prints lines for people or the raw JSON', async () => {
    const { ws } = await vault();
    const dir = join(ws.vault, 'logs');
    fs.mkdirSync(dir, { recursive: true });
    fs.writeFileSync(join(dir, 'daemon.log.2'), entry(0) + entry(1) + entry(2));
    fs.writeFileSync(join(dir, 'daemon.log.1'), entry(3) + entry(4) + entry(5) + 'a crash printed this\n');
    fs.writeFileSync(join(dir, 'daemon.log'), entry(6) + entry(7, { level: 'error', op: 'read', path: '/a b', chunk: 'ab12', err: { type: 'Error', message: 'disk on fire', code: 'EIO' } }));

    const three = (await cofferOk(['logs', ws.vault, '-n', '3'])).stdout.split('\n').filter(Boolean);
    expect(three).toEqual([
      'a crash printed this',
      `${at(6)} INFO  [7] line 6`,
      `${at(7)} ERROR [7] line 7  op=read path="/a b" chunk=ab12 err="disk on fire (EIO)"`,
    ]);
    const all = (await cofferOk(['logs', ws.vault, '--lines', '100'])).stdout.split('\n').filter(Boolean);
    expect(all.map((l) => /line (\d)/.exec(l)?.[1] ?? l)).toEqual(['0', '1', '2', '3', '4', '5', 'a crash printed this', '6', '7']);
    const json = (await cofferOk(['logs', ws.vault, '-n', '5', '--json'])).stdout.split('\n').filter(Boolean).map((l) => JSON.parse(l));
    expect(json.map((e) => e.msg ?? e.unstructured)).toEqual(['line 4', 'line 5', 'a crash printed this', 'line 6', 'line 7']);
    expect(json[4]).toMatchObject({ level: 'error', chunk: 'ab12', err: { message: 'disk on fire' } });

    const bad = await coffer(['logs', ws.vault, '-n', '-1']);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/--lines must be a whole number/);
  });

  it('follows the log across a rotation, missing nothing the daemon finished in the old file', async () => {
    const { ws } = await vault();
    const log = ws.log;
    fs.mkdirSync(join(ws.vault, 'logs'), { recursive: true });
    fs.writeFileSync(log, entry(0));
    const child = spawn(process.execPath, [CLI, 'logs', ws.vault, '-f', '-n', '1']);
    let out = '';
    child.stdout.on('data', (d) => (out += d));
    try {
      await until('the first line', () => out.includes('line 0'));
      fs.appendFileSync(log, entry(1));
      fs.renameSync(log, `${log}.1`);
      fs.appendFileSync(`${log}.1`, entry(2)); // written before the daemon reopened its file
      fs.writeFileSync(log, entry(3));
      await until('the lines around the rotation', () => out.includes('line 2') && out.includes('line 3'));
      fs.appendFileSync(log, entry(4));
      await until('a line in the new file', () => out.includes('line 4'));
    } finally {
      child.kill('SIGINT');
    }
    expect(out.split('\n').filter(Boolean).map((l) => /line (\d)/.exec(l)?.[1])).toEqual(['0', '1', '2', '3', '4']);
  });

  it('takes the level from the config and --log-level, and keeps a real daemon\'s log bounded', async () => {
    const { ws } = await vault();
    ws.editConfig({ logLevel: 'warn', logMaxSize: '4K' });
    await ws.mount();
    fs.writeFileSync(ws.path('quiet'), 'x');
    await cofferOk(['sync', ws.mnt, '--wait']);
    await ws.unmount();
    expect(readLogEntries(ws.log).filter((e) => e.level === 'info' || e.level === 'debug')).toEqual([]);

    await ws.mount(ws.mnt, undefined, ['--log-level', 'debug']);
    const follower = spawn(process.execPath, [CLI, 'logs', ws.vault, '-f', '-n', '1', '--json']);
    let followed = '';
    follower.stdout.on('data', (d) => (followed += d));
    const written = 40;
    try {
      await until('the follower to start', () => followed.includes('\n'));
      for (let batch = 0; batch < 2; batch++) {
        for (let i = 0; i < written / 2; i++) fs.writeFileSync(ws.path(`f${batch}-${i}`), randomBytes(5000));
        await cofferOk(['sync', ws.mnt, '--wait']);
      }
      const uploads = (lines: string) =>
        new Set(
          lines
            .split('\n')
            .filter(Boolean)
            .map((l) => JSON.parse(l))
            .filter((e) => e.msg === 'uploaded chunk')
            .map((e) => e.chunk),
        );
      // Each "uploaded chunk" line names its chunk: one per file.
      const shown = (await cofferOk(['logs', ws.vault, '-n', '100000', '--json'])).stdout;
      expect(uploads(shown).size).toBe(written);
      const times = shown.split('\n').filter(Boolean).map((l) => JSON.parse(l).time as string);
      expect([...times].sort()).toEqual(times);
      await until('the follower to see every upload', () => uploads(followed).size === written);
    } finally {
      follower.kill('SIGINT');
    }
    await ws.unmount(); // no rotation under way
    // Rotated at 4 KiB (plus at most a write batch and what was logged while renaming), three old files kept.
    const files = fs.readdirSync(join(ws.vault, 'logs')).sort();
    expect(files).toContain('daemon.log.1');
    expect(files.filter((f) => /^daemon\.log\.\d+$/.test(f)).length).toBeLessThanOrEqual(3);
    for (const f of files.filter((f) => f.startsWith('daemon.log.'))) expect(fs.statSync(join(ws.vault, 'logs', f)).size).toBeLessThan(4096 + 16 * 1024 + 4096);
  });

  it('refuses a config with a bad log level, size or limit, naming the file and the key', async () => {
    const { ws } = await vault();
    ws.editConfig({ logLevel: 'loud' });
    const level = await coffer(['mount', ws.vault, ws.mnt]);
    expect(level.code).toBe(1);
    expect(level.stderr).toContain(`${ws.configPath}: logLevel must be one of debug, info, warn, error, not "loud"`);
    ws.editConfig({ logLevel: 'info', logMaxSize: 'big' });
    const size = await coffer(['mount', ws.vault, ws.mnt]);
    expect(size.code).toBe(1);
    expect(size.stderr).toMatch(/logMaxSize must be a size such as 10M or a number of bytes, not "big"/);
    ws.editConfig({ logMaxSize: '1M', uploadLimit: 'fast' });
    const limit = await coffer(['mount', ws.vault, ws.mnt]);
    expect(limit.code).toBe(1);
    expect(limit.stderr).toMatch(/uploadLimit must be a size such as 10M .* per second \(0 for no limit\), not "fast"/);
    const flag = await coffer(['mount', ws.vault, ws.mnt, '--log-level', 'loud']);
    expect(flag.code).toBe(2);
    expect(flag.stderr).toMatch(/log-level/);
  });
});

/** stdout holds exactly one line, one JSON object; the human text stays off it. */
function oneJson(stdout: string): Record<string, unknown> {
  const lines = stdout.split('\n');
  expect(lines.length, stdout).toBe(2);
  expect(lines[1]).toBe('');
  const value = JSON.parse(lines[0]!) as unknown;
  expect(typeof value === 'object' && value !== null && !Array.isArray(value), stdout).toBe(true);
  return value as Record<string, unknown>;
}

/**
 * Runs the CLI on a pseudo-terminal, as a person at a terminal would (stdin, stdout and
 * stderr are all the terminal); returns everything it printed and its exit code.
 */
function onTerminal(args: string[]): { code: number | null; output: string } {
  const run = `import os, pty, sys
pid, fd = pty.fork()
if pid == 0:
    os.execv(sys.argv[1], sys.argv[1:])
out = b''
while True:
    try:
        data = os.read(fd, 4096)
    except OSError:
        break
    if not data:
        break
    out += data
sys.stdout.write(out.decode())
sys.exit(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))`;
  const result = spawnSync('python3', ['-c', run, process.execPath, CLI, ...args], {
    encoding: 'utf8',
    timeout: 60_000,
    env: { ...process.env, COFFER_PASSPHRASE: PASSPHRASE },
  });
  return { code: result.status, output: result.stdout.replace(/\r\n/g, '\n') };
}

describe('--json on the commands that report', () => {
  it('init, mount, unmount (also pending, waited and stale), clone, rebuild-index and passwd each print one JSON object', async () => {
    const ws = new Workspace();
    workspaces.push(ws);
    const remote = join(ws.dir, 'remote');
    const init = await cofferOk(['init', ws.vault, '--remote', `file://${remote}`, '--name', 'Json', '--cache-size', '64M', '--json']);
    expect(oneJson(init.stdout)).toMatchObject({ vault: ws.vault, name: 'Json', remote: `file://${remote}`, cacheSizeBytes: 64 * 1024 * 1024 });
    expect(init.stderr).not.toMatch(/Created vault/);

    // A mount, and an unmount that waits for the upload: nothing is left pending.
    const mounted = oneJson((await ws.mount(ws.mnt, undefined, ['--json'])).stdout);
    expect(mounted).toMatchObject({ vault: ws.vault, mountpoint: ws.mnt, name: 'Json', foreground: false, staleCleaned: false, pendingChunks: 0 });
    expect(mounted.pid).toBe(await ws.daemonPid());
    fs.writeFileSync(ws.path('kept'), randomBytes(200_000));
    const synced = oneJson((await ws.unmount(ws.mnt, ['--wait-sync', '--json'])).stdout);
    expect(synced).toMatchObject({ mountpoint: ws.mnt, vault: ws.vault, unmounted: true, staleCleaned: false, waited: true, syncComplete: true, pendingChunks: 0, pendingBytes: 0, unpublished: false });

    const copy = join(ws.dir, 'copy');
    const cloned = oneJson((await cofferOk(['clone', `file://${remote}`, copy, '--name', 'Copy', '--json'])).stdout);
    expect(cloned).toMatchObject({ vault: copy, remote: `file://${remote}`, name: 'Copy', files: 1, bytes: 200_000 });
    expect(cloned.entries).toBeGreaterThanOrEqual(1);
    expect(cloned.devices).toBe(1);

    // The remote refuses every upload: the unmount reports what stays queued, and even on a
    // terminal --json neither asks nor waits.
    await ws.mount(ws.mnt, { COFFER_FAULTS: 'fail=1,ops=put' }, ['--json']);
    fs.writeFileSync(ws.path('queued'), randomBytes(300_000));
    const terminal = onTerminal(['unmount', ws.mnt, '--json']);
    expect(terminal.code, terminal.output).toBe(0);
    expect(terminal.output).not.toMatch(/Wait for the upload|Not on the remote yet/);
    const queued = oneJson(terminal.output);
    expect(queued).toMatchObject({ mountpoint: ws.mnt, unmounted: true, waited: false, syncComplete: null, pendingFiles: 1, unpublished: true });
    expect(queued.pendingChunks).toBeGreaterThan(0);
    expect(queued.pendingBytes).toBeGreaterThanOrEqual(300_000);

    // Rebuilt from the remote, which never got "queued": its chunks go aside.
    const rebuilt = oneJson((await cofferOk(['rebuild-index', ws.vault, '--json'])).stdout);
    expect(rebuilt).toMatchObject({ vault: ws.vault, files: 1, bytes: 200_000, chunksKeptAsideDir: join(ws.vault, 'lost+found', 'chunks') });
    expect(rebuilt.chunksKeptAside).toBeGreaterThan(0);
    expect((rebuilt.setAside as string[]).some((f) => f.includes('.damaged-'))).toBe(true);

    // A daemon killed under its mount: unmount cleans the stale mount and says so.
    const again = oneJson((await ws.mount(ws.mnt, undefined, ['--json'])).stdout);
    process.kill(again.pid as number, 'SIGKILL');
    await new Promise((r) => setTimeout(r, 300));
    expect(oneJson((await ws.unmount(ws.mnt, ['--json'])).stdout)).toEqual({ mountpoint: ws.mnt, vault: ws.vault, unmounted: true, staleCleaned: true });

    const passwd = await cofferOk(['passwd', ws.vault, '--json'], { env: { COFFER_NEW_PASSPHRASE: 'another passphrase' } });
    expect(oneJson(passwd.stdout)).toMatchObject({ vault: ws.vault, changed: true, remoteHeaderUpdated: true });
    expect(passwd.stderr).not.toMatch(/Changed the passphrase/);
    // Errors stay on stderr with their exit code; stdout stays empty.
    const nothing = await coffer(['unmount', ws.mnt, '--json']);
    expect(nothing).toMatchObject({ code: 1, stdout: '' });
    expect(nothing.stderr).toMatch(/nothing is mounted/);
  });
});

describe('help and completion', () => {
  it('gives every command help with an example, and prints a completion script', async () => {
    const commands = ['init', 'mount', 'unmount', 'status', 'sync', 'clone', 'devices', 'upgrade', 'fsck', 'rebuild-index', 'passwd', 'ls-mounts', 'logs', 'service', 'service install', 'service uninstall'];
    for (const command of commands) {
      const help = await cofferOk([...command.split(' '), '--help']);
      expect(help.stdout, command).toMatch(/Examples:/);
    }
    const mount = (await cofferOk(['mount', '--help'])).stdout;
    for (const flag of ['--log-level', '--upload-limit', '--download-limit', '--cache-size', '--foreground']) expect(mount, flag).toContain(flag);
    const logs = (await cofferOk(['logs', '--help'])).stdout;
    for (const flag of ['--json', '--lines', '--follow']) expect(logs, flag).toContain(flag);
    const completion = await cofferOk(['completion']);
    expect(completion.stdout).toMatch(/complete -o/);
  });

  it('offers --passphrase-file only on the commands that unlock a vault, and refuses it on the server commands', async () => {
    for (const command of ['init', 'mount', 'clone', 'upgrade', 'fsck', 'rebuild-index', 'passwd', 'service install']) {
      expect((await cofferOk([...command.split(' '), '--help'])).stdout, command).toContain('--passphrase-file');
    }
    for (const command of ['serve', 'serve account', 'serve account add', 'serve account list', 'ls-mounts', 'logs', 'service uninstall']) {
      expect((await cofferOk([...command.split(' '), '--help'])).stdout, command).not.toMatch(/passphrase/i);
    }
    const dir = fs.mkdtempSync(join(tmpdir(), 'coffer-serve-flags-'));
    try {
      const data = join(dir, 'data');
      fs.mkdirSync(data);
      for (const args of [['serve', '--listen', '127.0.0.1:0', '--data', data], ['serve', 'account', 'add', 'alice', '--data', data]]) {
        const refused = await coffer([...args, '--passphrase-file', join(dir, 'passphrase')], { timeoutMs: 15_000 });
        expect([args[1], refused.code, refused.stderr]).toEqual([args[1], 2, expect.stringMatching(/^coffer: Unknown argument.*passphrase-file/)]);
      }
      expect(fs.readdirSync(data)).toEqual([]);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
