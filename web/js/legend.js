// Class colours and compact legends. A model's palette is a list of [r, g, b] by class index,
// taken from the colours /api/models gives each class (the VOC palette where it gives none),
// so that a map and its legend always use the same colours.
import { PALETTE, el, percent } from './common.js';

const fromHex = (hex) => {
  const m = /^#?([0-9a-f]{2})([0-9a-f]{2})([0-9a-f]{2})$/i.exec(hex ?? '');
  return m ? [parseInt(m[1], 16), parseInt(m[2], 16), parseInt(m[3], 16)] : null;
};

/** The palette of a model of /api/models: [r, g, b] for every class index (0…255), VOC's where the model gives none. */
export function paletteOf(model) {
  const palette = PALETTE.map((c) => [...c]);
  // A model may carry its palette whole ([r, g, b] by class index) or a colour per class.
  if (Array.isArray(model?.palette)) model.palette.forEach((rgb, k) => { if (Array.isArray(rgb) && rgb.length >= 3) palette[k] = rgb.slice(0, 3); });
  for (const c of model?.classes ?? []) {
    const rgb = fromHex(c.color) ?? (Array.isArray(c.color) ? c.color : null);
    if (rgb) palette[c.index] = rgb;
  }
  return palette;
}

/** Class names by index of a model of /api/models. */
export const namesOf = (model) => (model?.classes ?? []).map((c) => c.name);

/** Draws class indices in a palette's colours on a canvas of their size. */
export function paintWith(canvas, labels, width, height, palette) {
  canvas.width = width;
  canvas.height = height;
  const ctx = canvas.getContext('2d');
  const im = ctx.createImageData(width, height);
  for (let i = 0; i < labels.length; i++) {
    const [r, g, b] = palette[labels[i]] ?? [255, 255, 255];
    im.data[4 * i] = r; im.data[4 * i + 1] = g; im.data[4 * i + 2] = b; im.data[4 * i + 3] = 255;
  }
  ctx.putImageData(im, 0, 0);
}

/** Each class's share of a label map, largest first: [{ index, share }]. */
export function sharesOf(labels) {
  const counts = new Map();
  for (const k of labels) counts.set(k, (counts.get(k) ?? 0) + 1);
  return [...counts].map(([index, n]) => ({ index, share: n / labels.length })).sort((a, b) => b.share - a.share);
}

/**
 * A compact legend for one map: a swatch and a name per class, with its share when given.
 * `entries` are [{ index, share? }]; swatches carry a light and a dark ring so that dark
 * colours (and black, the background) stay visible on a dark map or a light page.
 */
export function compactLegend(palette, names, entries, { label = 'Classes' } = {}) {
  const list = el('ul', { class: 'map-legend', 'aria-label': label });
  for (const e of entries) {
    const rgb = palette[e.index] ?? [255, 255, 255];
    const name = names[e.index] ?? (e.index === 255 ? 'void' : `class ${e.index}`);
    list.append(el('li', { dataset: { class: e.index } },
      el('span', { class: 'swatch', style: `background:rgb(${rgb.join(',')})`, 'aria-hidden': 'true' }),
      e.share === undefined ? name : `${name} ${percent(e.share)}`));
  }
  return list;
}

/**
 * The classes table of a picture: one row per class present in any model's answer, one share
 * column per model (answers: [{ id, title, shares: [{ index, name, share }] }]).
 */
export function shareTable(table, answers, paletteFor) {
  table.replaceChildren();
  const names = new Map();
  for (const a of answers) for (const s of a.shares) if (!names.has(s.index)) names.set(s.index, s.name);
  const indices = [...names.keys()].sort((a, b) => a - b);
  const palette = paletteFor(answers[0]?.id);
  table.append(el('thead', {}, el('tr', {}, el('th', { text: 'class' }), ...answers.map((a) => el('th', { text: a.title })))));
  table.append(el('tbody', {}, indices.map((k) => el('tr', { dataset: { class: k } },
    el('td', {}, el('span', { class: 'swatch', style: `background:rgb(${(palette[k] ?? [255, 255, 255]).join(',')})`, 'aria-hidden': 'true' }), names.get(k)),
    ...answers.map((a) => {
      const s = a.shares.find((x) => x.index === k);
      return el('td', { class: 'share', dataset: { model: a.id }, text: s ? percent(s.share) : '—' });
    })))));
}
