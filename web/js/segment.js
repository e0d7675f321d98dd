// The Segment page: a picture in (file, drop, paste, example), each model's label map out,
// an overlay with adjustable opacity, the classes' shares, and the top-3 classes under the pointer.
import { paletteOf, css, el, getJson, postPicture, loadImage, labelsFromPng, paintLabels, percent, downloadUrl, pixelAt, renderLegend } from './common.js';

const $ = (id) => document.getElementById(id);

/** The picture on show and the models' answers about it. */
export const current = { blob: null, name: '', img: null, rgba: null, width: 0, height: 0, answers: [] };

/** Class names of each model by class index, for naming the top-3 classes under the pointer. */
let classNames = [];
let limits = null;

export function setupSegment(app) {
  limits = app.limits;
  classNames = app.models.map((m) => new Map(m.classes.map((c) => [c.index, c.name])));
  const drop = $('dropzone');
  $('file-input').addEventListener('change', (e) => {
    const f = e.target.files?.[0];
    if (f) segmentPicture(f, f.name);
    e.target.value = '';
  });
  drop.addEventListener('keydown', (e) => {
    if (e.key === 'Enter' || e.key === ' ') {
      e.preventDefault();
      $('file-input').click();
    }
  });
  drop.addEventListener('dragover', (e) => { e.preventDefault(); drop.classList.add('over'); });
  drop.addEventListener('dragleave', () => drop.classList.remove('over'));
  drop.addEventListener('drop', (e) => {
    e.preventDefault();
    drop.classList.remove('over');
    const f = e.dataTransfer?.files?.[0];
    if (f) segmentPicture(f, f.name);
  });
  window.addEventListener('paste', (e) => {
    if ($('page-segment').hidden) return;
    const item = [...(e.clipboardData?.items ?? [])].find((i) => i.kind === 'file' && i.type.startsWith('image/'));
    if (item) segmentPicture(item.getAsFile(), 'pasted.png');
  });
  if (app.limits) {
    $('limits-line').textContent = `PNG, JPEG, WebP or GIF · up to ${(app.limits.maxUploadBytes / 2 ** 20).toFixed(0)} MB and ${(app.limits.maxPixels / 1e6).toFixed(1)} megapixels`;
  }
  getJson('/api/examples').then(({ examples }) => {
    $('examples').replaceChildren(...examples.map((x) => el('button', {
      type: 'button', title: x.name, dataset: { example: x.name },
      onclick: async () => segmentPicture(await (await fetch(x.url)).blob(), x.name),
    }, el('img', { src: x.url, alt: `example ${x.name}` }))));
  });
  $('opacity').addEventListener('input', () => {
    $('opacity-value').textContent = `${$('opacity').value}%`;
    drawOverlay();
  });
  $('overlay-model').addEventListener('change', drawOverlay);
  $('download-overlay').addEventListener('click', () => {
    const a = answerById(Number($('overlay-model').value));
    if (a) downloadUrl($('overlay-canvas').toDataURL('image/png'), `${stem(current.name)}_${a.kind}_overlay.png`);
  });
  const overlay = $('overlay-canvas');
  overlay.addEventListener('pointermove', (e) => hover(e, overlay));
  overlay.addEventListener('pointerleave', clearHover);
}

const stem = (name) => name.replace(/\.[^.]*$/, '') || 'picture';
const answerById = (id) => current.answers.find((a) => a.id === id);

function status(text, error = false) {
  const s = $('segment-status');
  s.textContent = text;
  s.classList.toggle('error', error);
}

let generation = 0;

