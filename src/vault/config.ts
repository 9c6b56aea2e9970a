/**
 * A vault's local settings (`config.json`, never uploaded) and the sizes users type
 * for them. Command-line flags override the file for one run.
 */
import { readFile, rename, rm, writeFile } from 'node:fs/promises';
import { CofferError } from '../errors.js';
import type { RemoteBackend } from '../remote/backend.js';
import { FaultyBackend, parseFaultPlan } from '../remote/faulty-backend.js';
import { openBackend } from '../remote/open-backend.js';
import { RateLimitedBackend } from '../remote/rate-limited-backend.js';
import { isLogLevel, LOG_LEVELS, type LogLevel } from '../logging.js';
import type { VaultPaths } from './layout.js';
import { defaultVolumeName, isVolumeName } from './volume-name.js';

export interface VaultConfig {
  version: 1;
  /**
   * The volume name the mount shows (df, findmnt, mountinfo). Absent in vaults created before
   * names existed: they show their directory's name (`volumeName`).
   */
  name?: string;
  /** Where sealed objects go: file:///path, s3://bucket/prefix or http(s)://host:port/[prefix]. */
  remote: string;
  /** S3 endpoint URL for non-AWS stores (else COFFER_S3_ENDPOINT, else AWS). */
  s3Endpoint?: string;
  s3Region?: string;
  /** Bearer token for an http(s):// remote (`coffer serve`); COFFER_TOKEN overrides it. */
  token?: string;
  /** Bytes of sealed chunks kept locally; chunks the remote holds are evicted beyond it. */
  cacheSize: number;
  /** Memory for write buffers, bytes. */
  bufferSize: number;
  /** Memory for opened chunks, bytes. */
  memoryCacheSize: number;
  /** How long a read waits for the remote before failing with EIO. */
  remoteReadTimeoutMs: number;
  uploadConcurrency: number;
  /**
   * When the daemon is stopped by a signal (SIGTERM, SIGINT) or its mount is removed from
   * outside, how long it keeps uploading after the unmount before it exits; what is left stays
   * queued for the next mount. 0: exit at once.
   */
  shutdownDrainMs: number;
  /** How often other devices' journals are read while mounted (ms). */
  pollIntervalMs: number;
  /** A checkpoint is written once the journals hold this many entries past the newest one. */
  checkpointEntries: number;
  /** Least important daemon log lines written: debug, info, warn or error. */
  logLevel: LogLevel;
  /** The daemon log is rotated when it reaches this many bytes (three old files are kept). */
  logMaxSize: number;
  /** Bytes per second sent to the remote; 0 is no limit. */
  uploadLimit: number;
  /** Bytes per second taken from the remote; 0 is no limit. */
  downloadLimit: number;
}

const MiB = 1024 * 1024;
const GiB = 1024 * MiB;

export const DEFAULT_CONFIG: Omit<VaultConfig, 'remote'> = {
  version: 1,
  cacheSize: 10 * GiB,
  bufferSize: 64 * MiB,
  memoryCacheSize: 64 * MiB,
  remoteReadTimeoutMs: 8000,
  uploadConcurrency: 4,
  shutdownDrainMs: 10_000,
  pollIntervalMs: 5000,
  checkpointEntries: 256,
  logLevel: 'info',
  logMaxSize: 10 * MiB,
  uploadLimit: 0,
  downloadLimit: 0,
};

/** Settings a command line may override for one run. */
export type ConfigOverrides = Partial<Pick<VaultConfig, 'cacheSize' | 's3Endpoint' | 's3Region' | 'logLevel' | 'uploadLimit' | 'downloadLimit'>>;

/** Settings that are sizes: the file may hold a number of bytes or a size such as "10M". */
const SIZE_KEYS = ['cacheSize', 'bufferSize', 'memoryCacheSize', 'logMaxSize', 'uploadLimit', 'downloadLimit'] as const;

