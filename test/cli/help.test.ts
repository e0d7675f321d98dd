// Every command explains itself: --help and -h print its usage, every option it parses with
// its default, and an example, and exit 0. The options checked are the ones each command
// parses with (its CommandSpec), so this test cannot fall behind a new option. Unknown
// options suggest the nearest known one; --version prints package.json's version.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { nearestOptions } from '../../src/cli/args.js';
import type { CommandSpec } from '../../src/cli/help.js';
import { commandNames } from '../../src/cli/main.js';
import { trainSpec } from '../../src/cli/train.js';
import { dataCheckSpec, dataFetchSpec, dataSplitSpec, dataSynthSpec } from '../../src/cli/data.js';
import { repoRoot } from '../data/helpers.js';
import { runCli } from '../eval/fixtures.js';

const isSpec = (v: unknown): v is CommandSpec =>
  typeof v === 'object' && v !== null && typeof (v as CommandSpec).name === 'string' && Array.isArray((v as CommandSpec).usage) && typeof (v as CommandSpec).options === 'object' && Array.isArray((v as CommandSpec).examples);

/** Every command spec exported by a module of src/cli: a new command is checked without being listed here. */
const specs: CommandSpec[] = [];
for (const file of readdirSync(join(repoRoot, 'src', 'cli')).filter((f) => f.endsWith('.ts')).sort()) {
  const module = (await import(pathToFileURL(join(repoRoot, 'src', 'cli', file)).href)) as Record<string, unknown>;
  for (const value of Object.values(module)) if (isSpec(value) && !specs.includes(value)) specs.push(value);
}

test('the command specs are found: one for every command and data subcommand', () => {
  const names = specs.map((s) => s.name);
  for (const name of ['init', 'predict', 'info', 'demo', 'train', 'eval', 'segment', 'data fetch', 'data check', 'data synth', 'data split']) assert.ok(names.includes(name), `a spec for ${name}`);
});

/** Help text with its line wrapping undone, so a description can be found whole. */
const flat = (s: string) => s.replace(/\s+/g, ' ');

test('every command and subcommand answers --help and -h: usage, each option with its default, an example; exit 0', async () => {
  for (const spec of specs) {
    for (const flag of ['--help', '-h']) {
      const r = await runCli(...spec.name.split(' '), flag);
      const what = `fcn ${spec.name} ${flag}`;
      assert.equal(r.code, 0, `${what}: exit code (stderr: ${r.err})`);
      assert.equal(r.err, '', `${what}: nothing on stderr`);
      const text = flat(r.out);
      assert.ok(text.startsWith(`fcn ${spec.name} — ${flat(spec.summary)}`), `${what}: starts with the summary, got ${r.out.slice(0, 80)}`);
      for (const usage of spec.usage) assert.ok(text.includes(flat(`Usage: fcn ${spec.name} ${spec.usage[0]}`)) && text.includes(flat(`fcn ${spec.name} ${usage}`)), `${what}: usage line ${usage}`);
      assert.ok(Object.keys(spec.options).length > 0 || spec.name === 'info' || spec.name === 'weights convert');
      for (const [name, o] of Object.entries(spec.options)) {
        assert.ok(o.default.length > 0, `${spec.name} --${name}: the spec states a default`);
        const shown = o.default.startsWith('required') ? `(${o.default})` : `(default: ${o.default})`;
        assert.ok(text.includes(flat(`--${name}${o.type === 'string' && o.value ? ` ${o.value}` : ''} ${o.help} ${shown}`)), `${what}: --${name} with its description and ${shown}`);
      }
      assert.ok(spec.examples.length > 0, `${spec.name}: has an example`);
      for (const example of spec.examples) {
        assert.ok(example.startsWith(`fcn ${spec.name.split(' ')[0]}`), `${spec.name}: the example is a full command line: ${example}`);
        assert.ok(text.includes(flat(example)), `${what}: shows the example ${example}`);
      }
    }
  }
});

test('--help wins over every other argument, even a wrong one', async () => {
  const r = await runCli('train', '--bogus', '--data', '/nowhere', 'stray', '--help');
  assert.equal(r.code, 0, r.err);
  assert.match(r.out, /^fcn train — /);
  // After `--`, it is an argument like any other.
  const after = await runCli('segment', '--weights', 'w.safetensors', '--', '--help');
  assert.notEqual(after.code, 0);
});

test('every registered command, including those described elsewhere, answers --help with exit 0', async () => {
  const names = commandNames();
  for (const name of ['init', 'predict', 'info', 'demo', 'train', 'data', 'eval', 'segment']) assert.ok(names.includes(name), `${name} is registered`);
  for (const name of names) {
    const r = await runCli(name, '--help');
    assert.equal(r.code, 0, `fcn ${name} --help: ${r.err}`);
    assert.equal(r.err, '', `fcn ${name} --help: nothing on stderr`);
    assert.match(r.out, new RegExp(`^fcn ${name}\\b`), `fcn ${name} --help names the command`);
    assert.match(r.out, /Usage/, `fcn ${name} --help shows the usage`);
  }
  // data's own help lists each subcommand, each of which has its own.
  const data = await runCli('data', '--help');
  for (const sub of [dataFetchSpec, dataCheckSpec, dataSynthSpec, dataSplitSpec]) assert.ok(data.out.includes(`${sub.name.slice(5)}  ${sub.summary}`), sub.name);
});

