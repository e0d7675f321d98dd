// One training step: forward, loss, backward, update. The same step runs in one process and
// on every MPI rank; a rank passes a GradientExchange, the hook through which its share of the
// batch becomes the whole batch's loss and gradients.
import { native, type Tensor, type Precision } from '../engine/binding.js';
import { disposeAll } from '../engine/tape.js';
import type { FCN } from '../models/fcn.js';
import type { Param } from '../nn/param.js';
import type { Optimizer } from './optim.js';

export interface StepOptions {
  precision?: Precision;
  /** 'mean' over labelled pixels (the seed) or 'sum' (Caffe). */
  reduction?: 'mean' | 'sum';
  /** Seeds this step's dropout masks. */
  seed?: number;
  /** The index of these images' first one in the whole batch (a rank's share): dropout draws per image. */
  firstImage?: number;
  /** Keep the logits (for metrics); the caller disposes them. */
  keepLogits?: boolean;
}

export interface StepResult {
  /** Cross-entropy over labelled pixels (without the regulariser), of the whole batch. */
  loss: number;
  valid: number;
  logits: Tensor | null;
}

/**
 * How a share of a batch becomes the whole batch (data-parallel training). The step computes
 * its share's *summed* loss, then `totals` says the batch's loss and labelled pixels; `ready`
 * hears of each parameter whose gradient the backward pass has finished; `finish` (also on a
 * share without images) leaves the whole batch's gradients, scaled for the loss reduction, in
 * every trainable parameter.
 */
export interface GradientExchange {
  totals(loss: number, valid: number): { loss: number; valid: number };
  ready(p: Param): void;
  finish(): void;
}

/**
 * Computes gradients for a batch (images N×3×H×W float32, labels N×H×W uint8) without
 * updating. With an exchange, images and labels may be null: a rank whose share is empty.
 */
export function computeGradients(model: FCN, images: Tensor | null, labels: Tensor | null, o: StepOptions & { exchange?: GradientExchange } = {}): StepResult {
  const reduction = o.reduction ?? 'mean', ex = o.exchange;
  if (!images && !ex) throw new Error('computeGradients: no images');
  let logits: Tensor | null = null, grad: Tensor | null = null;
  let tape: { dispose(): void } | null = null;
  try {
    let loss = 0, valid = 0;
    if (images) {
      const f = model.forwardTrain(images, o.precision ?? 'float32', o.seed ?? 0, o.firstImage ?? 0);
      logits = f.logits;
      tape = f.tape;
      // A share sums its loss: the exchange scales the summed gradients for the whole batch.
      const ce = native.softmaxCrossEntropy(logits, labels!, { reduction: ex ? 'sum' : reduction });
      grad = ce.grad;
      loss = ce.loss;
      valid = ce.valid;
    }
    if (!ex) {
      model.backward(grad!);
      return { loss, valid, logits: o.keepLogits ? logits : null };
    }
    const whole = ex.totals(loss, valid);
    try {
      if (grad) model.backward(grad, (p) => ex.ready(p));
      else for (const p of model.params()) if (p.trainable) p.setGrad(null);
    } finally {
      ex.finish();
    }
    const perPixel = reduction === 'mean' ? (whole.valid > 0 ? whole.loss / whole.valid : 0) : whole.loss;
    return { loss: perPixel, valid: whole.valid, logits: o.keepLogits ? logits : null };
  } finally {
    tape?.dispose();
    disposeAll(grad, o.keepLogits ? null : logits);
  }
}

export function trainStep(model: FCN, optimizer: Optimizer, images: Tensor, labels: Tensor, o: StepOptions = {}): StepResult {
  const r = computeGradients(model, images, labels, o);
  optimizer.step(model.params());
  return r;
}
