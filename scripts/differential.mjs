#!/usr/bin/env node
/**
 * Runs the differential POSIX test (test/differential.test.ts) for longer than CI does:
 *
 *   node scripts/differential.mjs --runs 2000 [--seed N] [--shrink-minutes M] [--path P] [--build]
 *
 * Without --seed a fresh one is drawn and printed, so every long run explores new sequences
 * and any failure can be replayed. --path replays one failing case (with its seed), as the
 * failure message spells out. A failure prints the shrunk sequence ready to paste into
 * test/differential-regressions.test.ts. Needs root (or /dev/fuse access) and python3, as the
 * other mount tests do. The daemon under test is the compiled dist/: --build compiles it first
 * (left to the caller by default, since rebuilding dist/ under other running tests breaks them).
 */
import { spawnSync } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');

const usage = 'usage: node scripts/differential.mjs [--runs N] [--seed N] [--shrink-minutes M] [--path P] [--build]';
let values;
try {
  ({ values } = parseArgs({
    options: {
      runs: { type: 'string', default: '2000' },
      seed: { type: 'string' },
      'shrink-minutes': { type: 'string', default: '30' },
      path: { type: 'string' },
      build: { type: 'boolean', default: false },
      help: { type: 'boolean', short: 'h', default: false },
    },
  }));
} catch (err) {
  console.error(`${err.message}\n${usage}`);
  process.exit(2);
}
if (values.help) {
  console.log(usage);
  process.exit(0);
}

const integer = (name, text) => {
  if (!/^\d+$/.test(text)) {
    console.error(`--${name} must be a non-negative integer, got ${JSON.stringify(text)}\n${usage}`);
    process.exit(2);
  }
  return Number(text);
};
const runs = integer('runs', values.runs);
// fast-check seeds are 32-bit integers.
const seed = values.seed === undefined ? Math.floor(Math.random() * 0x7fff_ffff) : integer('seed', values.seed);
const shrinkMs = integer('shrink-minutes', values['shrink-minutes']) * 60_000;

if (values.build) {
  const build = spawnSync('npx', ['tsc', '-p', 'tsconfig.json'], { cwd: ROOT, stdio: 'inherit' });
  if (build.status !== 0) {
    console.error('differential: the build failed');
    process.exit(1);
  }
}

console.log(`differential: ${runs} runs, seed ${seed}` + (values.path ? `, path ${values.path}` : ''));
const env = {
  ...process.env,
  COFFER_DIFF_RUNS: String(runs),
  COFFER_DIFF_SEED: String(seed),
  COFFER_DIFF_SHRINK_MS: String(shrinkMs),
};
if (values.path) env.COFFER_DIFF_PATH = values.path;
else delete env.COFFER_DIFF_PATH;

const started = Date.now();
const test = spawnSync('npx', ['vitest', 'run', '--config', 'test/vitest.config.ts', 'test/differential.test.ts'], {
  cwd: ROOT,
  env,
  stdio: 'inherit',
});
const minutes = ((Date.now() - started) / 60_000).toFixed(1);
if (test.status === 0) {
  console.log(`differential: ${runs} runs with seed ${seed} passed in ${minutes} min`);
} else {
  console.error(`differential: FAILED after ${minutes} min (seed ${seed}); the shrunk sequence is printed above`);
}
process.exit(test.status ?? 1);
