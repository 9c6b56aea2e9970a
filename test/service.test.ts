/**
 * `coffer service install|uninstall`: the systemd user unit's name and content, that its
 * ExecStart and ExecStop really mount and unmount the vault when run as systemd would run
 * them, that `systemd-analyze verify` accepts it (where that binary exists), uninstalling,
 * and the refusals: bad arguments, a wrong passphrase, a passphrase file others can read.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { systemdEscapePath } from '../src/cli/systemd.js';
import { CLI, coffer, cofferOk, isMounted, PASSPHRASE, Workspace, type CliResult } from './helpers/drive.js';

const workspaces: Workspace[] = [];
const children: ChildProcess[] = [];
const mounts: string[] = [];
afterEach(async () => {
  for (const mnt of mounts.splice(0)) {
    if (!isMounted(mnt)) continue;
    const result = await coffer(['unmount', mnt, '--no-wait-sync']);
    if (result.code !== 0 || isMounted(mnt)) spawnSync('umount', ['-l', mnt]);
  }
  for (const child of children.splice(0)) if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  while (workspaces.length > 0) await workspaces.pop()!.cleanup();
});

const hasSystemdAnalyze = spawnSync('systemd-analyze', ['--version']).status === 0;
const hasSystemdEscape = spawnSync('systemd-escape', ['--version']).status === 0;

interface Setup {
  ws: Workspace;
  vault: string;
  mnt: string;
  passFile: string;
  /** XDG_CONFIG_HOME for the commands: units go to <config>/systemd/user. */
  env: NodeJS.ProcessEnv;
  unitDir: string;
}

/** A vault at a path systemd must escape (space, dash, percent, non-ASCII) and a passphrase file. */
async function setup(name = 'Photos'): Promise<Setup> {
  const ws = new Workspace('coffer-service-');
  workspaces.push(ws);
  const vault = join(ws.dir, 'my vault-%h ü');
  await cofferOk(['init', vault, '--name', name, '--remote', `file://${join(ws.dir, 'remote')}`], { env: { COFFER_FAULTS: '' } });
  const passFile = join(ws.dir, 'passphrase');
  fs.writeFileSync(passFile, `${PASSPHRASE}\n`, { mode: 0o600 });
  const config = join(ws.dir, 'config');
  return { ws, vault, mnt: ws.mnt, passFile, env: { XDG_CONFIG_HOME: config, COFFER_FAULTS: '' }, unitDir: join(config, 'systemd', 'user') };
}

/** As the service runs it: no passphrase in the environment, only the file. */
function service(s: Setup, args: string[]): Promise<CliResult> {
  return coffer(['service', ...args], { env: s.env, passphrase: null });
}

async function serviceOk(s: Setup, args: string[]): Promise<CliResult> {
  const result = await service(s, args);
  if (result.code !== 0) throw new Error(`coffer service ${args.join(' ')} failed (${result.code}): ${result.stderr}`);
  return result;
}

function setting(unit: string, key: string): string {
  const line = unit.split('\n').find((l) => l.startsWith(`${key}=`));
  if (line === undefined) throw new Error(`no ${key}= in the unit:\n${unit}`);
  return line.slice(key.length + 1);
}

/**
 * An Exec line as systemd turns it into argv: `%%` specifiers, the `-` prefix, words split on
 * spaces, double quotes, backslash escapes (`\\`, `\"`, `\xNN`), then `$$`.
 */
function execArgv(line: string): { ignoreFailure: boolean; argv: string[] } {
  let rest = line.replace(/%%/g, '%');
  const ignoreFailure = rest.startsWith('-');
  rest = rest.replace(/^[-@:+!]+/, '');
  const argv: string[] = [];
  let i = 0;
  while (i < rest.length) {
    while (rest[i] === ' ') i++;
    if (i >= rest.length) break;
    let word = '';
    let quoted = false;
    for (; i < rest.length; i++) {
      const c = rest[i]!;
      if (c === ' ' && !quoted) break;
      if (c === '"') quoted = !quoted;
      else if (c === '\\' && rest[i + 1] === 'x') {
        word += String.fromCharCode(parseInt(rest.slice(i + 2, i + 4), 16));
        i += 3;
      } else if (c === '\\') word += rest[++i];
      else word += c;
    }
    argv.push(word.replace(/\$\$/g, '$'));
  }
  return { ignoreFailure, argv };
}

