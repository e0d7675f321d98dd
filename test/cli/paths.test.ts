// Paths on the command line are checked before any model is loaded or any work starts: each
// bad input or output of each command fails at once, in one line naming the path and the
// reason. The command-line cases run in a child process with a deadline, because the failure
// this guards against — Node's recursive mkdir under /proc — spins synchronously for ever,
// which no in-process test timeout can interrupt.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, readdirSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { checkInputDir, checkInputFile, prepareOutputDir, prepareOutputFile } from '../../src/cli/paths.js';
import { UsageError } from '../../src/cli/args.js';
import { repoRoot, tempDir } from '../data/helpers.js';
import { requires } from '../prereq.js';

const tmp = tempDir('cli-paths');
const aFile = join(tmp.dir, 'a-file');
const emptyDir = join(tmp.dir, 'empty');
// Files that exist but are no weights, image or dataset: a command that loaded or decoded
// anything before checking its outputs would fail on them with another message.
const junkWeights = join(tmp.dir, 'junk.safetensors');
const junkImage = join(tmp.dir, 'junk.jpg');
const missing = join(tmp.dir, 'missing');

before(() => {
  writeFileSync(aFile, 'x');
  mkdirSync(emptyDir);
  writeFileSync(junkWeights, 'not weights');
  writeFileSync(junkImage, 'not an image');
});
after(() => tmp.cleanup());

const escape = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

/** The UsageError message `run` throws (it must throw one). */
function usageError(run: () => void): string {
  try {
    run();
  } catch (e) {
    assert.ok(e instanceof UsageError, `a UsageError, got ${String(e)}`);
    return e.message;
  }
  assert.fail('expected a UsageError');
}

describe('src/cli/paths', () => {
  test('inputs: a missing file or folder, a folder given for a file and the reverse, a device', () => {
    assert.equal(usageError(() => checkInputFile('x', 'weights', missing)), `fcn x: --weights '${missing}': no such file`);
    assert.equal(usageError(() => checkInputFile('x', 'image', join(aFile, 'under'))), `fcn x: --image '${join(aFile, 'under')}': no such file`);
    assert.equal(usageError(() => checkInputFile('x', 'image', emptyDir)), `fcn x: --image '${emptyDir}': is a folder, not a file`);
    assert.equal(usageError(() => checkInputFile('x', 'image', '/dev/null')), `fcn x: --image '/dev/null': is not a regular file`);
    assert.equal(usageError(() => checkInputDir('x', 'data', missing)), `fcn x: --data '${missing}': no such folder`);
    assert.equal(usageError(() => checkInputDir('x', 'data', aFile)), `fcn x: --data '${aFile}': is a file, not a folder`);
    // A positional argument has no flag to name.
    assert.equal(usageError(() => checkInputDir('data check', '', missing)), `fcn data check: ${missing}: no such folder`);
    checkInputFile('x', 'weights', junkWeights);
    checkInputDir('x', 'data', emptyDir);
  });

  test('outputs: missing folders are created, one level after another', () => {
    const file = join(tmp.dir, 'made', 'deep', 'labels.png');
    prepareOutputFile('x', 'labels', file);
    assert.ok(statSync(join(tmp.dir, 'made', 'deep')).isDirectory());
    assert.ok(!existsSync(file), 'the file itself is left to the command');
    const dir = join(tmp.dir, 'run', 'a', 'b');
    prepareOutputDir('x', 'out', dir);
    assert.ok(statSync(dir).isDirectory());
    // Existing ones are fine, and an existing file is overwritten.
    prepareOutputDir('x', 'out', dir);
    prepareOutputFile('x', 'out', aFile);
  });

  test('outputs: a file where a folder must be, or a folder where a file must be, is named', () => {
    const deep = join(aFile, 'b', 'c.png');
    assert.equal(usageError(() => prepareOutputFile('x', 'labels', deep)), `fcn x: --labels '${deep}': '${aFile}' is a file, not a folder`);
    assert.equal(usageError(() => prepareOutputDir('x', 'out', join(aFile, 'run'))), `fcn x: --out '${join(aFile, 'run')}': '${aFile}' is a file, not a folder`);
    assert.equal(usageError(() => prepareOutputDir('x', 'out', aFile)), `fcn x: --out '${aFile}': is a file, not a folder`);
    assert.equal(usageError(() => prepareOutputFile('x', 'out', emptyDir)), `fcn x: --out '${emptyDir}': is a folder, not a file`);
    assert.deepEqual(readdirSync(emptyDir), []);
  });

  test('outputs: a symbolic link to nothing on the way is named', () => {
    const link = join(tmp.dir, 'dangling');
    symlinkSync(join(tmp.dir, 'nowhere'), link);
    assert.equal(usageError(() => prepareOutputDir('x', 'out', join(link, 'run'))), `fcn x: --out '${join(link, 'run')}': '${link}' is a symbolic link to a path that does not exist`);
    assert.ok(!existsSync(join(tmp.dir, 'nowhere')));
  });
});

