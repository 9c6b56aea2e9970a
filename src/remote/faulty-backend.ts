/**
 * Fault injection around any backend, so tests and manual runs can watch Coffer meet a
 * remote that is slow, refuses, hangs, drops connections, delivers short bodies or goes
 * away for a while. It sits where the network would fail: inside RetryingBackend, so what
 * it injects is what the retries see. It never touches the bytes it passes through except
 * to cut a get short (which the data path must refuse to serve: the object no longer
 * authenticates).
 *
 * `COFFER_FAULTS` (read by `openConfiguredBackend`) holds a plan as comma-separated
 * `key=value` items, e.g.
 *
 *   latency=50:20,fail=0.3,timeout=0.05,truncate=0.1,ops=get+put,seed=7,outage-file=/tmp/x
 *
 *   latency=MS[:JITTER]   each affected call first waits MS plus a uniform 0..JITTER
 *   fail=P                answers 503 Service Unavailable (REMOTE_UNAVAILABLE)
 *   429=P                 answers 429 Too Many Requests: REMOTE_UNAVAILABLE, "rate limited"
 *                         (`rate-limit=P` is the same)
 *   timeout=P             hangs until the call's AbortSignal fires (rejecting with its
 *                         reason, as every backend must) or `hang` passes (REMOTE_UNAVAILABLE)
 *   hang=MS               the longest a timeout hangs; default 30000, S3Backend's own limit
 *   reset=P[:PHASE]       the connection is reset (REMOTE_UNAVAILABLE, cause ECONNRESET).
 *                         PHASE `before`: the request never arrived; `after`: the remote
 *                         acted and the answer was lost; `either` (default): a coin decides
 *   truncate=P            a get returns a random strict prefix of the body (gets only)
 *   outage=START:END      every affected call fails as unavailable while
 *                         START <= Date.now() < END; a bound is epoch ms, or `+MS` counted
 *                         from when the plan was parsed (`outage=+5000:+15000`)
 *   outage-file=PATH      every affected call fails as unavailable while PATH exists
 *   during=START:END      latency and the random faults above happen only inside this
 *                         window (bounds as for outage) ...
 *   during-file=PATH      ... or only while PATH exists; with both, either one suffices.
 *                         Without either they always apply. Outages ignore these gates.
 *   ops=OP[+OP...]        the calls every fault applies to: get, put, createExclusive (or
 *                         create), head, list, delete, capabilities, space; default all
 *                         (space only reaches a backend that has it: file:// and s3:// do not,
 *                         so over them it draws nothing and the seeded fates stay as they were)
 *   seed=N                a non-negative integer; makes every random choice reproducible
 *
 * Durations are milliseconds and may end in `ms` or `s`. Probabilities lie in [0, 1] and
 * together (fail + 429 + timeout + reset + truncate) at most 1: each affected call draws one
 * number and suffers at most one of them. Every affected call draws the same count of
 * numbers whatever happens to it, so with a seed the n-th call always meets the same fate.
 * Paths cannot contain commas. Anything malformed is refused with BAD_ARGUMENT.
 */
import { access } from 'node:fs/promises';
import { CofferError, RemoteError } from '../errors.js';
import { mulberry32 } from '../seeded-random.js';
import type { ByteRange, CallOptions, ListOptions, ObjectInfo, RemoteBackend, RemoteCapabilities, RemoteSpace } from './backend.js';
import { sleep } from './sleep.js';

export type FaultOp = 'capabilities' | 'put' | 'createExclusive' | 'get' | 'head' | 'list' | 'delete' | 'space';
export type FaultKind = 'latency' | '5xx' | '429' | 'timeout' | 'reset' | 'truncate' | 'outage';
export type ResetPhase = 'before' | 'after' | 'either';

/** An interval of `Date.now()` values, start included, end excluded. */
export interface TimeWindow {
  start: number;
  end: number;
}

