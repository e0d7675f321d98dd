// What the inference worker answers, as plain functions of a model and a decoded picture:
// label maps (through segment(), so they are exactly `fcn predict`'s), as PNGs in the model's
// class colours, with class shares, the three most probable classes of every pixel, and the
// score maps of each stage for the "How it works" page.
import { encode as encodePng } from 'fast-png';
import type { InferencePrecision } from '../engine/config.js';
import type { RgbImage } from '../io/image.js';
import { classShares } from '../report/viz.js';
import { modelClassColors, segment, segmentImage, type StageMap } from '../infer/inference.js';
import type { FCN } from '../models/fcn.js';
import type { SegmentAnswer, StagesAnswer, StageView } from './protocol.js';

/** A label map as an indexed PNG: pixel value = class index, in the model's class colours. */
function labelPng(labels: Uint8Array, width: number, height: number, model: FCN): Uint8Array {
  return encodePng({ width, height, data: labels, depth: 8, channels: 1, palette: [...modelClassColors(model)] });
}

/** Bytes per pixel of a top-3 table: three class indices, then their probabilities × 255. */
export const TOP3_BYTES = 6;

/**
 * The three most probable classes of each pixel and their probabilities, from the softmax
 * that inference computes (classes × plane): per pixel [c1, c2, c3, round(255·p1),
 * round(255·p2), round(255·p3)].
 */
export function top3Table(probabilities: Float32Array, classes: number, plane: number): Uint8Array {
  const out = new Uint8Array(plane * TOP3_BYTES);
  const k = Math.min(3, classes);
  const idx = [0, 0, 0], val = [0, 0, 0];
  for (let p = 0; p < plane; p++) {
    val.fill(-Infinity);
    for (let c = 0; c < classes; c++) {
      const v = probabilities[c * plane + p];
      // Insertion into the three best; ties keep the lower class index first, as argmax does.
      if (v > val[2]) {
        let j = 2;
        while (j > 0 && v > val[j - 1]) {
          val[j] = val[j - 1];
          idx[j] = idx[j - 1];
          j--;
        }
        val[j] = v;
        idx[j] = c;
      }
    }
    const o = p * TOP3_BYTES;
    for (let j = 0; j < 3; j++) {
      out[o + j] = j < k ? idx[j] : 0;
      out[o + 3 + j] = j < k ? Math.round(255 * val[j]) : 0;
    }
  }
  return out;
}

/** Model `index` on one picture, through segment() as `fcn predict` does. */
export async function answerFor(model: FCN, index: number, rgb: RgbImage, options: { precision: InferencePrecision; top3: boolean }): Promise<SegmentAnswer> {
  const t0 = performance.now();
  const seg = await segment(model, rgb, { precision: options.precision, probabilities: options.top3 });
  const ms = performance.now() - t0;
  return {
    model: index,
    png: labelPng(seg.labels, seg.width, seg.height, model),
    shares: classShares(seg.labels, seg.classes),
    ms,
    ...(options.top3 ? { top3: top3Table(seg.probabilities!, model.numClasses, seg.width * seg.height) } : {}),
  };
}

/** Argmax over classes of a [1, C, h, w] map, for the top-left rows × cols cells. */
function argmaxMap(map: StageMap, rows: number, cols: number): Uint8Array {
  const [, classes, h, w] = map.dims;
  const out = new Uint8Array(rows * cols);
  for (let y = 0; y < rows; y++) {
    for (let x = 0; x < cols; x++) {
      let best = 0, bestV = -Infinity;
      for (let c = 0; c < classes; c++) {
        const v = map.data[(c * h + y) * w + x];
        if (v > bestV) { bestV = v; best = c; }
      }
      out[y * cols + x] = best;
    }
  }
  return out;
}

/**
 * Bilinear upsampling of the scores by the map's stride, as the network's frozen transposed
 * convolutions (kernel 2s, bilinear weights) do: output pixel y reads the map at
 * (y + ½)/s − ½, with zeros beyond the map's edge; then the argmax over classes.
 */
function upsampledArgmax(map: StageMap, width: number, height: number): Uint8Array {
  const [, classes, h, w] = map.dims;
  const s = map.stride;
  const out = new Uint8Array(width * height);
  const scores = new Float64Array(classes);
  const axis = (o: number, n: number) => {
    const u = (o + 0.5) / s - 0.5;
    const i0 = Math.floor(u), f = u - i0;
    return { i0, i1: i0 + 1, w0: i0 >= 0 && i0 < n ? 1 - f : 0, w1: i0 + 1 >= 0 && i0 + 1 < n ? f : 0 };
  };
  const cols = Array.from({ length: width }, (_, x) => axis(x, w));
  for (let y = 0; y < height; y++) {
    const r = axis(y, h);
    for (let x = 0; x < width; x++) {
      const c = cols[x];
      scores.fill(0);
      const add = (yy: number, xx: number, wt: number) => {
        if (wt === 0) return;
        for (let k = 0; k < classes; k++) scores[k] += wt * map.data[(k * h + yy) * w + xx];
      };
      add(r.i0, c.i0, r.w0 * c.w0);
      add(r.i0, c.i1, r.w0 * c.w1);
      add(r.i1, c.i0, r.w1 * c.w0);
      add(r.i1, c.i1, r.w1 * c.w1);
      let best = 0;
      for (let k = 1; k < classes; k++) if (scores[k] > scores[best]) best = k;
      out[y * width + x] = best;
    }
  }
  return out;
}

/**
 * The score maps of every stage of `model` on one picture, as label maps coarse and
 * upsampled, from the pass that gives segment()'s labels (tiled within the memory budget).
 */
export function stagesFor(model: FCN, rgb: RgbImage, precision: InferencePrecision): StagesAnswer {
  const { width, height } = rgb;
  const t0 = performance.now();
  const maps: StageMap[] = [];
  const seg = segmentImage(model, rgb, { precision, onStage: (m) => maps.push(m) });
  const views = maps.map((map): StageView => {
    // The picture covers the top-left ceil(h/s) × ceil(w/s) cells (the rest is padding).
    const rows = Math.min(map.dims[2], Math.ceil(height / map.stride)), cols = Math.min(map.dims[3], Math.ceil(width / map.stride));
    const coarse = argmaxMap(map, rows, cols);
    const upsampled = upsampledArgmax(map, width, height);
    return { name: map.name, stride: map.stride, coarse: { width: cols, height: rows, png: labelPng(coarse, cols, rows, model) }, upsampled: labelPng(upsampled, width, height, model), shares: classShares(upsampled, seg.classes) };
  });
  return { width, height, views, final: { png: labelPng(seg.labels, width, height, model), shares: classShares(seg.labels, seg.classes) }, ms: performance.now() - t0 };
}
