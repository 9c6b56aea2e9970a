/**
 * Stopping with uploads pending. The daemon, on SIGTERM, unmounts, uploads for at most its
 * drain bound (`shutdownDrainMs`) and exits, leaving the rest queued; `coffer unmount` says
 * what is not uploaded yet, waits for it with --wait-sync (bounded by --timeout), and on a
 * terminal offers to wait. Whatever happens, nothing written is lost: after a remount with a
 * working remote everything uploads, and a clone of the remote reads it back byte for byte.
 *
 * The remote is slowed down or cut off with COFFER_FAULTS (src/remote/faulty-backend.ts).
 */
import { spawn, spawnSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { CLI, coffer, cofferOk, isMounted, PASSPHRASE, Workspace } from './helpers/drive.js';

const MiB = 1024 * 1024;
/** What shutting down may take besides the drain: committing, unmounting, closing the index. */
const SHUTDOWN_SLACK_MS = 5000;

const workspaces: Workspace[] = [];
afterEach(async () => {
  while (workspaces.length > 0) await workspaces.pop()!.cleanup();
});

const sha = (data: Buffer) => createHash('sha256').update(data).digest('hex');
const NO_FAULTS = { COFFER_FAULTS: '' };

interface Drive {
  ws: Workspace;
  remote: string;
  files: Map<string, string>;
}

async function drive(config: Record<string, unknown>): Promise<Drive> {
  const ws = new Workspace('coffer-shutdown-');
  workspaces.push(ws);
  const remote = join(ws.dir, 'remote');
  await cofferOk(['init', ws.vault, '--remote', `file://${remote}`], { env: NO_FAULTS });
  const configPath = join(ws.vault, 'config.json');
  fs.writeFileSync(configPath, JSON.stringify({ ...JSON.parse(fs.readFileSync(configPath, 'utf8')), ...config }, null, 2));
  return { ws, remote, files: new Map() };
}

/** Writes a file through the mount (this process does not serve it) and remembers its hash. */
function write(d: Drive, name: string, size: number): void {
  const data = randomBytes(size);
  fs.mkdirSync(join(d.ws.mnt, name, '..'), { recursive: true });
  fs.writeFileSync(d.ws.path(name), data);
  d.files.set(name, sha(data));
}

function expectFiles(root: string, files: Map<string, string>): void {
  for (const [name, hash] of files) expect(sha(fs.readFileSync(join(root, name))), name).toBe(hash);
}

/** Gone, or a zombie no one has reaped yet: either way it no longer runs. */
function exited(pid: number): boolean {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    return /^[ZX]/.test(stat.slice(stat.lastIndexOf(')') + 2));
  } catch {
    return true;
  }
}

/** Milliseconds from the signal until the daemon has exited. */
async function timeToExit(pid: number, timeoutMs = 60_000): Promise<number> {
  const started = Date.now();
  while (!exited(pid)) {
    if (Date.now() - started > timeoutMs) throw new Error(`daemon ${pid} still running ${timeoutMs} ms after the signal`);
    await new Promise((r) => setTimeout(r, 25));
  }
  return Date.now() - started;
}

async function offlineStatus(ws: Workspace): Promise<{ mounted: boolean; pendingChunks: number; pendingBytes: number }> {
  return JSON.parse((await cofferOk(['status', ws.vault, '--json'])).stdout);
}

/**
 * Remounts with a working remote and waits for the upload; then proves the remote holds
 * everything by cloning it into a fresh vault and reading every file back from there.
 */
async function expectEverythingUploads(d: Drive): Promise<void> {
  await d.ws.mount(d.ws.mnt, NO_FAULTS);
  await cofferOk(['sync', d.ws.mnt, '--wait'], { env: NO_FAULTS });
  const status = JSON.parse((await cofferOk(['status', d.ws.mnt, '--json'])).stdout);
  expect(status.pendingChunks).toBe(0);
  expectFiles(d.ws.mnt, d.files);
  await d.ws.unmount();
  const copy = new Workspace('coffer-shutdown-clone-');
  workspaces.push(copy);
  await cofferOk(['clone', `file://${d.remote}`, copy.vault], { env: NO_FAULTS });
  await copy.mount(copy.mnt, NO_FAULTS);
  expectFiles(copy.mnt, d.files);
  await copy.unmount();
}

function logLines(ws: Workspace): string[] {
  return fs.readFileSync(ws.log, 'utf8').split('\n');
}

