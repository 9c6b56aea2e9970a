/**
 * Who is serving which vault where: a daemon-info file in the vault's state dir and
 * a record per mountpoint in the runtime dir (so `coffer unmount <mountpoint>` finds
 * the vault). Liveness is checked against /proc, so records left by a killed daemon
 * are recognised as stale.
 */
import { mkdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { dirname, resolve } from 'node:path';
import { mountRecordPath, vaultPaths } from '../vault/layout.js';

export interface DaemonInfo {
  pid: number;
  vault: string;
  mountpoint: string;
  socket: string;
  startedAt: string;
}

export async function writeDaemonInfo(info: DaemonInfo): Promise<void> {
  await writeJson(vaultPaths(info.vault).daemonInfo, info);
  await writeJson(mountRecordPath(info.mountpoint), info);
}

export async function removeDaemonInfo(info: DaemonInfo): Promise<void> {
  await rm(vaultPaths(info.vault).daemonInfo, { force: true });
  const record = await readJson(mountRecordPath(info.mountpoint));
  if (record && record.pid === info.pid) await rm(mountRecordPath(info.mountpoint), { force: true });
}

export async function daemonInfoForVault(vaultDir: string): Promise<DaemonInfo | undefined> {
  return readJson(vaultPaths(vaultDir).daemonInfo);
}

export async function daemonInfoForMountpoint(mountpoint: string): Promise<DaemonInfo | undefined> {
  return readJson(mountRecordPath(resolve(mountpoint)));
}

export async function removeMountRecord(mountpoint: string): Promise<void> {
  await rm(mountRecordPath(resolve(mountpoint)), { force: true });
}

/** True if `pid` is a live Coffer process (not a reused pid). */
export async function isDaemonAlive(pid: number): Promise<boolean> {
  try {
    process.kill(pid, 0);
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
  try {
    const cmdline = await readFile(`/proc/${pid}/cmdline`, 'utf8');
    // The background daemon renames itself coffer-daemon; a foreground one runs the CLI's main.js.
    return /coffer|main\.js/.test(cmdline);
  } catch {
    return false;
  }
}

async function readJson(path: string): Promise<DaemonInfo | undefined> {
  try {
    return JSON.parse(await readFile(path, 'utf8')) as DaemonInfo;
  } catch {
    return undefined;
  }
}

async function writeJson(path: string, value: unknown): Promise<void> {
  await mkdir(dirname(path), { recursive: true });
  const temp = `${path}.${process.pid}.tmp`;
  await writeFile(temp, JSON.stringify(value, null, 2) + '\n');
  await rename(temp, path);
}
