// The inference worker: a thread of its own that loads the native engine and the models, and
// runs one job at a time, so the server's event loop keeps answering (health, pages, events)
// while a forward pass runs.
import { parentPort, workerData } from 'node:worker_threads';
import { configureEngine } from '../engine/config.js';
import { loadModel } from '../models/weights.js';
import { modelClassNames } from '../infer/inference.js';
import type { FCN } from '../models/fcn.js';
import { answerFor, stagesFor } from './work.js';
import type { Job, WorkerInit, WorkerMessage } from './protocol.js';

const port = parentPort!;
const init = workerData as WorkerInit;
// Answers are copied, not transferred: a PNG or label array may be a view into a buffer
// that something else still uses, and the copies are small next to a forward pass.
const post = (m: WorkerMessage) => port.postMessage(m);

let models: FCN[] = [];

async function start(): Promise<void> {
  try {
    configureEngine({ threads: init.threads, precision: init.precision });
    for (const w of init.weights) {
      models.push(await loadModel(w));
      if (init.precision === 'int8' && !models.at(-1)!.quantized) throw new Error(`${w}: has no int8 weights, so it cannot be served with --precision int8 (make an int8 model with fcn quantize)`);
    }
  } catch (e) {
    for (const m of models) m.dispose();
    models = [];
    post({ type: 'fatal', message: (e as Error).message });
    return;
  }
  post({
    type: 'ready',
    models: models.map((m) => ({ kind: m.kind, style: m.style, width: m.width, numClasses: m.numClasses, classNames: [...modelClassNames(m)] })),
  });
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
  const rgb = { data: job.rgb.data, width: job.rgb.width, height: job.rgb.height };
  if (job.type === 'segment') {
    const answers = [];
    for (const i of job.models) {
      const a = await answerFor(models[i], rgb, { precision: init.precision, top3: job.top3 });
      answers.push({ model: i, png: a.png, shares: a.shares, ms: a.ms, ...(a.top3 ? { top3: a.top3 } : {}) });
    }
    post({ type: 'segmented', id: job.id, answers });
  } else {
    const s = stagesFor(models[job.model], rgb, init.precision);
    post({ type: 'staged', id: job.id, ...s });
  }
}

// Jobs arrive one at a time (the server queues them), but a chain keeps them in order anyway.
let chain = start();
port.on('message', (job: Job) => {
  chain = chain.then(() => run(job)).catch((e: Error) => post({ type: 'failed', id: job.id, message: e.message }));
});
