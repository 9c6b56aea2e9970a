/**
 * `coffer service install|uninstall`: a systemd user unit that keeps a vault mounted.
 *
 * Nobody is there to type a passphrase when the service starts, so it reads one from a file:
 * `--passphrase-file` is required, its absolute path goes into the unit, and the file must be
 * readable by its owner alone. Installing proves the file unlocks the vault, so a typo shows
 * now rather than as a service that keeps failing at login.
 */
import { lstat, mkdir, readdir, rename, rm, stat, writeFile } from 'node:fs/promises';
import { userInfo } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { CofferError } from '../../errors.js';
import { volumeName } from '../../vault/config.js';
import { readVaultHeaderRaw, unlockVault } from '../../vault/vault.js';
import { shellWord } from '../format.js';
import { obtainPassphrase } from '../passphrase.js';
import { checkSecretFile, type SecretFileKind } from '../secret-file.js';
import { say } from '../shared.js';
import { renderUnit, timeoutStopSec, unitNameForVault, userUnitDir } from '../systemd.js';
import { resolveTarget } from '../target.js';

export const DEFAULT_STOP_TIMEOUT_S = 30;

export interface ServiceInstallArgs {
  vault: string;
  mountpoint: string;
  passphraseFile?: string;
  /** Seconds stopping the service waits for pending uploads. */
  stopTimeout?: number;
  json: boolean;
}

/** Unit files cannot carry control characters (a newline would end the setting). */
function checkUnitPath(what: string, path: string): void {
  if (/\p{Cc}/u.test(path)) {
    throw new CofferError('BAD_ARGUMENT', `the ${what} path ${JSON.stringify(path)} contains control characters, which a systemd unit cannot hold; use another path`);
  }
}

/** The passphrase file: the unit names it, and anyone who can read it can open the vault. */
const PASSPHRASE_FILE: SecretFileKind = {
  what: 'the passphrase file',
  risk: 'anyone who reads it can open the vault',
  owner: 'the service runs as you and must own it',
  unusable: 'NO_PASSPHRASE',
};

function checkStopTimeout(value: number | undefined): number {
  if (value === undefined) return DEFAULT_STOP_TIMEOUT_S;
  if (!Number.isFinite(value) || value < 0 || value > 24 * 3600) {
    throw new CofferError('BAD_ARGUMENT', `--stop-timeout takes a number of seconds from 0 to 86400 (got ${String(value)})`);
  }
  return Math.ceil(value);
}

/** The compiled CLI that runs the service: this very file's main.js. */
function cliPath(): string {
  return join(dirname(fileURLToPath(import.meta.url)), '..', 'main.js');
}

