// How it works: the current picture's own score maps, stage by stage — the coarse 1/32 map,
// the 1/16 skip scores and their sum, then 1/8 — each as the winning class per cell and
// stretched to the picture's size.
import { PALETTE, el, postPicture, percent, labelsFromPng, loadImage } from './common.js';
import { current } from './segment.js';
import { drawingBlob } from './draw.js';

const $ = (id) => document.getElementById(id);

const TEXT = {
  score7: {
    title: '1/32 — the coarse scores (score7)',
    body: 'After five poolings each cell of this grid stands for a 32×32 block of the picture. The layers on top (conv6, conv7) look at a wide neighbourhood, and score7 gives every class a score in every cell. The colour is the class that scores highest. The cells are big: the network knows what is there, but only roughly where.',
    up: 'Stretched ×32 (bilinear): this is FCN-32s. The class borders are smooth blobs.',
  },
  score4: {
    title: '1/16 — the skip scores from block4_pool (score4)',
    body: 'FCN-16s also scores every class from an earlier layer, after four poolings: cells of 16×16 pixels. These features have seen less of the picture, so on their own they are unsure, but they are twice as sharp.',
    up: 'These scores alone, stretched ×16.',
  },
  fuse4: {
    title: '1/16 — the sum: coarse scores ×2 plus the skip',
    body: 'The coarse scores are upsampled ×2 and added to the 1/16 scores, cell by cell. The coarse map says what; the skip corrects where.',
    up: 'The sum stretched ×16: this is FCN-16s.',
  },
  score3: {
    title: '1/8 — the skip scores from block3_pool (score3)',
    body: 'FCN-8s goes one layer further back, after three poolings: cells of 8×8 pixels.',
    up: 'These scores alone, stretched ×8.',
  },
  fuse3: {
    title: '1/8 — the sum: the 1/16 sum ×2 plus the skip',
    body: 'Upsampled ×2 again and added to the 1/8 scores: the finest map the network makes.',
    up: 'The sum stretched ×8: this is FCN-8s.',
  },
};

export function setupHow(app) {
  const select = $('how-model');
  const deepest = [...app.models].reverse().find((m) => m.kind === 'fcn8') ?? [...app.models].reverse().find((m) => m.kind === 'fcn16') ?? app.models.at(-1);
  select.replaceChildren(...app.models.map((m) => el('option', { value: m.id, text: m.title })));
  select.value = String(deepest.id);
  $('how-run').addEventListener('click', run);
  app.pageHooks.how = () => {
    // Shown on arrival with whatever picture is current.
    if (!$('how-steps').dataset.ready) run();
  };
}

async function pictureBlob() {
  if ($('how-source').value === 'draw') return { blob: await drawingBlob(), name: 'the drawing' };
  if (current.blob) return { blob: current.blob, name: current.name };
  // Nothing segmented yet: the first example.
  const r = await fetch('/examples/scene-1.png');
  return { blob: await r.blob(), name: 'example scene-1.png' };
}

async function run() {
  const status = $('how-status');
  status.classList.remove('error');
  status.textContent = 'computing the score maps…';
  try {
    const { blob, name } = await pictureBlob();
    const answer = await postPicture(`/api/stages?model=${$('how-model').value}`, blob, 'picture.png');
    render(answer, URL.createObjectURL(blob), name);
    status.textContent = `${answer.model.title} on ${name} (${answer.width}×${answer.height}), ${answer.ms} ms`;
  } catch (e) {
    status.classList.add('error');
    status.textContent = e.message;
  }
}

const shares = (list) => list.slice(0, 4).map((s) => `${s.name} ${percent(s.share)}`).join(' · ');

/**
 * A coarse map laid over the picture: each cell of `stride` pixels in its class colour (the
 * background cells left clear) with the cell grid, so one sees which block of pixels each
 * score stands for.
 */
async function cellsOverPicture(picture, coarsePng, stride, width, height) {
  const { labels, width: cols, height: rows } = await labelsFromPng(coarsePng);
  const canvas = el('canvas');
  canvas.width = width;
  canvas.height = height;
  const ctx = canvas.getContext('2d');
  if (picture) ctx.drawImage(picture, 0, 0, width, height);
  ctx.globalAlpha = 0.6;
  for (let y = 0; y < rows; y++) {
    for (let x = 0; x < cols; x++) {
      const k = labels[y * cols + x];
      ctx.fillStyle = k === 0 ? 'rgba(0,0,0,0.5)' : `rgb(${PALETTE[k].join(',')})`;
      ctx.fillRect(x * stride, y * stride, stride, stride);
    }
  }
  ctx.globalAlpha = 1;
  ctx.strokeStyle = 'rgba(255,255,255,0.7)';
  ctx.lineWidth = Math.max(1, width / 256);
  ctx.beginPath();
  for (let x = stride; x < width; x += stride) { ctx.moveTo(x, 0); ctx.lineTo(x, height); }
  for (let y = stride; y < height; y += stride) { ctx.moveTo(0, y); ctx.lineTo(width, y); }
  ctx.stroke();
  canvas.dataset.cells = `${cols}x${rows}`;
  return canvas;
}

async function render(answer, pictureUrl, name) {
  const steps = $('how-steps');
  const picture = await loadImage(pictureUrl).catch(() => null);
  const figure = (content, caption, dataset = {}) => el('figure', { dataset }, content, el('figcaption', { text: caption }));
  const img = (src, alt) => el('img', { src, alt });
  const step = (key, title, body, maps, dataset = {}) =>
    el('div', { class: 'step', dataset: { step: key, ...dataset } }, el('div', { class: 'text' }, el('h4', { text: title }), ...body.map((t) => el('p', { text: t }))), el('div', { class: 'maps' }, maps));
  const blocks = [
    step('picture', 'The picture', [`${name}, ${answer.width}×${answer.height} pixels go in; one class for each pixel comes out.`], [figure(img(pictureUrl, 'input'), 'input')]),
  ];
  for (const s of answer.steps) {
    const t = TEXT[s.name];
    const cells = await cellsOverPicture(picture, s.coarse.png, s.stride, answer.width, answer.height);
    blocks.push(step(s.name, t.title, [t.body], [
      figure(cells, `the winning class of each of the ${s.coarse.width}×${s.coarse.height} cells (1/${s.stride})`, { kind: 'coarse', cells: `${s.coarse.width}x${s.coarse.height}` }),
      el('span', { class: 'arrow', text: '→' }),
      figure(img(s.upsampledPng, t.up), `${t.up} ${shares(s.shares)}`, { kind: 'upsampled' }),
    ], { stride: s.stride }));
  }
  if (answer.steps.length === 1) blocks.push(el('p', { class: 'muted', text: `${answer.model.title} has no skips: choose FCN-16s or FCN-8s to see what they add.` }));
  blocks.push(step('final', `The answer of ${answer.model.title}`, ["The model's own output, as on the Segment page. Its last upsampling is the same bilinear stretch, so it matches the last map above."],
    [figure(img(answer.final.png, 'the model\'s labels'), shares(answer.final.shares), { kind: 'final' })]));
  steps.replaceChildren(...blocks);
  steps.dataset.ready = 'true';
}
