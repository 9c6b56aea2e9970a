#!/usr/bin/env node
// Shows a mounted Coffer vault to a real Linux file manager and checks that it shows the files.
//
//   node scripts/file-manager-check.mjs [--out ./artifacts] [--wait 40] [--json]
//
// What it does:
// 1. Makes a vault (file:// remote in a temp dir), mounts it, copies in a tree of folders,
//    images (PNG written from Node, JPEG converted by ImageMagick) and documents (.txt, .pdf),
//    waits for `coffer sync --wait` and unmounts. Then `coffer clone`s the remote into a second
//    vault — a fresh machine with nothing cached — and mounts that at a folder named
//    CofferDrive. Every file in the window is remote-only until something reads it.
// 2. Starts Xvfb and PCManFM (Debian's `pcmanfm`, libfm 1.3) on CofferDrive, in a private
//    HOME with thumbnails on (PCManFM makes image thumbnails itself, with gdk-pixbuf: no D-Bus,
//    no tumbler, no window manager needed, which is why it was chosen over Thunar).
// 3. Takes screenshots of the X screen (ImageMagick's `import -window root`) until the checks
//    pass or --wait seconds are up, keeps the last one, and checks:
//    - mounted:    CofferDrive is a fuse.coffer mount in /proc/self/mountinfo;
//    - window:     a visible X window titled "CofferDrive" exists (xdotool);
//    - names:      OCR (tesseract) of the screenshot finds every top-level folder and file name;
//    - thumbnails: each top-level image is drawn as a thumbnail: its own flat colour (magenta,
//                  cyan, green, yellow: colours the file manager's own icons do not use)
//                  covers at least THUMB_MIN_PIXELS pixels of the screenshot;
//    - reads:      each of those images went from `remote-only` to read through the mount
//                  (the `user.coffer.state` attribute) and chunks arrived in the clone's cache:
//                  the pixels came out of Coffer, not from somewhere else;
//    - daemon log: the daemon logged no ERROR while the file manager used the mount.
//    Also reported, not checked: the images in Photos/ (a folder the window does not open)
//    should stay remote-only: opening a folder downloads only what it shows.
// 4. Saves to --out: file-manager.png (the screenshot), file-manager-ocr.txt,
//    file-manager-report.json, pcmanfm.log and daemon.log.
//
// --empty (mount a vault with nothing in it) and --no-mount (leave CofferDrive a plain empty
// folder) show that the checks fail when the window cannot show the files: both must exit 1.
//
// Exit codes: 0 every check passed; 1 a check failed, a tool is missing or a step failed (the
// message says which); 2 bad arguments; 130 interrupted. The vault is always unmounted and Xvfb
// and the file manager stopped, also on failure and Ctrl-C.
//
// Needs: a built tree (npx tsc -p tsconfig.json), /dev/fuse, python3, and Debian's xvfb,
// pcmanfm, imagemagick, tesseract-ocr, xdotool.
import { spawnSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, openSync, readFileSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import {
  CLI,
  UsageError,
  eachFlag,
  checkInterrupt,
  coffer,
  mountAt,
  mountVault,
  progress,
  run,
  mustRun,
  runScript,
  sleep,
  startBackground,
  tailOf,
  tempDir,
  unmountVault,
  which,
} from './lib/harness.mjs';
import { pdf, signatureImage } from './lib/sample-files.mjs';

const USAGE = `Usage: node scripts/file-manager-check.mjs [options]

Mounts a Coffer vault of folders, images and documents, opens it in PCManFM under Xvfb, takes
a screenshot and checks that the window shows the files (OCR of the names, thumbnails drawn
from the images, the images read through the mount).

  --out <dir>     where the screenshot and report go (default ./artifacts)
  --wait <s>      how long to wait for the window to show everything (default 40)
  --empty         mount an empty vault (a negative check: must fail)
  --no-mount      do not mount anything at the folder (a negative check: must fail)
  --keep          keep the temp dir (vaults, remote, the file manager's HOME)
  --json          print the report as JSON on stdout
  -h, --help      show this help
`;

const MOUNT_NAME = 'CofferDrive';
const SCREEN = { width: 1280, height: 800 };
/** A 128×96 thumbnail has ~10,000 pixels of its colour; the empty window has none. */
const THUMB_MIN_PIXELS = 1500;
const COLOR_TOLERANCE = 40;

/** The top level of the mount, as the window should show it. Names fit under one icon. */
const FOLDERS = ['Invoices', 'Photos', 'Projects'];
const IMAGES = [
  { name: 'Sunset.png', color: [255, 0, 255] },
  { name: 'Lagoon.png', color: [0, 255, 255] },
  { name: 'Meadow.jpg', color: [0, 255, 0] },
  { name: 'Lemons.jpg', color: [255, 255, 0] },
];
const DOCUMENTS = ['Notes.txt', 'Agenda.txt', 'Budget.pdf'];

const TOOLS = {
  Xvfb: 'xvfb',
  pcmanfm: 'pcmanfm',
  import: 'imagemagick',
  tesseract: 'tesseract-ocr',
  xdotool: 'xdotool',
  python3: 'python3',
};

function parseArgs(argv) {
  const opts = { out: resolve('artifacts'), waitS: 40, empty: false, noMount: false, keep: false, json: false };
  eachFlag(argv, (flag, next, arg) => {
    const value = () => {
      const v = next();
      if (v === undefined || v === '') throw new UsageError(`${flag} needs a value`);
      return v;
    };
    switch (flag) {
      case '--out': opts.out = resolve(value()); break;
      case '--wait': {
        const v = value();
        if (!/^\d+$/.test(v) || Number(v) < 1 || Number(v) > 600) throw new UsageError(`--wait must be a whole number of seconds in 1..600, got ${JSON.stringify(v)}`);
        opts.waitS = Number(v);
        break;
      }
      case '--empty': opts.empty = true; break;
      case '--no-mount': opts.noMount = true; break;
      case '--keep': opts.keep = true; break;
      case '--json': opts.json = true; break;
      case '-h': case '--help': opts.help = true; break;
      default: throw new UsageError(`unknown argument ${JSON.stringify(arg)}\n\n${USAGE}`);
    }
  });
  if (opts.empty && opts.noMount) throw new UsageError('--empty and --no-mount exclude each other');
  return opts;
}

/** ImageMagick's `convert` (a stand-in of the same name may come first on PATH). */
function findConvert(importPath) {
  const isImageMagick = (p) => /ImageMagick/.test(spawnSync(p, ['-version'], { encoding: 'utf8' }).stdout ?? '');
  return which(join(dirname(importPath), 'convert'), { verify: isImageMagick }) ?? which('convert', { verify: isImageMagick });
}

function findTools() {
  const found = {};
  const missing = [];
  for (const [tool, pkg] of Object.entries(TOOLS)) {
    found[tool] = which(tool);
    if (!found[tool]) missing.push(`${tool} (Debian package ${pkg})`);
  }
  if (found.import) {
    found.convert = findConvert(found.import);
    if (!found.convert) missing.push("ImageMagick's convert (Debian package imagemagick)");
  }
  if (missing.length > 0) throw new Error(`missing tools: ${missing.join(', ')}`);
  return found;
}

// ---------------------------------------------------------------------------------------------
// The tree shown to the file manager, made in a plain directory (never in a mount)

async function makeSourceTree(dir, tools) {
  mkdirSync(dir, { recursive: true });
  for (const folder of FOLDERS) mkdirSync(join(dir, folder));
  for (const { name, color } of IMAGES) {
    const image = signatureImage(320, 240, color);
    if (name.endsWith('.png')) writeFileSync(join(dir, name), image);
    else {
      const from = join(dir, `.${name}.png`);
      writeFileSync(from, image);
      await mustRun(`converting ${name} to JPEG`, tools.convert, [from, '-quality', '92', join(dir, name)], 120_000);
      await mustRun('rm', 'rm', [from], 120_000);
    }
  }
  writeFileSync(join(dir, 'Notes.txt'), 'Things to remember\n\n- renew the passport\n- back up the photos\n');
  writeFileSync(join(dir, 'Agenda.txt'), 'Monday: planning\nTuesday: reviews\nWednesday: release\n');
  writeFileSync(join(dir, 'Budget.pdf'), pdf(['Household budget', 'Rent 1200', 'Food 450', 'Travel 300']));
  for (let i = 1; i <= 3; i++) writeFileSync(join(dir, 'Invoices', `invoice-2024-0${i}.txt`), `Invoice ${i}\nAmount due: ${i * 100} EUR\n`);
  writeFileSync(join(dir, 'Invoices', 'summary.pdf'), pdf(['Invoices 2024', 'Q1 total 600 EUR']));
  writeFileSync(join(dir, 'Projects', 'roadmap.txt'), 'Q1: encrypted drive\nQ2: share links\n');
  mkdirSync(join(dir, 'Projects', 'archive'));
  writeFileSync(join(dir, 'Projects', 'archive', 'old-plan.txt'), 'superseded\n');
  const palette = [[200, 30, 30], [30, 200, 30], [30, 30, 200], [200, 200, 30], [30, 200, 200], [200, 30, 200]];
  for (const [i, color] of palette.entries()) writeFileSync(join(dir, 'Photos', `holiday-${i + 1}.png`), signatureImage(640, 480, color));
}

// ---------------------------------------------------------------------------------------------
// Observing the mount (always from child processes)

/** `user.coffer.state` of each path, or the error that reading it gave ({} when python3 fails). */
async function cofferStates(paths) {
  const script =
    'import os,sys,json\nout={}\nfor p in sys.argv[1:]:\n  try: out[p]=os.getxattr(p,"user.coffer.state").decode()\n  except OSError as e: out[p]="error: "+(e.strerror or str(e))\nprint(json.dumps(out))';
  const r = await run('python3', ['-c', script, ...paths], { timeoutMs: 30_000 });
  if (r.code !== 0) return Object.fromEntries(paths.map((p) => [p, `error: python3 ${r.timedOut ? 'timed out' : `failed: ${r.stderr.trim()}`}`]));
  return JSON.parse(r.stdout);
}

function countFiles(dir) {
  if (!existsSync(dir)) return 0;
  let n = 0;
  for (const entry of readdirSync(dir, { withFileTypes: true, recursive: true })) if (entry.isFile()) n++;
  return n;
}

function logSince(path, offset) {
  if (!existsSync(path)) return '';
  return readFileSync(path).subarray(offset).toString('utf8');
}

// ---------------------------------------------------------------------------------------------
// X: the server, the file manager, screenshots

async function startXvfb(dir) {
  const log = join(dir, 'xvfb.log');
  const logFd = openSync(log, 'w');
  const xvfb = startBackground('Xvfb', ['-displayfd', '3', '-screen', '0', `${SCREEN.width}x${SCREEN.height}x24`, '-nolisten', 'tcp', '-noreset'], {
    stdio: ['ignore', logFd, logFd, 'pipe'],
  });
  const display = await new Promise((resolveDisplay, rejectDisplay) => {
    let text = '';
    const timer = setTimeout(() => rejectDisplay(new Error(`Xvfb did not report a display within 15 s${readTail(log)}`)), 15_000);
    xvfb.stdio[3].setEncoding('utf8').on('data', (d) => {
      text += d;
      if (text.includes('\n')) {
        clearTimeout(timer);
        resolveDisplay(`:${text.trim()}`);
      }
    });
    xvfb.exited.then(({ code, signal }) => {
      clearTimeout(timer);
      rejectDisplay(new Error(`Xvfb exited (${signal ?? `code ${code}`}) before it was ready${readTail(log)}`));
    });
  });
  return { xvfb, display };
}

function readTail(path) {
  try {
    const lines = readFileSync(path, 'utf8').trim().split('\n').slice(-8);
    return lines.length ? `\n  ${lines.join('\n  ')}` : '';
  } catch {
    return '';
  }
}

/** PCManFM's and libfm's settings in a private HOME: a big window, thumbnail view, thumbnails on. */
function writeFileManagerConfig(home) {
  mkdirSync(join(home, '.config', 'pcmanfm', 'default'), { recursive: true });
  mkdirSync(join(home, '.config', 'libfm'), { recursive: true });
  mkdirSync(join(home, '.cache'), { recursive: true });
  writeFileSync(
    join(home, '.config', 'libfm', 'libfm.conf'),
    [
      '[config]',
      'single_click=0',
      'use_trash=0',
      // Thumbnails for local files (a FUSE mount is local to GIO), for files up to 64 MiB.
      'thumbnail_local=1',
      'thumbnail_max=65536',
      'terminal=xterm',
      '',
      '[ui]',
      'big_icon_size=48',
      'small_icon_size=24',
      'pane_icon_size=24',
      'thumbnail_size=128',
      'show_thumbnail=1',
      '',
      '[places]',
      'places_home=1',
      'places_desktop=0',
      'places_root=0',
      'places_computer=0',
      'places_trash=0',
      // The Applications place starts menu-cached, a daemon that would outlive the window.
      'places_applications=0',
      'places_network=0',
      'places_unmounted=0',
      '',
    ].join('\n'),
  );
  writeFileSync(
    join(home, '.config', 'pcmanfm', 'default', 'pcmanfm.conf'),
    [
      '[config]',
      'bm_open_method=0',
      '',
      '[volume]',
      'mount_on_startup=0',
      'mount_removable=0',
      'autorun=0',
      '',
      '[ui]',
      'always_show_tabs=0',
      'win_width=1180',
      'win_height=720',
      'splitter_pos=150',
      'side_pane_mode=places',
      'view_mode=thumbnail',
      'show_hidden=0',
      'sort=name;ascending;',
      'show_statusbar=1',
      '',
    ].join('\n'),
  );
}

async function screenshot(display, tools, path) {
  await mustRun('screenshot (import -window root)', tools.import, ['-display', display, '-window', 'root', path], 30_000);
}

/** Pixels of the screenshot within COLOR_TOLERANCE of each colour. */
async function colorCounts(tools, shot, colors, dir) {
  const raw = join(dir, 'shot.rgb');
  await mustRun('reading the screenshot (convert)', tools.convert, [shot, '-depth', '8', `rgb:${raw}`], 30_000);
  const px = readFileSync(raw);
  const counts = colors.map(() => 0);
  for (let o = 0; o + 2 < px.length; o += 3) {
    for (let c = 0; c < colors.length; c++) {
      const [r, g, b] = colors[c];
      if (Math.abs(px[o] - r) <= COLOR_TOLERANCE && Math.abs(px[o + 1] - g) <= COLOR_TOLERANCE && Math.abs(px[o + 2] - b) <= COLOR_TOLERANCE) counts[c]++;
    }
  }
  return counts;
}

/** Tesseract's text of the screenshot, scaled up 2× (the UI font is small for OCR). */
async function ocr(tools, shot, dir) {
  const big = join(dir, 'ocr-input.png');
  await mustRun('preparing OCR input (convert)', tools.convert, [shot, '-colorspace', 'Gray', '-resize', '200%', big], 30_000);
  const r = await mustRun('OCR (tesseract)', tools.tesseract, [big, 'stdout', '--psm', '11'], 60_000, { env: { ...process.env, OMP_THREAD_LIMIT: '1' } });
  return r.stdout;
}

/** Letters and digits only, lower case: OCR keeps letters better than punctuation and spacing. */
const normalize = (text) => text.toLowerCase().replace(/[^a-z0-9]+/g, '');
const stem = (name) => name.replace(/\.[a-z]+$/i, '');

async function findWindow(tools, display) {
  const r = await run(tools.xdotool, ['search', '--onlyvisible', '--name', `^${MOUNT_NAME}$`], { env: { ...process.env, DISPLAY: display }, timeoutMs: 10_000 });
  return r.code === 0 ? r.stdout.trim().split('\n').filter(Boolean) : [];
}

// ---------------------------------------------------------------------------------------------

async function main(opts) {
  if (opts.help) {
    process.stdout.write(USAGE);
    return 0;
  }
  const tools = findTools();
  if (!existsSync(CLI)) throw new Error('dist/ is missing: build first (npx tsc -p tsconfig.json)');
  mkdirSync(opts.out, { recursive: true });
  const started = Date.now();
  const ws = tempDir('coffer-fm-');
  const mnt = join(ws, MOUNT_NAME);
  const clone = join(ws, 'vault');
  const home = join(ws, 'home');
  mkdirSync(mnt);
  const timings = {};
  const expectedImages = IMAGES.map((i) => join(mnt, i.name));
  const photoFiles = Array.from({ length: 6 }, (_, i) => join(mnt, 'Photos', `holiday-${i + 1}.png`));

  let logOffset = 0;
  if (!opts.noMount) {
    const source = join(ws, 'source');
    const origin = join(ws, 'origin-vault');
    const remote = join(ws, 'remote');
    const originMnt = join(ws, 'origin-mnt');
    mkdirSync(originMnt);
    progress('making a vault and writing folders, images and documents into it');
    if (!opts.empty) await makeSourceTree(source, tools);
    await coffer(['init', origin, '--remote', `file://${remote}`]);
    await mountVault(origin, originMnt);
    if (!opts.empty) await mustRun('copying the files into the mount', 'cp', ['-r', '--', ...readdirSync(source).map((n) => join(source, n)), originMnt], 120_000);
    await coffer(['sync', originMnt, '--wait']);
    await unmountVault(originMnt);
    progress(`cloning the remote onto a "fresh machine" and mounting it at ${mnt}`);
    await coffer(['clone', `file://${remote}`, clone]);
    await mountVault(clone, mnt);
    logOffset = existsSync(join(clone, 'logs', 'daemon.log')) ? statSync(join(clone, 'logs', 'daemon.log')).size : 0;
    timings.prepareMs = Date.now() - started;
  } else {
    progress(`--no-mount: leaving ${mnt} a plain empty folder`);
  }

  const cacheDir = join(clone, 'cache');
  const cachedBefore = countFiles(cacheDir);
  const statesBefore = opts.noMount ? {} : await cofferStates([...expectedImages, ...photoFiles]);

  progress('starting Xvfb and PCManFM');
  const { display } = await startXvfb(ws);
  writeFileManagerConfig(home);
  const fmLog = join(ws, 'pcmanfm.log');
  const fmLogFd = openSync(fmLog, 'w');
  const fmEnv = {
    ...process.env,
    DISPLAY: display,
    HOME: home,
    XDG_CONFIG_HOME: join(home, '.config'),
    XDG_CACHE_HOME: join(home, '.cache'),
    XDG_DATA_HOME: join(home, '.local', 'share'),
    // Plain local files through GIO: no gvfs daemons, no session bus, no accessibility bus.
    GIO_USE_VFS: 'local',
    NO_AT_BRIDGE: '1',
    LANG: 'C.UTF-8',
  };
  delete fmEnv.DBUS_SESSION_BUS_ADDRESS;
  delete fmEnv.XDG_RUNTIME_DIR;
  const fmStarted = Date.now();
  const fm = startBackground('pcmanfm', ['--new-win', mnt], { env: fmEnv, stdio: ['ignore', fmLogFd, fmLogFd], cwd: home });
  let fmExit;
  fm.exited.then((e) => (fmExit = e));

  const shot = join(opts.out, 'file-manager.png');
  const deadline = Date.now() + opts.waitS * 1000;
  let window = [];
  let ocrText = '';
  let missingNames = [];
  let counts = [];
  let attempts = 0;
  progress(`waiting up to ${opts.waitS} s for the window to show the files`);
  for (;;) {
    checkInterrupt();
    if (fmExit) throw new Error(`PCManFM exited (${fmExit.signal ?? `code ${fmExit.code}`}) while the check was running${readTail(fmLog)}`);
    attempts++;
    window = await findWindow(tools, display);
    if (window.length > 0 && timings.windowMs === undefined) timings.windowMs = Date.now() - fmStarted;
    if (window.length > 0) {
      await screenshot(display, tools, shot);
      counts = await colorCounts(tools, shot, IMAGES.map((i) => i.color), ws);
      ocrText = await ocr(tools, shot, ws);
      const seen = normalize(ocrText);
      missingNames = [...FOLDERS, ...IMAGES.map((i) => i.name), ...DOCUMENTS].filter((n) => !seen.includes(normalize(stem(n))));
      if (missingNames.length === 0 && timings.namesMs === undefined) timings.namesMs = Date.now() - fmStarted;
      if (counts.every((c) => c >= THUMB_MIN_PIXELS) && timings.thumbnailsMs === undefined) timings.thumbnailsMs = Date.now() - fmStarted;
      if (missingNames.length === 0 && counts.every((c) => c >= THUMB_MIN_PIXELS)) break;
    }
    if (Date.now() >= deadline) break;
    await sleep(1000);
  }
  if (window.length === 0) {
    // Keep a picture of what the screen showed instead.
    await screenshot(display, tools, shot).catch(() => {});
  }
  writeFileSync(join(opts.out, 'file-manager-ocr.txt'), ocrText);

  const statesAfter = opts.noMount ? {} : await cofferStates([...expectedImages, ...photoFiles]);
  const cachedAfter = countFiles(cacheDir);
  const daemonLog = logSince(join(clone, 'logs', 'daemon.log'), logOffset);
  const logProblems = daemonLog.split('\n').filter((l) => / (WARN|ERROR) /.test(l));
  const m = mountAt(mnt);
  const readImages = expectedImages.filter((p) => statesBefore[p] === 'remote-only' && ['synced', 'cached'].includes(statesAfter[p]));

  const checks = [
    {
      name: 'mounted',
      ok: m?.fstype === 'fuse.coffer',
      detail: m ? `${mnt} is a ${m.fstype} mount (source ${m.source})` : `${mnt} is not a mount point`,
    },
    {
      name: 'window',
      ok: window.length > 0,
      detail: window.length > 0 ? `window ${window.join(', ')} titled "${MOUNT_NAME}" is visible` : `no visible window titled "${MOUNT_NAME}" on ${display}`,
    },
    {
      name: 'names',
      ok: missingNames.length === 0 && ocrText !== '',
      detail:
        missingNames.length === 0 && ocrText !== ''
          ? `OCR found all ${FOLDERS.length + IMAGES.length + DOCUMENTS.length} names (${[...FOLDERS, ...IMAGES.map((i) => i.name), ...DOCUMENTS].join(', ')})`
          : `OCR did not find: ${missingNames.join(', ') || 'anything (no screenshot of the window)'}`,
    },
    {
      name: 'thumbnails',
      ok: counts.length === IMAGES.length && counts.every((c) => c >= THUMB_MIN_PIXELS),
      detail: `pixels of each image's colour (need ${THUMB_MIN_PIXELS}): ${IMAGES.map((img, i) => `${img.name} ${counts[i] ?? 'n/a'}`).join(', ')}`,
    },
    {
      name: 'reads',
      ok: readImages.length === IMAGES.length && cachedAfter > cachedBefore,
      detail:
        `images read through the mount (remote-only before, synced/cached after): ${readImages.length}/${IMAGES.length}` +
        ` [${expectedImages.map((p) => `${p.slice(mnt.length + 1)}: ${statesBefore[p] ?? 'n/a'} -> ${statesAfter[p] ?? 'n/a'}`).join('; ')}];` +
        ` chunks in the clone's cache: ${cachedBefore} -> ${cachedAfter}`,
    },
    {
      name: 'daemon log',
      ok: !opts.noMount && !logProblems.some((l) => / ERROR /.test(l)),
      detail: opts.noMount ? 'no daemon' : logProblems.length === 0 ? 'no WARN or ERROR lines while the file manager ran' : `${logProblems.length} WARN/ERROR lines:${tailOf(logProblems.join('\n'), 10)}`,
    },
  ];
  const photos = photoFiles.map((p) => statesAfter[p]);
  const report = {
    ok: checks.every((c) => c.ok),
    mode: opts.noMount ? 'no-mount' : opts.empty ? 'empty' : 'normal',
    screenshot: shot,
    checks,
    notes: {
      unopenedFolder: opts.noMount
        ? 'n/a'
        : `Photos/ (not opened in the window): ${photos.filter((s) => s === 'remote-only').length}/${photos.length} images still remote-only (${photos.join(', ')})`,
      screenshots: attempts,
    },
    timings: { ...timings, totalMs: Date.now() - started },
    fileManager: 'pcmanfm',
    display,
  };
  writeFileSync(join(opts.out, 'file-manager-report.json'), JSON.stringify(report, null, 2) + '\n');
  try {
    copyFileSync(fmLog, join(opts.out, 'pcmanfm.log'));
    if (!opts.noMount) writeFileSync(join(opts.out, 'daemon.log'), daemonLog);
  } catch {
    /* best effort */
  }

  if (opts.json) process.stdout.write(JSON.stringify(report, null, 2) + '\n');
  else {
    for (const c of checks) process.stdout.write(`${c.ok ? 'ok  ' : 'FAIL'} ${c.name.padEnd(10)} ${c.detail}\n`);
    process.stdout.write(`note ${report.notes.unopenedFolder}\n`);
    process.stdout.write(
      `time window ${fmt(timings.windowMs)}, all names ${fmt(timings.namesMs)}, all thumbnails ${fmt(timings.thumbnailsMs)} after PCManFM started; whole run ${fmt(report.timings.totalMs)}\n`,
    );
    process.stdout.write(`screenshot ${shot}\n`);
  }
  if (!report.ok) {
    process.stderr.write(`file-manager-check: FAILED: ${checks.filter((c) => !c.ok).map((c) => c.name).join(', ')} (see ${join(opts.out, 'file-manager-report.json')})\n`);
    return 1;
  }
  return 0;
}

const fmt = (ms) => (ms === undefined ? 'never' : `${(ms / 1000).toFixed(1)} s`);

let opts;
try {
  opts = parseArgs(process.argv.slice(2));
} catch (err) {
  process.stderr.write(`file-manager-check: ${err.message}\n`);
  process.exit(2);
}
runScript('file-manager-check', () => main(opts), { keep: () => opts.keep });
