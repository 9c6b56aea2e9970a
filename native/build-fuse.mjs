#!/usr/bin/env node
// Applies Coffer's fixes to fuse-native's C source and rebuilds the addon in place.
//
// Runs as the package's postinstall (after npm has built fuse-native unpatched) and can be
// run by hand: `node native/build-fuse.mjs [--force]`. Every hunk is matched as exact text
// with an exact number of occurrences, so a different fuse-native fails here, loudly, instead
// of compiling into something nobody reviewed. A hunk already present is left alone, so the
// script is idempotent; the rebuild is skipped when the loaded addon already reports our
// patch level. Nothing is downloaded: node-gyp gets an explicit local --nodedir.
import { spawnSync } from 'node:child_process';
import { createRequire } from 'node:module';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

/** fuse.ts refuses to run on an addon that does not report exactly this value. */
export const PATCH_LEVEL = 3;
const FUSE_NATIVE_VERSION = '2.2.6';

const PATH_ARGV = 'napi_create_string_utf8(env, l->path, NAPI_AUTO_LENGTH, &(argv[2]));';

const HUNKS = [
  {
    name: 'utimens passes mtime (upstream sends atime twice, so every mtime set through the mount was lost)',
    before: '  FUSE_UINT64_TO_INTS_ARGV(l->atime, 5)\n',
    after: '  FUSE_UINT64_TO_INTS_ARGV(l->mtime, 5)\n',
    count: 1,
  },
  {
    name: 'UTIME_NOW / UTIME_OMIT reach JS as the current time / a "keep" marker',
    before:
      'static uint64_t timespec_to_uint64 (const struct timespec* ts) {\n' +
      '  uint64_t ms = (ts->tv_sec * 1000) + (ts->tv_nsec / 1000000);\n',
    after:
      '// Coffer: with flag_utime_omit_ok, libfuse passes UTIME_NOW or UTIME_OMIT for a time the caller\n' +
      '// did not give explicitly (`touch -m` sets only mtime). Without the flag libfuse drops such\n' +
      '// calls silently. NOW becomes the current time; OMIT becomes UINT64_MAX, which the JS side\n' +
      '// reads as "keep the current value".\n' +
      'static uint64_t timespec_to_uint64 (const struct timespec* ts) {\n' +
      '  struct timespec now;\n' +
      '  if (ts->tv_nsec == UTIME_OMIT) return UINT64_MAX;\n' +
      '  if (ts->tv_nsec == UTIME_NOW) {\n' +
      '    clock_gettime(CLOCK_REALTIME, &now);\n' +
      '    ts = &now;\n' +
      '  }\n' +
      '  uint64_t ms = (ts->tv_sec * 1000) + (ts->tv_nsec / 1000000);\n',
    count: 1,
  },
  {
    name: 'NULL-safe path argument helper',
    before: 'static fuse_thread_locals_t* get_thread_locals();\n',
    after:
      'static fuse_thread_locals_t* get_thread_locals();\n' +
      '\n' +
      '// Coffer: with hard_remove and flag_nullpath_ok, libfuse hands a NULL path to operations on\n' +
      '// an unlinked open file. napi_create_string_utf8 rejects NULL and would leave the argv slot\n' +
      '// unset, so JS receives null instead.\n' +
      'static void fuse_native_path_argv (napi_env env, const char *path, napi_value *result) {\n' +
      '  if (path == NULL) {\n' +
      '    napi_get_null(env, result);\n' +
      '  } else {\n' +
      '    napi_create_string_utf8(env, path, NAPI_AUTO_LENGTH, result);\n' +
      '  }\n' +
      '}\n',
    count: 1,
  },
  {
    name: 'every path argument goes through the NULL-safe helper',
    before: PATH_ARGV,
    after: 'fuse_native_path_argv(env, l->path, &(argv[2]));',
    count: 34,
  },
  {
    name: 'flag_nullpath_ok (reads, writes, fgetattr on an unlinked open file) and flag_utime_omit_ok',
    before: '  struct fuse_operations ops = { };\n',
    after:
      '  struct fuse_operations ops = { };\n' +
      '  ops.flag_nullpath_ok = 1; // Coffer: see fuse_native_path_argv\n' +
      '  ops.flag_utime_omit_ok = 1; // Coffer: see timespec_to_uint64\n',
    count: 1,
  },
  {
    name: 'stat times are signed: a file may be dated before 1970',
    before:
      '  uint64_t ms = uint32s_to_uint64(ints);\n' +
      '  ts->tv_sec = ms / 1000;\n' +
      '  ts->tv_nsec = (ms % 1000) * 1000000;\n',
    after:
      '  // Coffer: milliseconds since the epoch as a signed 64-bit value (two\'s complement in the ints).\n' +
      '  int64_t ms = (int64_t) uint32s_to_uint64(ints);\n' +
      '  int64_t sec = ms / 1000, rem = ms % 1000;\n' +
      '  if (rem < 0) { rem += 1000; sec -= 1; }\n' +
      '  ts->tv_sec = sec;\n' +
      '  ts->tv_nsec = rem * 1000000;\n',
    count: 1,
  },
  {
    name: 'more requests in flight: max_background 64 (the kernel default is 12)',
    before: 'static void * fuse_native_init (struct fuse_conn_info *conn) {\n  fuse_thread_locals_t *l = get_thread_locals();\n',
    after:
      'static void * fuse_native_init (struct fuse_conn_info *conn) {\n' +
      '  // Coffer: reads through the page cache (read-ahead) are background requests, and the\n' +
      '  // kernel lets only max_background of them reach the filesystem at once, first come first\n' +
      '  // served. With the default of 12, a program reading the heads of many remote-only files\n' +
      '  // (a thumbnailer) fills that queue, and every other program\'s reads wait behind it.\n' +
      '  // libfuse 2 starts a thread per request in flight, so the daemon sees them all at once.\n' +
      '  conn->max_background = 64;\n' +
      '  conn->congestion_threshold = 48;\n' +
      '  fuse_thread_locals_t *l = get_thread_locals();\n',
    count: 1,
  },
  {
    name: 'patch level marker, checked by src/fs/fuse.ts at load time',
    before: '  NAPI_EXPORT_SIZEOF(fuse_thread_t)\n',
    after:
      '  NAPI_EXPORT_SIZEOF(fuse_thread_t)\n' +
      `  const uint32_t coffer_patch_level = ${PATCH_LEVEL};\n` +
      '  NAPI_EXPORT_UINT32(coffer_patch_level)\n',
    count: 1,
  },
];

