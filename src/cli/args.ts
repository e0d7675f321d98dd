// Command-line argument helpers: one error type, one message format ("fcn <cmd>: <problem>").
import { parseArgs, type ParseArgsConfig } from 'node:util';

export class UsageError extends Error {}

type Options = NonNullable<ParseArgsConfig['options']>;

export function parse<T extends Options>(command: string, argv: string[], options: T): { values: { [K in keyof T]?: T[K] extends { type: 'boolean' } ? boolean : string }; positionals: string[] } {
  try {
    return parseArgs({ args: argv, options, allowPositionals: true, strict: true }) as never;
  } catch (e) {
    // node:util's messages can run to several lines of hints: keep the first, one line in all.
    const first = (e as Error).message.split('\n')[0].replace(/\. To specify a positional.*$/s, '');
    const hint = /starting with a dash/.test((e as Error).message) ? ' (for a value starting with a dash, write --name=-value)' : '';
    throw new UsageError(`fcn ${command}: ${first}${hint}`);
  }
}

export function requireString(command: string, value: string | undefined, flag: string): string {
  if (value === undefined || value === '') throw new UsageError(`fcn ${command}: --${flag} is required`);
  return value;
}

export function parseNumber(command: string, value: string | undefined, flag: string, check: (n: number) => boolean = () => true, what = 'a number'): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (value.trim() === '' || !Number.isFinite(n) || !check(n)) throw new UsageError(`fcn ${command}: --${flag} must be ${what}, got '${value}'`);
  return n;
}
