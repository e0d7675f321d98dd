// One unit of loader work: decode a pair and run the pipeline on it. Shared by the worker
// threads and the in-process (workers: 0) path, so both give identical samples.
import type { ClassSet } from './classes.js';
import { errorFile, readSample, type BadSample, type SampleEntry } from './datasets.js';
import { Rng } from './prng.js';
import { applyPipeline, type PipelineSpec, type Sample } from './transforms.js';

export type LoadResult = { ok: true; sample: Sample } | { ok: false; bad: BadSample };

export async function loadSample(entry: SampleEntry, classes: ClassSet, pipeline: PipelineSpec, seed: number): Promise<LoadResult> {
  try {
    const raw = await readSample(entry, classes);
    return { ok: true, sample: applyPipeline(raw, pipeline, new Rng(seed)) };
  } catch (e) {
    return { ok: false, bad: errorFile(e, entry) };
  }
}
