/**
 * The daemon's log: one line per event, appended to the vault's log file (and to
 * stderr when running in the foreground). Writes are asynchronous.
 */
import { createWriteStream, mkdirSync, type WriteStream } from 'node:fs';
import { dirname } from 'node:path';

export type LogLevel = 'info' | 'warn' | 'error';

export interface Logger {
  info(message: string): void;
  warn(message: string, err?: unknown): void;
  error(message: string, err?: unknown): void;
  close(): Promise<void>;
}

export function createLogger(path: string, alsoStderr: boolean): Logger {
  mkdirSync(dirname(path), { recursive: true });
  const stream: WriteStream = createWriteStream(path, { flags: 'a' });
  stream.on('error', () => {});
  const write = (level: LogLevel, message: string, err?: unknown) => {
    const detail = err instanceof Error && err.message !== message && !message.includes(err.message) ? ` (${err.message})` : '';
    const line = `${new Date().toISOString()} ${level.toUpperCase()} [${process.pid}] ${message}${detail}\n`;
    stream.write(line);
    if (alsoStderr) process.stderr.write(line);
  };
  return {
    info: (message) => write('info', message),
    warn: (message, err) => write('warn', message, err),
    error: (message, err) => write('error', message, err),
    close: () => new Promise((resolve) => stream.end(resolve)),
  };
}