interface CaseResult {
  args: string[];
  code: number;
  err: string;
  out: string;
  /** Bytes the process wrote during the case (wchar of /proc/self/io; the captured output is not among them). */
  written: number;
  /** Growth of the process's peak resident memory (VmHWM) during the case, bytes. */
  peakGrowth: number;
  /** The engine's buffers after the case, live and pooled: any tensor ever made leaves one or the other. */
  engineBuffers: number;
  engineBytes: number;
}

/**
 * Runs `fcn <args>` for each case, one after another, in one child process (one start-up for
 * all), and returns what each printed. A case that hangs fails the test, named, after
 * `deadlineMs` rather than hanging it.
 */
function runInChild(cases: string[][], options: { deadlineMs?: number; uid?: number } = {}): CaseResult[] {
  const script = `
    import { readFileSync, writeSync } from 'node:fs';
    const { main } = await import('./src/cli/main.ts');
    const { captureOutput } = await import('./test/data/helpers.ts');
    const { native } = await import('./src/engine/binding.ts');
    const written = () => Number(/^wchar: (\\d+)$/m.exec(readFileSync('/proc/self/io', 'utf8'))[1]);
    const peak = () => 1024 * Number(/^VmHWM:\\s*(\\d+) kB/m.exec(readFileSync('/proc/self/status', 'utf8'))[1]);
    for (const args of JSON.parse(process.env.FCN_PATH_CASES)) {
      writeSync(1, 'start ' + JSON.stringify(args) + '\\n');
      const w0 = written(), p0 = peak();
      const r = await captureOutput(() => main(args));
      const w = written() - w0, p = peak() - p0, e = native.poolStats();
      writeSync(1, 'done ' + JSON.stringify({ args, ...r, written: w, peakGrowth: p, engineBuffers: e.liveBuffers + e.pooledBuffers, engineBytes: e.liveBytes + e.pooledBytes }) + '\\n');
    }`;
  const r = spawnSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], {
    cwd: repoRoot,
    encoding: 'utf8',
    timeout: options.deadlineMs ?? 60_000,
    killSignal: 'SIGKILL',
    env: { ...process.env, FCN_PATH_CASES: JSON.stringify(cases), FCN_THREADS: '1' },
    ...(options.uid !== undefined ? { uid: options.uid, gid: options.uid } : {}),
  });
  const lines = (r.stdout ?? '').split('\n');
  const results = lines.filter((l) => l.startsWith('done ')).map((l) => JSON.parse(l.slice(5)) as CaseResult);
  if (results.length < cases.length) {
    const started = lines.filter((l) => l.startsWith('start ')).at(-1);
    assert.fail(r.error?.message.includes('ETIMEDOUT')
      ? `hung: fcn ${started ? (JSON.parse(started.slice(6)) as string[]).join(' ') : '(before the first case)'}`
      : `the child process failed (status ${r.status}): ${r.stderr}`);
  }
  return results;
}

// What "before loading anything" rules out, in bytes rather than milliseconds: the engine
// never allocates (no model made or loaded), the process writes next to nothing (no weights,
// data or run folder: a default-width FCN-8s alone is 538 MB; module loading writes a few kB of
// compile cache) and its peak memory barely moves (the same model holds 1.5 GB while made).
const MAX_WRITTEN = 1 << 20;
const MAX_PEAK_GROWTH = 64 << 20;

/** Each case: exit 2, nothing on stdout, one line on stderr that is exactly `expected`, before any work. */
function assertFailsFast(results: CaseResult[], expected: (string | RegExp)[]): void {
  results.forEach((r, i) => {
    const what = `fcn ${r.args.join(' ')}`;
    assert.equal(r.code, 2, `${what}: exit code (stderr: ${r.err})`);
    assert.equal(r.out, '', `${what}: nothing on stdout`);
    assert.equal(r.err.trimEnd().split('\n').length, 1, `${what}: one line, got ${JSON.stringify(r.err)}`);
    const e = expected[i]!;
    if (typeof e === 'string') assert.equal(r.err.trimEnd(), e, what);
    else assert.match(r.err.trimEnd(), e, what);
    // Nothing is loaded, made or written before the check.
    assert.deepEqual([r.engineBuffers, r.engineBytes], [0, 0], `${what}: the engine allocated ${r.engineBuffers} buffers (${r.engineBytes} bytes)`);
    assert.ok(r.written <= MAX_WRITTEN, `${what}: wrote ${r.written} bytes`);
    assert.ok(r.peakGrowth <= MAX_PEAK_GROWTH, `${what}: peak memory grew by ${(r.peakGrowth / 2 ** 20).toFixed(1)} MiB`);
  });
}