describe('the daemon on SIGTERM', () => {
  it('uploads what it can within its drain bound over a slow remote, exits, and keeps the rest queued', async () => {
    const DRAIN_MS = 3000;
    const d = await drive({ shutdownDrainMs: DRAIN_MS, uploadConcurrency: 2 });
    // Each upload takes 1.5 s: far more is written than can go up in the drain time.
    await d.ws.mount(d.ws.mnt, { COFFER_FAULTS: 'latency=1500,ops=put' });
    write(d, 'big', 20 * MiB + 12345);
    write(d, 'docs/small.txt', 700);
    const pid = await d.ws.daemonPid();
    process.kill(pid, 'SIGTERM');
    const ms = await timeToExit(pid);
    expect(ms).toBeLessThan(DRAIN_MS + SHUTDOWN_SLACK_MS);
    expect(isMounted(d.ws.mnt)).toBe(false);

    // It did upload during the drain, and what it could not upload is still queued.
    const log = logLines(d.ws);
    const before = Number(/uploading what is pending for at most 3 s before exiting: (\d+) chunks/.exec(log.join('\n'))?.[1]);
    const after = await offlineStatus(d.ws);
    expect(after.mounted).toBe(false);
    expect(after.pendingChunks).toBeGreaterThan(0);
    expect(after.pendingChunks).toBeLessThan(before);
    expect(log.some((l) => /stay queued and upload at the next mount/.test(l))).toBe(true);

    await expectEverythingUploads(d);
  });

  it('keeps to its bound when the remote is unreachable, and a second signal ends the wait at once', async () => {
    const d = await drive({ shutdownDrainMs: 2000 });
    const gate = join(d.ws.dir, 'remote-down');
    fs.writeFileSync(gate, '');
    await d.ws.mount(d.ws.mnt, { COFFER_FAULTS: `outage-file=${gate}` });
    write(d, 'a', 3 * MiB);
    write(d, 'b/c', 5000);
    let pid = await d.ws.daemonPid();
    process.kill(pid, 'SIGTERM');
    expect(await timeToExit(pid)).toBeLessThan(2000 + SHUTDOWN_SLACK_MS);
    expect(isMounted(d.ws.mnt)).toBe(false);
    expect((await offlineStatus(d.ws)).pendingChunks).toBe(4);

    // A long drain bound; the second SIGTERM says: stop waiting now.
    const configPath = join(d.ws.vault, 'config.json');
    fs.writeFileSync(configPath, JSON.stringify({ ...JSON.parse(fs.readFileSync(configPath, 'utf8')), shutdownDrainMs: 120_000 }));
    await d.ws.mount(d.ws.mnt, { COFFER_FAULTS: `outage-file=${gate}` });
    write(d, 'd', 2 * MiB);
    pid = await d.ws.daemonPid();
    process.kill(pid, 'SIGTERM');
    await new Promise((r) => setTimeout(r, 1500));
    expect(exited(pid)).toBe(false);
    expect(isMounted(d.ws.mnt)).toBe(false);
    const stopping = JSON.parse((await cofferOk(['status', d.ws.vault, '--json'])).stdout);
    expect(stopping).toMatchObject({ mounted: true, stopping: true });
    expect((await cofferOk(['status', d.ws.vault])).stdout).toMatch(/mounted: +no longer at .* uploading what it can before it exits/);
    const early = await coffer(['mount', d.ws.vault, d.ws.mnt], { env: NO_FAULTS });
    expect(early.code).toBe(1);
    expect(early.stderr).toMatch(/still stopping: .* try again in a moment/);
    process.kill(pid, 'SIGTERM');
    expect(await timeToExit(pid)).toBeLessThan(SHUTDOWN_SLACK_MS);
    expect((await offlineStatus(d.ws)).pendingChunks).toBe(6);

    fs.rmSync(gate);
    await expectEverythingUploads(d);
  });
});