describe('coffer service install', () => {
  it('writes a user unit named after the vault that mounts it in the foreground and stops with a bounded wait', async () => {
    const s = await setup();
    const out = await serviceOk(s, ['install', s.vault, s.mnt, '--passphrase-file', s.passFile]);
    const escaped = systemdEscapePath(s.vault);
    if (hasSystemdEscape) expect(escaped).toBe(spawnSync('systemd-escape', ['--path', s.vault], { encoding: 'utf8' }).stdout.trim());
    expect(escaped).toMatch(/-my\\x20vault\\x2d\\x25h\\x20\\xc3\\xbc$/);
    const unitName = `coffer-${escaped}.service`;
    const unitPath = join(s.unitDir, unitName);
    expect(fs.readdirSync(s.unitDir)).toEqual([unitName]);
    expect(out.stderr).toContain(`Wrote ${unitPath}`);
    expect(out.stderr).toContain('systemctl --user daemon-reload');
    expect(out.stderr).toContain(`systemctl --user enable --now '${unitName}'`);

    const unit = fs.readFileSync(unitPath, 'utf8');
    expect(setting(unit, 'Description')).toBe(`Coffer drive Photos (${s.mnt})`);
    expect(setting(unit, 'Restart')).toBe('on-failure');
    expect(setting(unit, 'WantedBy')).toBe('default.target');
    const start = execArgv(setting(unit, 'ExecStart'));
    expect(start).toEqual({
      ignoreFailure: false,
      argv: [process.execPath, CLI, 'mount', '--foreground', '--passphrase-file', s.passFile, s.vault, s.mnt],
    });
    const stop = execArgv(setting(unit, 'ExecStop'));
    expect(stop).toEqual({ ignoreFailure: true, argv: [process.execPath, CLI, 'unmount', '--wait-sync', '--timeout', '30', s.mnt] });
    // Room for the bounded upload wait and the daemon's own drain, with slack.
    expect(Number(setting(unit, 'TimeoutStopSec'))).toBeGreaterThan(30 + 10);

    // Installing again replaces it; --json says what was written.
    const again = JSON.parse((await serviceOk(s, ['install', s.vault, s.mnt, '--passphrase-file', s.passFile, '--stop-timeout', '120', '--json'])).stdout);
    expect(again).toMatchObject({ unit: unitName, path: unitPath, replaced: true, name: 'Photos', vault: s.vault, mountpoint: s.mnt, passphraseFile: s.passFile });
    expect(again.enable).toEqual(['systemctl --user daemon-reload', `systemctl --user enable --now '${unitName}'`]);
    const longer = fs.readFileSync(unitPath, 'utf8');
    expect(setting(longer, 'ExecStop')).toContain('--timeout 120 ');
    expect(Number(setting(longer, 'TimeoutStopSec'))).toBe(again.timeoutStopSec);
    expect(again.timeoutStopSec).toBeGreaterThan(120);
  });

  it.skipIf(!hasSystemdAnalyze)('writes a unit systemd-analyze verify accepts without a warning', async () => {
    const s = await setup('Tricky, 100% $HOME \\');
    const { path } = JSON.parse((await serviceOk(s, ['install', s.vault, s.mnt, '--passphrase-file', s.passFile, '--json'])).stdout);
    const verify = spawnSync('systemd-analyze', ['verify', path], { encoding: 'utf8' });
    expect(verify.stderr).toBe('');
    expect(verify.status).toBe(0);
    // It does look: a broken unit is reported.
    const broken = join(s.ws.dir, 'broken.service');
    fs.writeFileSync(broken, fs.readFileSync(path, 'utf8').replace(/^ExecStart=\S+/m, 'ExecStart=/no/such/node'));
    expect(spawnSync('systemd-analyze', ['verify', broken], { encoding: 'utf8' }).status).not.toBe(0);
  });

  it('runs as systemd would: ExecStart mounts with the passphrase file, ExecStop uploads and unmounts', async () => {
    const s = await setup('Service Drive');
    const { path } = JSON.parse((await serviceOk(s, ['install', s.vault, s.mnt, '--passphrase-file', s.passFile, '--json'])).stdout);
    const unit = fs.readFileSync(path, 'utf8');
    const start = execArgv(setting(unit, 'ExecStart')).argv;
    const stop = execArgv(setting(unit, 'ExecStop')).argv;
    const env: NodeJS.ProcessEnv = { ...process.env, COFFER_FAULTS: '' };
    delete env.COFFER_PASSPHRASE;
    mounts.push(s.mnt);
    const main = spawn(start[0]!, start.slice(1), { env, stdio: ['ignore', 'pipe', 'pipe'] });
    children.push(main);
    let output = '';
    main.stdout!.on('data', (d) => (output += d));
    main.stderr!.on('data', (d) => (output += d));
    const exited = new Promise<number | null>((r) => main.on('exit', (code) => r(code)));
    for (let i = 0; i < 200 && !(isMounted(s.mnt) && /Mounted/.test(output)); i++) await new Promise((r) => setTimeout(r, 100));
    expect(isMounted(s.mnt), output).toBe(true);
    expect(output).toMatch(/Mounted "Service Drive"/);
    const data = randomBytes(1_500_000);
    fs.writeFileSync(join(s.mnt, 'file'), data);

    const stopped = spawnSync(stop[0]!, stop.slice(1), { env, encoding: 'utf8', timeout: 120_000 });
    expect(stopped.status, stopped.stderr).toBe(0);
    expect(stopped.stderr).toMatch(/Synced: the remote holds everything/);
    expect(await exited).toBe(0);
    expect(isMounted(s.mnt)).toBe(false);
    const status = JSON.parse((await cofferOk(['status', s.vault, '--json'])).stdout);
    expect(status).toMatchObject({ mounted: false, name: 'Service Drive', pendingChunks: 0, files: 1 });
  });
});

