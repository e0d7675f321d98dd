// onnxruntime-node timed in a process of its own, for bench/peers.ts's ortForward:
//   node --import tsx bench/ort-forward.ts '{"onnxPath": …, "height": 512, "width": 512, "threads": 2}'
// prints one line of JSON, { ms, allMs }.
import { usageOf, wantsHelp } from './args.js';
import { ortForwardInProcess, type OrtForwardOptions } from './peers.js';

if (wantsHelp()) {
  process.stdout.write(usageOf(import.meta.url));
  process.exit(0);
}
const options = JSON.parse(process.argv[2] ?? '{}') as OrtForwardOptions;
console.log(JSON.stringify(await ortForwardInProcess(options)));
