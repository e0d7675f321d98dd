// The optional MPI binding (native/mpi.cc, built as build/Release/fcn_mpi.node only where an
// MPI library was found at build time): loads it when present, types it, and knows how a
// process started by mpirun finds its rank. Nothing else in the project needs MPI: without
// the addon this module says why, and everything that does not train across processes works.
import { createRequire } from 'node:module';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import path from 'node:path';

export type AllreducePrecision = 'float32' | 'bfloat16';

/** Arrays the allreduce sums: float32, float64, or bfloat16 bits in a Uint16Array. */
export type ReducibleArray = Float32Array | Float64Array | Uint16Array;

export interface MpiLibrary {
  /** The library's own description, e.g. "Open MPI v4.1.4, package: Debian OpenMPI, …". */
  library: string;
  /** The MPI standard it implements, e.g. "3.1". */
  standard: string;
  /** How libmpi's symbols were made global for its dlopen'ed components. */
  preload: string;
}

export interface MpiInitResult {
  rank: number;
  size: number;
  /** The thread support MPI granted ('serialized' lets a progress thread drive requests). */
  threadLevel: 'single' | 'funneled' | 'serialized' | 'multiple' | 'unknown';
  progressThread: boolean;
}

export interface MpiState {
  initialized: boolean;
  finalized: boolean;
  aborted: boolean;
  rank: number;
  size: number;
  /** Requests started and not yet waited for. */
  pending: number;
  timeoutSeconds: number;
}

export interface AllreduceOptions {
  /**
   * 'bfloat16' carries a Float32Array as bfloat16 (half the bytes); every addition on the way
   * is done in float32 and rounded once. Uint16Arrays are bfloat16 already.
   */
  precision?: AllreducePrecision;
  /** Multiplies the sum (e.g. 1/labelled pixels of the global batch). */
  scale?: number;
  /** Deadline of the wait (default: init's timeoutSeconds). */
  timeoutSeconds?: number;
}

export interface WaitOptions {
  timeoutSeconds?: number;
}

/** The addon's exports; native/mpi.cc lists the same names. */
export const MPI_EXPORTS = ['libraryVersion', 'init', 'state', 'allreduce', 'iallreduce', 'test', 'wait', 'barrier', 'broadcast', 'abort', 'finalize', 'checksum'] as const;
export type MpiExport = (typeof MPI_EXPORTS)[number];

/**
 * The typed addon. Arguments are checked: a wrong kind throws a TypeError, a bad value a
 * RangeError, an MPI failure or a missed deadline an Error; each message starts with the
 * function's name.
 */
export interface MpiNative {
  /** Callable before init. */
  libraryVersion(): MpiLibrary;
  /**
   * MPI_Init_thread (MPI_THREAD_SERIALIZED), once per process. `pollMicros`: how often the
   * progress thread tests requests in flight (default 100); `timeoutSeconds`: every wait's
   * default deadline (default 300).
   */
  init(options?: { pollMicros?: number; timeoutSeconds?: number }): MpiInitResult;
  state(): MpiState;
  /** Sums `data` over every rank in place (then scales it); returns when done. */
  allreduce(data: ReducibleArray, options?: AllreduceOptions): void;
  /**
   * Starts that sum (MPI_Iallreduce) and returns a request id. `data` must not be read or
   * written before wait(id) returns; every request must be waited for.
   */
  iallreduce(data: ReducibleArray, options?: Omit<AllreduceOptions, 'timeoutSeconds'>): number;
  /** Whether wait(id) would return at once (advances every request in flight). */
  test(id: number): boolean;
  wait(id: number, options?: WaitOptions): void;
  barrier(options?: WaitOptions): void;
  /** Every rank's `data` (same byte length everywhere) becomes rank `root`'s. */
  broadcast(data: ArrayBufferView, root: number, options?: WaitOptions): void;
  /** Ends every rank of the job with `code` (MPI_Abort). */
  abort(code?: number): never;
  /** Every rank calls it once before exiting normally. */
  finalize(): void;
  /** 16 hex digits hashing the array's bytes: equal arrays, equal checksums, on any rank. */
  checksum(data: ArrayBufferView): string;
}

type Same<A, B> = [A] extends [B] ? ([B] extends [A] ? true : false) : false;
type Assert<T extends true> = T;
export type MpiNativeMatchesExports = Assert<Same<keyof MpiNative, MpiExport>>;

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
/** Where the build puts the addon. */
export const MPI_ADDON = path.join(root, 'build', 'Release', 'fcn_mpi.node');

export type MpiAvailability = { available: true; mpi: MpiNative; version: MpiLibrary } | { available: false; reason: string };

