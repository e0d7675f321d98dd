// The inference worker: a thread of its own that loads the native engine and the models, and
// runs one job at a time, so the server's event loop keeps answering (health, pages, events)
// while a forward pass runs.
import { parentPort, workerData } from 'node:worker_threads';
import { configureEngine } from '../engine/config.js';
import { loadModel } from '../models/weights.js';
import { modelClassColors, modelClassNames } from '../infer/inference.js';
import { rgbHex } from '../data/classes.js';
import type { FCN } from '../models/fcn.js';
import { answerFor, stagesFor } from './answers.js';
import type { Job, ModelInfo, WorkerInit, WorkerMessage } from './protocol.js';

const port = parentPort!;
const init = workerData as WorkerInit;
// Answers are copied, not transferred: a PNG or label array may be a view into a buffer
// that something else still uses, and the copies are small next to a forward pass.
const post = (m: WorkerMessage) => port.postMessage(m);

let models: FCN[] = [];

const infoOf = (m: FCN): ModelInfo => ({ kind: m.kind, style: m.style, width: m.width, numClasses: m.numClasses, classNames: [...modelClassNames(m)], classColors: modelClassColors(m).map(rgbHex) });

/** Loads weight files (all or none), checking that int8 serving gets int8 models. */
async function load(weights: string[]): Promise<FCN[]> {
  const loaded: FCN[] = [];
  try {
    for (const w of weights) {
      loaded.push(await loadModel(w));
      if (init.precision === 'int8' && !loaded.at(-1)!.quantized) throw new Error(`${w}: has no int8 weights, so it cannot be served with --precision int8 (make an int8 model with fcn quantize)`);
    }
  } catch (e) {
    for (const m of loaded) m.dispose();
    throw e;
  }
  return loaded;
}

async function start(): Promise<void> {
  try {
    configureEngine({ threads: init.threads, precision: init.precision });
    models = await load(init.weights);
  } catch (e) {
    post({ type: 'fatal', message: (e as Error).message });
    return;
  }
  post({ type: 'ready', models: models.map(infoOf) });
}

/** Tests only: blocks this thread, as a long native forward pass would, until a permit is given. */
function takePermit(gate: SharedArrayBuffer): void {
  const permits = new Int32Array(gate);
  for (;;) {
    const n = Atomics.load(permits, 0);
    if (n > 0 && Atomics.compareExchange(permits, 0, n, n - 1) === n) return;
    if (n === 0) Atomics.wait(permits, 0, 0);
  }
}

async function run(job: Job): Promise<void> {
  if (init.gate) takePermit(init.gate);
  if (job.type === 'load') {
    const added = await load(job.weights);
    models.push(...added);
    post({ type: 'loaded', id: job.id, models: added.map(infoOf) });
  } else if (job.type === 'segment') {
    const answers = [];
    for (const i of job.models) answers.push(await answerFor(models[i], i, job.rgb, { precision: init.precision, top3: job.top3 }));
    post({ type: 'segmented', id: job.id, answers });
  } else {
    const s = stagesFor(models[job.model], job.rgb, init.precision);
    post({ type: 'staged', id: job.id, ...s });
  }
}

// Jobs arrive one at a time (the server queues them), but a chain keeps them in order anyway.
let chain = start();
port.on('message', (job: Job) => {
  chain = chain.then(() => run(job)).catch((e: Error) => post({ type: 'failed', id: job.id, message: e.message }));
});
