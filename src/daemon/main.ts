/**
 * Entry point of a background daemon started by `coffer mount`. The CLI has already
 * unlocked the vault; it passes the master key on stdin (never on the command line
 * or in the environment) and waits for one line on fd 3: `ready` or `error <json>`.
 */
import { createWriteStream } from 'node:fs';
import { pathToFileURL } from 'node:url';
import { withOverrides, type ConfigOverrides, type VaultConfig } from '../vault/config.js';
import { openVaultWithKey } from '../vault/vault.js';
import { createLogger, type Logger } from './log.js';
import type { VaultPaths } from '../vault/layout.js';
import { runDaemon } from './daemon.js';

export interface StartRequest {
  vault: string;
  mountpoint: string;
  /** hex */
  masterKey: string;
  overrides: ConfigOverrides;
}

async function readStdin(): Promise<string> {
  let text = '';
  process.stdin.setEncoding('utf8');
  for await (const piece of process.stdin) text += piece;
  return text;
}

async function main(): Promise<void> {
  process.title = 'coffer-daemon';
  const report = createWriteStream('', { fd: 3 });
  report.on('error', () => {});
  const request = JSON.parse(await readStdin()) as StartRequest;
  let log: Logger | undefined;
  try {
    const vault = await openVaultWithKey(request.vault, Buffer.from(request.masterKey, 'hex'));
    vault.config = withOverrides(vault.config, request.overrides);
    log = openDaemonLog(vault.paths, vault.config, false);
    await runDaemon({ vault, mountpoint: request.mountpoint, log, onReady: () => report.end('ready\n') });
  } catch (err) {
    log?.error(`daemon failed: ${(err as Error).message}`, { err });
    report.end(`error ${JSON.stringify({ code: (err as { code?: string }).code ?? 'DAEMON_FAILED', message: (err as Error).message })}\n`);
    await log?.close();
    process.exitCode = 1;
    return;
  }
  await log.close();
  process.exit(0);
}

/** The vault's log at the level and size its config (with the mount's flags) asks for. */
export function openDaemonLog(paths: VaultPaths, config: VaultConfig, alsoStderr: boolean): Logger {
  return createLogger(paths.log, { level: config.logLevel, alsoStderr, maxBytes: config.logMaxSize });
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) void main();
