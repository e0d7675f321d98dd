// The engine flags every model-running command accepts (--threads, --precision), parsed the
// same way as the other commands do, so that a bad value fails in one line before any model is
// loaded. (Paths given on the command line are checked by src/cli/paths.ts.)
import { configureEngine, type PrecisionChoice } from '../engine/config.js';
import { UsageError, parseNumber } from './args.js';
import { inferenceEngineOptionSpecs, type CommandSpec } from './help.js';

/** Applies --threads and --precision; `--precision int8` only for commands that run inference alone (their spec's precision option says so). */
export function applyEngineFlags(spec: CommandSpec, values: { threads?: string; precision?: string }): void {
  const command = spec.name;
  const threads = parseNumber(command, values.threads, 'threads', (n) => Number.isInteger(n) && n >= 1, 'a positive integer');
  const precision = values.precision;
  const allowed = spec.options.precision === inferenceEngineOptionSpecs.precision ? ['float32', 'bfloat16', 'int8', 'auto'] : ['float32', 'bfloat16', 'auto'];
  if (precision !== undefined && !allowed.includes(precision)) {
    const why = precision === 'int8' ? ' (int8 is for inference with a model made by `fcn quantize`)' : '';
    throw new UsageError(`fcn ${command}: --precision must be ${allowed.slice(0, -1).join(', ')} or ${allowed.at(-1)}, got '${precision}'${why}`);
  }
  configureEngine({ threads, precision: precision as PrecisionChoice | undefined });
}
