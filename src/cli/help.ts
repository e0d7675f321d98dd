// --help text of every command, written from the same spec the command parses its arguments
// with (src/cli/spec.ts `CommandSpec`), so the help cannot list an option the command does
// not take, or miss one it does.
import { REQUIRED, type CommandSpec, type OptionSpec } from './spec.js';

/** The engine options every model-running command takes. */
export const engineOptionSpecs = {
  threads: { type: 'string', value: 'N', help: 'engine threads', default: 'FCN_THREADS, else all cores' },
  precision: { type: 'string', value: 'P', help: 'float32, bfloat16 or auto (bf16 where this CPU runs it faster: see fcn info)', default: 'FCN_PRECISION, else auto' },
} as const satisfies Record<string, OptionSpec>;

/** The engine options of commands that only run inference: int8 too (a model made by `fcn quantize`). */
export const inferenceEngineOptionSpecs = {
  threads: engineOptionSpecs.threads,
  precision: { type: 'string', value: 'P', help: 'float32, bfloat16, int8 (a model made by fcn quantize) or auto (bf16 where this CPU runs it faster: see fcn info; never int8)', default: 'FCN_PRECISION, else auto' },
} as const satisfies Record<string, OptionSpec>;

const WIDTH = 100;

/** Words of `text` in lines of at most `width` characters (a longer word gets a line of its own). */
function wrap(text: string, width: number): string[] {
  const lines: string[] = [];
  let line = '';
  for (const word of text.split(/\s+/).filter(Boolean)) {
    if (line && line.length + 1 + word.length > width) {
      lines.push(line);
      line = word;
    } else {
      line = line ? `${line} ${word}` : word;
    }
  }
  if (line) lines.push(line);
  return lines;
}

/** The --help text of a command: summary, usage, details, every option with its default, examples. */
export function formatHelp(spec: CommandSpec): string {
  const out: string[] = [];
  out.push(spec.summary ? `fcn ${spec.name} — ${spec.summary}` : `fcn ${spec.name}`, '', 'Usage:');
  for (const u of spec.usage) out.push(`  fcn ${spec.name} ${u}`);
  if (spec.details) out.push('', ...spec.details.trim().split('\n').map((l) => (l ? `  ${l}` : '')));
  const rows: [string, string][] = Object.entries(spec.options).map(([name, o]) => {
    const label = `${o.short ? `-${o.short}, ` : ''}--${name}${o.type === 'string' && o.value ? ` ${o.value}` : ''}`;
    const when = o.default === '' ? '' : o.default.startsWith(REQUIRED) ? ` (${o.default})` : ` (default: ${o.default})`;
    return [label, `${o.help}${when}`.trim()];
  });
  rows.push(['-h, --help', 'show this help and exit']);
  const labelWidth = Math.min(26, Math.max(...rows.map(([l]) => l.length)));
  out.push('', 'Options:');
  for (const [label, text] of rows) {
    const lines = wrap(text, WIDTH - labelWidth - 4);
    // A label wider than the column gets its description on the next line.
    if (label.length > labelWidth) out.push(`  ${label}`, ...lines.map((l) => `  ${' '.repeat(labelWidth + 2)}${l}`));
    else lines.forEach((l, i) => out.push(`  ${(i === 0 ? label : '').padEnd(labelWidth + 2)}${l}`));
  }
  if (spec.examples.length) out.push('', spec.examples.length === 1 ? 'Example:' : 'Examples:', ...spec.examples.map((e) => `  ${e}`));
  return `${out.join('\n')}\n`;
}

/** The top-level help: every command with a one-line summary. */
export function formatTopHelp(commands: readonly { name: string; summary: string }[]): string {
  const width = Math.max(...commands.map((c) => c.name.length));
  return `fcn — Fully Convolutional Networks (FCN-32s/16s/8s on VGG16) for semantic segmentation

Usage: fcn <command> [options]

Commands:
${commands.map((c) => `  ${c.name.padEnd(width + 2)}${c.summary}`).join('\n')}

Every command answers --help (-h) with its usage, each option and its default, and an example.
Model-running commands take --threads N and --precision float32|bfloat16|auto.

  fcn --version, -v    print the version
  fcn --help, -h       show this help
`;
}


