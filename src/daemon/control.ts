/**
 * The control socket: how the CLI talks to a running daemon. One JSON request per
 * connection, one JSON response, newline-terminated.
 */
import { createConnection, createServer, type Server } from 'node:net';
import { rm } from 'node:fs/promises';
import { CofferError, type CofferErrorCode } from '../errors.js';

export type ControlRequest = { op: 'status' } | { op: 'unmount' } | { op: 'sync' } | { op: 'pending' };

export type ControlResponse = { ok: true; result: unknown } | { ok: false; error: { code: string; message: string } };

export type ControlHandler = (request: ControlRequest) => Promise<unknown>;

export async function serveControl(socketPath: string, handler: ControlHandler): Promise<Server> {
  await rm(socketPath, { force: true });
  const server = createServer((socket) => {
    let input = '';
    socket.setEncoding('utf8');
    socket.on('data', (data) => {
      input += data;
      const end = input.indexOf('\n');
      if (end < 0) return;
      let request: ControlRequest;
      try {
        request = JSON.parse(input.slice(0, end)) as ControlRequest;
      } catch {
        socket.end(JSON.stringify({ ok: false, error: { code: 'BAD_ARGUMENT', message: 'malformed request' } }) + '\n');
        return;
      }
      handler(request).then(
        (result) => socket.end(JSON.stringify({ ok: true, result } satisfies ControlResponse) + '\n'),
        (err: unknown) =>
          socket.end(
            JSON.stringify({
              ok: false,
              error: { code: (err as CofferError).code ?? 'DAEMON_FAILED', message: (err as Error).message ?? String(err) },
            } satisfies ControlResponse) + '\n',
          ),
      );
    });
    socket.on('error', () => {});
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(socketPath, () => resolve());
  });
  return server;
}

export function callDaemon(socketPath: string, request: ControlRequest, timeoutMs = 10 * 60_000): Promise<unknown> {
  return new Promise((resolve, reject) => {
    const socket = createConnection(socketPath);
    let output = '';
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new CofferError('DAEMON_FAILED', `the daemon did not answer within ${Math.round(timeoutMs / 1000)} s`));
    }, timeoutMs);
    socket.setEncoding('utf8');
    socket.on('connect', () => socket.write(JSON.stringify(request) + '\n'));
    socket.on('data', (data) => (output += data));
    socket.on('error', (err) => {
      clearTimeout(timer);
      reject(new CofferError('NOT_MOUNTED', `cannot reach the daemon at ${socketPath}: ${err.message}`, { cause: err }));
    });
    socket.on('end', () => {
      clearTimeout(timer);
      try {
        const response = JSON.parse(output) as ControlResponse;
        if (response.ok) resolve(response.result);
        else reject(new CofferError(response.error.code as CofferErrorCode, response.error.message));
      } catch {
        reject(new CofferError('DAEMON_FAILED', 'the daemon closed the connection without an answer'));
      }
    });
  });
}
