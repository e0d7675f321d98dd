// One training step: forward, loss, backward, update.
import { native, type Tensor, type Precision } from '../engine/binding.js';
import { disposeAll } from '../engine/tape.js';
import type { FCN } from '../models/fcn.js';
import type { Optimizer } from './optim.js';

export interface StepOptions {
  precision?: Precision;
  /** 'mean' over labelled pixels (the seed) or 'sum' (Caffe). */
  reduction?: 'mean' | 'sum';
  /** Seeds this step's dropout masks. */
  seed?: number;
  /** Keep the logits (for metrics); the caller disposes them. */
  keepLogits?: boolean;
}

export interface StepResult {
  /** Cross-entropy over labelled pixels (without the regulariser). */
  loss: number;
  valid: number;
  logits: Tensor | null;
}

/** Computes gradients for a batch (images N×3×H×W float32, labels N×H×W uint8) without updating. */
export function computeGradients(model: FCN, images: Tensor, labels: Tensor, o: StepOptions = {}): StepResult {
  const { logits, tape } = model.forwardTrain(images, o.precision ?? 'float32', o.seed ?? 0);
  let grad: Tensor | null = null;
  try {
    const ce = native.softmaxCrossEntropy(logits, labels, { reduction: o.reduction ?? 'mean' });
    grad = ce.grad;
    model.backward(grad);
    return { loss: ce.loss, valid: ce.valid, logits: o.keepLogits ? logits : null };
  } finally {
    disposeAll(grad);
    tape.dispose();
    if (!o.keepLogits) logits.dispose();
  }
}

export function trainStep(model: FCN, optimizer: Optimizer, images: Tensor, labels: Tensor, o: StepOptions = {}): StepResult {
  const r = computeGradients(model, images, labels, o);
  optimizer.step(model.params());
  return r;
}
