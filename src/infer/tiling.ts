// Where the pixels of the network's maps come from, and how to cut a large image into
// windows whose stitched maps equal the whole image's.
//
// A map pixel i (at stride S) is computed from the input pixels [S·i + lo, S·i + hi] (its
// receptive field, "support"), plus zero padding where that range leaves the input. A window
// of the input, run through the same layers, reproduces every map pixel whose support lies
// inside the window — or reaches past it only where the window's edge is the image's own edge,
// so that the padding is the same as the whole image's. That needs the window to start on the
// map's pixel grid: a multiple of 32 for the pooled maps in both styles (the caffe style's
// conv1 padding of 100 shifts the whole image and a window alike, so it changes the supports,
// not the grid). Then window map pixel j is whole-image map pixel j + start/S, and the stitched
// map equals the whole image's up to float rounding (oneDNN may sum in another order for
// another shape). The geometry is the network's description (models/network.ts).
import type { Network } from '../models/network.js';

type Described = { readonly network: Network }; // a model, or anything carrying the description

/** Map pixel i reads the input coordinates [stride·i + lo, stride·i + hi]. */
export interface Support {
  stride: number;
  lo: number;
  hi: number;
}

const IDENTITY: Support = { stride: 1, lo: 0, hi: 0 };

/** The support after a convolution or pooling with kernel k, stride s and padding p. */
function throughWindow(m: Support, k: number, s: number, p: number): Support {
  // Output j reads input j·s − p … j·s − p + k − 1.
  return { stride: m.stride * s, lo: m.lo - m.stride * p, hi: m.hi + m.stride * (k - 1 - p) };
}

const throughConv = (m: Support, l: { kernel: number; stride: number; padding: number }): Support => throughWindow(m, l.kernel, l.stride, l.padding);

/**
 * The supports of the pools of blocks [from, to) (0-based) in the coordinates of block
 * `from`'s input: the image for 0, block3_pool's pixels for 3.
 */
export function poolSupports(model: Described, from = 0, to = model.network.blocks.length): Support[] {
  const pooled: Support[] = [];
  let m = IDENTITY;
  for (const block of model.network.blocks.slice(from, to)) {
    for (const conv of block.convs) m = throughConv(m, conv);
    m = throughWindow(m, block.pool.kernel, block.pool.kernel, 0);
    pooled.push(m);
  }
  return pooled;
}

/** score7 in block5_pool pixels: conv6 (7×7), conv7 and score7 (1×1). */
export function headSupport(model: Described): Support {
  return model.network.head.reduce(throughConv, IDENTITY);
}

/** The size of a map after a convolution or pooling along one axis. */
export function convOutputSize(n: number, k: number, s: number, p: number, ceil = false): number {
  const span = n + 2 * p - k;
  return (ceil ? Math.ceil(span / s) : Math.floor(span / s)) + 1;
}

/**
 * The sizes of the pools of blocks [from, to) along one axis of block `from`'s input of `n`
 * pixels (the keras style's padding to 32 is the caller's).
 */
export function poolSizes(model: Described, n: number, from = 0, to = model.network.blocks.length): number[] {
  const sizes: number[] = [];
  let size = n;
  for (const block of model.network.blocks.slice(from, to)) {
    for (const c of block.convs) size = convOutputSize(size, c.kernel, c.stride, c.padding);
    size = convOutputSize(size, block.pool.kernel, block.pool.kernel, 0, block.pool.ceil);
    sizes.push(size);
  }
  return sizes;
}

export interface AxisPlan {
  length: number;
  /** Each reads the input range [start, end); its results are kept for [keepStart, keepEnd) of the axis. */
  windows: { start: number; end: number; keepStart: number; keepEnd: number }[];
}

/**
 * Cuts [0, length) into windows of at most `tile` pixels, each starting at a multiple of
 * `align` (the last one may be shorter), whose kept ranges partition the axis and reach at
 * least `margin` pixels inside every window edge that is not an edge of the axis. The work is
 * the length plus two margins per cut, so the plan has the fewest windows that fit: the two
 * at the ends, which need a margin on one side only, keep more than the others.
 */
