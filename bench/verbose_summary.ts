// Summarises an ONEDNN_VERBOSE=1 log: time per primitive kind, implementation and shape for
// the section after a marker line (bench/profile.ts prints `--- <name> last` before its
// last repetition), largest first.
//
//   ONEDNN_VERBOSE=1 node --import tsx bench/profile.ts --only train_bf16 2> log
//   node --import tsx bench/verbose_summary.ts log train_bf16 [top=25]
import { readFileSync } from 'node:fs';
import { answerHelp } from './args.js';

answerHelp(import.meta.url);
const [file, section, topRaw] = process.argv.slice(2);
if (!file || !section) {
  console.error('usage: verbose_summary.ts <log> <section> [top]');
  process.exit(2);
}
const lines = readFileSync(file, 'utf8').split('\n');
const start = lines.findIndex((l) => l.startsWith(`--- ${section} last`));
if (start < 0) throw new Error(`no '--- ${section} last' marker in ${file}`);
let end = lines.findIndex((l, i) => i > start && l.startsWith('--- '));
if (end < 0) end = lines.length;
const byKind = new Map<string, number>(), byOp = new Map<string, { ms: number; n: number }>();
let total = 0;
for (const l of lines.slice(start, end)) {
  if (!l.startsWith('onednn_verbose,exec,')) continue;
  const f = l.split(',');
  const ms = Number(f[f.length - 1]);
  const kind = `${f[3]} ${f[5]}`;
  const impl = f[4];
  const shape = f[f.length - 2];
  const types = (f[6].match(/(src|wei|dst|diff_src|diff_dst|diff_wei)_(\w+?):/g) ?? []).map((s) => s.replace(/:$/, '')).join(' ');
  total += ms;
  byKind.set(kind, (byKind.get(kind) ?? 0) + ms);
  const key = `${kind} ${impl} ${shape} [${types}]`;
  const e = byOp.get(key) ?? { ms: 0, n: 0 };
  e.ms += ms;
  e.n++;
  byOp.set(key, e);
}
console.log(`${section}: ${total.toFixed(1)} ms inside oneDNN primitives`);
for (const [k, ms] of [...byKind].sort((a, b) => b[1] - a[1])) console.log(`  ${ms.toFixed(1).padStart(8)} ms  ${(100 * ms / total).toFixed(1).padStart(5)}%  ${k}`);
console.log('  top operations:');
for (const [k, e] of [...byOp].sort((a, b) => b[1].ms - a[1].ms).slice(0, Number(topRaw ?? 25)))
  console.log(`  ${e.ms.toFixed(1).padStart(8)} ms ×${e.n}  ${k}`);
