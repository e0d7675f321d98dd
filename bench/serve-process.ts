// `fcn serve` in a process of its own, for the serve benches: launched as a user runs it, its
// health awaited, stopped; and a bench script run as a child whose last stdout line is its JSON.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));

/** A port free on 127.0.0.1 now (the server is told to listen there). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.on('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address() as net.AddressInfo;
      s.close(() => resolve(port));
    });
  });
}

/** `fcn serve ARGS` (the compiled CLI when built, else the sources through tsx). */
export function launchServe(args: string[]): ChildProcess {
  const compiled = existsSync(path.join(here, '..', 'dist', 'cli', 'main.js'));
  const cli = compiled ? [path.join(here, '..', 'bin', 'fcn.js')] : ['--import', 'tsx', path.join(here, '..', 'test', 'cli', 'run-cli.ts')];
  return spawn(process.execPath, [...cli, 'serve', ...args], { stdio: ['ignore', 'ignore', 'pipe'] });
}

/** Waits until the server at `url` answers /api/health with its models loaded. */
export async function awaitHealth(server: ChildProcess, url: string, timeoutMs = 120_000): Promise<void> {
  for (const t0 = Date.now(); ; ) {
    if (server.exitCode !== null) throw new Error(`fcn serve exited (${server.exitCode}) before it was ready`);
    if (Date.now() - t0 > timeoutMs) throw new Error(`fcn serve was not ready in ${timeoutMs / 1000} s`);
    const health = await fetch(`${url}/api/health`).then((r) => (r.ok ? (r.json() as Promise<{ models: number }>) : null), () => null);
    if (health && health.models > 0) return;
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** SIGINT (the server's own clean stop), then SIGKILL after 15 s. */
export async function stopServe(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null) return;
  child.kill('SIGINT');
  await new Promise((resolve) => {
    const t = setTimeout(() => { child.kill('SIGKILL'); resolve(null); }, 15_000);
    child.on('exit', () => { clearTimeout(t); resolve(null); });
  });
}

/** Runs a bench script in a process of its own (for bench/run.ts): its last stdout line as JSON, null if it failed. */
export function runBenchScript<T>(script: string, threads: number, timeoutMs: number): T | null {
  const r = spawnSync(process.execPath, ['--import', 'tsx', script, '--threads', String(threads)], { encoding: 'utf8', timeout: timeoutMs });
  if (r.status !== 0) {
    console.error(`bench: ${path.basename(script)} failed: ${(r.stderr || r.error?.message || '').trim().split('\n').slice(-3).join('\n')}`);
    return null;
  }
  return JSON.parse(r.stdout.trim().split('\n').pop()!) as T;
}