export interface FaultPlan {
  latencyMs?: number;
  jitterMs?: number;
  /** Probability of a 5xx answer. */
  fail?: number;
  /** Probability of a 429 answer. */
  rateLimit?: number;
  timeout?: number;
  /** The longest an unaborted timeout hangs. */
  hangMs?: number;
  reset?: number;
  resetPhase?: ResetPhase;
  /** Probability that a get comes back cut short. */
  truncate?: number;
  outage?: TimeWindow;
  outageFile?: string;
  /** Gates for latency and the random faults; with neither, those always apply. */
  during?: TimeWindow;
  duringFile?: string;
  /** The calls faults apply to; all when absent. */
  ops?: readonly FaultOp[];
  seed?: number;
}

export interface FaultyBackendOptions {
  /** Told about every fault injected; for logs and tests. */
  onFault?: (kind: FaultKind, op: FaultOp, key: string) => void;
  /** Clock for the time windows; replaceable so tests need not wait for one. */
  now?: () => number;
}

export const FAULT_OPS: readonly FaultOp[] = ['capabilities', 'put', 'createExclusive', 'get', 'head', 'list', 'delete', 'space'];
const DEFAULT_HANG_MS = 30_000;

export class FaultyBackend implements RemoteBackend {
  /** How many faults of each kind were injected so far. */
  readonly injected: Record<FaultKind, number> = { latency: 0, '5xx': 0, '429': 0, timeout: 0, reset: 0, truncate: 0, outage: 0 };
  private readonly random: () => number;
  private readonly ops: ReadonlySet<FaultOp>;
  private readonly now: () => number;

  constructor(
    readonly inner: RemoteBackend,
    readonly plan: FaultPlan,
    private readonly options: FaultyBackendOptions = {},
  ) {
    validatePlan(plan);
    this.random = plan.seed === undefined ? Math.random : mulberry32(plan.seed);
    this.ops = new Set(plan.ops ?? FAULT_OPS);
    this.now = options.now ?? Date.now;
  }

  /** Says faults are on wherever the remote is named (status, the daemon log), so nobody mistakes them for the network. */
  get description(): string {
    return `${this.inner.description} (with injected faults: ${formatFaultPlan(this.plan)})`;
  }

  capabilities(options?: CallOptions): Promise<RemoteCapabilities> {
    return this.call('capabilities', '', options?.signal, () => this.inner.capabilities(options));
  }

  put(key: string, body: Buffer, options?: CallOptions): Promise<void> {
    return this.call('put', key, options?.signal, () => this.inner.put(key, body, options));
  }

  createExclusive(key: string, body: Buffer, options?: CallOptions): Promise<void> {
    return this.call('createExclusive', key, options?.signal, () => this.inner.createExclusive(key, body, options));
  }

  get(key: string, options?: CallOptions & { range?: ByteRange }): Promise<Buffer> {
    return this.call('get', key, options?.signal, () => this.inner.get(key, options), (body, draw) => {
      // A strict prefix, so a truncation is never a no-op that a test would count as one.
      if (body.length === 0) return undefined;
      return body.subarray(0, Math.floor(draw * body.length));
    });
  }

  head(key: string, options?: CallOptions): Promise<ObjectInfo> {
    return this.call('head', key, options?.signal, () => this.inner.head(key, options));
  }

  list(prefix: string, options?: ListOptions): Promise<ObjectInfo[]> {
    return this.call('list', prefix, options?.signal, () => this.inner.list(prefix, options));
  }

  delete(key: string, options?: CallOptions): Promise<void> {
    return this.call('delete', key, options?.signal, () => this.inner.delete(key, options));
  }

  async space(options?: CallOptions): Promise<RemoteSpace | undefined> {
    const inner = this.inner;
    if (!inner.space) return undefined;
    return this.call('space', '', options?.signal, () => inner.space!(options));
  }

