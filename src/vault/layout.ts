/**
 * Where a vault keeps its parts on this machine (docs/FORMAT.md, "Vault directory").
 */
import { createHash } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';

export interface VaultPaths {
  dir: string;
  header: string;
  config: string;
  index: string;
  cache: string;
  embeddedRemote: string;
  /** Where recovery puts local data it cannot place, instead of deleting it. */
  lostFound: string;
  state: string;
  daemonInfo: string;
  log: string;
  socket: string;
}

/** Unix socket paths are limited to 107 bytes; long vault paths get one in the runtime dir. */
const SOCKET_PATH_MAX = 100;

export function vaultPaths(vaultDir: string): VaultPaths {
  const dir = resolve(vaultDir);
  const state = join(dir, 'state');
  let socket = join(state, 'control.sock');
  if (Buffer.byteLength(socket) > SOCKET_PATH_MAX) {
    socket = join(runtimeDir(), `${createHash('sha256').update(dir).digest('hex').slice(0, 16)}.sock`);
  }
  return {
    dir,
    header: join(dir, 'vault.json'),
    config: join(dir, 'config.json'),
    index: join(dir, 'index.db'),
    cache: join(dir, 'cache'),
    embeddedRemote: join(dir, 'remote'),
    lostFound: join(dir, 'lost+found'),
    state,
    daemonInfo: join(state, 'daemon.json'),
    log: join(dir, 'logs', 'daemon.log'),
    socket,
  };
}

/** Per-user directory for things that live only while the machine is up. */
export function runtimeDir(): string {
  const uid = process.getuid?.() ?? 0;
  return process.env.XDG_RUNTIME_DIR ? join(process.env.XDG_RUNTIME_DIR, 'coffer') : join(tmpdir(), `coffer-${uid}`);
}

/** Registry file that maps a mountpoint back to its vault. */
export function mountRecordPath(mountpoint: string): string {
  return join(runtimeDir(), 'mounts', `${createHash('sha256').update(resolve(mountpoint)).digest('hex').slice(0, 24)}.json`);
}
