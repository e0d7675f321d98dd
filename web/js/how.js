// How it works: the current picture's own score maps, stage by stage — the coarse 1/32 map,
// the 1/16 skip scores and their sum, then 1/8 — each as the winning class per cell and
// stretched to the picture's size. Beside the chosen model's own maps, the answers of the
// coarser models themselves (FCN-32s, FCN-16s) where they are loaded: a skip model's coarse
// map is not what the coarser model gives, since each was trained with its own skips.
import { el, postPicture, percent, labelsFromPng, loadImage } from './common.js';
import { paletteOf, namesOf, compactLegend } from './legend.js';
import { current } from './segment.js';
import { drawingBlob } from './draw.js';

const $ = (id) => document.getElementById(id);

const TITLES = { fcn32: 'FCN-32s', fcn16: 'FCN-16s', fcn8: 'FCN-8s' };

/** What each step says, for a model titled `m` of kind `kind`. */
const TEXT = {
  score7: (m, kind) => ({
    title: '1/32: the coarse scores (score7)',
    body: 'After five poolings each cell of this grid stands for a 32×32 block of the picture. The layers on top (conv6, conv7) look at a wide neighbourhood, and score7 gives every class a score in every cell. The colour is the class that scores highest. The cells are big: the network knows what is there, but only roughly where.',
    coarse: `${m}'s own 1/32 score map (score7)`,
    up: kind === 'fcn32' ? 'Stretched ×32 (bilinear): this is FCN-32s\'s answer.' : `${m}'s coarse scores alone, stretched ×32. Not FCN-32s: ${m} learned them beside its skips.`,
  }),
  score4: (m) => ({
    title: '1/16: the skip scores from block4_pool (score4)',
    body: 'FCN-16s and FCN-8s also score every class from an earlier layer, after four poolings: cells of 16×16 pixels. These features have seen less of the picture, so on their own they are unsure, but they are twice as sharp.',
    coarse: `${m}'s 1/16 skip scores (score4)`,
    up: 'These scores alone, stretched ×16.',
  }),
  fuse4: (m, kind) => ({
    title: '1/16: coarse + skip = finer',
    body: 'The coarse scores are upsampled ×2 and added to the 1/16 skip scores, cell by cell. The coarse map says what; the skip corrects where. (Each map shows its winning class; the sum adds the scores behind them.)',
    parts: ['coarse 1/32 scores, ×2', 'skip 1/16 scores (score4)', 'the sum at 1/16'],
    up: kind === 'fcn16' ? 'The sum stretched ×16: this is FCN-16s\'s answer.' : `${m}'s 1/16 sum stretched ×16.`,
  }),
  score3: (m) => ({
    title: '1/8: the skip scores from block3_pool (score3)',
    body: 'FCN-8s goes one pooling further back, after three poolings: cells of 8×8 pixels.',
    coarse: `${m}'s 1/8 skip scores (score3)`,
    up: 'These scores alone, stretched ×8.',
  }),
  fuse3: (m, kind) => ({
    title: '1/8: the 1/16 sum + skip = finer',
    body: 'Upsampled ×2 again and added to the 1/8 skip scores: the finest map the network makes.',
    parts: ['the 1/16 sum, ×2', 'skip 1/8 scores (score3)', 'the sum at 1/8'],
    up: kind === 'fcn8' ? 'The sum stretched ×8: this is FCN-8s\'s answer.' : `${m}'s 1/8 sum stretched ×8.`,
  }),
};

let models = [];

