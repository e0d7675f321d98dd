// A training run's folder written by hand, as `fcn train` writes it (config.json, log.jsonl),
// for the Training view: three stages, the last two one epoch each (narrow stage bands), and
// a first epoch whose loss is far above the rest (as a fresh network's is).
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';

const STAGES = [{ model: 'fcn32', epochs: 4 }, { model: 'fcn16', epochs: 1 }, { model: 'fcn8', epochs: 1 }];
const BATCHES = 10;

/** A finished run (with its 'end' record) or one still running (halfway, no end). */
export function writeRun(dir: string, { status }: { status: 'completed' | 'running' }): void {
  mkdirSync(dir, { recursive: true });
  writeFileSync(path.join(dir, 'config.json'), JSON.stringify({ stages: STAGES.map((s) => ({ ...s, trainable: 'all' })), batchSize: 2, model: { width: 0.0625 } }));
  const records: object[] = [{ type: 'start', train: 2 * BATCHES, val: 4 }];
  const epochs = status === 'completed' ? 6 : 3;
  let step = 0, epoch = 0;
  for (const [i, s] of STAGES.entries()) {
    for (let e = 0; e < s.epochs && epoch < epochs; e++) {
      epoch++;
      for (let b = 1; b <= BATCHES; b++) {
        step++;
        records.push({ type: 'step', step, stage: i + 1, epoch, batch: b, loss: epoch === 1 ? 40 / b : 0.9 / epoch + 0.02 * (b % 3), imagesPerSecond: 5 });
      }
      const loss = epoch === 1 ? 12 : 0.8 / epoch;
      const iou = Math.min(0.9, 0.1 * epoch + 0.05 * i);
      records.push({ type: 'epoch', epoch, stage: i + 1, model: s.model, lr: 1e-3, imagesPerSecond: 5, seconds: 4,
        train: { loss, pixelAccuracy: 0.5 + iou / 2, meanIoU: iou },
        val: { loss: loss * 1.1, pixelAccuracy: 0.5 + iou / 2, meanIoU: iou * 0.9, meanAccuracy: iou, frequencyWeightedIoU: iou } });
    }
  }
  if (status === 'completed') records.push({ type: 'end', best: null });
  writeFileSync(path.join(dir, 'log.jsonl'), records.map((r) => JSON.stringify(r)).join('\n') + '\n');
}
