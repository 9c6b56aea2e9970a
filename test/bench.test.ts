/**
 * The benchmark suite as a smoke test: `scripts/bench.mjs --smoke --json` must run every
 * installed target through every workload and leave nothing mounted. It checks that the suite
 * works, not how fast anything is.
 */
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';

const BENCH = fileURLToPath(new URL('../scripts/bench.mjs', import.meta.url));
const WORKLOADS = ['seq-write', 'seq-read', 'rand-read', 'rand-write', 'create', 'stat', 'delete', 'untar', 'reread', 'ls-l'];
const ALWAYS_THERE = ['plain', 'ceiling', 'coffer'];
const PEERS = ['gocryptfs', 'cryfs', 'rclone'];

function runBench(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string; seconds: number }> {
  return new Promise((resolve, reject) => {
    const started = Date.now();
    const child = spawn(process.execPath, [BENCH, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr, seconds: (Date.now() - started) / 1000 }));
  });
}

function mountsUnder(dir: string): string[] {
  return readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .map((line) => line.split(' ')[4]?.replace(/\\([0-7]{3})/g, (_, oct: string) => String.fromCharCode(parseInt(oct, 8))))
    .filter((mp): mp is string => !!mp && (mp === dir || mp.startsWith(`${dir}/`)));
}

/** Whether a process has ended: gone, or a zombie (ended; reaping it is its parent's business). */
function ended(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch {
    return true;
  }
  try {
    return /^State:\s+Z/m.test(readFileSync(`/proc/${pid}/status`, 'utf8'));
  } catch {
    return true;
  }
}

const onPath = (cmd: string) => spawnSync('sh', ['-c', 'command -v "$1"', 'sh', cmd]).status === 0;

const parent = mkdtempSync(join(tmpdir(), 'coffer-bench-test-'));
afterAll(() => {
  // Only if the bench left nothing mounted in it: never recurse into a live mount.
  if (mountsUnder(parent).length === 0) rmSync(parent, { recursive: true, force: true });
});

describe('the benchmark suite', () => {
  it('explains itself and refuses unknown arguments', async () => {
    const help = await runBench(['--help']);
    expect(help.code).toBe(0);
    expect(help.stdout).toContain('--smoke');
    expect(help.stdout).toContain('apt-get install gocryptfs cryfs rclone');
    const bad = await runBench(['--targets', 'plain,nonsense']);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain('unknown: nonsense');
  });

  it('runs every installed target through every workload and leaves nothing mounted', async () => {
    const r = await runBench(['--smoke', '--json', '--dir', parent]);
    console.log(`bench --smoke took ${r.seconds.toFixed(1)} s`);
    expect(r.code, r.stderr.slice(-4000)).toBe(0);
    const report = JSON.parse(r.stdout);

    expect(report.parameters.smoke).toBe(true);
    expect(report.host).toMatchObject({ cpus: expect.any(Number), kernel: expect.any(String), node: process.version });
    expect(typeof report.host.cachesDropped).toBe('boolean');

    const targets = report.targets as Record<string, { status: string; reason?: string; install?: string; servingPid: number | null }>;
    expect(Object.keys(targets)).toEqual([...ALWAYS_THERE, ...PEERS]);
    for (const name of ALWAYS_THERE) expect(targets[name].status, `${name}: ${targets[name].reason}`).toBe('ok');
    for (const name of PEERS) {
      // A peer runs exactly when it is installed; a skipped one says how to install it.
      if (onPath(name)) {
        expect(targets[name].status, `${name}: ${targets[name].reason}`).toBe('ok');
      } else {
        expect(targets[name].status).toBe('skipped');
        expect(targets[name].reason).toContain(`install with: apt-get install ${name}`);
      }
    }

    const ran = Object.keys(targets).filter((name) => targets[name].status === 'ok');
    expect(Object.keys(report.workloads)).toEqual(WORKLOADS);
    for (const id of WORKLOADS) {
      expect(report.workloads[id].failures, id).toEqual({});
      const results = report.workloads[id].results;
      expect(Object.keys(results).sort(), id).toEqual([...ran].sort());
      for (const name of ran) {
        const figure = results[name];
        const where = `${id} on ${name}`;
        expect(Number.isFinite(figure.median) && figure.median > 0, `${where}: ${figure.median}`).toBe(true);
        expect(figure.runs, where).toHaveLength(1);
        expect(figure.min, where).toBeGreaterThan(0);
        expect(Number.isFinite(figure.ratioToPlain) && figure.ratioToPlain > 0, where).toBe(true);
        expect(Number.isFinite(figure.ratioToCeiling) && figure.ratioToCeiling > 0, where).toBe(true);
        // Every target but the plain directory has a serving process, watched during the workload.
        if (name === 'plain') expect(figure.peakRssBytes, where).toBeNull();
        else expect(figure.peakRssBytes, where).toBeGreaterThan(1024 * 1024);
      }
    }

    expect(mountsUnder(parent)).toEqual([]);
    // The workdir is gone with everything in it; no serving process outlives the run.
    expect(readdirSync(parent)).toEqual([]);
    for (const name of ran) {
      const pid = targets[name].servingPid;
      if (pid) expect(ended(pid), `${name} pid ${pid}`).toBe(true);
    }
  }, 360_000);
});
