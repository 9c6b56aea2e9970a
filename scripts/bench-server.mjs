#!/usr/bin/env node
// Load benchmark of `coffer serve`: many concurrent clients over keep-alive connections doing
// what drives do (PUT of sealed chunks, full and ranged GETs, HEAD, LIST), against a real
// server process over a temp data directory with several accounts.
//
//   node scripts/bench-server.mjs [--clients 100] [--seconds 60] [--accounts 10] [--json] [--smoke]
//
// Each client belongs to one account (round robin) and works under its own key prefix
// `c<n>/`, over a pool of 16 keys so that the data on disk stays bounded (PUTs replace objects).
// Its loop: a PUT (random 64 KiB-1 MiB body) 30%, a full GET 25%, a ranged GET (a random
// 4-64 KiB window) 20%, HEAD 15%, LIST of its prefix 10%; reads only touch keys it wrote, and
// every answer is checked (status, length, the first bytes of a full GET, the listed keys), so
// a wrong answer counts as an error (code MISMATCH) rather than as speed.
//
// Baseline, measured in the same run with the same clients, mix and duration: a trivial
// node:http server (scripts/lib/bench-serve-baseline.mjs) on the same disk that does the same
// temp file + fsync + rename + directory fsync per PUT and nothing else (no accounts, no key
// checks, no limits). The two are measured in alternating rounds of at most 10 s (A B B A …),
// so that a busy spell of a shared machine weighs on both; ratios coffer/baseline are printed.
//
// Reported per run: requests/s, MiB/s up (PUT bodies) and down (GET bodies), latency
// p50/p90/p99/max per operation, errors by operation, status and code (there should be none:
// the server runs with its default limits, and --rate-limit / --max-uploads are there to hit
// them on purpose), and the server's RSS: peak (VmHWM from /proc/<pid>/status) and at the end.
// The clients run in this process: on a small machine they compete with the server for CPU,
// equally in both runs.
import { randomBytes, randomInt } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { Agent, request } from 'node:http';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { CLI, ROOT, UsageError, eachFlag, hostInfo, integerArg, progress, runScript, sleep, startBackground, tempDir } from './lib/harness.mjs';

const MiB = 1024 * 1024;
const KEYS_PER_CLIENT = 16;
const PUT_MIN = 64 * 1024;
const PUT_MAX = 1024 * 1024;
const OPS = ['put', 'get', 'get-range', 'head', 'list'];
const MIX = [['put', 30], ['get', 25], ['get-range', 20], ['head', 15], ['list', 10]];

const USAGE = `Usage: node scripts/bench-server.mjs [options]

Load benchmark of coffer serve (PUT/GET/ranged GET/HEAD/LIST over keep-alive connections),
against a trivial fsyncing node:http server on the same disk as baseline.

  --clients <n>      concurrent clients (default 100)
  --seconds <n>      duration of each run, coffer and baseline (default 60)
  --accounts <n>     accounts on the server; clients are spread over them (default 10)
  --rate-limit <n>   pass --rate-limit to coffer serve (to hit the limit on purpose)
  --max-uploads <n>  pass --max-uploads to coffer serve (to hit the limit on purpose)
  --no-baseline      skip the baseline run
  --smoke            a quick check: 10 clients, 5 seconds, 2 accounts
  --json             print one JSON object on stdout instead of a table
  -h, --help         show this help

Needs a built tree (npm run build).
`;

function parseArgs(argv) {
  const opts = { clients: 100, seconds: 60, accounts: 10, baseline: true, json: false, limits: [] };
  let smoke = false;
  const given = new Set();
  eachFlag(argv, (flag, value, arg) => {
    given.add(flag);
    switch (flag) {
      case '--clients': opts.clients = integerArg(flag, value(), 1, 10_000); break;
      case '--seconds': opts.seconds = integerArg(flag, value(), 1, 86_400); break;
      case '--accounts': opts.accounts = integerArg(flag, value(), 1, 1_000); break;
      case '--rate-limit': opts.limits.push('--rate-limit', String(integerArg(flag, value(), 1, 1_000_000))); break;
      case '--max-uploads': opts.limits.push('--max-uploads', String(integerArg(flag, value(), 1, 100_000))); break;
      case '--no-baseline': opts.baseline = false; break;
      case '--smoke': smoke = true; break;
      case '--json': opts.json = true; break;
      case '-h': case '--help': opts.help = true; break;
      default: throw new UsageError(`unknown argument ${JSON.stringify(arg)}`);
    }
  });
  if (smoke) {
    if (!given.has('--clients')) opts.clients = 10;
    if (!given.has('--seconds')) opts.seconds = 5;
    if (!given.has('--accounts')) opts.accounts = 2;
  }
  opts.smoke = smoke;
  return opts;
}