export async function serviceInstallCommand(args: ServiceInstallArgs): Promise<void> {
  const vault = resolve(args.vault);
  const mountpoint = resolve(args.mountpoint);
  const stopTimeoutS = checkStopTimeout(args.stopTimeout);
  if (!args.passphraseFile) {
    throw new CofferError(
      'BAD_ARGUMENT',
      'coffer service install needs --passphrase-file <path>: the service starts with nobody there to type a passphrase. ' +
        'Put the passphrase in a file only you can read (chmod 600) and name it.',
    );
  }
  const passphraseFile = resolve(args.passphraseFile);
  for (const [what, path] of [['vault', vault], ['mountpoint', mountpoint], ['passphrase file', passphraseFile]] as const) checkUnitPath(what, path);
  await readVaultHeaderRaw(vault); // not a vault: say so before anything else
  const mountStat = await stat(mountpoint).catch(() => undefined);
  if (!mountStat) throw new CofferError('BAD_ARGUMENT', `mountpoint ${mountpoint} does not exist; create it first (mkdir -p ${shellWord(mountpoint)})`);
  if (!mountStat.isDirectory()) throw new CofferError('BAD_ARGUMENT', `mountpoint ${mountpoint} is not a directory`);
  await checkSecretFile(passphraseFile, PASSPHRASE_FILE);
  // Proves the file opens this vault (about a second: the passphrase KDF).
  const unlocked = await unlockVault(vault, await obtainPassphrase({ passphraseFile }));
  const config = unlocked.config;

  const unit = unitNameForVault(vault);
  const dir = userUnitDir();
  const path = join(dir, unit);
  const replaced = await lstat(path).then(() => true, () => false);
  const spec = {
    name: volumeName(config, unlocked.paths),
    vault,
    mountpoint,
    passphraseFile,
    node: process.execPath,
    cli: cliPath(),
    stopTimeoutS,
    drainS: config.shutdownDrainMs / 1000,
  };
  await mkdir(dir, { recursive: true });
  const temp = `${path}.${process.pid}.tmp`;
  await writeFile(temp, renderUnit(spec), { mode: 0o644 });
  await rename(temp, path);

  const enable = ['systemctl --user daemon-reload', `systemctl --user enable --now ${shellWord(unit)}`];
  const target = await resolveTarget(vault);
  const mountedNow = target.alive && target.info ? target.info.mountpoint : undefined;
  if (args.json) {
    process.stdout.write(
      JSON.stringify({
        unit,
        path,
        replaced,
        name: spec.name,
        vault,
        mountpoint,
        passphraseFile,
        node: spec.node,
        cli: spec.cli,
        stopTimeoutSeconds: stopTimeoutS,
        timeoutStopSec: timeoutStopSec(spec),
        mountedNow: mountedNow ?? null,
        enable,
      }) + '\n',
    );
    return;
  }
  say(`${replaced ? 'Replaced' : 'Wrote'} ${path}: it mounts ${JSON.stringify(spec.name)} (${vault}) at ${mountpoint}.`);
  say(`Stopping it waits up to ${stopTimeoutS} s for pending uploads, then unmounts; the rest stays queued for the next start.`);
  if (mountedNow) say(`The vault is mounted now at ${mountedNow}: unmount it first (coffer unmount ${shellWord(mountedNow)}).`);
  say('Enable and start it with:');
  for (const line of enable) say(`  ${line}`);
  say(`To keep it mounted while you are logged out: loginctl enable-linger ${shellWord(userInfo().username)}`);
  if (config.remote.startsWith('s3://')) {
    say(`The remote is on S3: give the service its credentials with systemctl --user edit ${shellWord(unit)} (Environment= or EnvironmentFile=).`);
  }
}

export async function serviceUninstallCommand(args: { vault: string; json: boolean }): Promise<void> {
  const vault = resolve(args.vault);
  const unit = unitNameForVault(vault);
  const dir = userUnitDir();
  const path = join(dir, unit);
  if (!(await lstat(path).then(() => true, () => false))) {
    throw new CofferError('NOT_INSTALLED', `there is no Coffer service for ${vault} (no ${path}); install one with: coffer service install <vault-dir> <mountpoint> --passphrase-file <path>`);
  }
  // `systemctl disable` needs the unit file, which is about to go: drop the links it would drop.
  const removed: string[] = [];
  for (const entry of await readdir(dir, { withFileTypes: true })) {
    if (!entry.isDirectory() || !/\.(wants|requires|upholds)$/.test(entry.name)) continue;
    const link = join(dir, entry.name, unit);
    if (await lstat(link).then(() => true, () => false)) {
      await rm(link, { force: true });
      removed.push(link);
    }
  }
  await rm(path, { force: true });
  removed.push(path);
  const stop = [`systemctl --user stop ${shellWord(unit)}`, 'systemctl --user daemon-reload'];
  if (args.json) {
    process.stdout.write(JSON.stringify({ unit, path, removed, stop }) + '\n');
    return;
  }
  for (const file of removed) say(`Removed ${file}.`);
  say('If it is running, stop it and let systemd forget it with:');
  for (const line of stop) say(`  ${line}`);
  say(`The vault ${vault} and its data are untouched.`);
}
