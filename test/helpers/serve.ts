/**
 * `coffer serve` as a real child process for tests: started with any flags, ready once it
 * prints its "listening on" line (and, with --metrics-listen, its "metrics on" line), stopped
 * (SIGTERM, or SIGKILL to simulate a crash) by the test.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { CLI, cofferOk } from './drive.js';

export interface ServeProcess {
  child: ChildProcess;
  /** http://127.0.0.1:PORT */
  base: string;
  port: number;
  /** With --metrics-listen: http://HOST:PORT of the metrics listener. */
  metricsBase: string | undefined;
  /** What the server has printed so far. */
  output: { stdout: string; stderr: string };
  stop(signal?: NodeJS.Signals): Promise<void>;
}

export async function startServe(flags: string[], env?: NodeJS.ProcessEnv): Promise<ServeProcess> {
  const child = spawn(process.execPath, [CLI, 'serve', ...flags], { stdio: ['ignore', 'pipe', 'pipe'], env: env && { ...process.env, ...env } });
  const output = { stdout: '', stderr: '' };
  child.stderr!.on('data', (d) => (output.stderr += d));
  const wantsMetrics = flags.includes('--metrics-listen');
  const { base, metricsBase } = await new Promise<{ base: string; metricsBase: string | undefined }>((resolvePromise, reject) => {
    child.stdout!.on('data', (d) => {
      output.stdout += d;
      const main = /listening on (http:\/\/\S+?)\/?\n/.exec(output.stdout);
      const metrics = /metrics on (http:\/\/\S+?)\/metrics\n/.exec(output.stdout);
      if (main && (metrics || !wantsMetrics)) resolvePromise({ base: main[1]!, metricsBase: metrics?.[1] });
    });
    child.once('exit', (code) => reject(new Error(`coffer serve exited (${code}): ${output.stderr}`)));
  });
  return {
    child,
    base,
    port: Number(new URL(base).port),
    metricsBase,
    output,
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
