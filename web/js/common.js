// Shared by the pages: the models' class colours, talking to the API, and label maps as class indices.

/** Class colours, index → [r, g, b]: the models' own, as /api/models gives them (setPalette). */
export let PALETTE = Array.from({ length: 256 }, () => [128, 128, 128]);
let COLOUR_TO_CLASS = new Map();
/** Each model's own colours, by model id: models of other class sets differ (VOC's, the demo's shapes). */
const PALETTES = new Map();
const rgbOf = (hex) => [1, 3, 5].map((i) => parseInt(hex.slice(i, i + 2), 16));

/** Takes the class colours of the models (the first model's wins where two disagree on an index). */
export function setPalette(models) {
  const palette = Array.from({ length: 256 }, () => [128, 128, 128]);
  COLOUR_TO_CLASS = new Map();
  for (const m of [...models].reverse()) {
    for (const c of m.classes) {
      palette[c.index] = rgbOf(c.color);
      COLOUR_TO_CLASS.set(parseInt(c.color.slice(1), 16), c.index);
    }
  }
  PALETTE = palette;
  for (const m of models) {
    const own = PALETTE.map((c) => c);
    for (const c of m.classes) own[c.index] = rgbOf(c.color);
    PALETTES.set(m.id, own);
  }
}

/** The colours of model `id`'s classes (the shared palette for an unknown id). */
export const paletteOf = (id) => PALETTES.get(id) ?? PALETTE;
export const css = (k, id) => `rgb(${paletteOf(id)[k].join(',')})`;

/** Creates an element: el('td', { class: 'x', dataset: { a: 1 } }, 'text', child…). */
export function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'dataset') Object.assign(e.dataset, v);
    else if (k === 'text') e.textContent = v;
    else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children.flat()) if (c !== null && c !== undefined) e.append(c);
  return e;
}

/** The API's error message, or a plain one for a failed connection. */
async function failure(response) {
  try {
    const j = await response.json();
    return new Error(j.error ?? `${response.status} ${response.statusText}`);
  } catch {
    return new Error(`${response.status} ${response.statusText}`);
  }
}

export async function getJson(url) {
  const r = await fetch(url);
  if (!r.ok) throw await failure(r);
  return r.json();
}

/** Posts a picture (a Blob or File) as a multipart form, as a browser form would. */
export async function postPicture(url, blob, name = 'picture.png') {
  const form = new FormData();
  form.append('image', blob, name);
  const r = await fetch(url, { method: 'POST', body: form });
  if (!r.ok) {
    const e = await failure(r);
    e.status = r.status;
    e.retryAfter = r.headers.get('retry-after');
    throw e;
  }
  return r.json();
}

export function loadImage(src) {
  return new Promise((resolve, reject) => {
    const img = new Image();
    img.onload = () => resolve(img);
    img.onerror = () => reject(new Error('the picture cannot be shown by this browser'));
    img.src = src;
  });
}

/** A label PNG (the model's class colours) as class indices: the colours map back to their classes exactly. */
export async function labelsFromPng(dataUrl) {
  const img = await loadImage(dataUrl);
  const c = document.createElement('canvas');
  c.width = img.naturalWidth;
  c.height = img.naturalHeight;
  const ctx = c.getContext('2d', { willReadFrequently: true });
  ctx.drawImage(img, 0, 0);
  const { data } = ctx.getImageData(0, 0, c.width, c.height);
  const labels = new Uint8Array(c.width * c.height);
  for (let i = 0; i < labels.length; i++) labels[i] = COLOUR_TO_CLASS.get((data[4 * i] << 16) | (data[4 * i + 1] << 8) | data[4 * i + 2]) ?? 255;
  return { labels, width: c.width, height: c.height, img };
}

/** Draws class indices in model `id`'s colours on a canvas of their size. */
export function paintLabels(canvas, labels, width, height, id) {
  const palette = paletteOf(id);
  canvas.width = width;
  canvas.height = height;
  const ctx = canvas.getContext('2d');
  const im = ctx.createImageData(width, height);
  for (let i = 0; i < labels.length; i++) {
    const [r, g, b] = palette[labels[i]];
    im.data[4 * i] = r; im.data[4 * i + 1] = g; im.data[4 * i + 2] = b; im.data[4 * i + 3] = 255;
  }
  ctx.putImageData(im, 0, 0);
}

export const percent = (share) => `${(100 * share).toFixed(1)}%`;

export function downloadUrl(url, filename) {
  const a = el('a', { href: url, download: filename });
  document.body.append(a);
  a.click();
  a.remove();
}

/** The picture's pixel under a pointer event on an element showing it scaled. */
export function pixelAt(event, element, width, height) {
  const r = element.getBoundingClientRect();
  const x = Math.floor(((event.clientX - r.left) / r.width) * width);
  const y = Math.floor(((event.clientY - r.top) / r.height) * height);
  return x >= 0 && y >= 0 && x < width && y < height ? { x, y } : null;
}

/**
 * A legend table: one row per class present in any answer, one share column per model. Models
 * of different class sets (the demo's shapes, VOC's) share no row: a row is an index and a name.
 */
export function renderLegend(table, models, answers) {
  table.replaceChildren();
  const rows = new Map();
  for (const a of answers) for (const s of a.shares) if (!rows.has(`${s.index}|${s.name}`)) rows.set(`${s.index}|${s.name}`, { index: s.index, name: s.name, model: a.id });
  const sorted = [...rows.values()].sort((x, y) => x.index - y.index || x.name.localeCompare(y.name));
  table.append(el('thead', {}, el('tr', {}, el('th', { text: 'class' }), ...answers.map((a) => el('th', { text: a.title })))));
  const body = el('tbody');
  for (const r of sorted) {
    body.append(el('tr', { dataset: { class: r.index } },
      el('td', {}, el('span', { class: 'swatch', style: `background:${css(r.index, r.model)}` }), r.name),
      ...answers.map((a) => {
        const s = a.shares.find((x) => x.index === r.index && x.name === r.name);
        return el('td', { class: 'share', dataset: { model: a.id }, text: s ? percent(s.share) : '—' });
      })));
  }
  table.append(body);
  void models;
}