  private async call<T>(
    op: FaultOp,
    key: string,
    signal: AbortSignal | undefined,
    run: () => Promise<T>,
    truncate?: (result: T, draw: number) => T | undefined,
  ): Promise<T> {
    signal?.throwIfAborted();
    if (!this.ops.has(op)) return run();
    // Drawn up front and always three, so a call's fate depends only on its position.
    const pick = this.random();
    const jitter = this.random();
    const detail = this.random();
    const plan = this.plan;
    const what = `${op}${key ? ` ${key}` : ''}`;

    const gated = await this.gateOpen();
    const delay = gated ? (plan.latencyMs ?? 0) + Math.round(jitter * (plan.jitterMs ?? 0)) : 0;
    if (delay > 0) {
      this.note('latency', op, key);
      await sleep(delay, signal);
    }
    if (await this.inOutage()) {
      this.note('outage', op, key);
      throw new RemoteError('REMOTE_UNAVAILABLE', `injected fault: ${what}: the remote is unreachable (outage)`);
    }
    if (!gated) return run();

    let band = pick;
    if ((band -= plan.fail ?? 0) < 0) {
      this.note('5xx', op, key);
      throw new RemoteError('REMOTE_UNAVAILABLE', `injected fault: ${what}: 503 Service Unavailable`);
    }
    if ((band -= plan.rateLimit ?? 0) < 0) {
      this.note('429', op, key);
      throw new RemoteError('REMOTE_UNAVAILABLE', `injected fault: ${what}: 429 Too Many Requests (rate limited)`);
    }
    if ((band -= plan.timeout ?? 0) < 0) {
      this.note('timeout', op, key);
      const hangMs = plan.hangMs ?? DEFAULT_HANG_MS;
      await sleep(hangMs, signal);
      throw new RemoteError('REMOTE_UNAVAILABLE', `injected fault: ${what}: no answer within ${hangMs} ms (timed out)`);
    }
    if ((band -= plan.reset ?? 0) < 0) {
      const phase = plan.resetPhase ?? 'either';
      // After the remote acted, its own failure is what the caller would have seen.
      if (phase === 'after' || (phase === 'either' && detail >= 0.5)) await run();
      this.note('reset', op, key);
      const cause = Object.assign(new Error('read ECONNRESET'), { code: 'ECONNRESET' });
      throw new RemoteError('REMOTE_UNAVAILABLE', `injected fault: ${what}: connection reset by peer (ECONNRESET)`, { cause });
    }
    if ((band -= plan.truncate ?? 0) < 0 && truncate) {
      const result = await run();
      const cut = truncate(result, detail);
      if (cut === undefined) return result;
      this.note('truncate', op, key);
      return cut;
    }
    return run();
  }

  private note(kind: FaultKind, op: FaultOp, key: string): void {
    this.injected[kind]++;
    this.options.onFault?.(kind, op, key);
  }

  private async gateOpen(): Promise<boolean> {
    const { during, duringFile } = this.plan;
    if (!during && !duringFile) return true;
    return (during !== undefined && inside(during, this.now())) || (duringFile !== undefined && (await exists(duringFile)));
  }

  private async inOutage(): Promise<boolean> {
    const { outage, outageFile } = this.plan;
    return (outage !== undefined && inside(outage, this.now())) || (outageFile !== undefined && (await exists(outageFile)));
  }
}

function inside(window: TimeWindow, now: number): boolean {
  return now >= window.start && now < window.end;
}

function exists(path: string): Promise<boolean> {
  return access(path).then(
    () => true,
    () => false,
  );
}

function bad(message: string): CofferError {
  return new CofferError('BAD_ARGUMENT', `COFFER_FAULTS: ${message}`);
}

