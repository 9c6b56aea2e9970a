/**
 * Differential POSIX test: random sequences of filesystem operations run against a Coffer mount
 * and a plain directory side by side; every outcome (errno or value) and the final trees must
 * match. fast-check generates the sequences and, on a failure, shrinks to a short one that is
 * printed ready to paste into test/differential-regressions.test.ts.
 *
 * Bounded for CI: a fixed seed and a run count that keeps this file around a minute and a half.
 * Longer runs, with a seed of your own:
 *
 *   node scripts/differential.mjs --runs 2000 [--seed N]
 *
 * which is this file with COFFER_DIFF_RUNS / COFFER_DIFF_SEED set (COFFER_DIFF_PATH replays one
 * failing case from the seed and path a failure prints).
 *
 * What is not generated, and why (comparison leniencies are listed in helpers/fs-model.ts):
 * - symlink targets never contain '..' or start with '/': both roots must resolve them inside
 *   themselves, or the two sides would see different worlds.
 * - no chown and no special files: ownership is the daemon's user by design, and device nodes
 *   need no more than the mode bits that chmod already covers.
 * - remount is kept to about 0.6 % of the random ops: each one costs an unmount and a mount with
 *   its passphrase unlock (2-4 s here), more than a hundred other ops.
 * - xattrs are only user.x / user.y with values up to 300 bytes: ext4 refuses values that do
 *   not fit its one block per inode (ENOSPC) and names outside the known namespaces (ENOTSUP),
 *   where Coffer takes up to 64 KiB and any name; neither is what this test is about.
 *
 * COFFER_DIFF_STRICT=1 generates and compares what known bugs break, to check a fix.
 */
import * as fs from 'node:fs';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { coffer, isMounted } from './helpers/drive.js';
import { formatLogLine, parseLogLine } from '../src/daemon/log-format.js';
import { FD_SLOTS, MiB, Mismatch, differentialSides, formatOps, runDifferential, type Op, type RunStats } from './helpers/fs-model.js';

const SEED = Number(process.env.COFFER_DIFF_SEED ?? 20_240_611);
const RUNS = Number(process.env.COFFER_DIFF_RUNS ?? 160);
const REPLAY_PATH = process.env.COFFER_DIFF_PATH;
/** Also exercise what known bugs break (see KNOWN BUG below and in fs-model.ts). */
const STRICT = process.env.COFFER_DIFF_STRICT === '1';
/**
 * Shrinking re-runs candidate sequences, remounts included, and can take far longer than the
 * search; past this budget (after the first failure) the smallest failure so far is reported.
 */
const SHRINK_BUDGET_MS = Number(process.env.COFFER_DIFF_SHRINK_MS ?? 5 * 60_000);

// ---- generation ----

/**
 * Paths from a pool of 20: a leaf (a, b, c for files, d, e for directories) at the root, in d,
 * in e or in d/e. Files and directories share the pool, so renames, links and creates land on
 * each other often, and a directory name sometimes turns up as a file and the reverse.
 */
const fileName = fc.constantFrom('a', 'b', 'c');
const dirName = fc.constantFrom('d', 'e');
const prefix = fc.oneof(
  { weight: 5, arbitrary: fc.constant('') },
  { weight: 3, arbitrary: fc.constant('d/') },
  { weight: 2, arbitrary: fc.constant('e/') },
  { weight: 1, arbitrary: fc.constant('d/e/') },
);
const filePath = fc
  .tuple(prefix, fc.oneof({ weight: 5, arbitrary: fileName }, { weight: 1, arbitrary: dirName }))
  .map(([pre, leaf]) => pre + leaf);
const dirPath = fc
  .tuple(prefix, fc.oneof({ weight: 5, arbitrary: dirName }, { weight: 1, arbitrary: fileName }))
  .map(([pre, leaf]) => pre + leaf);
