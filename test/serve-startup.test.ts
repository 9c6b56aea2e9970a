/**
 * How `coffer serve` starts, or refuses to start: a port another process holds, an address it
 * may not or cannot listen on, a data directory that is missing or is a file, and one with no
 * accounts yet. Each case runs a real `coffer serve` child process.
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

describe('coffer serve --data', () => {
  it('refuses a data directory that does not exist, naming it and the command that creates it, with exit code 2', async () => {
    const missing = join(dir, 'no', 'such', 'dir');
    const result = await coffer(['serve', '--listen', '127.0.0.1:0', '--data', missing]);
    expectOneLine(result, 2, new RegExp(`^coffer: .*${escaped(missing)} does not exist.*coffer serve account add NAME --data ${escaped(missing)}`));
    expect(existsSync(join(dir, 'no'))).toBe(false);
  });

  it('refuses a --data that is a file, with exit code 2', async () => {
    const file = join(dir, 'a-file');
    writeFileSync(file, 'not a folder');
    const result = await coffer(['serve', '--listen', '127.0.0.1:0', '--data', file]);
    expectOneLine(result, 2, new RegExp(`^coffer: --data ${escaped(file)} is a file, not a folder`));
  });

  it('starts on a folder with no accounts, says so on stderr, and takes an account added while it runs', async () => {
    const empty = join(dir, 'empty');
    mkdirSync(empty);
    const server = await startServe(['--listen', '127.0.0.1:0', '--data', empty]);
    try {
      for (let waited = 0; !server.output.stderr.includes('\n') && waited < 5_000; waited += 50) await new Promise((r) => setTimeout(r, 50));
      expect(server.output.stderr).toMatch(new RegExp(`^coffer serve: ${escaped(empty)} has no accounts yet; .*coffer serve account add NAME --data ${escaped(empty)}\n$`));
      const token = await addServeAccount(['--data', empty], 'late');
      const usage = await fetch(`${server.base}/v1/usage`, { headers: { authorization: `Bearer ${token}` } });
      expect(usage.status).toBe(200);
    } finally {
      await server.stop();
    }
    // With an account, no note.
    const again = await startServe(['--listen', '127.0.0.1:0', '--data', empty]);
    await new Promise((r) => setTimeout(r, 300));
    await again.stop();
    expect(again.output.stderr).toBe('');
  });

  it('lets `serve account add` create the data directory', async () => {
    const fresh = join(dir, 'made', 'by', 'add');
    await addServeAccount(['--data', fresh], 'first');
    expect(existsSync(join(fresh, 'accounts.json'))).toBe(true);
  });
});

describe('coffer serve metrics access', () => {
  it('refuses /metrics on the main address when no admin token is set, naming the two ways to get them', async () => {
    const server = await startServe(['--listen', '127.0.0.1:0', '--data', data], { COFFER_ADMIN_TOKEN: '' });
    try {
      for (const headers of [{}, { authorization: 'Bearer anything' }] as Record<string, string>[]) {
        const answer = await fetch(`${server.base}/metrics`, { headers });
        const body = (await answer.json()) as { error: { code: string; message: string } };
        expect([answer.status, body.error.code]).toEqual([401, 'UNAUTHORIZED']);
        expect(body.error.message).toMatch(/--admin-token-file.*--metrics-listen/);
      }
      expect((await fetch(`${server.base}/healthz`)).status).toBe(200);
    } finally {
      await server.stop();
    }
  });

  it('takes the admin token from COFFER_ADMIN_TOKEN', async () => {
    const server = await startServe(['--listen', '127.0.0.1:0', '--data', data], { COFFER_ADMIN_TOKEN: 'an-admin-token-from-the-environment' });
    try {
      expect((await fetch(`${server.base}/metrics`, { headers: { authorization: 'Bearer an-admin-token-from-the-environment' } })).status).toBe(200);
      expect((await fetch(`${server.base}/metrics`, { headers: { authorization: 'Bearer an-admin-token' } })).status).toBe(401);
    } finally {
      await server.stop();
    }
  });

  it('refuses an admin token file other users can read or change, one that is missing, and an empty one', async () => {
    const file = join(dir, 'admin-token');
    writeFileSync(file, 'secret-admin-token\n');
    for (const mode of [0o644, 0o640, 0o604, 0o620]) {
      chmodSync(file, mode);
      const result = await coffer(['serve', '--listen', '127.0.0.1:0', '--data', data, '--admin-token-file', file]);
      expectOneLine(result, 1, new RegExp(`^coffer: the admin token file ${escaped(file)} can be (read|changed) by other users \\(mode ${mode.toString(8)}\\); .*chmod 600 ${escaped(file)}\n$`));
    }
    const missing = join(dir, 'no-admin-token');
    expectOneLine(await coffer(['serve', '--listen', '127.0.0.1:0', '--data', data, '--admin-token-file', missing]), 2, new RegExp(`^coffer: cannot use the admin token file ${escaped(missing)}: it does not exist`));
    const empty = join(dir, 'empty-admin-token');
    writeFileSync(empty, '\n', { mode: 0o600 });
    expectOneLine(await coffer(['serve', '--listen', '127.0.0.1:0', '--data', data, '--admin-token-file', empty]), 2, /^coffer: the admin token file .* is empty/);
  });

  it('says in one line that the --metrics-listen port is in use, and exits 1', async () => {
    const held = await holdPort();
    try {
      const result = await coffer(['serve', '--listen', '127.0.0.1:0', '--data', data, '--metrics-listen', `127.0.0.1:${held.port}`]);
      expectOneLine(result, 1, new RegExp(`^coffer: cannot listen on 127\\.0\\.0\\.1:${held.port} \\(--metrics-listen\\): the address is already in use \\(is another coffer serve running\\?\\)\n$`));
    } finally {
      await held.release();
    }
  });
});