export function setupHow(app) {
  models = app.models;
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

/** The coarser models' own answers on the picture (FCN-32s for an FCN-16s or 8s, FCN-16s for an 8s). */
async function coarserAnswers(chosen, blob) {
  const order = ['fcn32', 'fcn16', 'fcn8'];
  const out = {};
  for (const kind of order.slice(0, order.indexOf(chosen.kind))) {
    const m = models.find((x) => x.kind === kind);
    if (m) out[kind] = { model: m, answer: await postPicture(`/api/stages?model=${m.id}`, blob, 'picture.png') };
  }
  return out;
}

async function run() {
  const status = $('how-status');
  const steps = $('how-steps');
  status.classList.remove('error');
  status.textContent = 'computing the score maps…';
  steps.classList.add('busy');
  steps.setAttribute('aria-busy', 'true');
  try {
    const { blob, name } = await pictureBlob();
    const chosen = models.find((m) => String(m.id) === $('how-model').value) ?? models.at(-1);
    const answer = await postPicture(`/api/stages?model=${chosen.id}`, blob, 'picture.png');
    const others = await coarserAnswers(chosen, blob);
    await render(answer, others, URL.createObjectURL(blob), name);
    status.textContent = `${answer.model.title} on ${name} (${answer.width}×${answer.height}), ${answer.ms} ms`;
  } catch (e) {
    status.classList.add('error');
    status.textContent = e.message;
    steps.replaceChildren();
    delete steps.dataset.ready;
  } finally {
    steps.classList.remove('busy');
    steps.setAttribute('aria-busy', 'false');
  }
}

const shares = (list) => list.slice(0, 4).map((s) => `${s.name} ${percent(s.share)}`).join(' · ');

/**
 * A coarse map laid over the picture: each cell of `stride` pixels in its class colour (the
 * background cells darkened), so one sees which block of pixels each score stands for.
 * Grid lines come later (gridLines), once the map's size on screen is known.
 */
async function cellsOverPicture(picture, coarsePng, stride, width, height, palette) {
  const { labels, width: cols, height: rows } = await labelsFromPng(coarsePng);
  const canvas = el('canvas', { class: 'cells', role: 'img', 'aria-label': `${cols}×${rows} cells of ${stride}×${stride} pixels` });
  canvas.width = width;
  canvas.height = height;
  const ctx = canvas.getContext('2d');
  if (picture) ctx.drawImage(picture, 0, 0, width, height);
  ctx.globalAlpha = 0.6;
  for (let y = 0; y < rows; y++) {
    for (let x = 0; x < cols; x++) {
      const k = labels[y * cols + x];
      ctx.fillStyle = k === 0 ? 'rgba(0,0,0,0.5)' : `rgb(${palette[k].join(',')})`;
      ctx.fillRect(x * stride, y * stride, stride, stride);
    }
  }
  ctx.globalAlpha = 1;
  Object.assign(canvas.dataset, { cells: `${cols}x${rows}`, stride });
  return { canvas, labels };
}

/**
 * Cell borders where the cells are large enough on screen to be told apart (6 px or more);
 * on smaller cells lines would only grey the picture.
 */
const MIN_CELL_PX = 6;

function gridLines(canvas) {
  const stride = Number(canvas.dataset.stride);
  const scale = canvas.clientWidth / canvas.width;
  const cellPx = stride * scale;
  canvas.dataset.cellPx = cellPx.toFixed(1);
  canvas.dataset.grid = cellPx >= MIN_CELL_PX ? 'on' : 'off';
  if (cellPx < MIN_CELL_PX || !scale) return;
  const ctx = canvas.getContext('2d');
  // Fainter lines on smaller cells: they mark the cells without greying the picture.
  ctx.strokeStyle = `rgba(255,255,255,${Math.min(0.55, 0.05 * cellPx).toFixed(2)})`;
  ctx.lineWidth = 1 / scale;
  ctx.beginPath();
  for (let x = stride; x < canvas.width; x += stride) { ctx.moveTo(x, 0); ctx.lineTo(x, canvas.height); }
  for (let y = stride; y < canvas.height; y += stride) { ctx.moveTo(0, y); ctx.lineTo(canvas.width, y); }
  ctx.stroke();
}

const figure = (content, caption, dataset = {}) => el('figure', { dataset }, content, el('figcaption', { text: caption }));
const img = (src, alt) => el('img', { src, alt });
const sign = (text) => el('span', { class: 'arrow', 'aria-hidden': 'true', text });

function step(key, title, body, maps, legend, dataset = {}) {
  return el('div', { class: 'step', dataset: { step: key, ...dataset } },
    el('div', { class: 'text' }, el('h4', { text: title }), ...body.map((t) => el('p', { text: t }))),
    el('div', { class: 'maps' }, maps), legend);
}

/** A legend of the classes any of the step's maps shows (cell labels, and the shares of the stretched maps). */
function stepLegend(palette, names, labelLists, shareLists) {
  const present = new Set();
  for (const l of labelLists) for (const k of l) present.add(k);
  for (const list of shareLists) for (const s of list) present.add(s.index);
  return compactLegend(palette, names, [...present].sort((a, b) => a - b).map((index) => ({ index })), { label: 'Classes in these maps' });
}

async function render(answer, others, pictureUrl, name) {
  const steps = $('how-steps');
  const picture = await loadImage(pictureUrl).catch(() => null);
  const model = models.find((m) => m.id === answer.model.id);
  const palette = paletteOf(model), names = namesOf(model);
  const who = answer.model.title, kind = answer.model.kind;
  const blocks = [step('picture', 'The picture', [`${name}, ${answer.width}×${answer.height} pixels go in; one class for each pixel comes out.`], [figure(img(pictureUrl, 'the input picture'), 'input', { kind: 'input' })], null)];
  const coarseOf = {};
  for (const s of answer.steps) {
    const t = TEXT[s.name](who, kind);
    const cells = await cellsOverPicture(picture, s.coarse.png, s.stride, answer.width, answer.height, palette);
    coarseOf[s.name] = cells;
    const cellsText = `the winning class of each of the ${s.coarse.width}×${s.coarse.height} cells (1/${s.stride})`;
    const up = figure(img(s.upsampledPng, t.up), `${t.up} ${shares(s.shares)}`, { kind: 'upsampled' });
    let maps;
    const labelLists = [cells.labels];
    if (t.parts) {
      // The sum, drawn as one: the coarser map (×2) + the skip = the finer map.
      const [coarser, skip] = s.name === 'fuse4' ? ['score7', 'score4'] : ['fuse4', 'score3'];
      const a = await cellsOverPicture(picture, answer.steps.find((x) => x.name === coarser).coarse.png, s.stride * 2, answer.width, answer.height, palette);
      const b = await cellsOverPicture(picture, answer.steps.find((x) => x.name === skip).coarse.png, s.stride, answer.width, answer.height, palette);
      labelLists.push(a.labels, b.labels);
      maps = [el('div', { class: 'sum' },
        figure(a.canvas, t.parts[0], { kind: 'part' }), sign('+'), figure(b.canvas, t.parts[1], { kind: 'part' }), sign('='),
        figure(cells.canvas, `${t.parts[2]}: ${cellsText}`, { kind: 'coarse', cells: `${s.coarse.width}x${s.coarse.height}` })),
      el('div', { class: 'then' }, sign('→'), up)];
    } else {
      maps = [figure(cells.canvas, `${t.coarse}: ${cellsText}`, { kind: 'coarse', cells: `${s.coarse.width}x${s.coarse.height}` }), sign('→'), up];
    }
    const shareLists = [s.shares];
    // The coarser model's own answer, where it is loaded, beside the map it is confused with.
    const own = s.name === 'score7' ? others.fcn32 : s.name === 'fuse4' ? others.fcn16 : null;
    if (own) {
      const title = TITLES[own.model.kind];
      maps.push(figure(img(own.answer.final.png, `${title}'s answer`), `${title}'s own answer (its own weights, stretched ×${own.model.kind === 'fcn32' ? 32 : 16}): this is ${title}. ${shares(own.answer.final.shares)}`, { kind: 'other', modelKind: own.model.kind }));
      shareLists.push(own.answer.final.shares);
    }
    blocks.push(step(s.name, t.title, [t.body], maps, stepLegend(palette, names, labelLists, shareLists), { stride: s.stride }));
  }
  if (answer.steps.length === 1) blocks.push(el('p', { class: 'muted', text: `${who} has no skips: choose FCN-16s or FCN-8s to see what they add.` }));
  blocks.push(step('final', `The answer of ${who}`, ["The model's own output, as on the Segment page. Its last upsampling is the same bilinear stretch, so it matches the last map above."],
    [figure(img(answer.final.png, `${who}'s labels`), shares(answer.final.shares), { kind: 'final' })], stepLegend(palette, names, [], [answer.final.shares])));
  steps.replaceChildren(...blocks);
  for (const c of steps.querySelectorAll('canvas.cells')) gridLines(c);
  steps.dataset.ready = 'true';
}
