// The package's public surface is what the README documents, and nothing of the engine's
// internals: every name the README's API section uses is exported, the native addon and the
// training tape are not.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import * as api from '../../src/index.js';

const readme = readFileSync(new URL('../../README.md', import.meta.url), 'utf8');
const section = readme.slice(readme.indexOf('## API'), readme.indexOf('\n## ', readme.indexOf('## API') + 1));

test('every name the README imports from fcn is exported', () => {
  const imports = [...section.matchAll(/import \{([^}]+)\} from 'fcn'/g)].flatMap((m) => m[1]!.split(',').map((s) => s.trim()));
  assert.ok(imports.length >= 5, 'the README API section imports from fcn');
  for (const name of imports) assert.ok(name in api, `README imports ${name}, which index.ts does not export`);
});

test('every function the README names in backticks after the example is exported', () => {
  const named = [...section.matchAll(/`([A-Za-z]+)(?:\([^`]*\))?`/g)].map((m) => m[1]!).filter((n) => /^[a-zA-Z]+$/.test(n) && n !== 'fcn');
  const missing = named.filter((n) => /^[a-z][A-Za-z]+$|^[A-Z][a-z]+[A-Z]/.test(n) && !(n in api) && !['code', 'data', 'npm', 'pack', 'prepare', 'allowScripts'].includes(n));
  assert.deepEqual(missing, [], 'names in the README API section without an export');
  assert.ok('data' in api && typeof api.data === 'object', 'the data readers are exported as `data`');
});

test('the native engine and its test-only pieces stay internal', () => {
  for (const internal of ['native', 'Tape', 'disposeAll', 'trainStep', 'computeGradients', 'cpuFeatures']) {
    assert.ok(!(internal in api), `${internal} is exported`);
  }
  const values = Object.values(api).filter((v) => typeof v === 'object' && v !== null) as object[];
  assert.ok(!values.some((v) => 'convForward' in v), 'an exported object exposes a native op');
});
