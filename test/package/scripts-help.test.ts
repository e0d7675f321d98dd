// The set-up and test scripts, and the MAT fixture writer, answer --help with their usage
// (exit 0) without doing their work, and refuse an argument they do not take (exit 2).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const scripts = join(import.meta.dirname, '..', '..', 'scripts');
const run = (cmd: string, args: string[], cwd?: string) => spawnSync(cmd, args, { encoding: 'utf8', timeout: 60_000, cwd });

test('scripts/setup.sh --help prints its usage; an unknown argument is refused in one line', () => {
  const help = run('bash', [join(scripts, 'setup.sh'), '--help']);
  assert.equal(help.status, 0, help.stderr);
  assert.match(help.stdout, /^Idempotent set-up/);
  assert.match(help.stdout, /scripts\/setup\.sh --test/);
  assert.doesNotMatch(help.stdout + help.stderr, /^setup: /m, 'no set-up step ran');
  const bad = run('bash', [join(scripts, 'setup.sh'), '--bogus']);
  assert.equal(bad.status, 2);
  assert.equal(bad.stdout, '');
  assert.equal(bad.stderr.trim(), "setup: unknown argument '--bogus' (scripts/setup.sh --help shows the usage)");
});

test('scripts/test.sh --help prints its usage and runs no test', () => {
  const r = run('bash', [join(scripts, 'test.sh'), '-h']);
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, /^Runs the whole test suite/);
  assert.doesNotMatch(r.stdout, /==== test run/);
});

test('scripts/make_mat_fixtures.py --help prints its usage and writes nothing', () => {
  const cwd = mkdtempSync(join(tmpdir(), 'fcn-mat-help-'));
  try {
    const help = run('python3', [join(scripts, 'make_mat_fixtures.py'), '--help'], cwd);
    assert.equal(help.status, 0, help.stderr);
    assert.match(help.stdout, /Usage: make_mat_fixtures\.py OUT_DIR/);
    assert.deepEqual(readdirSync(cwd), [], 'no directory named --help');
    const none = run('python3', [join(scripts, 'make_mat_fixtures.py')], cwd);
    assert.equal(none.status, 2);
    const flag = run('python3', [join(scripts, 'make_mat_fixtures.py'), '-x'], cwd);
    assert.equal(flag.status, 2);
    assert.deepEqual(readdirSync(cwd), []);
  } finally {
    rmSync(cwd, { recursive: true, force: true });
  }
});
