/**
 * How `coffer serve` starts, or refuses to start: a port another process holds, an address it
 * may not or cannot listen on. Each case runs a real `coffer serve` child process.
 */
import { execFile } from 'node:child_process';
import { chmodSync, chownSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CLI, coffer, type CliResult } from './helpers/drive.js';
import { addServeAccount, startServe } from './helpers/serve.js';

const dir = mkdtempSync(join(tmpdir(), 'coffer-serve-startup-'));
let data: string;

beforeAll(async () => {
  data = join(dir, 'data');
  await addServeAccount(['--data', data], 'alice');
});

afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** A port held by a plain TCP server of this process until `release`. */
async function holdPort(): Promise<{ port: number; release(): Promise<void> }> {
  const holder = createServer();
  await new Promise<void>((r) => holder.listen(0, '127.0.0.1', r));
  const { port } = holder.address() as { port: number };
  return { port, release: () => new Promise<void>((r) => holder.close(() => r())) };
}

/** The command failed with `code` and said why in one line matching `line`, without a stack trace. */
function expectOneLine(result: CliResult, code: number, line: RegExp): void {
  expect({ code: result.code, stderr: result.stderr }).toEqual({ code, stderr: expect.stringMatching(line) });
  expect(result.stderr.trimEnd().split('\n')).toHaveLength(1);
  expect(result.stderr).not.toMatch(/^\s+at /m);
}

const escaped = (text: string) => text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

describe('coffer serve --listen on an address it cannot have', () => {
  it('says in one line that the port is in use, and exits 1', async () => {
    const held = await holdPort();
    try {
      const result = await coffer(['serve', '--listen', `127.0.0.1:${held.port}`, '--data', data]);
      expectOneLine(result, 1, new RegExp(`^coffer: cannot listen on 127\\.0\\.0\\.1:${held.port}: the address is already in use \\(is another coffer serve running\\?\\)\n$`));
    } finally {
      await held.release();
    }
  });

  it('says in one line that the address is not this machine\'s, or that the host name is unknown, and exits 1', async () => {
    expectOneLine(await coffer(['serve', '--listen', '192.0.2.1:8080', '--data', data]), 1, /^coffer: cannot listen on 192\.0\.2\.1:8080: this machine has no such address/);
    expectOneLine(await coffer(['serve', '--listen', 'no-such-host.invalid:8080', '--data', data]), 1, /^coffer: cannot listen on no-such-host\.invalid:8080: no address is known for the host name/);
  });

  it.skipIf(process.getuid?.() !== 0 && Number(readFileSync('/proc/sys/net/ipv4/ip_unprivileged_port_start', 'utf8')) <= 1)(
    'says in one line that a port below 1024 needs privileges, and exits 1',
    async () => {
      // As root, the server runs as nobody, which may not take port 1.
      const asUser = process.getuid?.() === 0 ? { uid: 65534, gid: 65534 } : {};
      const open = mkdtempSync(join(tmpdir(), 'coffer-serve-unprivileged-'));
      try {
        chmodSync(open, 0o755);
        const own = join(open, 'data');
        mkdirSync(own);
        if (asUser.uid !== undefined) chownSync(own, asUser.uid, asUser.gid);
        const result = await new Promise<CliResult>((resolvePromise) => {
          execFile(process.execPath, [CLI, 'serve', '--listen', '127.0.0.1:1', '--data', own], { ...asUser, timeout: 30_000 }, (err, stdout, stderr) => {
            resolvePromise({ code: err ? Number((err as { code?: unknown }).code ?? 1) : 0, stdout, stderr });
          });
        });
        expectOneLine(result, 1, /^coffer: cannot listen on 127\.0\.0\.1:1: permission denied \(ports below 1024 need root or the CAP_NET_BIND_SERVICE capability/);
      } finally {
        rmSync(open, { recursive: true, force: true });
      }
    },
  );
});
