// Worker thread of the data loader: decodes and augments the pairs the main thread sends,
// and posts the samples back with their buffers transferred (no copy).
import { parentPort, workerData } from 'node:worker_threads';
import type { ClassSet } from './classes.js';
import type { SampleEntry } from './datasets.js';
import { loadSample } from './load-sample.js';
import type { PipelineSpec } from './transforms.js';

export interface WorkerInit {
  classes: ClassSet;
  pipeline: PipelineSpec;
}
export interface WorkerTask {
  taskId: number;
  entry: SampleEntry;
  seed: number;
}

const init = workerData as WorkerInit;
const port = parentPort;
if (!port) throw new Error('data/worker: must run as a worker thread');

/** A transferable copy: a view of part of a larger buffer is copied, a whole buffer is moved. */
function own<T extends Float32Array | Uint8Array>(a: T): T {
  return a.byteOffset === 0 && a.byteLength === a.buffer.byteLength ? a : (a.slice() as T);
}

port.on('message', (task: WorkerTask) => {
  void loadSample(task.entry, init.classes, init.pipeline, task.seed).then((r) => {
    if (!r.ok) {
      port.postMessage({ taskId: task.taskId, result: r });
      return;
    }
    const s = r.sample;
    const image = own(s.image), label = own(s.label);
    port.postMessage({ taskId: task.taskId, result: { ok: true, sample: { ...s, image, label } } }, [image.buffer as ArrayBuffer, label.buffer as ArrayBuffer]);
  });
});
