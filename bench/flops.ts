// Useful floating-point operations of an FCN pass, for the benchmark's fractions of peak.
//
//   node --import tsx bench/flops.ts [--kind fcn8] [--style keras] [--width 1] [--size 512[x512]]
//
// prints the per-layer table BENCHMARKS.md shows ("How the FLOPs are counted").
//
// Counted (a multiply-add is 2 FLOPs; N is the batch, 1 here):
//   - a convolution: 2·O·I·KH·KW·OH·OW (every output pixel, the zero-padded border included:
//     that is what the kernel computes);
//   - a transposed convolution: 2·O·I·KH·KW·IH·IW (each input pixel scatters a KH×KW patch);
//   - training step = forward + input gradient (the same count as the forward for every layer
//     a gradient passes through: all but block1_conv1, whose input is the image) + weight
//     gradient (the same count as the forward for every trainable layer: all but the bilinear
//     upsamplers, which the seed freezes).
// Not counted: biases and their gradients, ReLU, pooling, dropout, the skip additions and
// crops, the loss and the optimiser (together well under 1% of the total), and the keras
// style's padding of the input to a multiple of 32 adds no layer of its own: its pixels are
// counted inside the convolutions that run over them.
//
// The geometry is the network's description (src/models/network.ts): every layer's channels,
// kernel, stride, padding, and the walk every pass takes over it gives the feature-map sizes.
import { pathToFileURL } from 'node:url';
import { benchArgs } from './args.js';
import type { FcnKind, FcnStyle } from '../src/models/fcn.js';
import { describeNetwork, walkNetwork, type Layer } from '../src/models/network.js';

export interface LayerFlops {
  name: string;
  transposed: boolean;
  inChannels: number;
  outChannels: number;
  kernel: number;
  stride: number;
  /** Input and output feature-map sizes [h, w]. */
  input: [number, number];
  output: [number, number];
  forward: number;
  /** Input gradient (0 for the first layer). */
  backwardData: number;
  /** Weight gradient (0 for frozen layers). */
  backwardWeights: number;
}

type Size = [number, number];

/** Output size of a convolution or transposed convolution (as native/conv.cc computes it). */
function convOut(l: Layer, [h, w]: Size): Size {
  const k = l.kernel, s = l.stride, p = l.padding;
  const one = (x: number) => (l.transposed ? (x - 1) * s - 2 * p + k : Math.floor((x + 2 * p - k) / s) + 1);
  return [one(h), one(w)];
}

/** Output size of a 2×2 stride-2 max pooling, floor or ceil (as native/pool.cc computes it). */
function poolOut(ceil: boolean, [h, w]: Size): Size {
  const one = (x: number) => {
    let o = ceil ? Math.floor((x - 2 + 1) / 2) + 1 : Math.floor((x - 2) / 2) + 1;
    if (ceil && (o - 1) * 2 >= x) o--;
    return o;
  };
  return [one(h), one(w)];
}

/** Every convolution of one pass of an h×w input, in the order the pass runs them, with its FLOPs. */
export function fcnLayerFlops(kind: FcnKind, style: FcnStyle, width: number, h: number, w: number): LayerFlops[] {
  const net = describeNetwork({ kind, style, width, numClasses: 21, skipScales: null });
  const out: LayerFlops[] = [];
  const conv = (l: Layer, input: Size): Size => {
    const output = convOut(l, input);
    const { inChannels: i, outChannels: o, kernel: k } = l;
    const forward = 2 * o * i * k * k * (l.transposed ? input[0] * input[1] : output[0] * output[1]);
    // No input gradient for the layer that reads the image; the upsamplers are frozen.
    out.push({ name: l.name, transposed: l.transposed, inChannels: i, outChannels: o, kernel: k, stride: l.stride, input, output, forward, backwardData: l.reads === null ? 0 : forward, backwardWeights: l.transposed ? 0 : forward });
    return output;
  };
  walkNetwork<Size>(net, [h, w], {
    // keras: the input padded at the bottom/right to a multiple of 32; caffe: as it is.
    pad: ([a, b], m) => [Math.ceil(a / m) * m, Math.ceil(b / m) * m],
    conv: (l, x) => conv(l, x),
    pool: (p, x) => poolOut(p.ceil, x),
    dropout: (_, x) => x,
    crop: (x, offset, like) => (offset === null ? x : like),
    add: (a) => a,
    free: () => {},
  });
  return out;
}

/** Useful FLOPs of one forward pass (or, with training, one training step) of an h×w image, batch 1. */
export function fcnFlops(kind: FcnKind, style: FcnStyle, width: number, h: number, w: number, options: { training?: boolean } = {}): number {
  let sum = 0;
  for (const l of fcnLayerFlops(kind, style, width, h, w)) sum += l.forward + (options.training ? l.backwardData + l.backwardWeights : 0);
  return sum;
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const { values } = benchArgs(import.meta.url, { options: { kind: { type: 'string' }, style: { type: 'string' }, width: { type: 'string' }, size: { type: 'string' } } });
  const [h, w = h] = (values.size ?? '512').split('x').map(Number) as [number, number?];
  const kind = (values.kind ?? 'fcn8') as FcnKind, style = (values.style ?? 'keras') as FcnStyle, width = Number(values.width ?? 1);
  const layers = fcnLayerFlops(kind, style, width, h, w!);
  const g = (x: number) => (x / 1e9).toFixed(3);
  console.log(`| layer | in → out channels | kernel | output | GFLOP forward | input grad | weight grad |`);
  console.log(`| --- | --- | ---: | ---: | ---: | ---: | ---: |`);
  for (const l of layers)
    console.log(`| ${l.name}${l.transposed ? ' (transposed, frozen)' : ''} | ${l.inChannels} → ${l.outChannels} | ${l.kernel}×${l.kernel}${l.stride > 1 ? ` stride ${l.stride}` : ''} | ${l.output[0]}×${l.output[1]} | ${g(l.forward)} | ${g(l.backwardData)} | ${g(l.backwardWeights)} |`);
  const fwd = fcnFlops(kind, style, width, h, w!), train = fcnFlops(kind, style, width, h, w!, { training: true });
  console.log(`\nforward ${g(fwd)} GFLOP, training step ${g(train)} GFLOP (${kind}, ${style}, width ${width}, ${h}×${w})`);
}