describe('coffer unmount with uploads pending', () => {
  it('says what is not uploaded yet, and --wait-sync --timeout waits only that long', async () => {
    const d = await drive({});
    const gate = join(d.ws.dir, 'remote-down');
    fs.writeFileSync(gate, '');
    const faults = { COFFER_FAULTS: `outage-file=${gate}` };
    await d.ws.mount(d.ws.mnt, faults);
    write(d, 'one', 1.5 * MiB);
    write(d, 'two', 100);
    const plain = await coffer(['unmount', d.ws.mnt]);
    expect(plain.code).toBe(0);
    expect(plain.stderr).toMatch(/Not on the remote yet: 2 files \([\d.]+ MiB in 3 chunks\)\. This stays queued in .* and uploads at the next mount/);
    expect(isMounted(d.ws.mnt)).toBe(false);

    await d.ws.mount(d.ws.mnt, faults);
    write(d, 'three', 10);
    const started = Date.now();
    const bounded = await coffer(['unmount', d.ws.mnt, '--wait-sync', '--timeout', '1.5']);
    // Unmounted, but not everything is up: exit 1, saying why and what is still pending.
    expect(bounded.code).toBe(1);
    expect(Date.now() - started).toBeLessThan(1500 + SHUTDOWN_SLACK_MS);
    expect(bounded.stderr).toMatch(/Not synced: stopped waiting after 1.5 s \(--timeout\)/);
    expect(bounded.stderr).toMatch(/Not on the remote yet: 3 files/);
    expect(isMounted(d.ws.mnt)).toBe(false);

    for (const bad of ['-1', 'soon']) {
      const result = await coffer(['unmount', d.ws.mnt, '--wait-sync', '--timeout', bad]);
      expect(result.code, bad).toBe(2);
      expect(result.stderr).toMatch(/--timeout takes a number of seconds/);
    }
    fs.rmSync(gate);
    await expectEverythingUploads(d);
  });

  it('on a terminal, offers to wait: no unmounts at once, yes waits for the upload', async () => {
    if (spawnSync('script', ['--version']).status !== 0) return; // util-linux `script` gives the command a terminal
    const d = await drive({});
    const gate = join(d.ws.dir, 'remote-down');
    fs.writeFileSync(gate, '');
    await d.ws.mount(d.ws.mnt, { COFFER_FAULTS: `outage-file=${gate}` });
    write(d, 'x', 2 * MiB);

    const no = await onTerminal(['unmount', d.ws.mnt], 'n');
    expect(no).toMatch(/Not on the remote yet: 1 file \([\d.]+ MiB in 2 chunks\)\. Unmounting now keeps this queued here/);
    expect(no).toMatch(/Wait for the upload before unmounting\? \[y\/N\]/);
    expect(no).toMatch(/Unmounted .*\n.*This stays queued/);
    expect(isMounted(d.ws.mnt)).toBe(false);

    await d.ws.mount(d.ws.mnt, { COFFER_FAULTS: `outage-file=${gate}` });
    write(d, 'y', 1000);
    // The remote comes back while the command waits.
    setTimeout(() => fs.rmSync(gate), 1500);
    const yes = await onTerminal(['unmount', d.ws.mnt], 'y');
    expect(yes).toMatch(/Synced: the remote holds everything/);
    expect(yes).toMatch(/Unmounted /);
    expect(yes).not.toMatch(/This stays queued/);
    expect((await offlineStatus(d.ws)).pendingChunks).toBe(0);
    await expectEverythingUploads(d);
  });
});

/** Runs the CLI with a terminal (util-linux `script`), answers the prompt, returns what it showed. */
function onTerminal(args: string[], answer: string): Promise<string> {
  const command = [process.execPath, CLI, ...args].map((a) => `'${a.replace(/'/g, `'\\''`)}'`).join(' ');
  const child = spawn('script', ['-qec', command, '/dev/null'], { env: { ...process.env, COFFER_PASSPHRASE: PASSPHRASE }, stdio: ['pipe', 'pipe', 'pipe'] });
  let output = '';
  let answered = false;
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`coffer ${args.join(' ')} on a terminal did not finish; it showed:\n${output}`));
    }, 60_000);
    const onData = (data: Buffer) => {
      output += data.toString('utf8');
      if (!answered && /\[y\/N\]/.test(output)) {
        answered = true;
        child.stdin.write(`${answer}\r`);
      }
    };
    child.stdout.on('data', onData);
    child.stderr.on('data', onData);
    child.on('exit', (code) => {
      clearTimeout(timer);
      // Terminal output: carriage returns and cursor moves around plain lines.
      const text = output.replace(/\x1b\[[0-9;]*[A-Za-z]/g, '').replace(/\r\n?/g, '\n');
      if (code !== 0) reject(new Error(`coffer ${args.join(' ')} exited ${code}:\n${text}`));
      else resolve(text);
    });
  });
}