const PROC = "lies on /proc, a kernel pseudo filesystem that holds no files";
const SYS = "lies on /sys, a kernel pseudo filesystem that holds no files";

test('every command refuses outputs under /proc and /sys at once, before loading anything (no hang in mkdir)', () => {
  const procOut = '/proc/fcn-no-such/out';
  const cases: [string[], string][] = [
    [['init', '--model', 'fcn8', '--out', '/proc/fcn-no-such/w.safetensors'], `fcn init: --out '/proc/fcn-no-such/w.safetensors': '/proc' ${PROC}`],
    [['predict', '--weights', junkWeights, '--image', junkImage, '--labels', '/proc/a/b.png'], `fcn predict: --labels '/proc/a/b.png': '/proc' ${PROC}`],
    [['predict', '--weights', junkWeights, '--image', junkImage, '--labels', join(tmp.dir, 'l.png'), '--logits', '/sys/fcn-no-such/l.npy'], `fcn predict: --logits '/sys/fcn-no-such/l.npy': '/sys' ${SYS}`],
    [['segment', junkImage, '--weights', junkWeights, '--out', '/proc/self/fcn-segments'], `fcn segment: --out '/proc/self/fcn-segments': '/proc/self' ${PROC}`],
    [['train', '--data', emptyDir, '--model', 'fcn8', '--out', procOut], `fcn train: --out '${procOut}': '/proc' ${PROC}`],
    [['eval', '--weights', junkWeights, '--data', emptyDir, '--out', '/proc/x/metrics.json'], `fcn eval: --out '/proc/x/metrics.json': '/proc' ${PROC}`],
    [['demo', '--out', '/sys/fs/cgroup/fcn-demo'], `fcn demo: --out '/sys/fs/cgroup/fcn-demo': '/sys/fs/cgroup' ${SYS}`],
    [['data', 'synth', '--out', procOut], `fcn data synth: --out '${procOut}': '/proc' ${PROC}`],
    [['data', 'fetch', 'voc2012', '--dir', procOut], `fcn data fetch: --dir '${procOut}': '/proc' ${PROC}`],
    [['data', 'split', 'seed', '--voc', emptyDir, '--sbd', emptyDir, '--out', procOut], `fcn data split: --out '${procOut}': '/proc' ${PROC}`],
    [['weights', 'convert', junkWeights, '/proc/fcn-no-such/w.safetensors'], `fcn weights convert: /proc/fcn-no-such/w.safetensors: '/proc' ${PROC}`],
  ];
  assertFailsFast(runInChild(cases.map(([a]) => a)), cases.map(([, e]) => e));
  assert.ok(!existsSync('/sys/fs/cgroup/fcn-demo'), 'nothing made under /sys');
});

test('a symbolic link into /proc is seen through', () => {
  const link = join(tmp.dir, 'to-proc');
  symlinkSync('/proc/self', link);
  const [r] = runInChild([['segment', junkImage, '--weights', junkWeights, '--out', join(link, 'x')]]);
  assertFailsFast([r!], [new RegExp(`^fcn segment: --out '${escape(join(link, 'x'))}': '${escape(link)}' ${escape(PROC)}$`)]);
});