// ---------------------------------------------------------------------------------------------
// Servers

/** Starts a server process and waits for its "listening on" line; returns { child, base }. */
async function startListening(what, args) {
  const child = startBackground(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr.setEncoding('utf8').on('data', (d) => (stderr = (stderr + d).slice(-4000)));
  const base = await new Promise((resolvePromise, reject) => {
    let out = '';
    child.stdout.setEncoding('utf8').on('data', (d) => {
      out += d;
      const match = /listening on (http:\/\/[^/\s]+)\//.exec(out);
      if (match) resolvePromise(match[1]);
    });
    child.exited.then(({ code, signal }) => reject(new Error(`${what} exited (${signal ?? code}) before listening: ${stderr}`)));
    setTimeout(() => reject(new Error(`${what} did not start within 30 s: ${stderr}`)), 30_000).unref();
  });
  return { child, base, stderr: () => stderr };
}

function readStatusKiB(pid, field) {
  try {
    const match = new RegExp(`^${field}:\\s+(\\d+) kB$`, 'm').exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return match ? Number(match[1]) : null;
  } catch {
    return null;
  }
}

// ---------------------------------------------------------------------------------------------
// The workload

/** Random bytes to take bodies from: a slice at a random offset differs from every other one. */
const POOL = randomBytes(PUT_MAX + 4 * MiB);

function pickOp() {
  let n = randomInt(100);
  for (const [op, weight] of MIX) {
    if (n < weight) return op;
    n -= weight;
  }
  return 'head';
}

function exchange(agent, base, method, path, token, body, headers = {}) {
  return new Promise((resolvePromise, reject) => {
    const url = new URL(path, base);
    const req = request(url, { method, agent, headers: { ...(token ? { authorization: `Bearer ${token}` } : {}), ...headers } }, (res) => {
      const pieces = [];
      let length = 0;
      res.on('data', (d) => {
        length += d.length;
        // Only small answers (JSON, errors) and the head of a body are kept: a client that
        // copied every byte it downloads would measure memcpy.
        if (pieces.length === 0 || length <= 64 * 1024) pieces.push(d);
      });
      res.on('end', () => resolvePromise({ status: res.statusCode, length, head: Buffer.concat(pieces), headers: res.headers }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(body);
  });
}

function errorCode(answer) {
  try {
    return JSON.parse(answer.head.toString('utf8')).error?.code ?? '';
  } catch {
    return '';
  }
}

/**
 * `clients` clients against one server; `tokens[i % tokens.length]` is client i's token (none
 * for the baseline). round() runs them all for some seconds; what each client wrote, and every
 * latency, byte and error, carries over from round to round.
 */
class Load {
  constructor({ base, tokens, clients }) {
    this.base = base;
    this.tokens = tokens;
    this.clients = clients;
    this.agent = new Agent({ keepAlive: true, maxSockets: clients });
    this.latencies = Object.fromEntries(OPS.map((op) => [op, []]));
    this.errors = new Map();
    this.bytesUp = 0;
    this.bytesDown = 0;
    this.elapsed = 0;
    this.objects = Array.from({ length: clients }, () => new Map()); // per client: key -> { size, head: first 16 bytes }
  }

  async round(seconds) {
    const started = performance.now();
    const deadline = started + seconds * 1000;
    await Promise.all(Array.from({ length: this.clients }, (_, n) => this.client(n, deadline)));
    this.elapsed += (performance.now() - started) / 1000;
  }

  fail(op, label) {
    this.errors.set(`${op} ${label}`, (this.errors.get(`${op} ${label}`) ?? 0) + 1);
  }

  async client(n, deadline) {
    const { agent, base } = this;
    const token = this.tokens[n % this.tokens.length];
    const prefix = `c${n}/`;
    const objects = this.objects[n];
    while (performance.now() < deadline) {
      const op = objects.size === 0 ? 'put' : pickOp();
      const keys = [...objects.keys()];
      const key = op === 'put' ? `${prefix}o${randomInt(KEYS_PER_CLIENT)}` : keys[randomInt(keys.length)];
      const t0 = performance.now();
      let answer;
      let expect;
      try {
        switch (op) {
          case 'put': {
            const size = randomInt(PUT_MIN, PUT_MAX + 1);
            const offset = randomInt(POOL.length - size);
            const body = POOL.subarray(offset, offset + size);
            answer = await exchange(agent, base, 'PUT', `/v1/objects/${key}`, token, body, { 'content-length': size });
            if (answer.status === 201) {
              objects.set(key, { size, head: Buffer.from(body.subarray(0, 16)) });
              this.bytesUp += size;
            }
            expect = () => answer.status === 201;
            break;
          }
          case 'get': {
            answer = await exchange(agent, base, 'GET', `/v1/objects/${key}`, token);
            const want = objects.get(key);
            this.bytesDown += answer.length;
            expect = () => answer.status === 200 && answer.length === want.size && answer.head.subarray(0, 16).equals(want.head);
            break;
          }
          case 'get-range': {
            const want = objects.get(key);
            const first = randomInt(want.size);
            const last = Math.min(want.size - 1, first + randomInt(4 * 1024, 64 * 1024) - 1);
            answer = await exchange(agent, base, 'GET', `/v1/objects/${key}`, token, undefined, { range: `bytes=${first}-${last}` });
            this.bytesDown += answer.length;
            expect = () => answer.status === 206 && answer.length === last - first + 1 && (first >= 16 || answer.head[0] === want.head[first]);
            break;
          }
          case 'head': {
            answer = await exchange(agent, base, 'HEAD', `/v1/objects/${key}`, token);
            expect = () => answer.status === 200 && Number(answer.headers['content-length']) === objects.get(key).size;
            break;
          }
          case 'list': {
            answer = await exchange(agent, base, 'GET', `/v1/objects?prefix=${encodeURIComponent(prefix)}`, token);
            expect = () => {
              if (answer.status !== 200) return false;
              const listed = JSON.parse(answer.head.toString('utf8')).objects;
              return listed.length === objects.size && listed.every((o) => objects.get(o.key)?.size === o.size);
            };
            break;
          }
        }
      } catch (err) {
        this.fail(op, `network ${err.code ?? err.message}`);
        await sleep(10);
        continue;
      }
      this.latencies[op].push(performance.now() - t0);
      if (answer.status >= 400) this.fail(op, `${answer.status} ${errorCode(answer)}`.trim());
      else if (!expect()) this.fail(op, `${answer.status} MISMATCH`);
    }
  }

  result() {
    this.agent.destroy();
    return summarize(this.latencies, this.errors, this.bytesUp, this.bytesDown, this.elapsed);
  }
}

function percentile(sorted, p) {
  if (sorted.length === 0) return null;
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)];
}

const round = (x, digits = 2) => (x === null ? null : Math.round(x * 10 ** digits) / 10 ** digits);

function summarize(latencies, errors, bytesUp, bytesDown, elapsed) {
  const ops = {};
  let requests = 0;
  for (const op of OPS) {
    const sorted = latencies[op].sort((a, b) => a - b);
    requests += sorted.length;
    ops[op] = {
      count: sorted.length,
      perSecond: round(sorted.length / elapsed, 1),
      p50Ms: round(percentile(sorted, 50)),
      p90Ms: round(percentile(sorted, 90)),
      p99Ms: round(percentile(sorted, 99)),
      maxMs: round(sorted.at(-1) ?? null),
    };
  }
  return {
    seconds: round(elapsed),
    requests,
    requestsPerSecond: round(requests / elapsed, 1),
    mibPerSecondUp: round(bytesUp / MiB / elapsed),
    mibPerSecondDown: round(bytesDown / MiB / elapsed),
    ops,
    errors: Object.fromEntries([...errors].sort()),
    errorCount: [...errors.values()].reduce((a, b) => a + b, 0),
  };
}

// ---------------------------------------------------------------------------------------------
// Runs

/** Starts coffer serve over a new data dir with `accounts` accounts; returns { server, tokens }. */
async function startCoffer(opts) {
  const dir = tempDir('coffer-bench-server-');
  const data = join(dir, 'data');
  // Accounts through Coffer's own module: N CLI start-ups would take longer than a smoke run.
  const { addAccount } = await import(pathToFileURL(join(ROOT, 'dist', 'server', 'accounts.js')).href);
  const { DiskObjectStore } = await import(pathToFileURL(join(ROOT, 'dist', 'server', 'disk-store.js')).href);
  const tokens = [];
  for (let i = 0; i < opts.accounts; i++) tokens.push((await addAccount(new DiskObjectStore(data), `bench${i}`)).token);
  const server = await startListening('coffer serve', [CLI, 'serve', '--listen', '127.0.0.1:0', '--data', data, ...opts.limits]);
  progress(`coffer serve (pid ${server.child.pid}) at ${server.base}, ${opts.accounts} accounts`);
  return { server, tokens };
}

async function startBaseline() {
  const dir = tempDir('coffer-bench-server-baseline-');
  const server = await startListening('baseline server', [join(ROOT, 'scripts', 'lib', 'bench-serve-baseline.mjs'), dir]);
  progress(`baseline node:http server (pid ${server.child.pid}) at ${server.base}`);
  return server;
}

/**
 * Both servers run side by side (each idle while the other is measured), and the time is cut
 * into rounds of at most ROUND_SECONDS, taken in the order A B B A A B …: a slow minute of a
 * shared machine then weighs on both alike instead of on whichever ran during it.
 */
const ROUND_SECONDS = 10;

async function measure(opts) {
  const { server: coffer, tokens } = await startCoffer(opts);
  const baseline = opts.baseline ? await startBaseline() : null;
  const targets = [{ name: 'coffer', server: coffer, load: new Load({ base: coffer.base, tokens, clients: opts.clients }) }];
  if (baseline) targets.push({ name: 'baseline', server: baseline, load: new Load({ base: baseline.base, tokens: [undefined], clients: opts.clients }) });
  for (const t of targets) t.startKiB = readStatusKiB(t.server.child.pid, 'VmRSS');
  const rounds = Math.ceil(opts.seconds / ROUND_SECONDS);
  progress(`${opts.clients} clients, ${opts.seconds} s per server in ${rounds} round${rounds === 1 ? '' : 's'}${baseline ? ' each, alternating' : ''}`);
  for (let i = 0; i < rounds; i++) {
    const seconds = Math.min(ROUND_SECONDS, opts.seconds - i * ROUND_SECONDS);
    const order = i % 2 === 0 ? targets : [...targets].reverse();
    for (const t of order) await t.load.round(seconds);
  }
  const results = {};
  for (const t of targets) {
    const pid = t.server.child.pid;
    const result = t.load.result();
    result.rss = { startKiB: t.startKiB, peakKiB: readStatusKiB(pid, 'VmHWM'), endKiB: readStatusKiB(pid, 'VmRSS') };
    await t.server.child.stop();
    if (t.server.stderr().trim()) result.serverStderr = t.server.stderr().trim().split('\n').slice(-10);
    results[t.name] = result;
  }
  return { coffer: results.coffer, baseline: results.baseline ?? null };
}

function ratios(coffer, baseline) {
  const r = (a, b) => (a === null || b === null || b === 0 ? null : round(a / b));
  return {
    requestsPerSecond: r(coffer.requestsPerSecond, baseline.requestsPerSecond),
    mibPerSecondUp: r(coffer.mibPerSecondUp, baseline.mibPerSecondUp),
    mibPerSecondDown: r(coffer.mibPerSecondDown, baseline.mibPerSecondDown),
    p50: Object.fromEntries(OPS.map((op) => [op, r(coffer.ops[op].p50Ms, baseline.ops[op].p50Ms)])),
    p99: Object.fromEntries(OPS.map((op) => [op, r(coffer.ops[op].p99Ms, baseline.ops[op].p99Ms)])),
    peakRss: r(coffer.rss.peakKiB, baseline.rss.peakKiB),
  };
}

// ---------------------------------------------------------------------------------------------
// Report

function table(rows) {
  const widths = rows[0].map((_, i) => Math.max(...rows.map((row) => String(row[i]).length)));
  return rows.map((row) => row.map((cell, i) => (i === 0 ? String(cell).padEnd(widths[i]) : String(cell).padStart(widths[i]))).join('  ')).join('\n');
}

const fmt = (x) => (x === null || x === undefined ? '-' : String(x));
const mib = (kib) => (kib === null ? '-' : `${(kib / 1024).toFixed(1)} MiB`);

function printRun(title, run) {
  const lines = [
    `${title}: ${run.requests} requests in ${run.seconds} s = ${run.requestsPerSecond} req/s; up ${run.mibPerSecondUp} MiB/s, down ${run.mibPerSecondDown} MiB/s`,
    table([
      ['op', 'count', 'req/s', 'p50 ms', 'p90 ms', 'p99 ms', 'max ms'],
      ...OPS.map((op) => [op, run.ops[op].count, run.ops[op].perSecond, fmt(run.ops[op].p50Ms), fmt(run.ops[op].p90Ms), fmt(run.ops[op].p99Ms), fmt(run.ops[op].maxMs)]),
    ]),
    `server RSS: start ${mib(run.rss.startKiB)}, peak (VmHWM) ${mib(run.rss.peakKiB)}, end ${mib(run.rss.endKiB)}`,
    run.errorCount === 0 ? 'errors: none' : `errors: ${run.errorCount}\n${Object.entries(run.errors).map(([k, n]) => `  ${k}: ${n}`).join('\n')}`,
  ];
  if (run.serverStderr) lines.push(`server stderr (last lines):\n  ${run.serverStderr.join('\n  ')}`);
  return lines.join('\n');
}

function printReport(report) {
  const out = [
    `coffer serve load benchmark: ${report.clients} clients, ${report.accounts} accounts, ${report.seconds} s per server (alternating rounds of ${ROUND_SECONDS} s); ` +
      `${report.host.cpus} CPUs, load average ${report.host.loadAverage1m.toFixed(2)} at the start, node ${report.host.node}`,
    `mix: PUT 30% (64 KiB-1 MiB), GET 25%, ranged GET 20% (4-64 KiB), HEAD 15%, LIST 10%; keep-alive; limits: ${report.limits.join(' ') || 'defaults'}`,
    '',
    printRun('coffer serve', report.coffer),
  ];
  if (report.baseline) {
    const r = report.ratios;
    out.push(
      '',
      printRun('baseline (node:http + fsync, no checks)', report.baseline),
      '',
      'coffer / baseline:',
      `  req/s ${fmt(r.requestsPerSecond)}x, MiB/s up ${fmt(r.mibPerSecondUp)}x, down ${fmt(r.mibPerSecondDown)}x, peak RSS ${fmt(r.peakRss)}x`,
      `  p50 latency: ${OPS.map((op) => `${op} ${fmt(r.p50[op])}x`).join(', ')}`,
      `  p99 latency: ${OPS.map((op) => `${op} ${fmt(r.p99[op])}x`).join(', ')}`,
    );
  }
  process.stdout.write(out.join('\n') + '\n');
}

async function main() {
  let opts;
  try {
    opts = parseArgs(process.argv.slice(2));
  } catch (err) {
    if (err instanceof UsageError) {
      process.stderr.write(`bench-server: ${err.message}\n\n${USAGE}`);
      return 2;
    }
    throw err;
  }
  if (opts.help) {
    process.stdout.write(USAGE);
    return 0;
  }
  const host = hostInfo(ROOT); // before the run: its load average says how busy the machine was
  const { coffer, baseline } = await measure(opts);

  const report = {
    clients: opts.clients,
    accounts: opts.accounts,
    seconds: opts.seconds,
    smoke: opts.smoke,
    limits: opts.limits,
    host,
    coffer,
    baseline,
    ratios: baseline ? ratios(coffer, baseline) : null,
  };
  if (opts.json) process.stdout.write(JSON.stringify(report, null, 2) + '\n');
  else printReport(report);
  // Errors are expected only when a limit was lowered on purpose.
  const unexpected = coffer.errorCount + (baseline?.errorCount ?? 0) > 0 && opts.limits.length === 0;
  return unexpected ? 1 : 0;
}

runScript('bench-server', main, { isQuiet: () => process.argv.includes('--json') });
