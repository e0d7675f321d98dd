// Known pretrained weights and the per-user cache they are downloaded into. A known name
// (`vgg16`, `fcn8s`…) stands for one published file; `resolveWeights` turns a name or a path
// into a file on disk, so every command that takes weights also takes these names. Downloads
// go through the project's resumable downloader (src/io/download.ts): a `.part` file next to
// the final one, renamed only when whole and checked.
import { existsSync, statSync } from 'node:fs';
import { mkdir, rm } from 'node:fs/promises';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { downloadFile, formatBytes, type DownloadOptions } from './download.js';
import type { WeightFormat } from './weight-types.js';
import { FcnError } from '../errors.js';

export interface KnownWeights {
  name: string;
  description: string;
  /** The official address. */
  url: string;
  /** File name in the cache. */
  file: string;
  format: WeightFormat;
  /** Exact size in bytes when known (then checked), else undefined. */
  bytes?: number;
  /** Size for progress and listings when the exact one is not known. */
  approxBytes: number;
  /** md5 (hex) when known (then checked), else undefined. */
  md5?: string;
}

const KERAS_APPLICATIONS = 'https://storage.googleapis.com/tensorflow/keras-applications/vgg16';
const CAFFE_DL = 'http://dl.caffe.berkeleyvision.org';

// Sizes and digests: the two Keras VGG16 files have the sizes their downloads report and the
// md5 sums Keras's own `get_file` checks them against; both are checked here. The four Caffe
// models were published without sizes or digests, so for them only the transfer itself is
// checked (the server's Content-Length); their ~500 MB is for progress and listings.
export type KnownWeightsName = 'vgg16' | 'vgg16-notop' | 'fcn32s' | 'fcn16s' | 'fcn8s' | 'fcn8s-atonce';

const kerasVgg16 = (name: string, file: string, bytes: number, md5: string, description: string): KnownWeights =>
  ({ name, description, url: `${KERAS_APPLICATIONS}/${file}`, file, format: 'keras-h5', bytes, approxBytes: bytes, md5 });
const caffeFcn = (name: string, file: string, description: string): KnownWeights =>
  ({ name, description, url: `${CAFFE_DL}/${file}`, file, format: 'caffemodel', approxBytes: 500e6 });

export const KNOWN_WEIGHTS: Record<KnownWeightsName, KnownWeights> = {
  vgg16: kerasVgg16('vgg16', 'vgg16_weights_tf_dim_ordering_tf_kernels.h5', 553_467_096, '64373286793e3c8b2b4e3219cbf3544b',
    'Keras VGG16 ImageNet weights with the classifier (fc1/fc2 become conv6/conv7)'),
  'vgg16-notop': kerasVgg16('vgg16-notop', 'vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5', 58_889_256, '6d6bbae143d832006294945121d1f1fc',
    'Keras VGG16 ImageNet weights, convolutional layers only (no fc layers)'),
  fcn32s: caffeFcn('fcn32s', 'fcn32s-heavy-pascal.caffemodel', "the paper's FCN-32s trained on Pascal VOC + SBD (Caffe)"),
  fcn16s: caffeFcn('fcn16s', 'fcn16s-heavy-pascal.caffemodel', "the paper's FCN-16s trained on Pascal VOC + SBD (Caffe)"),
  fcn8s: caffeFcn('fcn8s', 'fcn8s-heavy-pascal.caffemodel', "the paper's FCN-8s trained in stages on Pascal VOC + SBD (Caffe)"),
  'fcn8s-atonce': caffeFcn('fcn8s-atonce', 'fcn8s-atonce-pascal.caffemodel', "the paper's FCN-8s trained all at once, skips scaled 0.01/0.0001 (Caffe)"),
};

export const KNOWN_WEIGHTS_NAMES = Object.keys(KNOWN_WEIGHTS) as KnownWeightsName[];

export function isKnownWeights(name: string): name is KnownWeightsName {
  return Object.prototype.hasOwnProperty.call(KNOWN_WEIGHTS, name);
}

function knownWeights(name: string): KnownWeights {
  if (!isKnownWeights(name)) throw new Error(`unknown weights '${name}' (known: ${KNOWN_WEIGHTS_NAMES.join(', ')})`);
  return KNOWN_WEIGHTS[name];
}

const nonEmpty = (v: string | undefined): string | undefined => (v === undefined || v === '' ? undefined : v);

/** `$FCN_HOME/weights`, else `$XDG_CACHE_HOME/fcn/weights`, else `~/.cache/fcn/weights`. */
export function cacheDir(env: NodeJS.ProcessEnv = process.env): string {
  const fcnHome = nonEmpty(env['FCN_HOME']);
  if (fcnHome) return join(fcnHome, 'weights');
  const xdg = nonEmpty(env['XDG_CACHE_HOME']);
  return join(xdg ?? join(homedir(), '.cache'), 'fcn', 'weights');
}

/** Where a known file lives in the cache (whether or not it is there). */
export function cachedPath(name: string, env: NodeJS.ProcessEnv = process.env): string {
  return join(cacheDir(env), knownWeights(name).file);
}

