/**
 * scripts/bench-server.mjs as a smoke test: `--smoke --json` must start a real coffer serve and
 * the baseline server, run every operation against both without a single error, report the
 * server's memory, and leave no server process behind. It checks that the benchmark works, not
 * how fast anything is.
 */
import { spawn } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const BENCH = fileURLToPath(new URL('../scripts/bench-server.mjs', import.meta.url));
const OPS = ['put', 'get', 'get-range', 'head', 'list'];

interface Run {
  requests: number;
  requestsPerSecond: number;
  mibPerSecondUp: number;
  mibPerSecondDown: number;
  ops: Record<string, { count: number; p50Ms: number; p90Ms: number; p99Ms: number; maxMs: number }>;
  errors: Record<string, number>;
  errorCount: number;
  rss: { startKiB: number; peakKiB: number; endKiB: number };
}

/** Pids of processes whose command line mentions `text` (this test's own children only matter). */
function processesMentioning(text: string): number[] {
  const found: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      if (readFileSync(`/proc/${entry}/cmdline`, 'utf8').includes(text)) found.push(Number(entry));
    } catch {
      // gone
    }
  }
  return found;
}

describe('scripts/bench-server.mjs', () => {
  it('runs a smoke benchmark with no errors and reports every operation and the server memory', async () => {
    const started = Date.now();
    const child = spawn(process.execPath, [BENCH, '--smoke', '--json'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    const timer = setTimeout(() => child.kill('SIGINT'), 60_000);
    const code = await new Promise<number | null>((r) => child.on('close', r));
    clearTimeout(timer);
    const seconds = (Date.now() - started) / 1000;
    expect({ code, stderr }).toMatchObject({ code: 0 });
    expect(seconds).toBeLessThan(30);
    const report = JSON.parse(stdout) as { clients: number; seconds: number; coffer: Run; baseline: Run; ratios: Record<string, unknown> };
    expect([report.clients, report.seconds]).toEqual([10, 5]);
    for (const run of [report.coffer, report.baseline]) {
      expect(run.errors).toEqual({});
      expect(run.errorCount).toBe(0);
      expect(run.requests).toBeGreaterThan(50);
      expect(run.mibPerSecondUp).toBeGreaterThan(0);
      expect(run.mibPerSecondDown).toBeGreaterThan(0);
      for (const op of OPS) {
        const stats = run.ops[op]!;
        expect([op, stats.count > 0]).toEqual([op, true]);
        expect(stats.p50Ms).toBeLessThanOrEqual(stats.p90Ms);
        expect(stats.p90Ms).toBeLessThanOrEqual(stats.p99Ms);
        expect(stats.p99Ms).toBeLessThanOrEqual(stats.maxMs);
      }
      expect(run.rss.peakKiB).toBeGreaterThan(10 * 1024);
      expect(run.rss.endKiB).toBeGreaterThan(0);
      expect(run.rss.peakKiB).toBeGreaterThanOrEqual(run.rss.endKiB);
    }
    expect(report.ratios.requestsPerSecond).toEqual(expect.any(Number));
    expect(processesMentioning('coffer-bench-server-')).toEqual([]);
  }, 90_000);
});
