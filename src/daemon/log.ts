/**
 * The daemon's log: one JSON object per line (pino) in `<vault>/logs/daemon.log`, and in the
 * foreground also human-readable lines on stderr. `coffer logs` reads it back.
 *
 * The one hard rule: logging never blocks the thread that serves FUSE. Lines go to pino's
 * asynchronous destination (sonic-boom with `sync: false`): a call formats the line and queues
 * it; the write happens on libuv's thread pool. If the disk stalls, at most MAX_PENDING_BYTES
 * wait in memory and later lines are dropped (and counted) rather than held. Everything queued
 * is written on `close()` (shutdown), synchronously by `fatal()` (the process is going down),
 * and by pino's own exit hook if the process exits some other way.
 *
 * Bounded size: when the file passes `maxBytes` (default 10 MiB) it is renamed aside and a new
 * `daemon.log` is opened; the old one becomes `daemon.log.1` (`.1` becomes `.2`, … the oldest
 * of `keep` old files is replaced). All of it is asynchronous renames and sonic-boom's
 * `reopen()`, so the FUSE thread never waits for them. A file can end past `maxBytes` by one
 * write batch (sonic-boom writes at most 16 KiB at once) and the lines logged during the first
 * rename, which still land in it. For a moment the old file is `daemon.log.0`. This is
 * a few lines of our own rather than pino-roll: pino-roll names files `daemon.1.log`,
 * `daemon.2.log`, … with a growing number and the newest one moving, whereas a fixed current
 * file keeps `<vault>/logs/daemon.log` meaningful for people, for `tail -f`, and for the
 * daemon's stdout and stderr (which `coffer mount` points at it, to catch what a crash prints).
 */
import { rename, stat, unlink } from 'node:fs/promises';
import pino from 'pino';
import type { Log, LogFields, LogLevel } from '../logging.js';
import { formatLogLine } from './log-format.js';

export type { LogLevel } from '../logging.js';

export interface Logger extends Log {
  readonly level: LogLevel;
  /** A failure the process will not survive: the line and everything queued before it are written synchronously. */
  fatal(message: string, fields?: LogFields): void;
  /** Writes everything queued, synchronously. Only for when the process is about to end. */
  flushSync(): void;
  /** Writes everything queued and closes the file. */
  close(): Promise<void>;
}

export interface LoggerOptions {
  level?: LogLevel;
  /** Also write human-readable lines to stderr (the foreground daemon). */
  alsoStderr?: boolean;
  /** Rotate when the file reaches this many bytes; 0 never rotates. */
  maxBytes?: number;
  /** How many rotated files are kept (`daemon.log.1` … `daemon.log.<keep>`). */
  keep?: number;
}

export const DEFAULT_LOG_MAX_BYTES = 10 * 1024 * 1024;
export const DEFAULT_LOG_KEEP = 3;
/** Lines waiting for a slow disk beyond this many bytes are dropped instead of held. */
const MAX_PENDING_BYTES = 8 * 1024 * 1024;
/** The longest `close()` waits for a disk that does not take the last lines. */
const CLOSE_TIMEOUT_MS = 5000;

type Destination = ReturnType<typeof pino.destination>;

/** sonic-boom sets `destroyed` once closed; its type declarations do not list it. */
function isDestroyed(dest: Destination): boolean {
  return (dest as unknown as { destroyed?: boolean }).destroyed === true;
}

/** Resolves when the destination has (re)opened its file, or failed to. */
function opened(dest: Destination): Promise<void> {
  return new Promise((resolve) => {
    const done = (): void => {
      dest.off('ready', done);
      dest.off('error', done);
      resolve();
    };
    dest.on('ready', done);
    dest.on('error', done);
  });
}

/** Ends a destination, waiting for its queued lines at most CLOSE_TIMEOUT_MS. */
function endDestination(dest: Destination): Promise<void> {
  if (isDestroyed(dest)) return Promise.resolve();
  return new Promise((resolve) => {
    const timer = setTimeout(() => {
      try {
        dest.destroy();
      } catch {
        // already gone
      }
      resolve();
    }, CLOSE_TIMEOUT_MS);
    dest.once('close', () => {
      clearTimeout(timer);
      resolve();
    });
    try {
      dest.end();
    } catch {
      clearTimeout(timer);
      resolve();
    }
  });
}

/** An asynchronous file destination that renames itself aside when it grows past `maxBytes`. */
export class RotatingFile {
  private readonly dest: Destination;
  private bytes = 0;
  private rotation: Promise<void> | undefined;
  private closing = false;
  /** Lines dropped because the disk did not keep up (or failed). */
  dropped = 0;

