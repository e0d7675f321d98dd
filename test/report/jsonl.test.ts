import { test } from 'node:test';
import assert from 'node:assert/strict';
import { appendFile, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openJsonl } from '../../src/report/jsonl.js';
import { readJsonl } from '../support/jsonl.js';

async function withDir(body: (dir: string) => Promise<void>): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'fcn-jsonl-'));
  try { await body(dir); } finally { await rm(dir, { recursive: true, force: true }); }
}

test('write appends whole lines that are on disk before close, and reopening appends', () => withDir(async (dir) => {
  const path = join(dir, 'log.jsonl');
  const log = openJsonl(path);
  log.write({ step: 1, loss: 0.5 });
  // Readable immediately: nothing is buffered in the process.
  assert.equal(await readFile(path, 'utf8'), '{"step":1,"loss":0.5}\n');
  log.write({ step: 2, loss: 0.25, note: 'line\nbreak' });
  log.close();
  log.close();
  assert.throws(() => log.write({}), /closed/);
  const again = openJsonl(path);
  again.write({ epoch: 1 });
  again.close();
  assert.deepEqual(await readJsonl(path), [{ step: 1, loss: 0.5 }, { step: 2, loss: 0.25, note: 'line\nbreak' }, { epoch: 1 }]);
}));

test('readJsonl skips a torn last line but rejects a broken line in the middle', () => withDir(async (dir) => {
  const path = join(dir, 'torn.jsonl');
  await writeFile(path, '{"step":1}\n{"step":2}\n{"step":3,"lo');
  assert.deepEqual(await readJsonl(path), [{ step: 1 }, { step: 2 }]);
  await writeFile(path, '{"step":1}\n{"step":2,"lo\n{"step":3}\n');
  await assert.rejects(readJsonl(path), /torn\.jsonl:2: not valid JSON/);
  // A last record that only lost its newline is still a record.
  await writeFile(path, '{"step":1}\n{"step":2}');
  assert.deepEqual(await readJsonl(path), [{ step: 1 }, { step: 2 }]);
}));

test('opening a log with a torn tail cuts it off, so the next record starts a clean line', () => withDir(async (dir) => {
  const path = join(dir, 'resume.jsonl');
  await writeFile(path, '{"step":1}\n{"step":2}\n{"step":3,"loss":0.1');
  const log = openJsonl(path);
  log.write({ step: 3, loss: 0.1 });
  log.close();
  assert.equal(await readFile(path, 'utf8'), '{"step":1}\n{"step":2}\n{"step":3,"loss":0.1}\n');

  await appendFile(path, '{"step":4}'); // complete, newline lost
  const log2 = openJsonl(path);
  log2.write({ step: 5 });
  log2.close();
  assert.deepEqual((await readJsonl<{ step: number }>(path)).map((r) => r.step), [1, 2, 3, 4, 5]);
}));

test('a torn tail longer than the scan chunk is found and cut', () => withDir(async (dir) => {
  const path = join(dir, 'long.jsonl');
  await writeFile(path, '{"a":1}\n{"blob":"' + 'x'.repeat(200_000));
  const log = openJsonl(path);
  log.write({ b: 2 });
  log.close();
  assert.deepEqual(await readJsonl(path), [{ a: 1 }, { b: 2 }]);
}));

test('opening a log in a missing directory fails with the path', () => {
  assert.throws(() => openJsonl('/nonexistent-dir-fcn/x.jsonl'), /nonexistent-dir-fcn\/x\.jsonl: cannot open log \(ENOENT\)/);
});
