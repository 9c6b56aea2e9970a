/**
 * `coffer serve` as a real child process for tests: started with any flags, ready once it
 * prints its "listening on" line, stopped (SIGTERM, or SIGKILL to simulate a crash) by the test.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { CLI, cofferOk } from './drive.js';

export interface ServeProcess {
  child: ChildProcess;
  /** http://127.0.0.1:PORT */
  base: string;
  port: number;
  stop(signal?: NodeJS.Signals): Promise<void>;
}

export async function startServe(flags: string[], env?: NodeJS.ProcessEnv): Promise<ServeProcess> {
  const child = spawn(process.execPath, [CLI, 'serve', ...flags], { stdio: ['ignore', 'pipe', 'pipe'], env: env && { ...process.env, ...env } });
  let stderr = '';
  child.stderr!.on('data', (d) => (stderr += d));
  const base = await new Promise<string>((resolvePromise, reject) => {
    let out = '';
    child.stdout!.on('data', (d) => {
      out += d;
      const match = /listening on (http:\/\/\S+?)\/?\n/.exec(out);
      if (match) resolvePromise(match[1]!);
    });
    child.once('exit', (code) => reject(new Error(`coffer serve exited (${code}): ${stderr}`)));
  });
  return {
    child,
    base,
    port: Number(new URL(base).port),
    stop: async (signal = 'SIGTERM') => {
      if (child.exitCode !== null || child.signalCode !== null) return;
      const exited = new Promise((r) => child.once('exit', r));
      child.kill(signal);
      await exited;
    },
  };
}

/** `coffer serve account add`; answers the new account's token. */
export async function addServeAccount(storeFlags: string[], name: string, extra: string[] = [], env?: NodeJS.ProcessEnv): Promise<string> {
  const { stdout } = await cofferOk(['serve', 'account', 'add', name, ...storeFlags, '--json', ...extra], { env });
  return (JSON.parse(stdout) as { token: string }).token;
}