/** Sends a picture to every model and shows the answers. */
export async function segmentPicture(blob, name) {
  const mine = ++generation;
  if (limits && blob.size > limits.maxUploadBytes) {
    status(`${name} is ${(blob.size / 2 ** 20).toFixed(1)} MB: the server takes up to ${(limits.maxUploadBytes / 2 ** 20).toFixed(1)} MB (fcn serve --max-upload-mb)`, true);
    return;
  }
  status(`segmenting ${name}…`);
  $('segment-results').dataset.ready = 'false';
  let answer;
  try {
    answer = await postPicture('/api/segment?top3=1', blob, name);
  } catch (e) {
    if (mine === generation) status(e.status === 503 ? `${e.message}` : `${name}: ${e.message}`, true);
    return;
  }
  if (mine !== generation) return;
  // The server decoded it (EXIF rotation included); show the same pixels.
  const img = await loadImage(URL.createObjectURL(blob)).catch(() => null);
  const answers = await Promise.all(answer.models.map(async (m) => ({ ...m, ...(await labelsFromPng(m.labelsPng)), top3: null })));
  if (mine !== generation) return;
  Object.assign(current, { blob, name, img, width: answer.width, height: answer.height, answers, rgba: img ? pixelsOf(img, answer.width, answer.height) : null });
  render(answer);
  status(`${name}: ${answer.width}×${answer.height} · ${answers.map((a) => `${a.title} ${a.ms.toFixed(0)} ms`).join(' · ')} · decoding ${answer.timings.decodeMs.toFixed(0)} ms`);
  // The top-3 tables arrive after the maps: hovering works at once with the labels alone.
  await Promise.all(answers.map(async (a) => {
    if (!a.top3Url) return;
    const r = await fetch(a.top3Url);
    if (r.ok && mine === generation) a.top3 = new Uint8Array(await r.arrayBuffer());
  }));
  if (mine === generation) $('segment-results').dataset.top3 = 'true';
}

function pixelsOf(img, width, height) {
  const c = document.createElement('canvas');
  c.width = width;
  c.height = height;
  const ctx = c.getContext('2d', { willReadFrequently: true });
  ctx.drawImage(img, 0, 0, width, height);
  return ctx.getImageData(0, 0, width, height);
}

function render(answer) {
  const panels = $('panels');
  panels.replaceChildren();
  const picture = el('canvas', { class: 'hoverable', dataset: { role: 'picture' } });
  picture.width = current.width;
  picture.height = current.height;
  if (current.rgba) picture.getContext('2d').putImageData(current.rgba, 0, 0);
  panels.append(el('div', { class: 'panel', dataset: { panel: 'picture' } }, el('h4', {}, 'Picture', el('span', { class: 'time', text: `${current.width}×${current.height}` })), el('div', { class: 'canvas-wrap' }, picture)));
  for (const a of current.answers) {
    const canvas = el('canvas', { class: 'labels hoverable', dataset: { model: a.id } });
    paintLabels(canvas, a.labels, a.width, a.height, a.id);
    panels.append(el('div', { class: 'panel', dataset: { panel: 'model', model: a.id, kind: a.kind } },
      el('h4', {}, a.title, el('span', { class: 'time', dataset: { ms: a.ms }, text: `${a.ms.toFixed(0)} ms` })),
      el('div', { class: 'canvas-wrap' }, canvas),
      el('div', { class: 'actions' }, el('button', { type: 'button', class: 'download-labels', onclick: () => downloadUrl(a.labelsPng, `${stem(current.name)}_${a.kind}_labels.png`) }, 'Download label PNG'))));
  }
  for (const c of panels.querySelectorAll('canvas.hoverable')) {
    c.addEventListener('pointermove', (e) => hover(e, c));
    c.addEventListener('pointerleave', clearHover);
  }
  const select = $('overlay-model');
  const keep = select.value;
  select.replaceChildren(...current.answers.map((a) => el('option', { value: a.id, text: a.title })));
  // The finest model by default: the last one.
  select.value = current.answers.some((a) => String(a.id) === keep) ? keep : String(current.answers.at(-1).id);
  drawOverlay();
  renderLegend($('legend'), null, current.answers);
  $('segment-results').hidden = false;
  $('segment-results').dataset.ready = 'true';
  $('segment-results').dataset.resultId = answer.id;
  $('pointer-info').textContent = 'Move the pointer over a picture or a label map.';
}