test('fcn --help lists every command with a summary; fcn alone is a usage error; fcn help X is fcn X --help', async () => {
  const top = await runCli('--help');
  assert.equal(top.code, 0);
  for (const name of commandNames()) assert.match(top.out, new RegExp(`^  ${name} +\\S`, 'm'), `fcn --help lists ${name}`);
  assert.deepEqual(await runCli('-h'), top);
  const bare = await runCli();
  assert.equal(bare.code, 2);
  assert.equal(bare.out, '');
  assert.equal(bare.err, top.out);
  assert.deepEqual(await runCli('help', 'train'), await runCli('train', '--help'));
  assert.deepEqual(await runCli('help', 'data'), await runCli('data', '--help'));
});

test('an unknown option suggests the nearest known one', async () => {
  const r = await runCli('train', '--data', '/nowhere', '--epoch', '3');
  assert.equal(r.code, 2);
  assert.equal(r.err, "fcn train: unknown option '--epoch' (did you mean --epochs?)\n");
  const output = await runCli('segment', 'x.jpg', '--output', 'o');
  assert.equal(output.err, "fcn segment: unknown option '--output' (did you mean --out?)\n");
  const far = await runCli('eval', '--zzzzzz');
  assert.equal(far.err, "fcn eval: unknown option '--zzzzzz' (fcn eval --help lists the options)\n");
  const data = await runCli('data', 'synth', '--count', '4', '--sizes', '64');
  assert.equal(data.err, "fcn data synth: unknown option '--sizes' (did you mean --size?)\n");
  // Every option of every command, with its last letter typed twice, is found again.
  for (const spec of specs) {
    for (const name of Object.keys(spec.options)) {
      const typo = `--${name}${name.at(-1)}`;
      const t = await runCli(...spec.name.split(' '), typo);
      assert.equal(t.code, 2, `fcn ${spec.name} ${typo}`);
      assert.match(t.err, new RegExp(`^fcn ${spec.name}: unknown option '${typo}' \\(did you mean (--[\\w-]+ or )*--${name}( or --[\\w-]+)*\\?\\)\\n$`), `fcn ${spec.name} ${typo}`);
    }
  }
});

test('nearestOptions: typos within a few edits, swapped letters, abbreviations; nothing for another word', () => {
  const train = Object.keys(trainSpec.options);
  assert.deepEqual(nearestOptions('epoch', train), ['epochs']);
  assert.deepEqual(nearestOptions('epcohs', train), ['epochs']);
  assert.deepEqual(nearestOptions('weightdecay', train), ['weight-decay']);
  assert.deepEqual(nearestOptions('limit', train), ['limit-train', 'limit-val']);
  assert.deepEqual(nearestOptions('output', ['out', 'split']), ['out']);
  assert.deepEqual(nearestOptions('bogus', train), []);
  assert.deepEqual(nearestOptions('help', ['help', 'hel']), ['hel'], '--help is never suggested: it is always known');
});

test('other argument errors, in the common format', async () => {
  const cases: [string[], string][] = [
    [['init', '--model', 'fcn8', '--out'], 'fcn init: --out needs a value'],
    [['eval', '--json=yes'], 'fcn eval: --json takes no value'],
    [['train', '--data', '/nowhere', 'stray'], "fcn train: unexpected argument 'stray' (fcn train --help shows the usage)"],
    [['info', 'now'], "fcn info: unexpected argument 'now' (fcn info --help shows the usage)"],
    [['train', '--lr', '-1'], 'fcn train: --lr argument is ambiguous (for a value starting with a dash, write --lr=-VALUE)'],
    [['trian'], "fcn: unknown command 'trian' (did you mean train? commands: " + commandNames().join(', ') + ')'],
  ];
  for (const [args, message] of cases) {
    const r = await runCli(...args);
    assert.equal(r.code, 2, args.join(' '));
    assert.equal(r.err, `${message}\n`, args.join(' '));
    assert.equal(r.out, '', args.join(' '));
  }
});

test('fcn --version and -v print the version in package.json', async () => {
  const { version } = JSON.parse(readFileSync(join(repoRoot, 'package.json'), 'utf8')) as { version: string };
  assert.match(version, /^\d+\.\d+\.\d+/);
  for (const flag of ['--version', '-v']) {
    const r = await runCli(flag);
    assert.equal(r.code, 0);
    assert.equal(r.out, `fcn ${version}\n`);
    assert.equal(r.err, '');
  }
});
