#!/usr/bin/env node
/**
 * Crash harness: a writer changes files on a Coffer mount (atomic saves, appends,
 * overwrites, renames, unlinks, each fsynced and journalled on another disk) while the
 * daemon is killed with SIGKILL at random moments — during writes, chunk sealing, index
 * commits, uploads and publishing. After every kill the vault is mounted again and every
 * file is checked against the journal: what an fsync acknowledged must be there exactly.
 * At the end: the upload queue drains, fsck (with the remote) is clean, and a clone of the
 * remote alone shows the same files.
 *
 *   node scripts/crash-test.mjs [--kills 20] [--seed N] [--keep]
 *
 * Exit 0 when every check held; 1 with the violations otherwise.
 */
import { execFile, spawn } from 'node:child_process';
import * as fs from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { NAMES, judge, readJournal, rng, versionContent } from './lib/crash-model.mjs';

const run = promisify(execFile);
const root = resolve(fileURLToPath(import.meta.url), '..', '..');
const cli = join(root, 'dist', 'cli', 'main.js');
const writerScript = join(root, 'scripts', 'lib', 'crash-writer.mjs');

async function coffer(args, env) {
  return run(process.execPath, [cli, ...args], { env: { ...process.env, ...env }, maxBuffer: 1 << 24 });
}

async function readFound(dir) {
  const found = new Map();
  for (const name of NAMES) {
    try {
      found.set(name, await fs.promises.readFile(join(dir, name)));
    } catch (err) {
      if (err.code !== 'ENOENT') throw err;
      found.set(name, null);
    }
  }
  return found;
}

export async function crashHarness({ kills = 20, seed = Date.now() % 1_000_000, keep = false, log = () => {} } = {}) {
  const dir = fs.mkdtempSync(join(tmpdir(), 'coffer-crash-'));
  const vault = join(dir, 'vault');
  const mnt = join(dir, 'mnt');
  const work = join(mnt, 'crash');
  const journalPath = join(dir, 'journal.jsonl');
  const env = { COFFER_PASSPHRASE: 'crash harness' };
  const random = rng(seed);
  const violations = [];
  const stats = { seed, kills: 0, acknowledged: 0, mixed: 0, rounds: [] };
  fs.mkdirSync(mnt);
  fs.writeFileSync(journalPath, '');
  const mounted = () => fs.readFileSync('/proc/self/mountinfo', 'utf8').split('\n').some((l) => l.split(' ')[4] === mnt);

  const verify = async (label) => {
    const journal = readJournal(fs.readFileSync(journalPath, 'utf8'));
    const result = judge(seed, await readFound(work), journal);
    for (const v of result.violations) violations.push(`${label}: ${v}`);
    // Carry on from what is there: drop files left half-way by the interrupted operation.
    for (const name of result.mixed) await fs.promises.rm(join(work, name), { force: true });
    for (const entry of await fs.promises.readdir(work).catch(() => [])) {
      if (!NAMES.includes(entry)) await fs.promises.rm(join(work, entry), { force: true });
    }
    stats.mixed += result.mixed.length;
    const lines = [...result.states].map(([name, file]) => JSON.stringify({ op: 'state', name, file }));
    fs.writeFileSync(journalPath, lines.join('\n') + (lines.length ? '\n' : ''));
    return result.states;
  };

  try {
    await coffer(['init', vault, '--remote', `file://${join(dir, 'remote')}`], env);
    for (let round = 1; round <= kills; round++) {
      await coffer(['mount', vault, mnt], env);
      await fs.promises.mkdir(work, { recursive: true });
      if (round > 1) await verify(`after kill ${round - 1}`);
      const writeMs = 200 + Math.floor(random() * 2500);
      // Sometimes kill after the writer stopped, when uploads and publishing run.
      const killAfterMs = 100 + Math.floor(random() * (random() < 0.3 ? 6000 : writeMs));
      const writer = spawn(process.execPath, [writerScript, work, journalPath, String(seed), String(seed * 1000 + round), String(writeMs)], { stdio: ['ignore', 'ignore', 'pipe'] });
      const writerDone = new Promise((resolveDone) => writer.on('exit', resolveDone));
      await new Promise((r) => setTimeout(r, killAfterMs));
      const { pid } = JSON.parse(fs.readFileSync(join(vault, 'state', 'daemon.json'), 'utf8'));
      process.kill(pid, 'SIGKILL');
      stats.kills++;
      await Promise.race([writerDone, new Promise((r) => setTimeout(r, 30_000))]);
      writer.kill('SIGKILL');
      const journal = fs.readFileSync(journalPath, 'utf8');
      const acks = journal.split('\n').filter((l) => l.includes('"op":"ack"')).length;
      stats.acknowledged += acks;
      stats.rounds.push({ round, writeMs, killAfterMs, acks });
      log(`kill ${round}: writer ran ${writeMs} ms, killed at ${killAfterMs} ms, ${acks} acknowledged operations`);
    }
    await coffer(['mount', vault, mnt], env);
    const states = await verify(`after kill ${kills}`);
    await coffer(['sync', mnt, '--wait'], env);
    await coffer(['unmount', mnt], env);
    try {
      await coffer(['fsck', vault, '--remote'], env);
    } catch (err) {
      violations.push(`fsck after the last kill: ${err.stderr ?? err.message}`);
    }
    // The remote alone must hold the same files.
    const clone = join(dir, 'clone');
    await coffer(['clone', `file://${join(dir, 'remote')}`, clone], env);
    await coffer(['mount', clone, mnt], env);
    const fromRemote = await readFound(work);
    for (const name of NAMES) {
      const file = states.get(name);
      const want = file ? versionContent(seed, file) : null;
      const got = fromRemote.get(name);
      if (!(want === null ? got === null : got !== null && got.equals(want))) violations.push(`clone of the remote: ${name} differs from the vault`);
    }
    await coffer(['unmount', mnt], env);
  } finally {
    if (mounted()) {
      await coffer(['unmount', mnt], env).catch(() => run('umount', ['-l', mnt]).catch(() => {}));
    }
    if (!keep) fs.rmSync(dir, { recursive: true, force: true });
  }
  return { ok: violations.length === 0, violations, stats, dir };
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const args = process.argv.slice(2);
  const option = (name, fallback) => {
    const i = args.indexOf(name);
    return i >= 0 ? args[i + 1] : fallback;
  };
  const started = Date.now();
  const result = await crashHarness({
    kills: Number(option('--kills', '20')),
    seed: Number(option('--seed', String(Date.now() % 1_000_000))),
    keep: args.includes('--keep'),
    log: (line) => console.log(line),
  });
  console.log(
    `${result.stats.kills} kills, ${result.stats.acknowledged} acknowledged operations checked, ` +
      `${result.stats.mixed} interrupted writes found half-way (allowed), seed ${result.stats.seed}, ${((Date.now() - started) / 1000).toFixed(0)} s`,
  );
  for (const v of result.violations) console.log(`VIOLATION ${v}`);
  process.exit(result.ok ? 0 : 1);
}
