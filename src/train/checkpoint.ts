// Training checkpoints: one safetensors file holding the weights (Keras layout, so `fcn
// predict` reads it like any weights file), the optimiser's state under `optimizer.` and the
// training state as JSON metadata. One file, written atomically: a crash or Ctrl-C at any
// moment leaves either the previous checkpoint or the new one, never a mix. (The trainer
// also keeps the generation before as last.prev, for a `last` damaged after the fact.)
import { native, type Tensor } from '../engine/binding.js';
import { readSafetensors, writeSafetensors, type SafetensorsFile, type SafetensorsTensor } from '../io/safetensors.js';
import type { FCN } from '../models/fcn.js';
import { OPTIMIZER_PREFIX, modelFromFile } from '../models/weights.js';
import { weightsMetadata, weightsToKeras } from '../models/weights-layout.js';
import type { Optimizer } from './optim.js';

export interface EpochRecord {
  /** Epoch number over the whole run, from 1. */
  epoch: number;
  stage: number;
  model: string;
  lr: number;
  train: { loss: number; pixelAccuracy: number; meanIoU: number };
  val: { loss: number; pixelAccuracy: number; meanIoU: number; meanAccuracy: number; frequencyWeightedIoU: number } | null;
  imagesPerSecond: number;
  seconds: number;
  /** Data-parallel runs: the checksum of every weight, which every rank was found to hold. */
  weightsChecksum?: string;
}

export interface TrainState {
  /** Index of the stage in progress. */
  stage: number;
  /** Epochs of that stage completed. */
  epoch: number;
  /** Batches of the epoch in progress completed (0 at an epoch boundary). */
  batch: number;
  /** Optimiser steps over the whole run. */
  step: number;
  lr: number;
  optimizer: { kind: 'adam' | 'sgd'; scalars: Record<string, number> };
  best: { meanIoU: number; epoch: number; stage: number } | null;
  history: EpochRecord[];
}

export function saveCheckpoint(path: string, model: FCN, optimizer: Optimizer, state: TrainState): void {
  const tensors: Map<string, SafetensorsTensor> = weightsToKeras(model);
  for (const [name, t] of optimizer.stateArrays()) tensors.set(`${OPTIMIZER_PREFIX}${name}`, { dtype: 'F32', shape: t.dims, data: t.toArray() as Float32Array });
  writeSafetensors(path, tensors, { ...weightsMetadata(model), train_state: JSON.stringify(state) });
}

export function readCheckpoint(path: string): { file: SafetensorsFile; state: TrainState } {
  const file = readSafetensors(path);
  const raw = file.metadata.train_state;
  if (!raw) throw new Error(`${path}: not a training checkpoint (no train_state in its metadata)`);
  let state: TrainState;
  try {
    state = JSON.parse(raw) as TrainState;
  } catch (e) {
    throw new Error(`${path}: its train_state is not valid JSON (${(e as Error).message})`);
  }
  const bad = stateProblem(state);
  if (bad) throw new Error(`${path}: its train_state is damaged (${bad})`);
  return { file, state };
}

/** What is wrong with a parsed train_state, or null: a resume must not start from nonsense. */
function stateProblem(s: TrainState): string | null {
  if (s === null || typeof s !== 'object') return 'not an object';
  for (const k of ['stage', 'epoch', 'batch', 'step'] as const) if (!(Number.isInteger(s[k]) && s[k] >= 0)) return `${k} is ${JSON.stringify(s[k])}`;
  if (!(typeof s.lr === 'number' && s.lr > 0)) return `lr is ${JSON.stringify(s.lr)}`;
  if (!s.optimizer || !['adam', 'sgd'].includes(s.optimizer.kind) || typeof s.optimizer.scalars !== 'object') return 'no optimizer kind and scalars';
  if (!Array.isArray(s.history)) return 'no history';
  return null;
}

/** The model, the state, and the optimiser's state tensors (engine layout), which the caller disposes after loading. */
export function loadCheckpoint(path: string, dropout: number): { model: FCN; state: TrainState; optimizerArrays: Map<string, Tensor> } {
  const { file, state } = readCheckpoint(path);
  const model = modelFromFile(file, path, { dropout });
  const optimizerArrays = new Map<string, Tensor>();
  for (const [name, t] of file.tensors) {
    if (!name.startsWith(OPTIMIZER_PREFIX)) continue;
    optimizerArrays.set(name.slice(OPTIMIZER_PREFIX.length), native.fromArray(t.shape, t.data as Float32Array));
  }
  return { model, state, optimizerArrays };
}
