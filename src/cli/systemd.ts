/**
 * systemd user units for `coffer service`: the unit's name (escaped the way `systemd-escape
 * --path` does), where user units live, and the unit file itself.
 */
import { createHash } from 'node:crypto';
import { homedir } from 'node:os';
import { isAbsolute, join, normalize } from 'node:path';

/** systemd refuses unit names longer than this (UNIT_NAME_MAX - 1). */
const UNIT_NAME_MAX = 255;

const VALID = /[A-Za-z0-9:_.]/;

function escapeByte(byte: number): string {
  return `\\x${byte.toString(16).padStart(2, '0')}`;
}

/**
 * `systemd-escape --path <path>`: the path simplified, its leading and trailing slashes
 * dropped, `/` turned into `-`, and every byte that is not an ASCII letter, digit, `:`, `_` or
 * `.` (and a leading `.`) written as `\xNN`. The root directory is `-`.
 */
export function systemdEscapePath(path: string): string {
  const simplified = normalize(path).replace(/\/+/g, '/').replace(/^\/+|\/+$/g, '');
  if (simplified === '' || simplified === '.') return '-';
  let out = '';
  const bytes = Buffer.from(simplified, 'utf8');
  for (let i = 0; i < bytes.length; i++) {
    const byte = bytes[i]!;
    const ch = String.fromCharCode(byte);
    if (ch === '/') out += '-';
    else if (i === 0 && ch === '.') out += escapeByte(byte);
    else if (byte < 0x80 && VALID.test(ch)) out += ch;
    else out += escapeByte(byte);
  }
  return out;
}

/** `coffer-<escaped vault path>.service`; a path too long for a unit name is named by its hash. */
export function unitNameForVault(vaultDir: string): string {
  const name = `coffer-${systemdEscapePath(vaultDir)}.service`;
  if (name.length <= UNIT_NAME_MAX) return name;
  return `coffer-${createHash('sha256').update(vaultDir).digest('hex').slice(0, 32)}.service`;
}

/** Where systemd looks for a user's own units: `$XDG_CONFIG_HOME/systemd/user`, by default ~/.config/systemd/user. */
export function userUnitDir(env: NodeJS.ProcessEnv = process.env): string {
  const config = env.XDG_CONFIG_HOME && isAbsolute(env.XDG_CONFIG_HOME) ? env.XDG_CONFIG_HOME : join(homedir(), '.config');
  return join(config, 'systemd', 'user');
}

/**
 * One word of an Exec line: `%` specifiers and `$` variables neutralised, quoted when it holds
 * anything but plain path characters. (systemd expands `%` on the raw line, then splits and
 * unquotes words with C escapes, then substitutes `$` variables.)
 */
export function execWord(word: string): string {
  const escaped = word.replace(/%/g, '%%').replace(/\$/g, '$$$$');
  if (/^[A-Za-z0-9_@+=:,./-]+$/.test(escaped)) return escaped;
  return `"${escaped.replace(/\\/g, '\\\\').replace(/"/g, '\\"')}"`;
}

/** Free text in a unit setting: no specifiers, and no trailing backslash (it would join the next line). */
function settingText(text: string): string {
  return text.replace(/%/g, '%%').replace(/\\+$/, '');
}

export interface ServiceSpec {
  /** The vault's volume name, for the description. */
  name: string;
  vault: string;
  mountpoint: string;
  passphraseFile: string;
  /** Absolute paths of the node binary and of dist/cli/main.js. */
  node: string;
  cli: string;
  /** The longest `ExecStop` waits for pending uploads before it unmounts anyway, seconds. */
  stopTimeoutS: number;
  /** The daemon's own drain bound on SIGTERM (shutdownDrainMs), seconds. */
  drainS: number;
}

/** Extra time past the longest wait for committing, unmounting and closing the index. */
const STOP_SLACK_S = 30;

export function timeoutStopSec(spec: Pick<ServiceSpec, 'stopTimeoutS' | 'drainS'>): number {
  return Math.ceil(Math.max(spec.stopTimeoutS, spec.drainS)) + STOP_SLACK_S;
}

/**
 * The unit: `mount --foreground` as the service's process, restarted when it fails;
 * stopping runs `coffer unmount --wait-sync` bounded by `stopTimeoutS` (what is left stays
 * queued), and only if the daemon is still there after that does systemd send SIGTERM, on
 * which it drains for at most `drainS`. TimeoutStopSec covers both with room to spare.
 */
export function renderUnit(spec: ServiceSpec): string {
  const cli = [spec.node, spec.cli].map(execWord).join(' ');
  const start = `${cli} mount --foreground --passphrase-file ${execWord(spec.passphraseFile)} ${execWord(spec.vault)} ${execWord(spec.mountpoint)}`;
  const stop = `-${cli} unmount --wait-sync --timeout ${spec.stopTimeoutS} ${execWord(spec.mountpoint)}`;
  return [
    '# Written by `coffer service install`; remove it with `coffer service uninstall <vault-dir>`.',
    '# For an s3:// remote, give the daemon its credentials with `systemctl --user edit <unit>`:',
    '# [Service] Environment=AWS_ACCESS_KEY_ID=... or EnvironmentFile=<file> (mode 600).',
    '',
    '[Unit]',
    `Description=${settingText(`Coffer drive ${spec.name} (${spec.mountpoint})`)}`,
    '',
    '[Service]',
    'Type=simple',
    `ExecStart=${start}`,
    `ExecStop=${stop}`,
    'Restart=on-failure',
    'RestartSec=5',
    `TimeoutStopSec=${timeoutStopSec(spec)}`,
    '',
    '[Install]',
    'WantedBy=default.target',
    '',
  ].join('\n');
}
