// What a command is, as data (CommandSpec: its options, usage and examples), and the --help
// text written from it. `parse` (args.ts) reads a command line against the same spec, so the
// help cannot list an option the command does not take, or miss one it does.

/** What `--default` of an option shows for one the command cannot do without. */
export const REQUIRED = 'required';

/** One option as `parse` reads it and --help describes it. */
export interface OptionSpec {
  type: 'string' | 'boolean';
  short?: string;
  /** The value's placeholder in --help (FILE, N, DIR…); string options only. */
  value?: string;
  /** What the option does, one line. */
  help: string;
  /**
   * What happens without the option, as --help prints it after "default:" ("10", "off",
   * "all cores"), or REQUIRED. Mandatory so that no option's help can leave it out.
   */
  default: string;
}

export type OptionSpecs = Record<string, OptionSpec>;

/** A command or subcommand: what it parses, and everything its --help says. */
export interface CommandSpec<T extends OptionSpecs = OptionSpecs> {
  /** 'train', 'data fetch'. */
  name: string;
  /** One line: what the command does. */
  summary: string;
  /** Usage lines without the leading `fcn <name> `, e.g. '--data ROOT [options]'. */
  usage: string[];
  /** Optional paragraphs after the usage (what the command writes, how inputs are found…). */
  details?: string;
  /**
   * How positional arguments appear in --help (e.g. 'IMAGE|FOLDER...'); without it, any
   * positional argument is an error rather than being silently ignored.
   */
  positionals?: string;
  options: T;
  /** Full command lines, each runnable as shown. */
  examples: string[];
}

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


