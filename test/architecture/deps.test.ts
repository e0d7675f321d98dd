// The import rules of src (.dependency-cruiser.cjs): src as it is breaks none of them, and a
// fixture that breaks each one is reported, rule by rule, so the check is known to be able to
// fail. Both run dependency-cruiser's own command line, as `npm run lint:deps` does.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { copyFileSync, mkdirSync, readdirSync, writeFileSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { after, describe, test } from 'node:test';
import { tempDir } from '../data/helpers.js';

const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const depcruise = join(root, 'node_modules', 'dependency-cruiser', 'bin', 'dependency-cruise.mjs');

interface Violation {
  rule: { name: string };
  from: string;
  to: string;
  cycle?: { name: string }[];
}

interface CruiseResult {
  modules: { source: string }[];
  summary: { violations: Violation[]; totalCruised: number };
}

/** Runs depcruise on `dir`/src with the repository's rule file copied there; its JSON result. */
async function cruise(dir: string): Promise<CruiseResult> {
  // Exit status 1 just means violations: the JSON says which.
  const run = await promisify(execFile)(process.execPath, [depcruise, 'src', '--config', '.dependency-cruiser.cjs', '--output-type', 'json'], { cwd: dir, maxBuffer: 64 << 20 })
    .catch((e: { stdout?: string; stderr?: string; code?: number }) => {
      if (e.code === 1 && e.stdout) return { stdout: e.stdout };
      throw new Error(`depcruise failed (status ${e.code}): ${e.stderr}`);
    });
  return JSON.parse(run.stdout) as CruiseResult;
}

/** One line per violation: the rule, and the import (or the cycle, or the lone module) that breaks it. */
function describeViolation(v: Violation): string {
  if (v.cycle?.length) return `${v.rule.name}: ${[v.from, ...v.cycle.map((c) => c.name)].join(' → ')}`;
  return `${v.rule.name}: ${v.from === v.to ? v.from : `${v.from} → ${v.to}`}`;
}

function sourceFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const path = join(dir, e.name);
    return e.isDirectory() ? sourceFiles(path) : /\.ts$/.test(e.name) && !/\.d\.ts$/.test(e.name) ? [path] : [];
  });
}

describe('import rules', () => {
  test('src breaks none: every import points down a floor (or sideways), none goes round in a circle', async () => {
    const result = await cruise(root);
    const violations = result.summary.violations.map(describeViolation);
    assert.deepEqual(violations, [], `${violations.length} violation(s) of .dependency-cruiser.cjs:\n${violations.join('\n')}`);
    // Every module of src was looked at (a rule file whose paths match nothing would pass too).
    const cruised = new Set(result.modules.map((m) => m.source));
    const missed = sourceFiles(join(root, 'src')).map((f) => relative(root, f)).filter((f) => !cruised.has(f));
    assert.deepEqual(missed, [], 'modules of src the check did not reach');
  });

  describe('a fixture that breaks each rule', () => {
    const tmp = tempDir('deps');
    after(() => tmp.cleanup());
    const files: Record<string, string> = {
      // The command line may import anything below it: none of these is a violation.
      'src/cli/main.ts': [
        "import { readWeights } from '../io/reader.js';",
        "import { layer } from '../nn/a.js';",
        "import { calibrate } from '../quant/calibrate.js';",
        "import { dataset } from '../data/dataset.js';",
        "import { extra } from '../extra/thing.js';",
        'export const run = () => [readWeights, layer, calibrate, dataset, extra];',
      ].join('\n'),
      'src/cli/usage.ts': "export const usage = 'fcn x --flag';",
      // io reaching up to cli.
      'src/io/reader.ts': "import { usage } from '../cli/usage.js';\nexport const readWeights = () => usage;",
      // Two modules of one floor importing each other.
      'src/nn/a.ts': "import { b } from './b.js';\nexport const layer = () => b;",
      'src/nn/b.ts': "import { layer } from './a.js';\nexport const b = () => layer;",
      // quant building on infer, its sibling on the same floor.
      'src/quant/calibrate.ts': "import { segment } from '../infer/segment.js';\nexport const calibrate = () => segment;",
      'src/infer/segment.ts': 'export const segment = 1;',
      // data reaching into the tests.
      'src/data/dataset.ts': "import { fixture } from '../../test/fixture.js';\nexport const dataset = fixture;",
      'test/fixture.ts': 'export const fixture = 1;',
      // A folder that is on no floor.
      'src/extra/thing.ts': "import { segment } from '../infer/segment.js';\nexport const extra = segment;",
      // A module that imports, and is imported by, nothing.
      'src/report/unused.ts': 'export const unused = 1;',
      // The package's entry, imported from inside.
      'src/index.ts': "export { run } from './cli/main.js';",
      'src/eval/score.ts': "import { run } from '../index.js';\nexport const score = run;\nexport { segment } from '../infer/segment.js';",
    };

    test('each rule reports the import that breaks it, and only those', async () => {
      for (const [file, text] of Object.entries(files)) {
        mkdirSync(dirname(join(tmp.dir, file)), { recursive: true });
        writeFileSync(join(tmp.dir, file), `${text}\n`);
      }
      for (const f of ['.dependency-cruiser.cjs', 'tsconfig.json', 'tsconfig.build.json']) copyFileSync(join(root, f), join(tmp.dir, f));
      const result = await cruise(tmp.dir);
      const found = result.summary.violations.map(describeViolation).sort();
      assert.deepEqual(found, [
        'floor-engine-io: src/io/reader.ts → src/cli/usage.ts',
        'in-a-floor: src/extra/thing.ts → src/infer/segment.ts',
        'no-circular: src/nn/a.ts → src/nn/b.ts → src/nn/a.ts',
        'no-import-of-index: src/eval/score.ts → src/index.ts',
        'no-orphans: src/report/unused.ts',
        'no-sibling-quant: src/quant/calibrate.ts → src/infer/segment.ts',
        'no-test-code-in-src: src/data/dataset.ts → test/fixture.ts',
      ]);
    });
  });
});
