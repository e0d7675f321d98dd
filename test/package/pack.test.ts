// The package as a user's project gets it. A copy of the work tree as a clone holds it (tracked
// and unignored files: no dist/, no build/) is packed by `npm pack`, whose prepare script
// builds dist/ as a git install does; the tarball goes into a new TypeScript project with
// `npm install`, where npm compiles the native addon as on a user's machine (the tarball ships
// no binary). There a program written with the README's API compiles under `tsc --strict` and
// runs, and so do `npx fcn --version` and `npx fcn predict`; their logits are compared with
// the repository's own engine on the same weights and picture. Last, an install that finds no
// oneDNN 2.x stops at the check, in one line naming what to install, before any compiler runs.
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, readFileSync, readdirSync, symlinkSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import sharp from 'sharp';
import { decode } from 'fast-png';
import { configureEngine } from '../../src/engine/config.js';
import { loadModel } from '../../src/models/weights.js';
import { segment } from '../../src/infer/inference.js';
import { readNpy } from '../support/npy.js';
import { repoRoot, tempDir } from '../data/helpers.js';
import { requires } from '../prereq.js';

const tmp = tempDir('package');
after(() => tmp.cleanup());

const pkg = JSON.parse(readFileSync(join(repoRoot, 'package.json'), 'utf8')) as { name: string; version: string; scripts: Record<string, string> };
const W = 75, H = 41; // sides that are not multiples of 32
const CLASSES = 21;

interface Run { status: number | null; out: string; err: string; seconds: number }

/**
 * The environment without the npm_* variables an outer npm (`npm test`) exports: its package,
 * lifecycle and prefixes would steer the npm run here. A user's NPM_CONFIG_* settings stay.
 */
function cleanEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('npm_')) env[k] = v;
  return { ...env, ...extra };
}

function run(cmd: string, args: string[], cwd: string, env: NodeJS.ProcessEnv = cleanEnv()): Run {
  const t0 = performance.now();
  const r = spawnSync(cmd, args, { cwd, env, encoding: 'utf8', timeout: 20 * 60_000, maxBuffer: 256 << 20 });
  return { status: r.status, out: r.stdout ?? '', err: (r.stderr ?? '') + (r.error ? `\n${String(r.error)}` : ''), seconds: (performance.now() - t0) / 1000 };
}

function assertRan(r: Run, what: string): void {
  assert.equal(r.status, 0, `${what} failed (exit ${r.status}):\n${r.err.slice(-6000)}\n${r.out.slice(-3000)}`);
}

/** What the test needs from the machine; the reason when something is missing. */
function missingTools(): string | null {
  const tools: [string, string[]][] = [['npm', ['--version']], ['git', ['--version']], ['make', ['--version']], ['g++', ['--version']], ['python3', ['--version']]];
  const absent = tools.filter(([cmd, args]) => spawnSync(cmd, args).status !== 0).map(([cmd]) => cmd);
  if (absent.length) return `${absent.join(', ')} not found (packing and installing the package needs them)`;
  const onednn = spawnSync('node', [join(repoRoot, 'scripts', 'find-onednn.cjs'), 'check'], { encoding: 'utf8' });
  return onednn.status === 0 ? null : onednn.stderr.trim();
}
const missing = missingTools();
const skip = requires(missing === null, missing ?? '');

const paths = {
  copy: join(tmp.dir, 'clone'),
  app: join(tmp.dir, 'app'),
  image: join(tmp.dir, 'app', 'photo.png'),
  weights: join(tmp.dir, 'app', 'fcn8.safetensors'),
  apiOut: join(tmp.dir, 'app', 'api'),
  cliOut: join(tmp.dir, 'app', 'cli'),
};
const state: { tarball?: string; installed?: boolean; api?: { labels: Uint8Array; logits: Float32Array }; tolerance?: number; reference?: Float32Array } = {};

/** Copies the files a clone of the work tree has (tracked, or new and not ignored). */
function copyWorkTree(to: string): number {
  const listed = spawnSync('git', ['ls-files', '-z', '--cached', '--others', '--exclude-standard'], { cwd: repoRoot, encoding: 'utf8' });
  assert.equal(listed.status, 0, listed.stderr);
  const files = listed.stdout.split('\0').filter((f) => f && existsSync(join(repoRoot, f)));
  for (const f of files) {
    mkdirSync(dirname(join(to, f)), { recursive: true });
    copyFileSync(join(repoRoot, f), join(to, f));
  }
  // The dependencies a clone's `npm ci` would install, typescript among them (prepare runs tsc).
  symlinkSync(join(repoRoot, 'node_modules'), join(to, 'node_modules'));
  return files.length;
}

