// What a command is, as data: its options, usage and examples. `parse` (args.ts) reads a
// command line against it and `formatHelp` (help.ts) writes its --help from it, so the two
// cannot disagree.

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
