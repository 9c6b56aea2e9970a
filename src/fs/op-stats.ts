/**
 * How long the filesystem takes to answer the kernel, per FUSE operation: a count, the
 * failures, and a histogram with power-of-two microsecond buckets. Cheap enough to keep on
 * for every request; `coffer status --json` shows it as `fuseOps`, so a slow workload can be
 * traced to the operations it waits on.
 */

export interface OpSummary {
  count: number;
  errors: number;
  meanUs: number;
  /** Upper bounds of the histogram buckets the percentiles fall in (so within 2x). */
  p50Us: number;
  p90Us: number;
  p99Us: number;
  maxUs: number;
}

interface OpRecord {
  count: number;
  errors: number;
  totalUs: number;
  maxUs: number;
  /** buckets[i] counts answers that took less than 2^i µs (and at least 2^(i-1)). */
  buckets: number[];
}

const BUCKETS = 40;

export class OpStats {
  private readonly ops = new Map<string, OpRecord>();

  record(op: string, micros: number, failed: boolean): void {
    let rec = this.ops.get(op);
    if (!rec) {
      rec = { count: 0, errors: 0, totalUs: 0, maxUs: 0, buckets: new Array<number>(BUCKETS).fill(0) };
      this.ops.set(op, rec);
    }
    rec.count++;
    if (failed) rec.errors++;
    rec.totalUs += micros;
    if (micros > rec.maxUs) rec.maxUs = micros;
    rec.buckets[Math.min(BUCKETS - 1, Math.ceil(Math.log2(micros + 1)))]++;
  }

  snapshot(): Record<string, OpSummary> {
    const out: Record<string, OpSummary> = {};
    for (const [op, rec] of [...this.ops].sort(([a], [b]) => a.localeCompare(b))) {
      const percentile = (p: number): number => {
        const rank = Math.ceil(rec.count * p);
        let seen = 0;
        for (let i = 0; i < BUCKETS; i++) {
          seen += rec.buckets[i];
          if (seen >= rank) return Math.min(2 ** i, Math.ceil(rec.maxUs));
        }
        return Math.ceil(rec.maxUs);
      };
      out[op] = {
        count: rec.count,
        errors: rec.errors,
        meanUs: Math.round(rec.totalUs / rec.count),
        p50Us: percentile(0.5),
        p90Us: percentile(0.9),
        p99Us: percentile(0.99),
        maxUs: Math.ceil(rec.maxUs),
      };
    }
    return out;
  }
}
