// The engine flags every model-running command accepts (--threads, --precision), parsed the
// same way as the other commands do, so that a bad value fails in one line before any model is
// loaded. (Paths given on the command line are checked by src/io/paths.ts.)
import { configureEngine, type PrecisionChoice } from '../engine/config.js';
import { UsageError, parseNumber } from './args.js';

export const engineFlags = { threads: { type: 'string' }, precision: { type: 'string' } } as const;

export function applyEngineFlags(command: string, values: { threads?: string; precision?: string }): void {
  const threads = parseNumber(command, values.threads, 'threads', (n) => Number.isInteger(n) && n >= 1, 'a positive integer');
  const precision = values.precision;
  if (precision !== undefined && precision !== 'float32' && precision !== 'bfloat16' && precision !== 'auto') throw new UsageError(`fcn ${command}: --precision must be float32, bfloat16 or auto, got '${precision}'`);
  configureEngine({ threads, precision: precision as PrecisionChoice | undefined });
}