/** Refuses plans that cannot mean what their author wanted; the parser and the constructor share it. */
export function validatePlan(plan: FaultPlan): void {
  const probabilities: [string, number | undefined][] = [
    ['fail', plan.fail],
    ['429', plan.rateLimit],
    ['timeout', plan.timeout],
    ['reset', plan.reset],
    ['truncate', plan.truncate],
  ];
  let total = 0;
  for (const [name, p] of probabilities) {
    if (p === undefined) continue;
    if (!Number.isFinite(p) || p < 0 || p > 1) throw bad(`${name} must be a probability between 0 and 1, not ${p}`);
    total += p;
  }
  // A little slack for sums like 0.1 + 0.2 that floating point overshoots.
  if (total > 1 + 1e-9) throw bad(`the probabilities of fail, 429, timeout, reset and truncate add up to ${total}; at most 1 is possible`);
  for (const [name, ms] of [['latency', plan.latencyMs], ['jitter', plan.jitterMs], ['hang', plan.hangMs]] as const) {
    if (ms !== undefined && (!Number.isFinite(ms) || ms < 0)) throw bad(`${name} must be a non-negative number of milliseconds, not ${ms}`);
  }
  for (const [name, window] of [['outage', plan.outage], ['during', plan.during]] as const) {
    if (window && !(Number.isFinite(window.start) && Number.isFinite(window.end) && window.end > window.start)) {
      throw bad(`the ${name} window must end after it starts (${window.start}..${window.end})`);
    }
  }
  if (plan.resetPhase !== undefined && !['before', 'after', 'either'].includes(plan.resetPhase)) {
    throw bad(`the reset phase must be before, after or either, not ${plan.resetPhase}`);
  }
  for (const op of plan.ops ?? []) {
    if (!FAULT_OPS.includes(op)) throw bad(`unknown operation ${JSON.stringify(op)} (known: ${FAULT_OPS.join(', ')})`);
  }
  if (plan.ops && plan.ops.length === 0) throw bad('ops names no operation');
  if (plan.seed !== undefined && !(Number.isSafeInteger(plan.seed) && plan.seed >= 0)) throw bad(`seed must be a non-negative integer, not ${plan.seed}`);
}

const KEYS = ['latency', 'fail', '429', 'rate-limit', 'timeout', 'hang', 'reset', 'truncate', 'outage', 'outage-file', 'during', 'during-file', 'ops', 'seed'];

/**
 * Parses the grammar in the file header. `now` anchors `+MS` window bounds; it defaults to
 * the moment of parsing, which for the daemon is when it opens its remote.
 */
export function parseFaultPlan(text: string, now: number = Date.now()): FaultPlan {
  const plan: FaultPlan = {};
  const seen = new Set<string>();
  const items = text.split(',').map((item) => item.trim());
  if (items.length === 1 && items[0] === '') throw bad('the fault plan is empty (example: fail=0.3,seed=7)');
  for (const item of items) {
    const eq = item.indexOf('=');
    if (eq <= 0) throw bad(`expected key=value, got ${JSON.stringify(item)} (in ${JSON.stringify(text)})`);
    const rawKey = item.slice(0, eq).trim().toLowerCase();
    const value = item.slice(eq + 1).trim();
    const key = rawKey === 'rate-limit' ? '429' : rawKey;
    if (!KEYS.includes(rawKey)) throw bad(`unknown key ${JSON.stringify(rawKey)} (known: ${KEYS.join(', ')})`);
    if (seen.has(key)) throw bad(`${rawKey} is given twice`);
    seen.add(key);
    if (value === '') throw bad(`${rawKey} has no value`);
    switch (key) {
      case 'latency': {
        const [fixed, jitter, extra] = value.split(':');
        if (extra !== undefined) throw bad(`latency is MS or MS:JITTER, not ${JSON.stringify(value)}`);
        plan.latencyMs = duration('latency', fixed!);
        if (jitter !== undefined) plan.jitterMs = duration('latency jitter', jitter);
        break;
      }
      case 'fail':
        plan.fail = probability(rawKey, value);
        break;
      case '429':
        plan.rateLimit = probability(rawKey, value);
        break;
      case 'timeout':
        plan.timeout = probability(rawKey, value);
        break;
      case 'hang':
        plan.hangMs = duration('hang', value);
        break;
      case 'reset': {
        const [p, phase, extra] = value.split(':');
        if (extra !== undefined || (phase !== undefined && !['before', 'after', 'either'].includes(phase))) {
          throw bad(`reset is P or P:before, P:after, P:either, not ${JSON.stringify(value)}`);
        }
        plan.reset = probability('reset', p!);
        if (phase !== undefined) plan.resetPhase = phase as ResetPhase;
        break;
      }
      case 'truncate':
        plan.truncate = probability(rawKey, value);
        break;
      case 'outage':
        plan.outage = window('outage', value, now);
        break;
      case 'during':
        plan.during = window('during', value, now);
        break;
      case 'outage-file':
        plan.outageFile = value;
        break;
      case 'during-file':
        plan.duringFile = value;
        break;
      case 'ops':
        plan.ops = value.split('+').map((name) => {
          const op = name.trim().toLowerCase();
          const found = op === 'create' ? 'createExclusive' : FAULT_OPS.find((known) => known.toLowerCase() === op);
          if (!found) throw bad(`unknown operation ${JSON.stringify(name)} in ops (known: ${FAULT_OPS.join(', ')}; join them with +)`);
          return found;
        });
        break;
      case 'seed':
        if (!/^\d+$/.test(value) || !Number.isSafeInteger(Number(value))) throw bad(`seed must be a non-negative integer, not ${JSON.stringify(value)}`);
        plan.seed = Number(value);
        break;
    }
  }
  validatePlan(plan);
  return plan;
}

