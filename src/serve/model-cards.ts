// What the Models panel says of each model: what it was trained on and how well it segments
// its validation images, from the training run its weights came out of (a run's checkpoints/
// folder) or from the known pretrained files' own description.
import { existsSync } from 'node:fs';
import path from 'node:path';
import { KNOWN_WEIGHTS, isKnownWeights } from '../io/weights-cache.js';
import { LogTail, summarizeRun } from './runs.js';
import { STAGE_FILE } from './demo-models.js';

export interface ModelCard {
  trainedOn: string;
  /** Mean IoU on the validation images, 0-1, when known. */
  valMeanIoU: number | null;
  /** Where valMeanIoU (or its absence) comes from. */
  iouSource: string;
}

/** The card of the model in `weights` (a file or a known name) whose classes are `classNames`. */
export function modelCard(weights: string, classNames: readonly string[]): ModelCard {
  if (isKnownWeights(weights)) return { trainedOn: KNOWN_WEIGHTS[weights].description, valMeanIoU: null, iouSource: 'not measured here' };
  const stage = STAGE_FILE.exec(path.basename(weights));
  const dir = path.dirname(path.dirname(path.resolve(weights)));
  if (!stage || path.basename(path.dirname(path.resolve(weights))) !== 'checkpoints' || !existsSync(path.join(dir, 'config.json'))) {
    return { trainedOn: `unknown (${classNames.length} classes: ${classNames.slice(0, 4).join(', ')}${classNames.length > 4 ? ', …' : ''})`, valMeanIoU: null, iouSource: 'no training run beside the file' };
  }
  const s = summarizeRun({ name: path.basename(dir), dir }, new LogTail(path.join(dir, 'log.jsonl')));
  const data = s.config.data === 'data' && classNames.includes('disc') ? "the demo's synthetic scenes of five shapes" : `the ${s.config.data ?? 'unnamed'} dataset`;
  const trainedOn = `${data}: ${s.images.train ?? '?'} training images at ${s.config.size ?? '?'} px`;
  const val = s.epochs.filter((e) => e.stage === Number(stage[1]) && e.val).at(-1);
  if (!val?.val) return { trainedOn, valMeanIoU: null, iouSource: 'its stage logged no validation' };
  return { trainedOn, valMeanIoU: val.val.meanIoU, iouSource: `validation after epoch ${val.epoch} (${s.images.val ?? '?'} images)` };
}
