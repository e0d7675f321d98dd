// The addon's exports, the list binding.ts keeps of them, and the typed `Native` interface
// name the same functions: an export added, removed or renamed on one side only fails here.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import ts from 'typescript';
import { native, NATIVE_EXPORTS, DTYPES } from '../../src/engine/binding.js';

const bindingFile = new URL('../../src/engine/binding.ts', import.meta.url);

/** The member names of `interface Native` in binding.ts, read by the TypeScript parser. */
function nativeInterfaceMembers(): string[] {
  const source = ts.createSourceFile('binding.ts', readFileSync(bindingFile, 'utf8'), ts.ScriptTarget.Latest);
  const decl = source.statements.find((s): s is ts.InterfaceDeclaration => ts.isInterfaceDeclaration(s) && s.name.text === 'Native');
  assert.ok(decl, 'binding.ts declares interface Native');
  return decl.members.map((m) => {
    assert.ok(m.name && (ts.isIdentifier(m.name) || ts.isStringLiteral(m.name)), `a member of Native without a plain name: ${m.getText(source)}`);
    return m.name.text;
  });
}

const sorted = (names: readonly string[]) => [...names].sort();

test('the list in binding.ts has no duplicates', () => {
  assert.equal(new Set(NATIVE_EXPORTS).size, NATIVE_EXPORTS.length);
});

test('the addon exports exactly the listed names', () => {
  assert.deepEqual(sorted(Object.keys(native)), sorted(NATIVE_EXPORTS));
});

test('the Native interface types exactly the listed names', () => {
  assert.deepEqual(sorted(nativeInterfaceMembers()), sorted(NATIVE_EXPORTS));
});

test('every export is a function, Tensor a class', () => {
  for (const name of NATIVE_EXPORTS) assert.equal(typeof (native as unknown as Record<string, unknown>)[name], 'function', name);
  assert.ok(native.zeros([1]) instanceof native.Tensor);
});

test('the addon makes tensors of exactly the listed dtypes, each read back as its typed array', () => {
  const arrays = { float32: Float32Array, bfloat16: Uint16Array, uint8: Uint8Array, int8: Int8Array, int32: Int32Array };
  assert.deepEqual(sorted(Object.keys(arrays)), sorted(DTYPES));
  for (const dtype of DTYPES) {
    const t = native.zeros([2, 3], dtype);
    assert.equal(t.dtype, dtype);
    assert.ok(t.toArray() instanceof arrays[dtype], dtype);
    const back = native.fromArray([2, 3], t.toArray());
    assert.equal(back.dtype, dtype, `${dtype} travels in its typed array`);
    t.dispose();
    back.dispose();
  }
  assert.throws(() => native.zeros([1], 'float64' as never), new RegExp(`unknown dtype 'float64' \\(${DTYPES.join(', ')}\\)`));
});
