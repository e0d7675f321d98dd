// Two "hosts" on one machine for MPI over real TCP: two Linux network namespaces joined by a
// veth pair (private addresses, no route out: no traffic leaves the machine), and an rsh
// agent that starts Open MPI's daemon inside the namespace owning a host's address, as ssh
// would on another machine. mpirun runs in the first namespace; Open MPI is held to its TCP
// transport (pml ob1, btl tcp,self) on the veth's subnet for both messages and its own
// out-of-band channel. Needs root (ip netns), as CI runs.
//
// Everything made is named with one prefix holding this process's id: dispose() removes it
// (processes, namespaces, and with them the veth pair), an exit hook does the same if the
// process ends first, and setUp removes what earlier processes that died left behind.
import { spawnSync } from 'node:child_process';
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';

const PREFIX = 'fcn2h';
const SUBNET = '10.231.0';

export interface TwoHosts {
  /** The namespaces: [first (mpirun and rank 0), second]. */
  namespaces: [string, string];
  /** Their addresses on the veth pair: the host names in the hostfile. */
  addresses: [string, string];
  /** The argument vector that runs `mpirun -np 2` with one rank on each host, then `command`. */
  mpirun(command: string[], options?: { env?: string[] }): string[];
  /** The processes now in a namespace. */
  pids(ns: string): number[];
  /** Removes processes, namespaces and links (idempotent). */
  dispose(): void;
}

function sh(args: string[]): { ok: boolean; out: string; err: string } {
  const r = spawnSync(args[0]!, args.slice(1), { encoding: 'utf8' });
  return { ok: r.status === 0, out: r.stdout ?? '', err: (r.stderr ?? '') + (r.error ? String(r.error) : '') };
}

function must(args: string[]): string {
  const r = sh(args);
  if (!r.ok) throw new Error(`two hosts: ${args.join(' ')} failed: ${r.err.trim()}`);
  return r.out;
}

/** Why two hosts cannot be made here, or null when they can. */
export function twoHostsUnavailable(): string | null {
  if (process.platform !== 'linux') return 'network namespaces are Linux only';
  if (process.getuid?.() !== 0) return 'network namespaces need root';
  if (!sh(['ip', '-V']).ok) return 'iproute2 (ip) is not installed';
  if (!sh(['mpirun', '--version']).ok) return 'Open MPI (openmpi-bin) is not installed';
  return null;
}

function ours(): string[] {
  return sh(['ip', 'netns', 'list']).out.split('\n').map((l) => l.split(' ')[0]!).filter((n) => n.startsWith(PREFIX));
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

function removeNamespace(ns: string): void {
  for (const pid of sh(['ip', 'netns', 'pids', ns]).out.split('\n').map(Number).filter((p) => p > 0)) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      /* gone */
    }
  }
  // A namespace goes once its processes have: deleting it takes its end of the veth pair, and
  // the other end with it.
  for (let i = 0; i < 50 && sh(['ip', 'netns', 'pids', ns]).out.trim() !== ''; i++) spawnSync('sleep', ['0.1']);
  sh(['ip', 'netns', 'del', ns]);
}

/** Removes what a process that has died left behind (its id is in the names). */
export function removeStale(): void {
  for (const ns of ours()) {
    const pid = Number(/^fcn2h(\d+)[ab]$/.exec(ns)?.[1]);
    if (!(pid > 0) || !alive(pid) || pid === process.pid) removeNamespace(ns);
  }
}

/**
 * Makes the two hosts. `rateGbit` shapes both directions with a token bucket (tc tbf), as a
 * link of that speed; without it the veth pair runs at memory speed.
 */
export function setUpTwoHosts(o: { rateGbit?: number } = {}): TwoHosts {
  removeStale();
  const tag = `${PREFIX}${process.pid}`;
  const namespaces: [string, string] = [`${tag}a`, `${tag}b`];
  const links = [`f2h${process.pid}a`, `f2h${process.pid}b`];
  const addresses: [string, string] = [`${SUBNET}.1`, `${SUBNET}.2`];
  const dir = mkdtempSync(path.join(os.tmpdir(), 'fcn-two-hosts-'));
  let disposed = false;
  const dispose = () => {
    if (disposed) return;
    disposed = true;
    for (const ns of namespaces) removeNamespace(ns);
    rmSync(dir, { recursive: true, force: true });
    process.off('exit', dispose);
  };
  process.on('exit', dispose);
  try {
    for (const ns of namespaces) must(['ip', 'netns', 'add', ns]);
    must(['ip', 'link', 'add', links[0]!, 'type', 'veth', 'peer', 'name', links[1]!]);
    for (const i of [0, 1]) {
      must(['ip', 'link', 'set', links[i]!, 'netns', namespaces[i]!]);
      must(['ip', '-n', namespaces[i]!, 'addr', 'add', `${addresses[i]}/24`, 'dev', links[i]!]);
      must(['ip', '-n', namespaces[i]!, 'link', 'set', links[i]!, 'up']);
      must(['ip', '-n', namespaces[i]!, 'link', 'set', 'lo', 'up']);
      if (o.rateGbit) must(['ip', 'netns', 'exec', namespaces[i]!, 'tc', 'qdisc', 'add', 'dev', links[i]!, 'root', 'tbf', 'rate', `${o.rateGbit}gbit`, 'burst', '4mb', 'latency', '10ms']);
    }
    // The rsh agent: "agent HOST COMMAND…", as ssh is called, runs COMMAND in HOST's namespace.
    const agent = path.join(dir, 'agent.sh');
    writeFileSync(agent, ['#!/bin/sh', 'host="$1"; shift', 'case "$host" in', ...addresses.map((a, i) => `  ${a}) ns=${namespaces[i]} ;;`), '  *) echo "agent: unknown host $host" >&2; exit 1 ;;', 'esac', 'exec ip netns exec "$ns" sh -c "$*"', ''].join('\n'));
    chmodSync(agent, 0o755);
    const hostfile = path.join(dir, 'hosts');
    writeFileSync(hostfile, addresses.map((a) => `${a} slots=1\n`).join(''));
    const subnet = `${SUBNET}.0/24`;
    const mpirun = (command: string[], options: { env?: string[] } = {}) => [
      'ip', 'netns', 'exec', namespaces[0], 'mpirun', '-np', '2', '--hostfile', hostfile, '--allow-run-as-root', '--tag-output',
      '--mca', 'plm', 'rsh', '--mca', 'plm_rsh_agent', agent,
      '--mca', 'pml', 'ob1', '--mca', 'btl', 'tcp,self', '--mca', 'osc', '^ucx',
      '--mca', 'btl_tcp_if_include', subnet, '--mca', 'oob_tcp_if_include', subnet,
      ...(options.env ?? []).flatMap((e) => ['-x', e]),
      ...command,
    ];
    const pids = (ns: string) => sh(['ip', 'netns', 'pids', ns]).out.split('\n').map(Number).filter((p) => p > 0);
    return { namespaces, addresses, mpirun, pids, dispose };
  } catch (e) {
    dispose();
    throw e;
  }
}

/** The namespaces this module's prefix names now (to check that none is left). */
export function twoHostNamespaces(): string[] {
  return ours();
}

/** The MPI rank of a process, from the environment Open MPI gave it (null if none). */
export function rankOf(pid: number): number | null {
  try {
    const env = readFileSync(`/proc/${pid}/environ`, 'utf8').split('\0');
    const v = env.find((e) => e.startsWith('OMPI_COMM_WORLD_RANK='));
    return v ? Number(v.split('=')[1]) : null;
  } catch {
    return null;
  }
}