export function planAxis(length: number, tile: number, margin: number, align: number): AxisPlan {
  if (!(Number.isInteger(length) && length > 0)) throw new Error(`planAxis: length must be a positive integer, got ${length}`);
  if (length <= tile) return { length, windows: [{ start: 0, end: length, keepStart: 0, keepEnd: length }] };
  const down = (v: number) => Math.floor(v / align) * align;
  const up = (v: number) => Math.ceil(v / align) * align;
  const m = up(margin);
  // A window keeps at least `align` pixels; both its margins are rounded out to the grid.
  if (tile < 2 * m + align) throw new Error(`tiles of ${tile} pixels are too small for a margin of ${margin} on both sides (at least ${2 * m + align})`);
  const endKeep = tile - m, innerKeep = tile - 2 * m;
  for (let n = 2; n <= length; n++) {
    // Cut points in proportion to what each window can keep, on the grid.
    const weights = Array.from({ length: n }, (_, k) => (k === 0 || k === n - 1 ? endKeep : innerKeep));
    const total = weights.reduce((a, b) => a + b, 0);
    if (total < length) continue;
    let sum = 0;
    const bounds = [0];
    for (const [k, w] of weights.entries()) bounds.push(k === n - 1 ? length : Math.max(bounds[k]! + align, down(((sum += w) * length) / total)));
    if (bounds.some((b, k) => k > 0 && b <= bounds[k - 1]!)) continue;
    const windows = bounds.slice(0, n).map((keepStart, k) => {
      const keepEnd = bounds[k + 1]!;
      return { start: Math.max(0, keepStart - m), end: k === n - 1 ? length : Math.min(length, keepEnd + m), keepStart, keepEnd };
    });
    if (windows.every((w) => w.end - w.start <= tile)) return { length, windows };
  }
  throw new Error(`cannot cut ${length} pixels into windows of ${tile} with margins of ${margin} aligned to ${align}`);
}

/** The margin a support needs on each side of a kept range: its half width, rounded up, plus one. */
export function marginFor(...supports: Support[]): number {
  return Math.max(...supports.map((s) => Math.ceil((s.hi - s.lo) / 2) + 1));
}

/**
 * For each window, the range of map pixels it is kept for, in whole-map indices [from, to):
 * a pixel belongs to the window whose kept range holds the centre of its support (centred
 * before the axis: the first window; after it: the last), which must compute it as the whole
 * axis does (an error otherwise: a bug in the plan).
 */
export function mapRanges(plan: AxisPlan, s: Support, mapSize: number): { from: number; to: number }[] {
  const ranges = plan.windows.map(() => ({ from: Infinity, to: -Infinity }));
  for (let i = 0; i < mapSize; i++) {
    const lo = s.stride * i + s.lo, hi = s.stride * i + s.hi;
    const owner = plan.windows.findIndex((w) => (lo + hi) / 2 < w.keepEnd);
    const k = owner === -1 ? plan.windows.length - 1 : owner;
    const w = plan.windows[k]!;
    if (!((w.start === 0 || lo >= w.start) && (w.end === plan.length || hi < w.end))) throw new Error(`tile plan: map pixel ${i} (stride ${s.stride}) is not computed exactly by its window [${w.start}, ${w.end}) of ${plan.length}`);
    const r = ranges[k]!;
    r.from = Math.min(r.from, i);
    r.to = Math.max(r.to, i + 1);
  }
  // Pixels are assigned in increasing order of their centres, so each window's are contiguous.
  let next = 0;
  return ranges.map((r) => {
    if (r.from === Infinity) return { from: next, to: next };
    if (r.from !== next) throw new Error(`tile plan: map pixels ${next}…${r.from - 1} (stride ${s.stride}) belong to no window`);
    next = r.to;
    return r;
  });
}