let cached: MpiAvailability | null = null;

/** The MPI binding when it is built and loads, else why not. */
export function mpiAvailability(): MpiAvailability {
  if (cached) return cached;
  if (!existsSync(MPI_ADDON)) {
    cached = { available: false, reason: 'not built: no MPI library was found when the addon was built (Debian/Ubuntu: apt-get install libopenmpi-dev openmpi-bin, then npm run setup)' };
    return cached;
  }
  try {
    const mpi = createRequire(import.meta.url)(MPI_ADDON) as MpiNative;
    cached = { available: true, mpi, version: mpi.libraryVersion() };
  } catch (e) {
    cached = { available: false, reason: `${MPI_ADDON} does not load: ${(e as Error).message}` };
  }
  return cached;
}

/** How this process was started: by mpirun (Open MPI, or a PMI launcher such as MPICH's Hydra) or not. */
export interface MpiLaunch {
  rank: number;
  size: number;
  /** Ranks on this machine (to share its cores between them). */
  localSize: number;
  launcher: 'open-mpi' | 'pmi';
}

/** The launch read from the environment mpirun gives its processes; null when not started by one. */
export function mpiLaunch(env: NodeJS.ProcessEnv = process.env): MpiLaunch | null {
  const int = (v: string | undefined) => (v !== undefined && /^\d+$/.test(v) ? Number(v) : null);
  const ompi = int(env.OMPI_COMM_WORLD_SIZE);
  if (ompi !== null) {
    return { rank: int(env.OMPI_COMM_WORLD_RANK) ?? 0, size: ompi, localSize: int(env.OMPI_COMM_WORLD_LOCAL_SIZE) ?? ompi, launcher: 'open-mpi' };
  }
  const pmi = int(env.PMI_SIZE);
  if (pmi !== null) return { rank: int(env.PMI_RANK) ?? 0, size: pmi, localSize: int(env.MPI_LOCALNRANKS) ?? pmi, launcher: 'pmi' };
  return null;
}

/** A number setting from the environment; `fallback` when unset. */
function envSetting(name: string, fallback: number, valid: (n: number) => boolean, what: string): number {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return fallback;
  const n = Number(raw);
  if (!valid(n)) throw new Error(`${name} must be ${what}, got '${raw}'`);
  return n;
}

export interface MpiSession {
  mpi: MpiNative;
  rank: number;
  size: number;
  init: MpiInitResult;
  version: MpiLibrary;
  /**
   * Ends the session as the process is about to: finalize when `code` is 0, else MPI_Abort
   * with it, so that other ranks waiting for this one stop too (a finalize would wait for
   * them for ever).
   */
  end(code: number): void;
}

let session: MpiSession | null = null;

/**
 * Initialises MPI for this process (once; later calls return the same session). The process
 * ends the session itself on exit: finalize after a normal exit, abort after a failure.
 */
export function startMpi(): MpiSession {
  if (session) return session;
  const a = mpiAvailability();
  if (!a.available) throw new Error(`MPI: ${a.reason}`);
  // FCN_MPI_TIMEOUT: how long any wait for other ranks may last; FCN_MPI_POLL_US: how often
  // requests in flight are tested while JS computes.
  const timeoutSeconds = envSetting('FCN_MPI_TIMEOUT', 300, (n) => Number.isFinite(n) && n > 0, 'a positive number of seconds');
  const pollMicros = envSetting('FCN_MPI_POLL_US', 100, (n) => Number.isInteger(n) && n >= 1 && n <= 1_000_000, 'an integer from 1 to 1000000');
  const init = a.mpi.init({ timeoutSeconds, pollMicros });
  const s: MpiSession = {
    mpi: a.mpi,
    rank: init.rank,
    size: init.size,
    init,
    version: a.version,
    end(code: number) {
      const st = a.mpi.state();
      if (!st.initialized || st.finalized || st.aborted) return;
      if (code === 0 && st.pending === 0) a.mpi.finalize();
      else a.mpi.abort(code === 0 ? 1 : code);
    },
  };
  session = s;
  process.on('exit', (code) => s.end(code));
  return s;
}

/** One line for `fcn info`: whether MPI is in and which one. */
export function mpiSummary(): string {
  const a = mpiAvailability();
  if (!a.available) return `MPI: no (${a.reason})`;
  const launch = mpiLaunch();
  const lib = a.version.library.split(',')[0]!.trim();
  return `MPI: ${lib} (MPI ${a.version.standard}${launch ? `; this process is rank ${launch.rank} of ${launch.size}` : ''})`;
}
