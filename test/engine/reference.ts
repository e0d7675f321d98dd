// Naive float64 reference ops (N,C,H,W row-major), the independent side of the gradient
// checks: the engine's analytic gradients are compared with central differences of these.

export interface Arr {
  dims: number[];
  data: Float64Array;
}

export function arr(dims: number[], data?: ArrayLike<number>): Arr {
  const n = dims.reduce((a, b) => a * b, 1);
  return { dims, data: data ? Float64Array.from(data) : new Float64Array(n) };
}

/** Deterministic pseudo-random values in [-scale, scale). */
export function randomArr(dims: number[], seed: number, scale = 1): Arr {
  const a = arr(dims);
  let s = seed >>> 0 || 1;
  for (let i = 0; i < a.data.length; i++) {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    a.data[i] = ((s / 4294967296) * 2 - 1) * scale;
  }
  return a;
}

export interface ConvParams {
  stride: number;
  pad: number;
  relu?: boolean;
  transposed?: boolean;
}

/** Convolution (cross-correlation) or transposed convolution; weights O,I,KH,KW. */
export function conv(x: Arr, w: Arr, b: Arr | null, p: ConvParams): Arr {
  const [N, C, H, W] = x.dims;
  const [O, I, KH, KW] = w.dims;
  if (I !== C) throw new Error('channel mismatch');
  const s = p.stride, pad = p.pad;
  const OH = p.transposed ? (H - 1) * s - 2 * pad + KH : Math.floor((H + 2 * pad - KH) / s) + 1;
  const OW = p.transposed ? (W - 1) * s - 2 * pad + KW : Math.floor((W + 2 * pad - KW) / s) + 1;
  const y = arr([N, O, OH, OW]);
  const X = (n: number, c: number, i: number, j: number) => x.data[((n * C + c) * H + i) * W + j];
  const Wt = (o: number, c: number, i: number, j: number) => w.data[((o * I + c) * KH + i) * KW + j];
  for (let n = 0; n < N; n++)
    for (let o = 0; o < O; o++)
      for (let oi = 0; oi < OH; oi++)
        for (let oj = 0; oj < OW; oj++) {
          let acc = b ? b.data[o] : 0;
          for (let c = 0; c < C; c++)
            for (let ki = 0; ki < KH; ki++)
              for (let kj = 0; kj < KW; kj++) {
                if (p.transposed) {
                  // y[oi] gathers x[i] where oi = i·s − pad + ki.
                  const ti = oi + pad - ki, tj = oj + pad - kj;
                  if (ti % s || tj % s) continue;
                  const i = ti / s, j = tj / s;
                  if (i < 0 || j < 0 || i >= H || j >= W) continue;
                  acc += X(n, c, i, j) * Wt(o, c, ki, kj);
                } else {
                  const i = oi * s - pad + ki, j = oj * s - pad + kj;
                  if (i < 0 || j < 0 || i >= H || j >= W) continue;
                  acc += X(n, c, i, j) * Wt(o, c, ki, kj);
                }
              }
          y.data[((n * O + o) * OH + oi) * OW + oj] = p.relu ? Math.max(0, acc) : acc;
        }
  return y;
}

export function maxPool(x: Arr, k: number, ceil: boolean): Arr {
  const [N, C, H, W] = x.dims;
  const out = (L: number) => (ceil ? Math.ceil((L - k) / k) + 1 : Math.floor((L - k) / k) + 1);
  const OH = out(H), OW = out(W);
  const y = arr([N, C, OH, OW]);
  for (let p = 0; p < N * C; p++)
    for (let i = 0; i < OH; i++)
      for (let j = 0; j < OW; j++) {
        let m = -Infinity;
        for (let a = 0; a < k; a++)
          for (let b = 0; b < k; b++) {
            const ii = i * k + a, jj = j * k + b;
            if (ii < H && jj < W) m = Math.max(m, x.data[(p * H + ii) * W + jj]);
          }
        y.data[(p * OH + i) * OW + j] = m;
      }
  return y;
}

export function softmaxCrossEntropy(x: Arr, labels: Uint8Array, reduction: 'mean' | 'sum'): number {
  const [N, C, H, W] = x.dims;
  let total = 0, valid = 0;
  for (let n = 0; n < N; n++)
    for (let i = 0; i < H * W; i++) {
      const l = labels[n * H * W + i];
      if (l === 255) continue;
      valid++;
      let m = -Infinity;
      for (let c = 0; c < C; c++) m = Math.max(m, x.data[(n * C + c) * H * W + i]);
      let s = 0;
      for (let c = 0; c < C; c++) s += Math.exp(x.data[(n * C + c) * H * W + i] - m);
      total += Math.log(s) + m - x.data[(n * C + l) * H * W + i];
    }
  return reduction === 'mean' ? (valid ? total / valid : 0) : total;
}

export function cropPad(x: Arr, top: number, left: number, height: number, width: number): Arr {
  const [N, C, H, W] = x.dims;
  const y = arr([N, C, height, width]);
  for (let p = 0; p < N * C; p++)
    for (let i = 0; i < height; i++)
      for (let j = 0; j < width; j++) {
        const si = i + top, sj = j + left;
        if (si >= 0 && sj >= 0 && si < H && sj < W) y.data[(p * height + i) * width + j] = x.data[(p * H + si) * W + sj];
      }
  return y;
}

export const dot = (a: Arr, r: Arr) => a.data.reduce((s, v, i) => s + v * r.data[i], 0);

/** Central difference of f at every index in `at` (or all), perturbing a copy of `a`. */
export function numericGrad(f: (a: Arr) => number, a: Arr, at: number[], h = 1e-5): number[] {
  return at.map((i) => {
    const plus = arr(a.dims, a.data), minus = arr(a.dims, a.data);
    plus.data[i] += h;
    minus.data[i] -= h;
    return (f(plus) - f(minus)) / (2 * h);
  });
}

/** max |a − b| / max(max |b|, floor). */
export function relError(a: ArrayLike<number>, b: ArrayLike<number>, floor = 1e-6): number {
  let d = 0, m = floor;
  for (let i = 0; i < a.length; i++) {
    d = Math.max(d, Math.abs(a[i] - b[i]));
    m = Math.max(m, Math.abs(b[i]));
  }
  return d / m;
}
