// Command-line argument helpers: one error type, one message format ("fcn <cmd>: <problem>"),
// and one parser that every command goes through, so that each answers --help from the same
// description it parses with, and each unknown option gets the nearest known one suggested.
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { formatHelp, type CommandSpec, type OptionSpecs } from './help.js';
import { FcnError, errorCode, type ErrorContext } from '../errors.js';

/** A command line the command cannot run: exit status 2, the message alone (no stack). */
export class UsageError extends FcnError {
  constructor(problem: string, context?: ErrorContext, options?: ErrorOptions) {
    super('USAGE', problem, context, options);
  }
}

/** Thrown by `parse` when --help or -h was given: the caller prints `text` and exits 0. */
export class HelpRequested extends FcnError {
  constructor(readonly text: string) {
    super('HELP_REQUESTED', 'help requested');
  }
}

export type ParsedValues<T> = { [K in keyof T]?: T[K] extends { type: 'boolean' } ? boolean : string };

/**
 * Parses `argv` against a command's spec. --help/-h wins over every other argument: it throws
 * HelpRequested with the command's help. Errors are UsageErrors in the common format, with
 * the nearest known option suggested for an unknown one.
 */
export function parse<T extends OptionSpecs>(spec: CommandSpec<T>, argv: string[]): { values: ParsedValues<T>; positionals: string[] } {
  const command = spec.name;
  // --help or -h anywhere before a `--` end-of-options marker.
  const end = argv.indexOf('--');
  if ((end < 0 ? argv : argv.slice(0, end)).some((a) => a === '--help' || a === '-h')) throw new HelpRequested(formatHelp(spec));
  const options: NonNullable<ParseArgsConfig['options']> = Object.fromEntries(Object.entries(spec.options).map(([name, o]) => [name, { type: o.type, ...(o.short ? { short: o.short } : {}) }]));
  let parsed: { values: ParsedValues<T>; positionals: string[] };
  try {
    parsed = parseArgs({ args: argv, options, allowPositionals: true, strict: true }) as never;
  } catch (e) {
    throw new UsageError(`fcn ${command}: ${describeParseError(command, e as NodeJS.ErrnoException, Object.keys(options))}`);
  }
  if (spec.positionals === undefined && parsed.positionals.length > 0) {
    throw new UsageError(`fcn ${command}: unexpected argument '${parsed.positionals[0]}' (fcn ${command} --help shows the usage)`);
  }
  return parsed;
}

/** node:util's parse errors in the common one-line format. */
function describeParseError(command: string, e: NodeJS.ErrnoException, known: string[]): string {
  const message = e.message;
  const unknown = /^Unknown option '([^']+)'/.exec(message);
  if (unknown) {
    const given = unknown[1]!;
    const near = given.startsWith('--') ? nearestOptions(given.slice(2), known) : [];
    const hint = near.length ? `did you mean ${near.map((n) => `--${n}`).join(' or ')}?` : `fcn ${command} --help lists the options`;
    return `unknown option '${given}' (${hint})`;
  }
  const missing = /^Option '(-\S+)(?:, (--\S+))? <value>' argument missing/.exec(message);
  if (missing) return `${missing[2] ?? missing[1]} needs a value`;
  const ambiguous = /^Option '(-[^\s',]+)(?:, (--[^\s',]+))?(?: <value>)?' argument is ambiguous/.exec(message);
  if (ambiguous) {
    const flag = ambiguous[2] ?? ambiguous[1]!;
    return `${flag} argument is ambiguous (for a value starting with a dash, write ${flag}=-VALUE)`;
  }
  const noValue = /^Option '(-\S+)(?:, (--\S+))?' does not take an argument/.exec(message);
  if (noValue) return `${noValue[2] ?? noValue[1]} takes no value`;
  // Anything else: node:util's first line, which names the option.
  return message.split('\n')[0]!;
}

/** Edit distance counting a swap of two neighbouring letters as one edit (optimal string alignment). */
export function editDistance(a: string, b: string): number {
  const d: number[][] = Array.from({ length: a.length + 1 }, (_, i) => Array.from({ length: b.length + 1 }, (_, j) => (i === 0 ? j : j === 0 ? i : 0)));
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      d[i]![j] = Math.min(d[i - 1]![j]! + 1, d[i]![j - 1]! + 1, d[i - 1]![j - 1]! + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) d[i]![j] = Math.min(d[i]![j]!, d[i - 2]![j - 2]! + 1);
    }
  }
  return d[a.length]![b.length]!;
}

