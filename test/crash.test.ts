/**
 * Crash consistency as a contract: the daemon is killed with SIGKILL at random moments
 * while a writer works; every fsync it acknowledged must survive exactly, fsck must be
 * clean, and the remote must converge. `node scripts/crash-test.mjs --kills N` runs longer.
 */
import { describe, expect, it } from 'vitest';
// @ts-expect-error: a plain ES module script, shared with the command-line harness
import { crashHarness } from '../scripts/crash-test.mjs';
// @ts-expect-error: same
import { judge, readJournal, versionContent } from '../scripts/lib/crash-model.mjs';

const KILLS = Number(process.env.COFFER_CRASH_KILLS ?? 20);

describe('the crash harness', () => {
  it('judges exactly: acknowledged states must match, interrupted ones may be old or new', () => {
    const seed = 7;
    const v1 = { origin: 'a', base: 1, baseLength: 5000, version: 1, length: 5000, appends: [], overwrites: [] };
    const v2 = { ...v1, version: 2, length: 9000, appends: [{ version: 2, length: 4000 }] };
    const acked = readJournal([JSON.stringify({ op: 'begin', kind: 'save', name: 'a', next: v1 }), JSON.stringify({ op: 'ack', name: 'a', file: v1 })].join('\n'));
    const found = (content: Buffer | null) => new Map<string, Buffer | null>([['a', content], ['b', null], ['c', null], ['d', null], ['e', null]]);
    expect(judge(seed, found(versionContent(seed, v1)), acked).violations).toEqual([]);
    const damaged = Buffer.from(versionContent(seed, v1));
    damaged[100] ^= 1;
    expect(judge(seed, found(damaged), acked).violations).toHaveLength(1);
    expect(judge(seed, found(null), acked).violations).toHaveLength(1);
    // An append in flight: old, new, or new bytes/zeros past the old end are all allowed.
    const inflight = { acked: acked.acked, inflight: { op: 'begin', kind: 'append', name: 'a', next: v2 } };
    expect(judge(seed, found(versionContent(seed, v1)), inflight).violations).toEqual([]);
    expect(judge(seed, found(versionContent(seed, v2)), inflight).violations).toEqual([]);
    const half = Buffer.concat([versionContent(seed, v1), Buffer.alloc(2000)]);
    expect(judge(seed, found(half), inflight)).toMatchObject({ violations: [], mixed: ['a'] });
    const torn = Buffer.from(versionContent(seed, v2));
    torn[10] ^= 1; // inside the acknowledged prefix
    expect(judge(seed, found(torn), inflight).violations).toHaveLength(1);
  });

  it(`loses nothing an fsync acknowledged across ${KILLS} SIGKILLs of the daemon`, async () => {
    const result = await crashHarness({ kills: KILLS, log: (line: string) => console.log(line) });
    console.log(`crash harness: ${JSON.stringify({ ...result.stats, rounds: undefined })}`);
    expect(result.violations).toEqual([]);
    expect(result.stats.acknowledged).toBeGreaterThan(KILLS);
  }, 600_000);
});
