// Every bench script answers --help with its usage (its header comment) and exit status 0, and
// reports an unknown option in one line naming the script, exit status 2, before any work.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

const bench = join(import.meta.dirname, '..', '..', 'bench');
// The scripts a user runs (the others are libraries the scripts import).
const scripts = readdirSync(bench).filter((f) => f.endsWith('.ts') && !f.startsWith('_') && readFileSync(join(bench, f), 'utf8').includes('benchArgs(import.meta.url'));
// Scripts that take positional arguments only, and answer --help through answerHelp.
const bareScripts = ['ort-forward.ts', 'verbose_summary.ts'];
const run = (script: string, ...args: string[]) => spawnSync(process.execPath, ['--import', 'tsx', join(bench, script), ...args], { encoding: 'utf8', timeout: 120_000 });

test('the scripts that parse options are found', () => {
  assert.ok(scripts.length >= 12, `found ${scripts.join(', ')}`);
  for (const s of ['run.ts', 'profile.ts', 'peak.ts', 'update-profile.ts']) assert.ok(scripts.includes(s), s);
});

for (const script of [...scripts, ...bareScripts]) {
  test(`bench/${script} --help prints its usage`, () => {
    const r = run(script, '--help');
    assert.equal(r.status, 0, r.stderr);
    const header = readFileSync(join(bench, script), 'utf8').split('\n')[0]!.replace(/^\/\/ ?/, '');
    assert.ok(header.length > 20);
    assert.ok(r.stdout.startsWith(header), r.stdout.slice(0, 200));
    assert.equal(r.stderr, '');
  });
}

for (const script of scripts) {
  test(`bench/${script} refuses an unknown option in one line`, () => {
    const r = run(script, '--no-such-option');
    assert.equal(r.status, 2, r.stdout + r.stderr);
    assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
    assert.match(r.stderr, new RegExp(`^bench/${script.replace('.', '\\.')}: Unknown option '--no-such-option'`));
  });
}