class BuildError extends Error {}

function fail(message) {
  throw new BuildError(message);
}

function occurrences(text, needle) {
  let n = 0;
  for (let i = text.indexOf(needle); i !== -1; i = text.indexOf(needle, i + needle.length)) n++;
  return n;
}

/** Returns the names of the hunks applied now; throws when the source matches neither side. */
export function patchSource(sourcePath) {
  const original = fs.readFileSync(sourcePath, 'utf8');
  // A marker from an earlier patch level goes, so the current one is inserted afresh.
  let text = original.replace(/^  const uint32_t coffer_patch_level = (\d+);\n  NAPI_EXPORT_UINT32\(coffer_patch_level\)\n/m, (line, level) =>
    Number(level) === PATCH_LEVEL ? line : '',
  );
  const applied = [];
  for (const hunk of HUNKS) {
    // `after` is checked first: for insertions it contains `before`.
    if (occurrences(text, hunk.after) === hunk.count) continue;
    const found = occurrences(text, hunk.before);
    if (found !== hunk.count) {
      fail(
        `cannot patch ${sourcePath}: hunk "${hunk.name}" expects ${hunk.count} occurrence(s) of\n` +
          `  ${JSON.stringify(hunk.before)}\nbut found ${found} (and ${occurrences(text, hunk.after)} of the patched text). ` +
          `The patch is written for fuse-native ${FUSE_NATIVE_VERSION}; re-derive it for the installed version.`,
      );
    }
    text = text.split(hunk.before).join(hunk.after);
    applied.push(hunk.name);
  }
  if (text !== original) {
    const tmp = `${sourcePath}.coffer-tmp`;
    fs.writeFileSync(tmp, text);
    fs.renameSync(tmp, sourcePath);
  }
  return applied;
}

function isFile(p) {
  try {
    return fs.statSync(p).isFile();
  } catch {
    return false;
  }
}

function onPath(name) {
  for (const dir of (process.env.PATH ?? '').split(path.delimiter)) {
    if (dir && isFile(path.join(dir, name))) return path.join(dir, name);
  }
  return undefined;
}

function findNodeGyp() {
  const candidates = [];
  if (process.env.npm_config_node_gyp) candidates.push(process.env.npm_config_node_gyp);
  candidates.push(
    path.join(path.dirname(process.execPath), '..', 'lib', 'node_modules', 'npm', 'node_modules', 'node-gyp', 'bin', 'node-gyp.js'),
  );
  const npm = onPath('npm');
  if (npm) candidates.push(path.join(path.dirname(fs.realpathSync(npm)), '..', 'node_modules', 'node-gyp', 'bin', 'node-gyp.js'));
  const found = candidates.find(isFile);
  if (!found) fail(`node-gyp not found (looked at: ${candidates.join(', ')}); it ships with npm`);
  return found;
}