/** The picture with the chosen model's class colours blended in (background left as it is). */
function drawOverlay() {
  const a = answerById(Number($('overlay-model').value));
  const canvas = $('overlay-canvas');
  if (!a) return;
  canvas.width = current.width;
  canvas.height = current.height;
  const ctx = canvas.getContext('2d');
  const out = ctx.createImageData(current.width, current.height);
  const alpha = Number($('opacity').value) / 100;
  const src = current.rgba?.data;
  for (let i = 0; i < a.labels.length; i++) {
    const k = a.labels[i];
    const o = 4 * i;
    const r = src ? src[o] : 128, g = src ? src[o + 1] : 128, b = src ? src[o + 2] : 128;
    if (k === 0) {
      out.data[o] = r; out.data[o + 1] = g; out.data[o + 2] = b;
    } else {
      const [pr, pg, pb] = paletteOf(a.id)[k];
      out.data[o] = Math.round((1 - alpha) * r + alpha * pr);
      out.data[o + 1] = Math.round((1 - alpha) * g + alpha * pg);
      out.data[o + 2] = Math.round((1 - alpha) * b + alpha * pb);
    }
    out.data[o + 3] = 255;
  }
  ctx.putImageData(out, 0, 0);
  canvas.dataset.opacity = String(alpha);
  canvas.dataset.model = String(a.id);
}

function clearHover() {
  for (const m of document.querySelectorAll('#page-segment .crosshair')) m.remove();
}

function hover(event, element) {
  const p = pixelAt(event, element, current.width, current.height);
  if (!p) return clearHover();
  // A marker at the same pixel on every panel, so the maps can be compared point by point.
  clearHover();
  for (const c of document.querySelectorAll('#panels canvas, #overlay-canvas')) {
    const wrap = c.parentElement;
    const r = c.getBoundingClientRect(), wr = wrap.getBoundingClientRect();
    const m = el('div', { class: 'crosshair' });
    m.style.left = `${r.left - wr.left + ((p.x + 0.5) / current.width) * r.width}px`;
    m.style.top = `${r.top - wr.top + ((p.y + 0.5) / current.height) * r.height}px`;
    wrap.append(m);
  }
  const i = p.y * current.width + p.x;
  const rows = current.answers.map((a) => {
    const nameOf = (k) => classNames[a.id]?.get(k) ?? (k === 255 ? 'void' : `class ${k}`);
    let top;
    if (a.top3) {
      const o = i * 6;
      top = [0, 1, 2].map((j) => ({ k: a.top3[o + j], p: a.top3[o + 3 + j] / 255 })).filter((t, j) => j === 0 || t.p > 0);
    } else {
      top = [{ k: a.labels[i], p: null }];
    }
    return el('tr', { dataset: { model: a.id, label: a.labels[i] } },
      el('th', { text: a.title }),
      el('td', {}, el('span', { class: 'swatch', style: `background:${css(a.labels[i], a.id)}` }), nameOf(a.labels[i])),
      el('td', { class: 'top3', text: top.map((t) => `${nameOf(t.k)}${t.p === null ? '' : ` ${percent(t.p)}`}`).join(' · ') }));
  });
  const info = $('pointer-info');
  info.classList.remove('muted');
  info.dataset.x = p.x;
  info.dataset.y = p.y;
  const px = current.rgba ? [...current.rgba.data.slice(4 * i, 4 * i + 3)] : null;
  info.replaceChildren(
    el('div', { class: 'small muted', text: `pixel (${p.x}, ${p.y})${px ? ` · RGB ${px.join(', ')}` : ''} · class, then the three most probable classes` }),
    el('table', {}, el('tbody', {}, rows)),
  );
}