const path = fc.oneof({ weight: 2, arbitrary: filePath }, { weight: 1, arbitrary: dirPath });
const listPath = fc.oneof({ weight: 1, arbitrary: fc.constant('.') }, { weight: 3, arbitrary: dirPath });
const symlinkTarget = fc.oneof(
  { weight: 4, arbitrary: path },
  { weight: 1, arbitrary: fc.constantFrom('.', 'nowhere', 'a/../b') },
);
/** Small offsets, and offsets on or within 4 KiB either side of a 1 MiB chunk boundary. */
const offset = fc.oneof(
  { weight: 6, arbitrary: fc.integer({ min: 0, max: 8192 }) },
  { weight: 3, arbitrary: fc.tuple(fc.integer({ min: 1, max: 3 }), fc.integer({ min: -4096, max: 4096 })).map(([k, d]) => k * MiB + d) },
  { weight: 1, arbitrary: fc.constantFrom(MiB, 2 * MiB, 3 * MiB) },
);
/** Mostly small, sometimes a few FUSE writes, rarely up to 3 MiB (several chunks). */
const length = fc.oneof(
  { weight: 8, arbitrary: fc.integer({ min: 0, max: 8192 }) },
  { weight: 2, arbitrary: fc.integer({ min: 8193, max: 300_000 }) },
  { weight: 1, arbitrary: fc.integer({ min: 300_001, max: 3 * MiB }) },
);
const size = fc.oneof({ weight: 1, arbitrary: offset }, { weight: 1, arbitrary: fc.constant(0) });
const seed = fc.integer({ min: 1, max: 999 });
/** Mostly slot 0, so descriptor ops usually find the file an earlier open left there. */
const fd = fc.oneof({ weight: 4, arbitrary: fc.constant(0) }, { weight: 1, arbitrary: fc.integer({ min: 1, max: FD_SLOTS - 1 }) });
const mode = fc.constantFrom(0o644, 0o600, 0o755, 0o700, 0o444, 0o000, 0o4755, 0o1777, 0o2750);
/**
 * Explicit times are kept more than a day from now so they can be told from "now" (see
 * fs-model.ts), and within what ext4 stores: 1901-12-14 to 2446.
 * Times before 1970 are included, but not -1 ms: the native layer uses that value to say
 * "leave this time as it is" (UTIME_OMIT).
 */
const time = fc.oneof(
  { weight: 8, arbitrary: fc.integer({ min: 0, max: Date.UTC(2020, 0, 1) }) },
  { weight: 1, arbitrary: fc.integer({ min: Date.UTC(2040, 0, 1), max: Date.UTC(2400, 0, 1) }) },
  { weight: 1, arbitrary: fc.integer({ min: Date.UTC(1901, 11, 14), max: -2 }) },
);
const xattrName = fc.constantFrom('user.x', 'user.y');
const xattrValue = fc.constantFrom('', '1', 'blue', 'x'.repeat(300));

const op: fc.Arbitrary<Op> = fc.oneof(
  { weight: 12, arbitrary: fc.record({ op: fc.constant('create'), path: filePath, len: length, seed }) },
  { weight: 12, arbitrary: fc.record({ op: fc.constant('write'), path: filePath, offset, len: length, seed }) },
  { weight: 4, arbitrary: fc.record({ op: fc.constant('append'), path: filePath, len: length, seed }) },
  { weight: 10, arbitrary: fc.record({ op: fc.constant('read'), path: filePath, offset, len: length }) },
  { weight: 8, arbitrary: fc.record({ op: fc.constant('truncate'), path: filePath, size }) },
  { weight: 10, arbitrary: fc.record({ op: fc.constant('rename'), from: path, to: path }) },
  { weight: 6, arbitrary: fc.record({ op: fc.constant('link'), from: filePath, to: path }) },
  { weight: 6, arbitrary: fc.record({ op: fc.constant('unlink'), path }) },
  { weight: 14, arbitrary: fc.record({ op: fc.constant('mkdir'), path: dirPath }) },
  { weight: 4, arbitrary: fc.record({ op: fc.constant('rmdir'), path: dirPath }) },
  { weight: 4, arbitrary: fc.record({ op: fc.constant('symlink'), target: symlinkTarget, path: filePath }) },
  { weight: 2, arbitrary: fc.record({ op: fc.constant('readlink'), path }) },
  { weight: 4, arbitrary: fc.record({ op: fc.constant('chmod'), path, mode }) },
  { weight: 4, arbitrary: fc.record({ op: fc.constant('utimes'), path, atimeMs: time, mtimeMs: time }) },
  { weight: 2, arbitrary: fc.record({ op: fc.constant('setxattr'), path, name: xattrName, value: xattrValue }) },
  { weight: 2, arbitrary: fc.record({ op: fc.constant('getxattr'), path, name: xattrName }) },
  { weight: 2, arbitrary: fc.record({ op: fc.constant('removexattr'), path, name: xattrName }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant('listxattr'), path }) },
  { weight: 2, arbitrary: fc.record({ op: fc.constant('fsync'), path: filePath }) },
  { weight: 8, arbitrary: fc.record({ op: fc.constant('stat'), path }) },
  { weight: 4, arbitrary: fc.record({ op: fc.constant('readdir'), path: listPath }) },
  { weight: 12, arbitrary: fc.record({ op: fc.constant('open'), fd, path: filePath }) },
  { weight: 6, arbitrary: fc.record({ op: fc.constant('fdwrite'), fd, offset, len: length, seed }) },
  { weight: 4, arbitrary: fc.record({ op: fc.constant('fdread'), fd, offset, len: length }) },
  { weight: 2, arbitrary: fc.record({ op: fc.constant('ftruncate'), fd, size }) },
  { weight: 2, arbitrary: fc.record({ op: fc.constant('close'), fd }) },
  { weight: 1, arbitrary: fc.constant({ op: 'remount' as const }) },
) as fc.Arbitrary<Op>;