/**
 * The known option names nearest to an unknown one: within a few edits (a third of the
 * longer name, at most 3: beyond that it is another word, not a typo), or else the known
 * names it abbreviates or extends ('--out' for '--output'). Ties are all returned.
 */
export function nearestOptions(given: string, known: readonly string[]): string[] {
  const names = known.filter((k) => k !== 'help');
  const close = names
    .map((name) => ({ name, d: editDistance(given, name) }))
    .filter(({ name, d }) => d <= Math.min(3, Math.max(1, Math.floor(Math.max(given.length, name.length) / 3))));
  if (close.length) {
    const best = Math.min(...close.map((c) => c.d));
    return close.filter((c) => c.d === best).map((c) => c.name);
  }
  if (given.length < 3) return [];
  return names.filter((name) => name.length >= 3 && (name.startsWith(given) || given.startsWith(name)));
}

/** The option that lifts a limit an error from below the command line ran into, by its code. */
const OPTION_HINTS: Record<string, string> = {
  IMAGE_TOO_LARGE: '--max-pixels raises it',
};

/**
 * A command's error as its exit status: --help's text printed (0); a usage error's message
 * (2); any other error's after `fcn <command>:`, with the option that lifts its limit (1).
 */
export function reportError(command: string, e: unknown): number {
  if (e instanceof HelpRequested) {
    process.stdout.write(e.text);
    return 0;
  }
  if (e instanceof UsageError) {
    console.error(e.message);
    return 2;
  }
  const hint = OPTION_HINTS[errorCode(e as Error) ?? ''];
  console.error(`fcn ${command}: ${(e as Error).message}${hint ? ` (${hint})` : ''}`);
  return 1;
}

/**
 * Runs a command group's subcommand (`fcn data check …`): the group's help without one (exit 2)
 * or for --help; errors as reportError says, naming the subcommand.
 */
export async function runSubcommand(group: string, argv: string[], help: string, subcommands: Record<string, (argv: string[]) => Promise<number> | number>): Promise<number> {
  const [sub, ...rest] = argv;
  if (!sub || sub === '--help' || sub === '-h' || sub === 'help') {
    process.stdout.write(help);
    return sub ? 0 : 2;
  }
  try {
    if (!Object.hasOwn(subcommands, sub)) throw new UsageError(`fcn ${group}: unknown subcommand '${sub}' (${Object.keys(subcommands).join(', ')})`);
    return await subcommands[sub]!(rest);
  } catch (e) {
    return reportError(`${group} ${sub}`, e);
  }
}

/** f()'s value; its error, a problem with the command line's input, as a UsageError worded by `message`. */
export function asUsageError<T>(f: () => T, message: (problem: string) => string = (m) => m): T {
  try {
    return f();
  } catch (e) {
    throw new UsageError(message((e as Error).message));
  }
}

/** `o` without its undefined entries: an option not given leaves the callee's default. */
export function definedOnly<T extends object>(o: T): { [K in keyof T]?: Exclude<T[K], undefined> } {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as never;
}

export function requireString(command: string, value: string | undefined, flag: string): string {
  if (value === undefined || value === '') throw new UsageError(`fcn ${command}: --${flag} is required`);
  return value;
}

/** `value` if it is one of `allowed` (undefined if not given); else a UsageError listing them. */
export function parseChoice<T extends string>(command: string, value: string | undefined, flag: string, allowed: readonly T[]): T | undefined {
  if (value === undefined || (allowed as readonly string[]).includes(value)) return value as T | undefined;
  throw new UsageError(`fcn ${command}: --${flag} must be ${allowed.slice(0, -1).join(', ')} or ${allowed.at(-1)}, got '${value}'`);
}

export function parseNumber(command: string, value: string | undefined, flag: string, check: (n: number) => boolean = () => true, what = 'a number'): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (value.trim() === '' || !Number.isFinite(n) || !check(n)) throw new UsageError(`fcn ${command}: --${flag} must be ${what}, got '${value}'`);
  return n;
}