export async function readConfig(paths: VaultPaths): Promise<VaultConfig> {
  let raw: Partial<VaultConfig>;
  try {
    raw = JSON.parse(await readFile(paths.config, 'utf8')) as Partial<VaultConfig>;
  } catch (err) {
    throw new CofferError('CORRUPT_FORMAT', `cannot read ${paths.config}: ${(err as Error).message}`);
  }
  if (raw.version !== 1 || typeof raw.remote !== 'string') {
    throw new CofferError('CORRUPT_FORMAT', `${paths.config} is not a Coffer vault config (version 1 with a remote)`);
  }
  if (raw.name !== undefined && !isVolumeName(raw.name)) {
    throw new CofferError(
      'CORRUPT_FORMAT',
      `${paths.config}: "name" must be 1 to 64 printable characters without surrounding spaces; fix it, or remove the key to use the directory's name`,
    );
  }
  const config = { ...DEFAULT_CONFIG, ...raw } as VaultConfig;
  if (typeof config.pollIntervalMs !== 'number' || !Number.isFinite(config.pollIntervalMs) || config.pollIntervalMs < 100) {
    throw new CofferError('CORRUPT_FORMAT', `${paths.config}: "pollIntervalMs" must be a number of milliseconds, 100 or more`);
  }
  if (!Number.isSafeInteger(config.checkpointEntries) || config.checkpointEntries < 1) {
    throw new CofferError('CORRUPT_FORMAT', `${paths.config}: "checkpointEntries" must be a whole number of journal entries, 1 or more`);
  }
  if (typeof config.shutdownDrainMs !== 'number' || !Number.isFinite(config.shutdownDrainMs) || config.shutdownDrainMs < 0) {
    throw new CofferError('CORRUPT_FORMAT', `${paths.config}: "shutdownDrainMs" must be a number of milliseconds, 0 or more`);
  }
  for (const key of SIZE_KEYS) {
    const value: unknown = config[key];
    const bytes = typeof value === 'string' ? parseSizeOrUndefined(value) : value;
    if (typeof bytes !== 'number' || !Number.isSafeInteger(bytes) || bytes < 0) {
      throw new CofferError(
        'CORRUPT_FORMAT',
        `${paths.config}: ${key} must be a size such as 10M or a number of bytes${key.endsWith('Limit') ? ' per second (0 for no limit)' : ''}, not ${JSON.stringify(value)}; fix or remove it`,
      );
    }
    config[key] = bytes;
  }
  if (!isLogLevel(config.logLevel)) {
    throw new CofferError('CORRUPT_FORMAT', `${paths.config}: logLevel must be one of ${LOG_LEVELS.join(', ')}, not ${JSON.stringify(config.logLevel)}; fix or remove it`);
  }
  return config;
}

/** The name the mount shows: the configured one, else the vault directory's name. */
export function volumeName(config: Pick<VaultConfig, 'name'>, paths: Pick<VaultPaths, 'dir'>): string {
  return config.name ?? defaultVolumeName(paths.dir);
}

/** Readable by its owner alone: it may hold a remote's token. */
export async function writeConfig(paths: VaultPaths, config: VaultConfig): Promise<void> {
  await rm(paths.config + '.tmp', { force: true });
  await writeFile(paths.config + '.tmp', JSON.stringify(config, null, 2) + '\n', { mode: 0o600 });
  await rename(paths.config + '.tmp', paths.config);
}

/**
 * The token `init` and `clone` keep for an http(s):// remote: COFFER_TOKEN as given to them,
 * so that later mounts (and the systemd service) need no environment of their own.
 */
export function tokenToKeep(remote: string, env: NodeJS.ProcessEnv = process.env): Pick<VaultConfig, 'token'> {
  return /^https?:\/\//i.test(remote) && env.COFFER_TOKEN ? { token: env.COFFER_TOKEN } : {};
}

export function withOverrides(config: VaultConfig, overrides: ConfigOverrides = {}): VaultConfig {
  const defined = Object.fromEntries(Object.entries(overrides).filter(([, v]) => v !== undefined));
  return { ...config, ...defined };
}

/**
 * `COFFER_FAULTS` (grammar in src/remote/faulty-backend.ts) injects remote faults for tests
 * and manual runs; the daemon inherits it from the `coffer mount` that starts it. An empty
 * value counts as unset, so `COFFER_FAULTS= coffer mount` turns faults off.
 */
export function openConfiguredBackend(
  config: Pick<VaultConfig, 'remote' | 's3Endpoint' | 's3Region'> & Partial<Pick<VaultConfig, 'token'>> & Partial<Pick<VaultConfig, 'uploadLimit' | 'downloadLimit'>>,
): RemoteBackend {
  const faults = process.env.COFFER_FAULTS?.trim() ? parseFaultPlan(process.env.COFFER_FAULTS) : undefined;
  const uploadLimit = config.uploadLimit ?? 0;
  const downloadLimit = config.downloadLimit ?? 0;
  const limited = uploadLimit > 0 || downloadLimit > 0;
  return openBackend(config.remote, {
    s3Endpoint: config.s3Endpoint,
    s3Region: config.s3Region,
    token: config.token,
    // Beneath the retries (every attempt spends bandwidth), above the faults (which stand for the network).
    wrap:
      faults || limited
        ? (backend) => {
            const network = faults ? new FaultyBackend(backend, faults) : backend;
            return limited ? new RateLimitedBackend(network, { uploadBytesPerSecond: uploadLimit, downloadBytesPerSecond: downloadLimit }) : network;
          }
        : undefined,
  });
}

/** "10G", "512M", "1.5GiB", "4096": bytes. Binary units, as disk tools use them. */
export function parseSize(text: string): number {
  const match = /^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?\s*$/i.exec(text);
  if (!match) throw new CofferError('BAD_ARGUMENT', `not a size: ${JSON.stringify(text)} (examples: 512M, 10G, 1T)`);
  const unit = { '': 1, k: 1024, m: MiB, g: GiB, t: 1024 * GiB }[match[2]!.toLowerCase() as '' | 'k' | 'm' | 'g' | 't'];
  return Math.floor(Number(match[1]) * unit);
}

function parseSizeOrUndefined(text: string): number | undefined {
  try {
    return parseSize(text);
  } catch {
    return undefined;
  }
}