describe('coffer service uninstall', () => {
  it('removes the unit and its enablement links, and prints how to stop it', async () => {
    const s = await setup();
    const { unit, path } = JSON.parse((await serviceOk(s, ['install', s.vault, s.mnt, '--passphrase-file', s.passFile, '--json'])).stdout);
    // What `systemctl --user enable` would have made.
    const wants = join(s.unitDir, 'default.target.wants');
    fs.mkdirSync(wants);
    fs.symlinkSync(join('..', unit), join(wants, unit));
    const out = await serviceOk(s, ['uninstall', s.vault]);
    expect(fs.existsSync(path)).toBe(false);
    expect(fs.readdirSync(wants)).toEqual([]);
    expect(out.stderr).toContain(`systemctl --user stop '${unit}'`);
    expect(out.stderr).toContain('systemctl --user daemon-reload');
    expect(fs.existsSync(join(s.vault, 'vault.json'))).toBe(true);

    const missing = await service(s, ['uninstall', s.vault]);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toMatch(/there is no Coffer service for .*coffer service install/);

    await serviceOk(s, ['install', s.vault, s.mnt, '--passphrase-file', s.passFile]);
    const json = JSON.parse((await serviceOk(s, ['uninstall', s.vault, '--json'])).stdout);
    expect(json).toEqual({ unit, path, removed: [path], stop: [`systemctl --user stop '${unit}'`, 'systemctl --user daemon-reload'] });
  });
});

describe('coffer service refusals', () => {
  it('refuses bad command lines with exit 2 and a failed unlock with exit 1, writing nothing', async () => {
    const s = await setup();
    const cases: [string[], number, RegExp][] = [
      [['install', s.vault, s.mnt], 2, /needs --passphrase-file/],
      [['install', s.vault], 2, /Not enough non-option arguments/],
      [['install', s.vault, join(s.ws.dir, 'nowhere'), '--passphrase-file', s.passFile], 2, /does not exist; create it first/],
      [['install', s.vault, s.passFile, '--passphrase-file', s.passFile], 2, /is not a directory/],
      [['install', s.vault, s.mnt, '--passphrase-file', s.passFile, '--stop-timeout', '-5'], 2, /--stop-timeout takes a number/],
      [['install', s.ws.dir, s.mnt, '--passphrase-file', s.passFile], 1, /is not a Coffer vault/],
      [['install', s.vault, s.mnt, '--passphrase-file', join(s.ws.dir, 'missing')], 1, /does not exist/],
      [['frobnicate'], 2, /Unknown argument|name a service command/],
      [[], 2, /name a service command/],
    ];
    for (const [args, code, message] of cases) {
      const result = await service(s, args);
      expect(result.code, args.join(' ')).toBe(code);
      expect(result.stderr, args.join(' ')).toMatch(message);
    }
    const wrong = join(s.ws.dir, 'wrong');
    fs.writeFileSync(wrong, 'not the passphrase\n', { mode: 0o600 });
    const refused = await service(s, ['install', s.vault, s.mnt, '--passphrase-file', wrong]);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toMatch(/wrong passphrase/);
    expect(fs.existsSync(s.unitDir)).toBe(false);
  });

  it('refuses a passphrase file other users can read or change, and says how to fix it', async () => {
    const s = await setup();
    for (const [mode, verb] of [[0o644, 'read'], [0o640, 'read'], [0o604, 'read'], [0o620, 'changed'], [0o602, 'changed']] as const) {
      fs.chmodSync(s.passFile, mode);
      const result = await service(s, ['install', s.vault, s.mnt, '--passphrase-file', s.passFile]);
      expect(result.code, mode.toString(8)).toBe(1);
      expect(result.stderr).toContain(`can be ${verb} by other users (mode ${mode.toString(8)})`);
      expect(result.stderr).toContain(`chmod 600 ${s.passFile}`);
    }
    expect(fs.existsSync(s.unitDir)).toBe(false);
    fs.chmodSync(s.passFile, 0o400);
    await serviceOk(s, ['install', s.vault, s.mnt, '--passphrase-file', s.passFile]);
  });
});
