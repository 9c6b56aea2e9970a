/**
 * Drives the real `coffer` CLI (the compiled dist/) against temp vaults and mounts.
 * The daemon always runs in its own process; this process only touches the mount
 * from outside, as a user's programs would.
 */
import { execFile, spawnSync } from 'node:child_process';
import { closeSync, existsSync, mkdirSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';

export const ROOT = resolve(import.meta.dirname, '..', '..');
export const CLI = join(ROOT, 'dist', 'cli', 'main.js');
export const PASSPHRASE = 'correct horse battery staple';

export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

export function ensureBuilt(): void {
  if (!existsSync(CLI)) {
    const build = spawnSync('npx', ['tsc', '-p', 'tsconfig.json'], { cwd: ROOT, stdio: 'inherit' });
    if (build.status !== 0) throw new Error('build failed');
  }
}

export function coffer(args: string[], options: { env?: NodeJS.ProcessEnv; passphrase?: string | null; timeoutMs?: number } = {}): Promise<CliResult> {
  const env: NodeJS.ProcessEnv = { ...process.env, ...options.env };
  if (options.passphrase === null) delete env.COFFER_PASSPHRASE;
  else env.COFFER_PASSPHRASE = options.passphrase ?? PASSPHRASE;
  return new Promise((resolvePromise) => {
    const child = execFile(process.execPath, [CLI, ...args], { env, timeout: options.timeoutMs ?? 120_000, maxBuffer: 16 << 20 }, (err, stdout, stderr) => {
      const code = err ? (typeof (err as { code?: unknown }).code === 'number' ? ((err as { code: number }).code) : 1) : 0;
      resolvePromise({ code, stdout, stderr });
    });
    child.stdin?.end();
  });
}

export async function cofferOk(args: string[], options?: Parameters<typeof coffer>[1]): Promise<CliResult> {
  const result = await coffer(args, options);
  if (result.code !== 0) throw new Error(`coffer ${args.join(' ')} failed (${result.code}): ${result.stderr}`);
  return result;
}

/** One line of the daemon log: a JSON object, or `{ unstructured }` for anything else (what a crash printed). */
export interface LogEntry {
  level?: string;
  time?: string;
  msg?: string;
  pid?: number;
  unstructured?: string;
  [key: string]: unknown;
}

/** The daemon log's lines as objects, oldest first (rotated files are not read). */
export function readLogEntries(path: string): LogEntry[] {
  if (!existsSync(path)) return [];
  return readFileSync(path, 'utf8')
    .split('\n')
    .filter((line) => line !== '')
    .map((line) => {
      try {
        return JSON.parse(line) as LogEntry;
      } catch {
        return { unstructured: line };
      }
    });
}

export function isMounted(mountpoint: string): boolean {
  const lines = readFileSync('/proc/self/mountinfo', 'utf8').split('\n');
  return lines.some((line) => line.split(' ')[4] === resolve(mountpoint));
}

/** A temp workspace with a vault and a mountpoint; `cleanup` unmounts whatever is left. */
export class Workspace {
  readonly dir: string;
  readonly vault: string;
  readonly mnt: string;
  private readonly mounts = new Set<string>();

  constructor(name = 'coffer-test-') {
    this.dir = mkdtempSync(join(tmpdir(), name));
    this.vault = join(this.dir, 'vault');
    this.mnt = join(this.dir, 'mnt');
    mkdirSync(this.mnt);
  }

  path(...parts: string[]): string {
    return join(this.mnt, ...parts);
  }

  get log(): string {
    return join(this.vault, 'logs', 'daemon.log');
  }

  async init(extra: string[] = []): Promise<void> {
    await cofferOk(['init', this.vault, ...extra]);
  }

  /** `env` reaches the daemon too (e.g. COFFER_FAULTS); `extra` are more options (e.g. --json). */
  async mount(mnt = this.mnt, env?: NodeJS.ProcessEnv, extra: string[] = []): Promise<CliResult> {
    this.mounts.add(mnt);
    return cofferOk(['mount', this.vault, mnt, ...extra], { env });
  }

  get configPath(): string {
    return join(this.vault, 'config.json');
  }

  /** Changes the vault's config.json (the next mount reads it). */
  editConfig(change: Record<string, unknown>): void {
    const config = JSON.parse(readFileSync(this.configPath, 'utf8')) as Record<string, unknown>;
    writeFileSync(this.configPath, JSON.stringify({ ...config, ...change }, null, 2));
  }

  async unmount(mnt = this.mnt, extra: string[] = []): Promise<CliResult> {
    const result = await cofferOk(['unmount', mnt, ...extra]);
    this.mounts.delete(mnt);
    return result;
  }

  async remount(): Promise<void> {
    await this.unmount();
    await this.mount();
  }

  async daemonPid(): Promise<number> {
    const status = JSON.parse((await cofferOk(['status', this.vault, '--json'])).stdout) as { pid: number };
    return status.pid;
  }

  async cleanup(): Promise<void> {
    for (const mnt of this.mounts) {
      if (isMounted(mnt)) {
        const result = await coffer(['unmount', mnt]);
        if (result.code !== 0 || isMounted(mnt)) spawnSync('umount', ['-l', mnt]);
      }
    }
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/**
 * Writes all of `body` to a new file through the mount and closes it; `written` is what the
 * drive acknowledged. A write(2) the drive cuts short returns a count; the next one then reports
 * the error (e.g. ENOSPC), which comes back as `error`.
 */
export function writeAcknowledged(path: string, body: Buffer): { written: number; error?: string } {
  let written = 0;
  let fd: number | undefined;
  try {
    fd = openSync(path, 'w');
    while (written < body.length) written += writeSync(fd, body, written, body.length - written);
    const closing = fd;
    fd = undefined;
    closeSync(closing);
    return { written };
  } catch (err) {
    if (fd !== undefined) {
      try {
        closeSync(fd);
      } catch {
        // the write's error is the one reported
      }
    }
    return { written, error: (err as NodeJS.ErrnoException).code ?? String(err) };
  }
}

/** Resolves once `check` holds (asked every 100 ms); fails naming `what` after `timeoutMs`. */
export async function waitFor(what: string, check: () => boolean, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}