  constructor(
    readonly path: string,
    private readonly maxBytes: number = DEFAULT_LOG_MAX_BYTES,
    private readonly keep: number = DEFAULT_LOG_KEEP,
  ) {
    this.dest = pino.destination({ dest: path, sync: false, mkdir: true, append: true, maxLength: MAX_PENDING_BYTES });
    // A full or failing disk costs log lines, never the daemon.
    this.dest.on('error', () => {});
    this.dest.on('drop', () => this.dropped++);
    this.dest.on('write', (n: number) => {
      this.bytes += n;
      if (this.maxBytes > 0 && this.bytes >= this.maxBytes) this.rotate();
    });
    void stat(path).then(
      (s) => (this.bytes += s.size),
      () => {},
    );
  }

  write(line: string): void {
    if (!isDestroyed(this.dest)) this.dest.write(line);
  }

  /** Resolves once a rotation in progress (if any) is complete; for tests. */
  async settled(): Promise<void> {
    while (this.rotation) await this.rotation;
  }

  private rotate(): void {
    if (this.rotation || this.closing) return;
    this.rotation = (async () => {
      try {
        // The current file steps aside first (as `.0`) and a new one opens at once, so lines
        // logged meanwhile land in the old file for one rename only; then the rest shift.
        // (A file someone deleted is simply opened anew.)
        await (this.keep <= 0 ? unlink(this.path) : rename(this.path, `${this.path}.0`)).catch((err: NodeJS.ErrnoException) => {
          if (err.code !== 'ENOENT') throw err;
        });
        if (!this.closing && !isDestroyed(this.dest)) {
          const ready = opened(this.dest);
          this.dest.reopen();
          await ready;
          this.bytes = 0; // counted from here: what the new file received
        }
        for (let n = this.keep - 1; n >= 0; n--) {
          await rename(`${this.path}.${n}`, `${this.path}.${n + 1}`).catch((err: NodeJS.ErrnoException) => {
            if (err.code !== 'ENOENT') throw err;
          });
        }
      } catch {
        // The next maxBytes of lines go on where they go, and then it is tried again.
        this.bytes = 0;
      } finally {
        this.rotation = undefined;
      }
    })();
  }

  flushSync(): void {
    try {
      this.dest.flushSync();
    } catch {
      // not open yet, or the disk refuses: nothing more can be done synchronously
    }
  }

  async close(): Promise<void> {
    this.closing = true;
    await this.settled();
    await endDestination(this.dest);
  }
}

export function createLogger(path: string, options: LoggerOptions = {}): Logger {
  const level = options.level ?? 'info';
  const file = new RotatingFile(path, options.maxBytes ?? DEFAULT_LOG_MAX_BYTES, options.keep ?? DEFAULT_LOG_KEEP);
  let stderr: Destination | undefined;
  if (options.alsoStderr) {
    stderr = pino.destination({ dest: 2, sync: false, maxLength: MAX_PENDING_BYTES });
    stderr.on('error', () => {});
  }
  const destination = {
    write(line: string): void {
      file.write(line);
      if (stderr && !isDestroyed(stderr)) stderr.write(formatLogLine(line.endsWith('\n') ? line.slice(0, -1) : line) + '\n');
    },
  };
  const logger = pino(
    {
      level,
      base: { pid: process.pid },
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: { level: (label) => ({ level: label }) },
    },
    destination,
  );
  const at =
    (method: 'debug' | 'info' | 'warn' | 'error' | 'fatal') =>
    (message: string, fields?: LogFields): void => {
      if (fields) logger[method](fields, message);
      else logger[method](message);
    };
  const flushSync = (): void => {
    file.flushSync();
    try {
      stderr?.flushSync();
    } catch {
      // stderr gone
    }
  };
  let closed: Promise<void> | undefined;
  return {
    level,
    debug: at('debug'),
    info: at('info'),
    warn: at('warn'),
    error: at('error'),
    fatal: (message, fields) => {
      at('fatal')(message, fields);
      flushSync();
    },
    flushSync,
    close: () => {
      closed ??= (async () => {
        if (file.dropped > 0) at('warn')(`${file.dropped} earlier log lines were dropped: the disk did not take them in time`);
        await Promise.all([file.close(), stderr ? endDestination(stderr) : undefined]);
      })();
      return closed;
    },
  };
}