/** A directory whose include/node has this Node's headers, so node-gyp never downloads them. */
function findNodeDir() {
  const candidates = [];
  if (process.env.npm_config_nodedir) candidates.push(process.env.npm_config_nodedir);
  candidates.push(path.resolve(path.dirname(process.execPath), '..'));
  candidates.push(path.join(os.homedir(), '.cache', 'node-gyp', process.versions.node));
  const found = candidates.find((dir) => isFile(path.join(dir, 'include', 'node', 'node_api.h')));
  if (!found) {
    fail(
      `no local Node ${process.versions.node} headers (looked for include/node/node_api.h under ${candidates.join(', ')}); ` +
        'install them or set npm_config_nodedir: this build never downloads them',
    );
  }
  return found;
}

/**
 * Loads the addon the way src/fs/fuse.ts does, in a fresh process (a loaded addon cannot be
 * reloaded here after a rebuild), and reports which file node-gyp-build picked and its patch level.
 */
function probeAddon(pkgDir, libfuse) {
  const script = `
    const os = require('node:os');
    const f = os.constants.dlopen;
    try { process.dlopen({ exports: {} }, ${JSON.stringify(libfuse)}, f.RTLD_NOW | f.RTLD_GLOBAL | 0x1000); }
    catch (err) { if (!/did not self-register/.test(err.message)) throw err; }
    const load = require(require.resolve('node-gyp-build', { paths: [${JSON.stringify(pkgDir)}] }));
    const file = load.path(${JSON.stringify(pkgDir)});
    const binding = load(${JSON.stringify(pkgDir)});
    process.stdout.write(JSON.stringify({ file, level: binding.coffer_patch_level ?? null }));
  `;
  const r = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8' });
  if (r.status !== 0) return { file: null, level: null, error: (r.stderr || r.stdout).trim() };
  return JSON.parse(r.stdout);
}

function rebuild(pkgDir) {
  const nodeGyp = findNodeGyp();
  const nodedir = findNodeDir();
  const started = process.hrtime.bigint();
  const r = spawnSync(process.execPath, [nodeGyp, 'rebuild', `--nodedir=${nodedir}`], {
    cwd: pkgDir,
    encoding: 'utf8',
    maxBuffer: 64 * 1024 * 1024,
  });
  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  if (r.status !== 0) {
    const log = `${r.stdout ?? ''}${r.stderr ?? ''}`.trim().split('\n').slice(-60).join('\n');
    fail(`node-gyp rebuild of ${pkgDir} failed (${r.error?.message ?? `exit ${r.status}`}):\n${log}`);
  }
  return seconds;
}

export function main(argv = process.argv.slice(2)) {
  const force = argv.includes('--force');
  const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
  const require = createRequire(path.join(root, 'package.json'));
  let pkgDir;
  try {
    pkgDir = path.dirname(require.resolve('fuse-native/package.json'));
  } catch {
    fail(`fuse-native is not installed under ${root}/node_modules; run npm ci first`);
  }
  const version = JSON.parse(fs.readFileSync(path.join(pkgDir, 'package.json'), 'utf8')).version;
  if (version !== FUSE_NATIVE_VERSION) {
    fail(`fuse-native ${version} is installed; Coffer's patch is written for ${FUSE_NATIVE_VERSION}`);
  }
  const fnRequire = createRequire(path.join(pkgDir, 'package.json'));
  const sharedLib = createRequire(fnRequire.resolve('fuse-shared-library/package.json'));
  const libfuse = path.join(path.dirname(sharedLib.resolve('fuse-shared-library-linux/package.json')), 'libfuse', 'lib', 'libfuse.so');
  if (!isFile(libfuse)) fail(`bundled libfuse not found at ${libfuse}`);

  const applied = patchSource(path.join(pkgDir, 'fuse-native.c'));
  for (const name of applied) console.log(`coffer: patched fuse-native.c: ${name}`);
  if (applied.length === 0) console.log('coffer: fuse-native.c already carries all patches');

  const before = probeAddon(pkgDir, libfuse);
  const releaseDir = path.join(pkgDir, 'build', 'Release');
  const current = before.level === PATCH_LEVEL && before.file?.startsWith(releaseDir + path.sep);
  if (current && !force && applied.length === 0) {
    console.log(`coffer: ${before.file} already reports patch level ${PATCH_LEVEL}; no rebuild needed`);
    return;
  }

  const seconds = rebuild(pkgDir);
  const after = probeAddon(pkgDir, libfuse);
  if (after.level !== PATCH_LEVEL || !after.file?.startsWith(releaseDir + path.sep)) {
    fail(
      `rebuilt fuse-native but the addon that loads (${after.file ?? 'none'}) reports patch level ` +
        `${after.level ?? 'none'}, not ${PATCH_LEVEL}${after.error ? `:\n${after.error}` : ''}`,
    );
  }
  console.log(`coffer: rebuilt fuse-native in ${seconds.toFixed(1)} s; ${after.file} reports patch level ${PATCH_LEVEL}`);
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  try {
    main();
  } catch (err) {
    if (!(err instanceof BuildError)) throw err;
    console.error(`coffer: native/build-fuse.mjs: ${err.message}`);
    process.exit(1);
  }
}
