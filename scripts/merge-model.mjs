#!/usr/bin/env node
// Runs the model-based merge test (test/unit/merge-model.test.ts) with many more random histories
// than CI does: node scripts/merge-model.mjs [runs=20000] [ops per history=120]
import { spawnSync } from 'node:child_process';
import { resolve } from 'node:path';

const [runs = '20000', ops = '120'] = process.argv.slice(2);
const root = resolve(import.meta.dirname, '..');
const result = spawnSync('npx', ['vitest', 'run', '--config', 'test/vitest.config.ts', 'test/unit/merge-model.test.ts'], {
  cwd: root,
  stdio: 'inherit',
  env: { ...process.env, COFFER_MODEL_RUNS: runs, COFFER_MODEL_OPS: ops },
});
process.exit(result.status ?? 1);
