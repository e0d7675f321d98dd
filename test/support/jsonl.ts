// Reading the JSONL logs the trainer writes (src/report/jsonl.ts writes them; the server follows
// them incrementally in src/serve/runs.ts), for the tests that check what a run logged.
import { readFile } from 'node:fs/promises';

/** Reads every record of a JSONL file. An unparsable last line without its newline is a
 * write torn by a crash and is skipped; an unparsable line anywhere else is corruption and
 * throws with its line number. */
export async function readJsonl<T = unknown>(path: string): Promise<T[]> {
  const text = await readFile(path, 'utf8');
  const lines = text.split('\n');
  const terminated = lines[lines.length - 1] === '';
  if (terminated) lines.pop();
  const records: T[] = [];
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i];
    if (line.trim() === '') continue;
    try {
      records.push(JSON.parse(line) as T);
    } catch (e) {
      if (i === lines.length - 1 && !terminated) break;
      throw new Error(`${path}:${i + 1}: not valid JSON (${(e as Error).message})`);
    }
  }
  return records;
}
