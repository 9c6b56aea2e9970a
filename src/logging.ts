/**
 * What every layer may say to the daemon's log, without knowing how it is written: a
 * message plus structured fields. Only src/daemon/log.ts turns these into log lines, so
 * the layers below it stay free of the logging library (and of the daemon).
 */

export const LOG_LEVELS = ['debug', 'info', 'warn', 'error'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

/**
 * Fields that give a line its context. The common ones have fixed names so a reader can
 * filter on them (`jq 'select(.chunk == "…")'`): `err` is an Error (its message, code and
 * stack are kept), `op` a FUSE or remote operation, `path` a path inside the mount, `chunk`
 * a chunk id in hex, `ino` an inode number.
 */
export interface LogFields {
  err?: unknown;
  op?: string;
  path?: string;
  chunk?: string;
  ino?: number;
  [key: string]: unknown;
}

export type LogFn = (message: string, fields?: LogFields) => void;

/** A log with levels, for layers that say more than one kind of thing. */
export interface Log {
  debug: LogFn;
  info: LogFn;
  warn: LogFn;
  error: LogFn;
}

/** A log that drops everything: for work whose progress is reported another way (a clone, an upgrade). */
export const silentLog: Log = { debug() {}, info() {}, warn() {}, error() {} };

export function isLogLevel(value: unknown): value is LogLevel {
  return typeof value === 'string' && (LOG_LEVELS as readonly string[]).includes(value);
}
