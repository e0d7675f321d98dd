// Finds a Python 3 interpreter for cross-checks. The one first on PATH may be a separate
// install (pyenv, venv) without Debian's python3-torch, so try the candidates in order and
// keep the first that imports every module asked for. FCN_PYTHON overrides the search.
import { spawnSync } from 'node:child_process';

const cache = new Map<string, string | null>();

export function findPython(modules: string[] = []): string | null {
  const key = modules.join(',');
  if (cache.has(key)) return cache.get(key)!;
  const candidates = [process.env.FCN_PYTHON, 'python3', '/usr/bin/python3'].filter((c): c is string => !!c);
  const probe = modules.length ? `import ${modules.join(', ')}` : 'pass';
  let found: string | null = null;
  for (const c of candidates) {
    const r = spawnSync(c, ['-c', probe], { stdio: 'ignore', timeout: 60_000 });
    if (r.status === 0) {
      found = c;
      break;
    }
  }
  cache.set(key, found);
  return found;
}

/** Runs a Python snippet with arguments; throws with stderr when it fails. */
export function runPython(python: string, code: string, args: string[] = [], timeoutMs = 120_000): string {
  const r = spawnSync(python, ['-c', code, ...args], { encoding: 'utf8', timeout: timeoutMs, maxBuffer: 64 << 20 });
  if (r.status !== 0) throw new Error(`python failed (${r.status ?? r.signal}): ${r.stderr}`);
  return r.stdout;
}
