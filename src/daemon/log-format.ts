/**
 * Turns the daemon's JSON log lines into lines for people: time, level, pid, message and the
 * fields that give it context (`2025-01-02T03:04:05.678Z ERROR [123] read: … op=read path=/a`).
 * Used by the foreground daemon for stderr and by `coffer logs`. Anything that is not a
 * JSON log line (what a crash printed, a log from an older Coffer) is passed through as is.
 */

const NUMERIC_LEVELS: Record<number, string> = { 10: 'trace', 20: 'debug', 30: 'info', 40: 'warn', 50: 'error', 60: 'fatal' };
/** Keys that are part of every line, or that the line's head shows. */
const HEAD_KEYS = new Set(['time', 'level', 'msg', 'pid', 'hostname']);

export interface ParsedLogLine {
  time?: string | number;
  level?: string | number;
  msg?: string;
  pid?: number;
  [key: string]: unknown;
}

/** The line as an object, or undefined when it is not a JSON log line. */
export function parseLogLine(line: string): ParsedLogLine | undefined {
  if (!line.startsWith('{')) return undefined;
  try {
    const value = JSON.parse(line) as unknown;
    return value !== null && typeof value === 'object' && !Array.isArray(value) ? (value as ParsedLogLine) : undefined;
  } catch {
    return undefined;
  }
}

export function levelName(level: unknown): string {
  if (typeof level === 'number') return NUMERIC_LEVELS[level] ?? String(level);
  return typeof level === 'string' ? level : 'info';
}

export function formatLogLine(line: string): string {
  const entry = parseLogLine(line);
  if (!entry) return line;
  const time = typeof entry.time === 'number' ? new Date(entry.time).toISOString() : String(entry.time ?? '-');
  const level = levelName(entry.level).toUpperCase().padEnd(5);
  const msg = typeof entry.msg === 'string' ? entry.msg : '';
  const pid = entry.pid !== undefined ? ` [${entry.pid}]` : '';
  const fields: string[] = [];
  for (const [key, value] of Object.entries(entry)) {
    if (HEAD_KEYS.has(key) || value === undefined) continue;
    if (key === 'err') {
      // Most messages already quote their error's message: say it once.
      const message = (value as { message?: unknown } | null)?.message;
      if (typeof message === 'string' && message !== '' && msg.includes(message)) continue;
      const text = errorText(value);
      if (text) fields.push(`err=${quote(text)}`);
      continue;
    }
    // A path or id the message already names is not repeated (the JSON line keeps it).
    if (typeof value === 'string' && value.length >= 4 && msg.includes(value)) continue;
    fields.push(`${key}=${quote(value)}`);
  }
  return `${time} ${level}${pid} ${msg}${fields.length ? '  ' + fields.join(' ') : ''}`;
}

function errorText(err: unknown): string {
  if (err === null || err === undefined) return '';
  if (typeof err !== 'object') return String(err);
  const { message, code } = err as { message?: unknown; code?: unknown };
  const text = typeof message === 'string' ? message : JSON.stringify(err);
  return typeof code === 'string' && !text.includes(code) ? `${text} (${code})` : text;
}

function quote(value: unknown): string {
  if (typeof value === 'string') return /^[^\s"=]+$/.test(value) ? value : JSON.stringify(value);
  if (typeof value === 'number' || typeof value === 'boolean') return String(value);
  return JSON.stringify(value);
}
