#!/usr/bin/env node
// Writes the golden vault of the current format version into test/fixtures/vault-v<N>/:
//   vault/     a vault made by `coffer init` with the embedded remote (vault/remote/), a tree of
//              every kind of node written through a real mount, synced and unmounted
//   tree.json  what the tree holds (paths, kinds, modes, contents' SHA-256, targets, xattrs, links)
// The passphrase is test/helpers/drive.ts's PASSPHRASE. A golden vault is written once per released
// format version and never regenerated: later code must open and upgrade it with nothing lost.
//
//   node scripts/make-golden-vault.mjs <version>     (needs root or fuse, and a built dist/)
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, linkSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync, chmodSync, utimesSync, cpSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { describeTree } from './lib/golden-tree.mjs';

const version = process.argv[2];
if (!/^\d+$/.test(version ?? '')) {
  process.stderr.write('usage: make-golden-vault.mjs <format version>\n');
  process.exit(2);
}
const root = resolve(import.meta.dirname, '..');
const out = join(root, 'test', 'fixtures', `vault-v${version}`);
if (existsSync(out)) {
  process.stderr.write(`${out} exists: golden vaults are never regenerated\n`);
  process.exit(1);
}
const cli = join(root, 'dist', 'cli', 'main.js');
const env = { ...process.env, COFFER_PASSPHRASE: 'correct horse battery staple' };
const run = (...args) => execFileSync(process.execPath, [cli, ...args], { env, stdio: ['ignore', 'pipe', 'inherit'] }).toString();

const work = mkdtempSync(join(tmpdir(), 'coffer-golden-'));
const vault = join(work, 'vault');
const mnt = join(work, 'mnt');
mkdirSync(mnt);
run('init', vault, '--name', `golden-v${version}`);
run('mount', vault, mnt);
try {
  // Deterministic contents, so the tree is the same every time the script is read.
  let seed = 0x12345678;
  const bytes = (n) => {
    const b = Buffer.alloc(n);
    for (let i = 0; i < n; i++) {
      seed = (seed * 1103515245 + 12345) >>> 0;
      b[i] = seed >>> 24;
    }
    return b;
  };
  const p = (...parts) => join(mnt, ...parts);
  mkdirSync(p('docs', 'deep', 'deeper'), { recursive: true });
  mkdirSync(p('empty dir'));
  writeFileSync(p('hello.txt'), 'hello, world\n');
  writeFileSync(p('empty'), '');
  writeFileSync(p('docs', 'report.md'), '# Report\n\nQuarterly figures.\n');
  writeFileSync(p('docs', 'deep', 'deeper', 'leaf.bin'), bytes(5000));
  writeFileSync(p('two-chunks.bin'), bytes(1024 * 1024 + 12345)); // a full chunk and a short one
  writeFileSync(p('zeros-hole.bin'), Buffer.alloc(0));
  execFileSync('truncate', ['-s', '3000000', p('zeros-hole.bin')]); // sparse: holes only
  writeFileSync(p('Ünïcødé ☂.txt'), 'names are UTF-8\n');
  writeFileSync(p('secret.txt'), 'mode 0600\n');
  chmodSync(p('secret.txt'), 0o600);
  writeFileSync(p('run.sh'), '#!/bin/sh\necho hi\n');
  chmodSync(p('run.sh'), 0o755);
  symlinkSync('docs/report.md', p('link-to-report'));
  symlinkSync('/nowhere/at/all', p('dangling'));
  writeFileSync(p('docs', 'original'), 'two names, one file\n');
  linkSync(p('docs', 'original'), p('hardlink'));
  execFileSync('setfattr', ['-n', 'user.color', '-v', 'blue', p('hello.txt')]);
  execFileSync('setfattr', ['-n', 'user.tag', '-v', '0x00ff10', p('docs')]);
  utimesSync(p('docs', 'report.md'), new Date('2024-02-29T12:00:00Z'), new Date('2024-02-29T12:00:00Z'));
  const tree = describeTree(mnt);
  run('sync', vault, '--wait', '--timeout', '120');
  run('unmount', mnt);
  mkdirSync(out, { recursive: true });
  cpSync(vault, join(out, 'vault'), { recursive: true });
  rmSync(join(out, 'vault', 'logs'), { recursive: true, force: true });
  // The embedded remote's URL is absolute: tests point it at wherever they copy the vault.
  writeFileSync(join(out, 'tree.json'), JSON.stringify({ version: Number(version), passphrase: env.COFFER_PASSPHRASE, tree }, null, 2) + '\n');
  process.stdout.write(`wrote ${out}: ${Object.keys(tree).length} paths\n`);
} finally {
  try {
    execFileSync('umount', [mnt], { stdio: 'ignore' });
  } catch {
    // already unmounted
  }
  rmSync(work, { recursive: true, force: true });
}