/**
 * Blind ops on an empty tree mostly fail with ENOENT, so each sequence starts from a small
 * random tree built by ordinary ops: any subset of these files (each of a random length) and
 * directories, with the directories the chosen files need, and maybe one file held open.
 * Shrinking drops what a failure does not need.
 */
const PRELUDE_DIRS = ['d', 'e', 'd/e'];
/** Seven files a sequence: multi-chunk ones rarer than in `length`, or they dominate the run time. */
const preludeLength = fc.oneof(
  { weight: 16, arbitrary: fc.integer({ min: 0, max: 8192 }) },
  { weight: 4, arbitrary: fc.integer({ min: 8193, max: 300_000 }) },
  { weight: 1, arbitrary: fc.integer({ min: 300_001, max: 3 * MiB }) },
);
const PRELUDE_FILES = ['a', 'b', 'c', 'd/a', 'd/b', 'e/c', 'd/e/a'];
const prelude: fc.Arbitrary<Op[]> = fc
  .tuple(
    fc.subarray(PRELUDE_DIRS),
    fc.tuple(...PRELUDE_FILES.map(() => fc.option(fc.record({ len: preludeLength, seed }), { nil: null, freq: 2 }))),
    // Which chosen file, if any, slot 0 holds open from the start: descriptor ops find no open
    // descriptor most of the time otherwise.
    fc.option(fc.nat(PRELUDE_FILES.length - 1), { nil: null }),
  )
  .map(([dirs, files, held]) => {
    const chosen = PRELUDE_FILES.flatMap((path, i) => (files[i] ? [{ path, ...files[i] }] : []));
    const needed = new Set(dirs);
    for (const { path } of chosen) {
      if (path.includes('/')) needed.add(path.slice(0, path.lastIndexOf('/')));
      if (path.startsWith('d/e/')) needed.add('d');
    }
    const open: Op[] = held !== null && chosen.length > 0 ? [{ op: 'open', fd: 0, path: chosen[held % chosen.length]!.path }] : [];
    return [
      ...PRELUDE_DIRS.filter((d) => needed.has(d)).map((d): Op => ({ op: 'mkdir', path: d })),
      ...chosen.map(({ path, len, seed }): Op => ({ op: 'create', path, len, seed })),
      ...open,
    ];
  });
const sequence = fc
  .tuple(prelude, fc.array(op, { maxLength: 32, size: 'max' }))
  .map(([pre, ops]) => [...pre, ...ops]);

// ---- the two sides ----

const sides = differentialSides('coffer-diff-');

/** A run that crashed the daemon must not doom every later (shrinking) run to ENOTCONN. */
async function ensureMounted(): Promise<void> {
  let healthy = isMounted(sides.ws.mnt);
  if (healthy) {
    try {
      fs.statSync(sides.ws.mnt);
    } catch {
      healthy = false;
    }
  }
  if (healthy) return;
  await coffer(['unmount', sides.ws.mnt]);
  await sides.ws.mount();
}

/** The mismatch `ops` produce now, if any; other errors (a broken mount, say) propagate. */
async function failureOf(ops: readonly Op[]): Promise<string | undefined> {
  await ensureMounted();
  try {
    await runDifferential(ops, sides.subject, sides.oracle);
    return undefined;
  } catch (err) {
    if (err instanceof Mismatch) return err.message;
    throw err;
  }
}

/**
 * fast-check cannot drop a prelude file without dropping the directory it implies, nor two ops
 * that only matter together; one more pass that tries leaving out each op in turn gets the
 * sequence down to ops that all matter.
 */
