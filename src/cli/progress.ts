/**
 * One status line that redraws itself on a terminal, and falls back to a plain line
 * every few seconds when the output is a file or a pipe (logs stay readable).
 */
import { formatBytes } from './format.js';

export class ProgressLine {
  private lastPlainMs = 0;
  private drawn = false;

  constructor(
    private readonly stream: NodeJS.WriteStream = process.stderr,
    private readonly plainIntervalMs = 2000,
  ) {}

  update(text: string): void {
    if (this.stream.isTTY) {
      const width = this.stream.columns ?? 100;
      this.stream.write(`\r${text.slice(0, width - 1).padEnd(Math.min(width - 1, 100))}`);
      this.drawn = true;
    } else if (Date.now() - this.lastPlainMs >= this.plainIntervalMs) {
      this.stream.write(text + '\n');
      this.lastPlainMs = Date.now();
    }
  }

  done(text: string): void {
    if (this.drawn) this.stream.write('\r\x1b[K');
    this.stream.write(text + '\n');
  }
}

/** Upload progress: bytes and chunks left, rate over the last few seconds, ETA. */
export class TransferMeter {
  private readonly samples: { atMs: number; bytes: number }[] = [];

  constructor(private readonly startBytes: number) {}

  describe(uploadedBytes: number, pendingBytes: number, pendingChunks: number, note = ''): string {
    const now = Date.now();
    const done = uploadedBytes - this.startBytes;
    this.samples.push({ atMs: now, bytes: uploadedBytes });
    while (this.samples.length > 2 && now - this.samples[0]!.atMs > 5000) this.samples.shift();
    const first = this.samples[0]!;
    const seconds = (now - first.atMs) / 1000;
    const rate = seconds > 0.2 ? (uploadedBytes - first.bytes) / seconds : 0;
    const total = done + pendingBytes;
    const fraction = total > 0 ? done / total : 1;
    const width = 20;
    const filled = Math.round(fraction * width);
    const bar = `[${'#'.repeat(filled)}${'.'.repeat(width - filled)}]`;
    const eta = rate > 0 && pendingBytes > 0 ? ` ETA ${formatDuration(pendingBytes / rate)}` : '';
    return `${bar} ${formatBytes(done)} of ${formatBytes(total)}, ${pendingChunks} chunks left, ${formatBytes(rate)}/s${eta}${note ? `  ${note}` : ''}`;
  }
}

function formatDuration(seconds: number): string {
  if (seconds < 60) return `${Math.ceil(seconds)} s`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)} min ${Math.ceil(seconds % 60)} s`;
  return `${Math.floor(seconds / 3600)} h ${Math.round((seconds % 3600) / 60)} min`;
}
