/**
 * Commands accept either a vault directory or a mountpoint; this finds the vault
 * and, if one is running, its daemon.
 */
import { resolve } from 'node:path';
import { CofferError } from '../errors.js';
import { daemonInfoForMountpoint, daemonInfoForVault, isDaemonAlive, type DaemonInfo } from '../daemon/registry.js';
import { isVaultDir } from '../vault/vault.js';

export interface Target {
  /** The vault directory, when known. */
  vault?: string;
  /** The mountpoint, when known. */
  mountpoint?: string;
  /** The record of the last daemon that served it. */
  info?: DaemonInfo;
  /** Whether that daemon is still running. */
  alive: boolean;
}

export async function resolveTarget(path: string): Promise<Target> {
  const absolute = resolve(path);
  if (await isVaultDir(absolute)) {
    const info = await daemonInfoForVault(absolute);
    const alive = info ? await isDaemonAlive(info.pid) : false;
    return { vault: absolute, mountpoint: info?.mountpoint, info, alive };
  }
  const info = await daemonInfoForMountpoint(absolute);
  const alive = info ? await isDaemonAlive(info.pid) : false;
  return { vault: info?.vault, mountpoint: absolute, info, alive };
}

export function requireVault(target: Target, path: string): string {
  if (!target.vault) {
    throw new CofferError('NOT_A_VAULT', `${path} is neither a Coffer vault nor a Coffer mountpoint`);
  }
  return target.vault;
}
