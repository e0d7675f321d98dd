// onnxruntime-node timed in a process of its own, for bench/peers.ts's ortForward:
//   node --import tsx bench/ort-forward.ts '{"onnxPath": …, "height": 512, "width": 512, "threads": 2}'
// prints one line of JSON, { ms, allMs }.
import { answerHelp } from './args.js';
import { ortForwardInProcess, type OrtForwardOptions } from './peers.js';

answerHelp(import.meta.url);
const options = JSON.parse(process.argv[2] ?? '{}') as OrtForwardOptions;
console.log(JSON.stringify(await ortForwardInProcess(options)));