test('every command names a missing input, or a file in the way of an output, before loading anything', () => {
  const inWay = (flag: string, p: string) => `--${flag} '${p}': '${aFile}' is a file, not a folder`;
  const cases: [string[], string][] = [
    [['init', '--model', 'fcn8', '--out', join(aFile, 'w.safetensors')], `fcn init: ${inWay('out', join(aFile, 'w.safetensors'))}`],
    [['init', '--model', 'fcn8', '--out', emptyDir], `fcn init: --out '${emptyDir}': is a folder, not a file`],
    [['predict', '--weights', missing, '--image', junkImage], `fcn predict: --weights '${missing}': no such file`],
    [['predict', '--weights', junkWeights, '--image', missing], `fcn predict: --image '${missing}': no such file`],
    [['predict', '--weights', junkWeights, '--image', junkImage, '--labels', join(aFile, 'l.png')], `fcn predict: ${inWay('labels', join(aFile, 'l.png'))}`],
    [['predict', '--weights', junkWeights, '--image', junkImage, '--labels', junkImage], `fcn predict: --labels '${junkImage}': is the input image, which it would overwrite`],
    [['segment', junkImage, '--weights', missing], `fcn segment: --weights '${missing}': no such file`],
    [['segment', junkImage, '--compare', `${junkWeights},${missing}`], `fcn segment: --compare '${missing}': no such file`],
    [['segment', junkImage, '--compare', junkWeights, '--labels', missing], `fcn segment: --labels '${missing}': no such folder`],
    [['segment', junkImage, '--weights', junkWeights, '--out', join(aFile, 'o')], `fcn segment: ${inWay('out', join(aFile, 'o'))}`],
    [['train', '--data', missing, '--model', 'fcn8'], `fcn train: --data '${missing}': no such folder`],
    [['train', '--data', aFile, '--model', 'fcn8'], `fcn train: --data '${aFile}': is a file, not a folder`],
    [['train', '--data', emptyDir, '--model', 'fcn8', '--init', missing], `fcn train: --init '${missing}': no such file`],
    [['train', '--data', emptyDir, '--model', 'fcn8', '--config', missing], `fcn train: --config '${missing}': no such file`],
    [['train', '--data', emptyDir, '--model', 'fcn8', '--out', join(aFile, 'run')], `fcn train: ${inWay('out', join(aFile, 'run'))}`],
    [['eval', '--weights', missing, '--data', emptyDir], `fcn eval: --weights '${missing}': no such file`],
    [['eval', '--predictions', aFile, '--data', emptyDir], `fcn eval: --predictions '${aFile}': is a file, not a folder`],
    [['eval', '--weights', junkWeights, '--data', missing], `fcn eval: --data '${missing}': no such folder`],
    [['eval', '--weights', junkWeights, '--data', emptyDir, '--out', join(aFile, 'm.json')], `fcn eval: ${inWay('out', join(aFile, 'm.json'))}`],
    [['demo', '--out', aFile], `fcn demo: --out '${aFile}': is a file, not a folder`],
    [['data', 'synth', '--out', join(aFile, 'd')], `fcn data synth: ${inWay('out', join(aFile, 'd'))}`],
    [['data', 'check', missing], `fcn data check: ${missing}: no such folder`],
    [['data', 'check', emptyDir, '--list', missing], `fcn data check: --list '${missing}': no such file`],
    [['data', 'split', 'paper', '--voc', emptyDir, '--sbd', emptyDir, '--seg11valid', missing, '--out', join(tmp.dir, 's')], `fcn data split: --seg11valid '${missing}': no such file`],
  ];
  assertFailsFast(runInChild(cases.map(([a]) => a)), cases.map(([, e]) => e));
  assert.ok(!existsSync(join(tmp.dir, 's')), 'no output folder made when an input is missing');
});

// Root writes anywhere regardless of permissions, so as root the commands run as user
// nobody to meet a folder they may not write in.
const asRoot = process.getuid?.() === 0;
const nobodyRuns = !asRoot || spawnSync(process.execPath, ['--import', 'tsx', '-e', '0'], { cwd: repoRoot, uid: 65534, gid: 65534, timeout: 30_000 }).status === 0;

test('an unwritable folder is reported as such (EACCES), before anything is loaded', { skip: requires(nobodyRuns, 'user nobody can run node on the repository (to meet EACCES as root)') }, () => {
  chmodSync(tmp.dir, 0o755);
  const locked = join(tmp.dir, 'locked');
  mkdirSync(locked, { mode: 0o555 });
  chmodSync(locked, 0o555);
  for (const f of [junkWeights, junkImage]) chmodSync(f, 0o644);
  chmodSync(emptyDir, 0o755);
  const denied = `cannot write in '${locked}' (permission denied, EACCES)`;
  const cases: [string[], string][] = [
    [['init', '--model', 'fcn8', '--out', join(locked, 'sub', 'w.safetensors')], `fcn init: --out '${join(locked, 'sub', 'w.safetensors')}': ${denied}`],
    [['predict', '--weights', junkWeights, '--image', junkImage, '--labels', join(locked, 'l.png')], `fcn predict: --labels '${join(locked, 'l.png')}': ${denied}`],
    [['segment', junkImage, '--weights', junkWeights, '--out', locked], `fcn segment: --out '${locked}': ${denied}`],
    [['train', '--data', emptyDir, '--model', 'fcn8', '--out', join(locked, 'run')], `fcn train: --out '${join(locked, 'run')}': ${denied}`],
    [['eval', '--weights', junkWeights, '--data', emptyDir, '--out', join(locked, 'm.json')], `fcn eval: --out '${join(locked, 'm.json')}': ${denied}`],
    [['demo', '--out', join(locked, 'demo')], `fcn demo: --out '${join(locked, 'demo')}': ${denied}`],
    [['data', 'synth', '--out', join(locked, 'd')], `fcn data synth: --out '${join(locked, 'd')}': ${denied}`],
  ];
  assertFailsFast(runInChild(cases.map(([a]) => a), asRoot ? { uid: 65534 } : {}), cases.map(([, e]) => e));
  assert.deepEqual(readdirSync(locked), []);
});