async function minimise(ops: readonly Op[], deadline: number): Promise<{ ops: readonly Op[]; message?: string }> {
  let best = ops;
  let message = await failureOf(best);
  if (message === undefined) return { ops }; // did not fail again: report fast-check's own
  for (let i = best.length - 1; i >= 0 && Date.now() < deadline; i--) {
    const candidate = best.filter((_, j) => j !== i);
    const m = await failureOf(candidate);
    if (m !== undefined) {
      best = candidate;
      message = m;
    }
  }
  return { ops: best, message };
}

/**
 * The workspace, log included, is removed after the file: keep what a failure needs. Routine
 * INFO and DEBUG lines (every remount logs three) are left out.
 */
function logComplaints(): string[] {
  try {
    return fs
      .readFileSync(sides.ws.log, 'utf8')
      .split('\n')
      .filter((line) => {
        const level = parseLogLine(line)?.level;
        return level === 'warn' || level === 'error' || level === 'fatal' || (line !== '' && level === undefined);
      })
      .map(formatLogLine);
  } catch (err) {
    return [`(unreadable: ${(err as Error).message})`];
  }
}

function logTail(lines: number): string {
  const wanted = logComplaints();
  return wanted.length ? wanted.slice(-lines).join('\n') : '(no warnings or errors)';
}

describe('differential against a plain directory', () => {
  it(
    `agrees op for op (seed ${SEED}, ${RUNS} sequences)`,
    async () => {
      const stats: RunStats = { sequences: 0, ops: 0, remounts: 0, outcomes: new Map() };
      const started = Date.now();
      console.log(`differential: seed ${SEED}, ${RUNS} runs${REPLAY_PATH ? `, replaying path ${REPLAY_PATH}` : ''}`);
      let firstFailureAt: number | undefined;
      let shrinkCut = false;
      const result = await fc.check(
        fc.asyncProperty(sequence, async (ops) => {
          if (firstFailureAt !== undefined && Date.now() - firstFailureAt > SHRINK_BUDGET_MS) {
            // Counting the remaining candidates as passing ends shrinking at the best so far.
            shrinkCut = true;
            return;
          }
          await ensureMounted();
          try {
            await runDifferential(ops, sides.subject, sides.oracle, stats);
          } catch (err) {
            firstFailureAt ??= Date.now();
            throw err;
          }
        }),
        { seed: SEED, numRuns: RUNS, path: REPLAY_PATH, endOnFailure: false },
      );
      const seconds = ((Date.now() - started) / 1000).toFixed(1);
      console.log(`differential: ${stats.sequences} sequences, ${stats.ops} ops (${stats.remounts} remounts) in ${seconds} s`);
      const outcomes = [...stats.outcomes!].sort(([a], [b]) => a.localeCompare(b));
      console.log(`outcomes: ${outcomes.map(([key, n]) => `${key} ${n}`).join(', ')}`);
      // Not a failure by itself (every errno that reached a program was compared), but a daemon
      // that logs errors during a passing run is worth a look.
      const complaints = logComplaints();
      if (complaints.length) console.warn(`daemon log warnings and errors (${sides.ws.log}):\n${complaints.join('\n')}`);
      if (result.failed) {
        const shrunk = result.counterexample?.[0] ?? [];
        const fcCause = result.errorInstance instanceof Error ? result.errorInstance.message : String(result.errorInstance);
        // A failure that is not a mismatch (the mount went away, say) is reported as fast-check found it.
        const minimal = await minimise(shrunk, Date.now() + SHRINK_BUDGET_MS).catch(() => ({ ops: shrunk, message: undefined }));
        const cause = minimal.message ?? fcCause;
        const message = [
          `differential mismatch after ${result.numRuns} runs and ${result.numShrinks} shrinks` +
            (shrinkCut ? ` (shrinking stopped after ${SHRINK_BUDGET_MS / 1000} s: COFFER_DIFF_SHRINK_MS raises it)` : ''),
          `replay: COFFER_DIFF_SEED=${result.seed} COFFER_DIFF_PATH=${result.counterexamplePath} COFFER_DIFF_RUNS=1`,
          `shrunk sequence (paste into test/differential-regressions.test.ts):`,
          formatOps(minimal.ops),
          cause,
          `daemon log (${sides.ws.log}), last warnings and errors:`,
          logTail(40),
        ].join('\n');
        console.error(message);
        expect.fail(message);
      }
    },
    10 * 60_000 + RUNS * 15_000,
  );
});