function probability(name: string, text: string): number {
  const p = /^\d*\.?\d+$/.test(text) ? Number(text) : NaN;
  if (!(p >= 0 && p <= 1)) throw bad(`${name} must be a probability between 0 and 1, not ${JSON.stringify(text)}`);
  return p;
}

function duration(name: string, text: string): number {
  const match = /^(\d*\.?\d+)(ms|s)?$/.exec(text.trim());
  if (!match) throw bad(`${name} must be a duration in milliseconds (e.g. 250, 250ms, 1.5s), not ${JSON.stringify(text)}`);
  return Math.round(Number(match[1]) * (match[2] === 's' ? 1000 : 1));
}

function window(name: string, text: string, now: number): TimeWindow {
  const bounds = text.split(':');
  if (bounds.length !== 2) throw bad(`${name} is START:END (epoch ms, or +MS from now), not ${JSON.stringify(text)}`);
  const [start, end] = bounds.map((bound) => (bound.trim().startsWith('+') ? now + duration(name, bound.trim().slice(1)) : duration(name, bound))) as [number, number];
  if (end <= start) throw bad(`the ${name} window ${JSON.stringify(text)} must end after it starts`);
  return { start, end };
}

/** The plan in the grammar `parseFaultPlan` reads (windows as absolute epoch ms). */
export function formatFaultPlan(plan: FaultPlan): string {
  const items: string[] = [];
  if (plan.latencyMs !== undefined || plan.jitterMs !== undefined) {
    items.push(`latency=${plan.latencyMs ?? 0}${plan.jitterMs !== undefined ? `:${plan.jitterMs}` : ''}`);
  }
  if (plan.fail !== undefined) items.push(`fail=${plan.fail}`);
  if (plan.rateLimit !== undefined) items.push(`429=${plan.rateLimit}`);
  if (plan.timeout !== undefined) items.push(`timeout=${plan.timeout}`);
  if (plan.hangMs !== undefined) items.push(`hang=${plan.hangMs}`);
  if (plan.reset !== undefined) items.push(`reset=${plan.reset}${plan.resetPhase !== undefined ? `:${plan.resetPhase}` : ''}`);
  if (plan.truncate !== undefined) items.push(`truncate=${plan.truncate}`);
  if (plan.outage) items.push(`outage=${plan.outage.start}:${plan.outage.end}`);
  if (plan.outageFile !== undefined) items.push(`outage-file=${plan.outageFile}`);
  if (plan.during) items.push(`during=${plan.during.start}:${plan.during.end}`);
  if (plan.duringFile !== undefined) items.push(`during-file=${plan.duringFile}`);
  if (plan.ops) items.push(`ops=${plan.ops.join('+')}`);
  if (plan.seed !== undefined) items.push(`seed=${plan.seed}`);
  return items.join(',') || 'none';
}
