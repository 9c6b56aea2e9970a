import { describe, expect, it } from 'vitest';
import { OpStats } from '../src/fs/op-stats.js';

describe('OpStats', () => {
  it('counts answers and failures and places percentiles within a power of two', () => {
    const stats = new OpStats();
    for (let i = 0; i < 98; i++) stats.record('read', 100, false);
    stats.record('read', 5000, true);
    stats.record('read', 70_000, false);
    stats.record('getattr', 3, false);
    const { read, getattr } = stats.snapshot();
    expect(read).toMatchObject({ count: 100, errors: 1, maxUs: 70_000 });
    expect(read.meanUs).toBe(Math.round((98 * 100 + 5000 + 70_000) / 100));
    expect(read.p50Us).toBeGreaterThanOrEqual(100);
    expect(read.p50Us).toBeLessThan(200);
    expect(read.p90Us).toBe(read.p50Us);
    expect(read.p99Us).toBeGreaterThanOrEqual(5000);
    expect(read.p99Us).toBeLessThan(10_000);
    expect(getattr).toMatchObject({ count: 1, errors: 0, p50Us: 3, maxUs: 3 });
  });
});
