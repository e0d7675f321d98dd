// The bench scripts' command lines: node:util's parseArgs (the scripts are developer tools, and
// their options are few; the CLI's richer parser in src/cli/args.ts speaks as `fcn <command>`).
// --help or -h prints the script's header comment, which is its usage, and exits 0; an unknown
// or malformed option is one line naming the script, exit status 2, not a stack trace.
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs, type ParseArgsConfig } from 'node:util';

/** The leading `//` comment block of a script, without the slashes. */
function usageOf(scriptUrl: string): string {
  const lines: string[] = [];
  for (const line of readFileSync(fileURLToPath(scriptUrl), 'utf8').split('\n')) {
    if (!line.startsWith('//')) break;
    lines.push(line.replace(/^\/\/ ?/, ''));
  }
  return lines.join('\n') + '\n';
}

/** Whether the command line asks for help (before any `--` end-of-options marker). */
function wantsHelp(args: readonly string[] = process.argv.slice(2)): boolean {
  const end = args.indexOf('--');
  return (end < 0 ? args : args.slice(0, end)).some((a) => a === '--help' || a === '-h');
}

/** When the command line asks for help: prints the script's usage and exits 0. */
export function answerHelp(scriptUrl: string, args?: readonly string[]): void {
  if (!wantsHelp(args)) return;
  process.stdout.write(usageOf(scriptUrl));
  process.exit(0);
}

/** parseArgs over process.argv for the script at `scriptUrl` (its import.meta.url), answering --help. */
export function benchArgs<T extends ParseArgsConfig>(scriptUrl: string, config: T): ReturnType<typeof parseArgs<T>> {
  const name = `bench/${path.basename(fileURLToPath(scriptUrl))}`;
  answerHelp(scriptUrl, config.args);
  try {
    return parseArgs(config);
  } catch (e) {
    console.error(`${name}: ${(e as Error).message} (${name} --help shows the usage)`);
    process.exit(2);
  }
}