/** The environment variable overriding a name's address: FCN_WEIGHTS_VGG16_NOTOP_URL for vgg16-notop. */
export function urlVariable(name: string): string {
  return `FCN_WEIGHTS_${name.toUpperCase().replace(/[^A-Z0-9]/g, '_')}_URL`;
}

/** The address a name downloads from: the option, else the environment override, else the official one. */
export function weightsUrl(name: string, env: NodeJS.ProcessEnv = process.env, override?: string): string {
  return override ?? nonEmpty(env[urlVariable(name)]) ?? knownWeights(name).url;
}

export type CacheState = { state: 'cached'; path: string; bytes: number } | { state: 'partial'; path: string; bytes: number } | { state: 'absent'; path: string };

/** Whether a known file is in the cache, partly downloaded (a `.part` file), or absent. */
export function cacheState(name: string, env: NodeJS.ProcessEnv = process.env): CacheState {
  const path = cachedPath(name, env);
  if (existsSync(path)) return { state: 'cached', path, bytes: statSync(path).size };
  const part = `${path}.part`;
  if (existsSync(part)) return { state: 'partial', path: part, bytes: statSync(part).size };
  return { state: 'absent', path };
}

/** The download's own settings (progress, notes, retries) and where to fetch from. */
export interface FetchWeightsOptions extends Pick<DownloadOptions, 'onProgress' | 'onNote' | 'retries' | 'retryDelayMs'> {
  /** Download from here instead (a mirror; also FCN_WEIGHTS_<NAME>_URL). */
  url?: string;
  /** Download again even if the file is cached (a partial download is discarded too). */
  force?: boolean;
  env?: NodeJS.ProcessEnv;
}

export interface FetchedWeights {
  name: string;
  path: string;
  bytes: number;
  /** True when the file was already cached and nothing was downloaded. */
  cached: boolean;
}

/**
 * Downloads a known file into the cache, resuming a partial download, checking the size
 * and md5 where they are known, and renaming the file into place only when it is whole.
 * A cached file of the known size is kept without downloading (its md5 is checked once,
 * when it arrives, rather than on every call: hashing 500 MB takes seconds).
 */
export async function fetchWeights(name: string, o: FetchWeightsOptions = {}): Promise<FetchedWeights> {
  const known = knownWeights(name);
  const env = o.env ?? process.env;
  const dest = cachedPath(name, env);
  const url = weightsUrl(name, env, o.url);
  if (o.force) {
    await rm(dest, { force: true });
    await rm(`${dest}.part`, { force: true });
  } else if (existsSync(dest)) {
    const bytes = statSync(dest).size;
    if (known.bytes === undefined || bytes === known.bytes) return { name, path: dest, bytes, cached: true };
    o.onNote?.(`${dest} has ${bytes} bytes, not ${known.bytes}: downloading again`);
    await rm(dest);
  }
  try {
    await mkdir(cacheDir(env), { recursive: true });
  } catch (e) {
    throw new Error(`${cacheDir(env)}: cannot create the weights cache (${(e as NodeJS.ErrnoException).code ?? (e as Error).message}); set FCN_HOME to a writable folder`);
  }
  try {
    await downloadFile(url, dest, { ...o, approxBytes: known.approxBytes, expectedBytes: known.bytes, md5: known.md5 });
  } catch (e) {
    throw new Error(`${(e as Error).message}\n${byHand(known, url, dest)}`);
  }
  return { name, path: dest, bytes: statSync(dest).size, cached: false };
}

/** The offline route: which address to download on another machine, and where the file goes. */
function byHand(known: KnownWeights, url: string, dest: string): string {
  const size = known.bytes !== undefined ? ` (${known.bytes} bytes${known.md5 ? `, md5 ${known.md5}` : ''})` : '';
  return `Without network access from here: download ${url} elsewhere and put it at ${dest}${size}`;
}

/**
 * A weights file from a path or a known name: an existing path is itself; a known name is
 * its cached file, or an error saying how to get it (online and by hand); anything else is
 * an error naming it and the known names.
 */
export function resolveWeights(nameOrPath: string, env: NodeJS.ProcessEnv = process.env): string {
  const isFolder = existsSync(nameOrPath) && statSync(nameOrPath).isDirectory();
  if (existsSync(nameOrPath) && !isFolder) return nameOrPath;
  if (isFolder && !isKnownWeights(nameOrPath)) throw new Error(`${nameOrPath}: is a folder, not a weights file`);
  if (isKnownWeights(nameOrPath)) {
    const state = cacheState(nameOrPath, env);
    if (state.state === 'cached') return state.path;
    const known = KNOWN_WEIGHTS[nameOrPath];
    const dest = cachedPath(nameOrPath, env);
    const partial = state.state === 'partial' ? ` (${formatBytes(state.bytes)} of it are in ${state.path}: fetching resumes there)` : '';
    // The command line adds the command that fetches them (io speaks of files, not of commands).
    throw new FcnError('WEIGHTS_NOT_DOWNLOADED', `weights '${nameOrPath}' (${known.description}) are not downloaded yet${partial}\n${byHand(known, weightsUrl(nameOrPath, env), dest)}`);
  }
  throw new Error(`${nameOrPath}: no such file, and not a known weights name (known: ${KNOWN_WEIGHTS_NAMES.join(', ')})`);
}
