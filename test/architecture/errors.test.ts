// One error base: every error class of src is an FcnError (a code, and the message form
// `<command or op>: <file or argument>: <problem>`), and io, below the command line, words
// its errors without naming commands or their options.
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, test } from 'node:test';
import ts from 'typescript';
import { FcnError, errorCode, formatError } from '../../src/errors.js';
import { HelpRequested, UsageError } from '../../src/cli/args.js';
import { HttpError } from '../../src/serve/errors.js';
import { DistributedError } from '../../src/train/distributed.js';
import { NonFiniteLossError, ResumeError } from '../../src/train/trainer.js';
import { parseMat } from '../../src/data/mat.js';
import { checkPixelLimit } from '../../src/io/image.js';

const src = join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'src');

function sourceFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const path = join(dir, e.name);
    return e.isDirectory() ? sourceFiles(path) : e.name.endsWith('.ts') ? [path] : [];
  });
}

/**
 * The text of every string literal and template piece in a TypeScript file (comments left
 * out); `open` marks a piece that a substitution follows (`--${flag}` is the piece '--').
 */
function stringsOf(file: string): { text: string; open: boolean }[] {
  const out: { text: string; open: boolean }[] = [];
  const visit = (node: ts.Node): void => {
    if (ts.isStringLiteral(node) || ts.isNoSubstitutionTemplateLiteral(node) || ts.isTemplateTail(node)) out.push({ text: node.text, open: false });
    if (ts.isTemplateHead(node) || ts.isTemplateMiddle(node)) out.push({ text: node.text, open: true });
    node.forEachChild(visit);
  };
  visit(ts.createSourceFile(file, readFileSync(file, 'utf8'), ts.ScriptTarget.ES2022, true));
  return out;
}

describe('one error base', () => {
  test('FcnError is the only class of src that extends Error itself', () => {
    const direct = sourceFiles(src).flatMap((f) => [...readFileSync(f, 'utf8').matchAll(/class (\w+) extends Error\b/g)].map((m) => `${relative(src, f)}: ${m[1]}`));
    assert.deepEqual(direct, ['errors.ts: FcnError']);
  });

  test('the message form: op, file or argument, problem, each left out when not given', () => {
    const e = new FcnError('EXAMPLE', 'must be a positive integer', { op: 'fcn train', subject: "--epochs '0'" });
    assert.equal(e.message, "fcn train: --epochs '0': must be a positive integer");
    assert.deepEqual([e.code, e.op, e.subject, e.problem], ['EXAMPLE', 'fcn train', "--epochs '0'", 'must be a positive integer']);
    assert.equal(formatError('not a PNG file', { subject: 'a.png' }), 'a.png: not a PNG file');
    assert.equal(formatError('the server is shutting down'), 'the server is shutting down');
    // As with Node's own errors the name stays Error: printed errors read as before.
    assert.equal(String(e), "Error: fcn train: --epochs '0': must be a positive integer");
  });

  test('every error class of src is an FcnError with its own code, and keeps its message', () => {
    const cases: [Error, string, string][] = [
      [new UsageError('fcn train: --data is required'), 'USAGE', 'fcn train: --data is required'],
      [new HelpRequested('fcn x --help text'), 'HELP_REQUESTED', 'help requested'],
      [new HttpError(503, 'the server is shutting down'), 'HTTP', 'the server is shutting down'],
      [new DistributedError('the batch (5) must divide evenly among 2 ranks'), 'DISTRIBUTED', 'the batch (5) must divide evenly among 2 ranks'],
      [new NonFiniteLossError('loss NaN: stopping'), 'NON_FINITE_LOSS', 'loss NaN: stopping'],
      [new ResumeError('cannot resume runs/a'), 'RESUME', 'cannot resume runs/a'],
    ];
    for (const [e, code, message] of cases) {
      assert.ok(e instanceof FcnError, `${e.constructor.name} is an FcnError`);
      assert.equal((e as FcnError).code, code, e.constructor.name);
      assert.equal(e.message, message, e.constructor.name);
    }
    assert.equal((cases[2]![0] as HttpError).statusCode, 503);
    // A parser's error names the file before the problem.
    assert.throws(() => parseMat(new Uint8Array(100), 'mem.mat'), (e: Error) => {
      assert.equal(errorCode(e), 'BAD_MAT_FILE');
      assert.equal((e as FcnError).subject, 'mem.mat');
      assert.match(e.message, /^mem\.mat: /);
      return true;
    });
  });

  test('errorCode finds an FcnError through the causes of the errors wrapping it', () => {
    const inner = new FcnError('IMAGE_TOO_LARGE', 'too large', { subject: 'a.png' });
    assert.equal(errorCode(new Error('segmenting failed', { cause: inner })), 'IMAGE_TOO_LARGE');
    assert.equal(errorCode(new Error('plain')), undefined);
    assert.equal(errorCode('not an error'), undefined);
  });
});

describe('io words its errors for any caller', () => {
  test('no string in src/io names an option (--flag) or an fcn command', () => {
    const io = join(src, 'io');
    // An option or a command line, or the start of one built from a variable (`--${flag}`, `fcn ${cmd}`).
    const cliText = /(^|[\s('`"])--[a-z]|\bfcn [a-z]/;
    const cliStart = /(^|[\s('`"])--$|\bfcn $/;
    const found = sourceFiles(io).flatMap((f) =>
      stringsOf(f).filter((s) => cliText.test(s.text) || (s.open && cliStart.test(s.text))).map((s) => `${relative(src, f)}: ${JSON.stringify(s.text)}`));
    assert.deepEqual(found, []);
  });

  test('an image over the pixel limit: a code the command line adds its option by, no option in the message', () => {
    assert.throws(() => checkPixelLimit('big.png', 4000, 3000, 1e6), (e: Error) => {
      assert.equal(errorCode(e), 'IMAGE_TOO_LARGE');
      assert.equal(e.message, 'big.png: the image is 4000×3000, 12 megapixels, over the limit of 1.0 megapixels for a decoded image');
      return true;
    });
  });

  test('the scanner the check above relies on does see strings and template pieces', () => {
    const file = join(src, 'io', 'image.ts');
    const strings = stringsOf(file);
    assert.ok(strings.some((s) => s.text === 'sharp' && !s.open), 'a quoted import');
    assert.ok(strings.some((s) => s.text.startsWith(': not a readable image (') && s.open), 'the middle piece of a template');
  });
});