test('npm pack of a clean copy: prepare builds dist/; the tarball holds what an install needs, no tests or benchmarks', { skip, timeout: 10 * 60_000 }, (t) => {
  const copied = copyWorkTree(paths.copy);
  assert.ok(!existsSync(join(paths.copy, 'dist')) && !existsSync(join(paths.copy, 'build')), 'the copy starts without dist/ and build/');
  const r = run('npm', ['pack', '--json', '--pack-destination', tmp.dir], paths.copy);
  assertRan(r, 'npm pack');
  const [packed] = JSON.parse(r.out.slice(r.out.indexOf('['))) as { filename: string; size: number; unpackedSize: number; files: { path: string }[] }[];
  const files = new Set(packed.files.map((f) => f.path));
  t.diagnostic(`${copied} files copied; npm pack (prepare: tsc) took ${r.seconds.toFixed(1)} s: ${packed.filename}, ${(packed.size / 1024).toFixed(0)} KiB, ${files.size} files, ${(packed.unpackedSize / 1024).toFixed(0)} KiB unpacked`);

  for (const f of ['package.json', 'README.md', 'binding.gyp', 'bin/fcn.js', 'dist/index.js', 'dist/index.d.ts', 'dist/cli/main.js', 'web/index.html']) {
    assert.ok(files.has(f), `${f} is in the tarball`);
  }
  // Everything the native build reads: binding.gyp's sources and scripts, the install script's,
  // and every header beside the sources.
  const gyp = readFileSync(join(paths.copy, 'binding.gyp'), 'utf8');
  const needed = [...gyp.matchAll(/(?:native|scripts)\/[\w.-]+/g), ...pkg.scripts.install!.matchAll(/scripts\/[\w.-]+/g)].map((m) => m[0]);
  needed.push(...readdirSync(join(paths.copy, 'native')).map((f) => `native/${f}`));
  for (const f of needed) assert.ok(files.has(f), `${f} (needed to build the addon) is in the tarball`);
  // prepare compiled every module of src/, in a copy that had no dist/ at all.
  const sources = readdirSync(join(paths.copy, 'src'), { recursive: true, encoding: 'utf8' }).filter((f) => f.endsWith('.ts') && !f.endsWith('.d.ts'));
  for (const s of sources) {
    const base = `dist/${s.replace(/\\/g, '/').replace(/\.ts$/, '')}`;
    assert.ok(files.has(`${base}.js`) && files.has(`${base}.d.ts`), `${base}.js and .d.ts are in the tarball`);
  }
  const stray = [...files].filter((f) => /^(test|bench|src|build|docs|node_modules|\.ci)\//.test(f) || f.endsWith('.map') || f === 'dist/.stamp' || f.endsWith('.tgz'));
  assert.deepEqual(stray, [], 'no tests, benchmarks, sources of dist, builds, source maps or stamps');
  state.tarball = join(tmp.dir, packed.filename);
  assert.ok(existsSync(state.tarball));
});

test('npm install of the tarball into a new TypeScript project builds the addon there', { skip, timeout: 20 * 60_000 }, (t) => {
  assert.ok(state.tarball, 'the tarball (packed by the test before)');
  mkdirSync(paths.app, { recursive: true });
  writeFileSync(join(paths.app, 'package.json'), JSON.stringify({ name: 'fcn-user', version: '1.0.0', private: true, type: 'module' }, null, 2));
  writeFileSync(join(paths.app, 'tsconfig.json'), JSON.stringify({
    compilerOptions: { target: 'ES2022', module: 'NodeNext', moduleResolution: 'NodeNext', strict: true, outDir: 'out', types: ['node'] },
    files: ['main.ts'],
  }, null, 2));
  copyFileSync(join(repoRoot, 'test', 'package', 'fixtures', 'readme-api.mts'), join(paths.app, 'main.ts'));
  // The dependency versions the repository's lock holds are in npm's cache: --prefer-offline
  // takes them from there without asking the registry again.
  const typesNode = (JSON.parse(readFileSync(join(repoRoot, 'node_modules', '@types', 'node', 'package.json'), 'utf8')) as { version: string }).version;
  const r = run('npm', ['install', '--prefer-offline', '--no-audit', '--no-fund', state.tarball, `@types/node@${typesNode}`], paths.app);
  assertRan(r, 'npm install of the tarball');
  t.diagnostic(`npm install (dependencies, and the addon compiled by node-gyp) took ${r.seconds.toFixed(0)} s`);
  const installed = join(paths.app, 'node_modules', pkg.name);
  assert.ok(existsSync(join(installed, 'build', 'Release', 'fcn_native.node')), 'the install compiled the engine');
  assert.ok(!existsSync(join(installed, 'test')) && !existsSync(join(installed, 'src')), 'no tests or sources installed');
  state.installed = true;
});

/** Largest |a[i] - b[i]| over the largest |b[i]|. */
function relativeDiff(a: Float32Array, b: Float32Array): number {
  assert.equal(a.length, b.length);
  let d = 0, m = 0;
  for (let i = 0; i < a.length; i++) {
    d = Math.max(d, Math.abs(a[i]! - b[i]!));
    m = Math.max(m, Math.abs(b[i]!));
  }
  return d / m;
}

/**
 * Pixels whose label differs from the arg-max of `logits` (classes × H × W) although the
 * winning class leads the named one by more than `margin`: rounding can only flip near-ties.
 */
function wrongLabels(labels: Uint8Array, logits: Float32Array, margin: number): number[] {
  const n = W * H, bad: number[] = [];
  for (let p = 0; p < n; p++) {
    let best = 0;
    for (let c = 1; c < CLASSES; c++) if (logits[c * n + p]! > logits[best * n + p]!) best = c;
    if (labels[p] !== best && logits[best * n + p]! - logits[labels[p]! * n + p]! > margin) bad.push(p);
  }
  return bad;
}

async function writePicture(file: string): Promise<void> {
  // A gradient with a bright disc and a dark bar: something for the network to tell apart.
  const rgb = Buffer.alloc(W * H * 3);
  for (let y = 0; y < H; y++) {
    for (let x = 0; x < W; x++) {
      const i = (y * W + x) * 3, disc = (x - 50) ** 2 + (y - 20) ** 2 < 144, bar = x > 8 && x < 20;
      rgb[i] = disc ? 240 : bar ? 20 : (x * 3) % 256;
      rgb[i + 1] = disc ? 200 : bar ? 30 : (y * 5) % 256;
      rgb[i + 2] = disc ? 40 : bar ? 25 : 128;
    }
  }
  await sharp(rgb, { raw: { width: W, height: H, channels: 3 } }).png().toFile(file);
}

test('a program using the README API compiles under tsc --strict, runs, and gets the repository engine\'s logits', { skip, timeout: 10 * 60_000 }, async (t) => {
  assert.ok(state.installed, 'the installed package (the test before)');
  const tsc = run(process.execPath, [join(repoRoot, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', paths.app], paths.app);
  assertRan(tsc, 'tsc --strict on the user\'s program');
  await writePicture(paths.image);
  mkdirSync(paths.apiOut);
  const r = run(process.execPath, [join(paths.app, 'out', 'main.js'), paths.image, paths.weights, paths.apiOut], paths.app);
  assertRan(r, 'the user\'s program');
  const summary = JSON.parse(r.out.trim().split('\n').at(-1)!) as { width: number; height: number; classes: string[]; numClasses: number; kind: string };
  assert.deepEqual([summary.width, summary.height, summary.numClasses, summary.kind], [W, H, CLASSES, 'fcn8']);
  assert.equal(summary.classes.length, CLASSES);
  assert.equal(summary.classes[0], 'background');
  const labels = new Uint8Array(readFileSync(join(paths.apiOut, 'labels.u8')));
  const bytes = readFileSync(join(paths.apiOut, 'logits.f32'));
  const logits = new Float32Array(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength));
  assert.equal(labels.length, W * H);
  assert.equal(logits.length, CLASSES * W * H);

  // The repository's engine on the weights the program saved: at 2 threads (as the program),
  // and at 1 for the rounding floor of the same computation.
  const model = await loadModel(paths.weights);
  try {
    configureEngine({ threads: 1 });
    const one = (await segment(model, paths.image, { logits: true })).logits!;
    configureEngine({ threads: 2 });
    const two = (await segment(model, paths.image, { logits: true })).logits!;
    const floor = relativeDiff(one, two);
    state.tolerance = Math.max(4 * floor, 1e-6);
    state.reference = two;
    const d = relativeDiff(logits, two);
    const scale = two.reduce((m, v) => Math.max(m, Math.abs(v)), 0);
    t.diagnostic(`installed vs repository logits: ${d.toExponential(2)} of the largest (floor, 1 vs 2 threads: ${floor.toExponential(2)}); ${new Set(labels).size} classes in the label map`);
    assert.ok(d <= state.tolerance, `the installed package's logits differ from the repository's by ${d} of the largest (tolerance ${state.tolerance})`);
    assert.deepEqual(wrongLabels(labels, two, state.tolerance * scale), [], 'labels are the arg-max of the logits (up to near-ties)');
  } finally {
    model.dispose();
    configureEngine();
  }
  state.api = { labels, logits };
});

test('npx fcn --version and npx fcn predict in the user\'s project', { skip, timeout: 5 * 60_000 }, () => {
  assert.ok(state.api && state.reference && state.tolerance !== undefined, 'the program\'s results (the test before)');
  const version = run('npx', ['--no', '--', 'fcn', '--version'], paths.app);
  assertRan(version, 'npx fcn --version');
  assert.equal(version.out.trim(), `fcn ${pkg.version}`);

  const labelsPng = join(paths.cliOut, 'labels.png'), logitsNpy = join(paths.cliOut, 'logits.npy');
  const r = run('npx', ['--no', '--', 'fcn', 'predict', '--weights', paths.weights, '--image', paths.image, '--labels', labelsPng, '--logits', logitsNpy, '--threads', '2'], paths.app);
  assertRan(r, 'npx fcn predict');
  const png = decode(readFileSync(labelsPng));
  assert.deepEqual([png.width, png.height, png.channels], [W, H, 1]);
  assert.ok(png.palette && png.palette.length >= CLASSES, 'a palette PNG');
  const npy = readNpy(logitsNpy);
  assert.deepEqual([npy.dtype, npy.shape], ['float32', [CLASSES, H, W]]);
  const logits = npy.data as Float32Array;
  const d = relativeDiff(logits, state.reference);
  assert.ok(d <= state.tolerance, `fcn predict's logits differ from the repository's by ${d} of the largest (tolerance ${state.tolerance})`);
  const scale = state.reference.reduce((m, v) => Math.max(m, Math.abs(v)), 0);
  assert.deepEqual(wrongLabels(new Uint8Array(png.data), state.reference, state.tolerance * scale), [], 'the label map is the arg-max of the logits (up to near-ties)');
});

test('without oneDNN 2.x the install stops at the check with one line naming the package, before any compiler', { skip, timeout: 5 * 60_000 }, () => {
  assert.ok(state.installed, 'the installed package (the test before)');
  // npm rebuild runs the package's install script as `npm install` did; ONEDNN_ROOT, when set,
  // is the only place looked at, so an empty folder stands for a machine without oneDNN.
  const none = join(tmp.dir, 'no-onednn');
  mkdirSync(none);
  const r = run('npm', ['rebuild', pkg.name], paths.app, cleanEnv({ ONEDNN_ROOT: none }));
  assert.notEqual(r.status, 0, 'the install fails');
  const text = `${r.out}\n${r.err}`;
  const ours = text.split('\n').filter((l) => l.includes('fcn: '));
  assert.equal(ours.length, 1, `one line from the check:\n${text}`);
  assert.match(ours[0]!, new RegExp(`fcn: oneDNN not found \\(looked in ONEDNN_ROOT=${none}\\): install oneDNN 2\\.x: \`sudo apt-get install libdnnl-dev\` \\(Debian/Ubuntu\\)`));
  assert.doesNotMatch(text, /gyp (info|ERR!)|\.(cc|h|hpp):\d+|fatal error|g\+\+ /, `node-gyp or a compiler ran:\n${text}`);

  // A oneDNN 3.x (Homebrew's, say): the shipped check names the version it found.
  const v3 = join(tmp.dir, 'onednn3', 'include', 'oneapi', 'dnnl');
  mkdirSync(v3, { recursive: true });
  writeFileSync(join(v3, 'dnnl.hpp'), '');
  writeFileSync(join(v3, 'dnnl_version.h'), '#define DNNL_VERSION_MAJOR 3\n#define DNNL_VERSION_MINOR 11\n#define DNNL_VERSION_PATCH 2\n');
  const check = run(process.execPath, [join(paths.app, 'node_modules', pkg.name, 'scripts', 'find-onednn.cjs'), 'check'], paths.app, cleanEnv({ ONEDNN_ROOT: join(tmp.dir, 'onednn3') }));
  assert.equal(check.status, 1);
  assert.equal(check.err.trim().split('\n').length, 1, check.err);
  assert.match(check.err, /^fcn: needs oneDNN 2\.x, found 3\.11\.2 in .*onednn3: install oneDNN 2\.x: `sudo apt-get install libdnnl-dev`/);
  // And the system's oneDNN, where the install above found it, passes silently.
  const ok = run(process.execPath, [join(paths.app, 'node_modules', pkg.name, 'scripts', 'find-onednn.cjs'), 'check'], paths.app);
  assert.deepEqual([ok.status, ok.out, ok.err], [0, '', '']);
});
