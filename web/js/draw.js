// The Draw page: shapes drawn with the mouse on a canvas, segmented by every model as the
// drawing changes (debounced: one request at a time, the latest drawing wins).
import { el, postPicture, labelsFromPng, paintLabels, renderLegend } from './common.js';

const $ = (id) => document.getElementById(id);

// The demo's five classes have a shape, a colour family and a texture each (src/data/synth.ts):
// the stamps draw them the same way, so the demo's models recognise them.
const SHAPES = {
  disc: { hue: 10 },
  box: { hue: 215 },
  triangle: { hue: 120 },
  ring: { hue: 52 },
  cross: { hue: 295 },
};

function hsv(h, s, v) {
  h = ((h % 360) + 360) % 360;
  const c = v * s, x = c * (1 - Math.abs(((h / 60) % 2) - 1)), m = v - c;
  const [r, g, b] = h < 60 ? [c, x, 0] : h < 120 ? [x, c, 0] : h < 180 ? [0, c, x] : h < 240 ? [0, x, c] : h < 300 ? [x, 0, c] : [c, 0, x];
  return [Math.round((r + m) * 255), Math.round((g + m) * 255), Math.round((b + m) * 255)];
}
const rgb = ([r, g, b], k = 1) => `rgb(${Math.min(255, r * k)},${Math.min(255, g * k)},${Math.min(255, b * k)})`;

let canvas, ctx;
let tool = 'disc';
/** Increases with every change of the drawing; answers carry the version they were asked for. */
let version = 0;
let seed = 1;

const random = () => {
  seed = (Math.imul(seed, 1664525) + 1013904223) >>> 0;
  return seed / 2 ** 32;
};

/** A muted background with soft waves and grain, like the synthetic scenes'. */
function paintBackground() {
  const { width, height } = canvas;
  const base = hsv(random() * 360, 0.05 + random() * 0.25, 0.45 + random() * 0.35);
  const alt = hsv(random() * 360, 0.05 + random() * 0.3, 0.35 + random() * 0.5);
  const fx = ((random() - 0.5) * 4 * Math.PI) / width, fy = ((random() - 0.5) * 4 * Math.PI) / height, ph = random() * 6.28;
  const im = ctx.createImageData(width, height);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const t = (Math.sin(fx * x + fy * y + ph) + 1) / 2;
      const grain = (random() - 0.5) * 10;
      const o = 4 * (y * width + x);
      for (let c = 0; c < 3; c++) im.data[o + c] = base[c] + (alt[c] - base[c]) * t + grain;
      im.data[o + 3] = 255;
    }
  }
  ctx.putImageData(im, 0, 0);
}

function stamp(shape, cx, cy, r) {
  const colour = hsv(SHAPES[shape].hue, 0.8, 0.92);
  ctx.save();
  ctx.beginPath();
  if (shape === 'disc') {
    ctx.arc(cx, cy, r, 0, 2 * Math.PI);
    const g = ctx.createRadialGradient(cx, cy, 0, cx, cy, r);
    g.addColorStop(0, rgb(colour, 1.15));
    g.addColorStop(1, rgb(colour, 0.8));
    ctx.fillStyle = g;
    ctx.fill();
  } else if (shape === 'box') {
    const h = r * 0.85;
    ctx.rect(cx - h, cy - h, 2 * h, 2 * h);
    ctx.fillStyle = rgb(colour);
    ctx.fill();
    ctx.clip();
    ctx.strokeStyle = rgb(colour, 0.78);
    ctx.lineWidth = 2;
    for (let d = -2 * h; d < 2 * h; d += 6) {
      ctx.beginPath();
      ctx.moveTo(cx - h + d, cy - h);
      ctx.lineTo(cx - h + d + 2 * h, cy + h);
      ctx.stroke();
    }
  } else if (shape === 'triangle') {
    for (let i = 0; i < 3; i++) {
      const a = (i * 2 * Math.PI) / 3 - Math.PI / 2;
      const px = cx + Math.cos(a) * r * 1.1, py = cy + Math.sin(a) * r * 1.1;
      if (i === 0) ctx.moveTo(px, py); else ctx.lineTo(px, py);
    }
    ctx.closePath();
    ctx.fillStyle = rgb(colour);
    ctx.fill();
    ctx.clip();
    for (let i = 0; i < r * r * 0.8; i++) {
      ctx.fillStyle = rgb(colour, 0.7 + random() * 0.6);
      ctx.fillRect(cx - r + random() * 2 * r, cy - r + random() * 2 * r, 2, 2);
    }
  } else if (shape === 'ring') {
    ctx.arc(cx, cy, r, 0, 2 * Math.PI);
    ctx.arc(cx, cy, r * 0.5, 0, 2 * Math.PI, true);
    const g = ctx.createLinearGradient(cx - r, cy - r, cx + r, cy + r);
    g.addColorStop(0, rgb(colour, 1.1));
    g.addColorStop(1, rgb(colour, 0.8));
    ctx.fillStyle = g;
    ctx.fill('evenodd');
  } else if (shape === 'cross') {
    const arm = r * 0.3;
    ctx.rect(cx - r, cy - arm, 2 * r, 2 * arm);
    ctx.rect(cx - arm, cy - r, 2 * arm, 2 * r);
    ctx.fillStyle = rgb(colour);
    ctx.fill('nonzero');
    ctx.clip();
    ctx.fillStyle = rgb(colour, 0.75);
    for (let y = cy - r; y < cy + r; y += 10) for (let x = cx - r + ((y - cy + r) / 10) % 2 * 5; x < cx + r; x += 10) ctx.fillRect(x, y, 5, 5);
  }
  ctx.restore();
}

const point = (e) => {
  const r = canvas.getBoundingClientRect();
  return { x: ((e.clientX - r.left) / r.width) * canvas.width, y: ((e.clientY - r.top) / r.height) * canvas.height };
};

export function setupDraw(app) {
  canvas = $('draw-canvas');
  ctx = canvas.getContext('2d', { willReadFrequently: true });
  paintBackground();
  for (const b of document.querySelectorAll('#draw-tools [data-tool]')) {
    b.addEventListener('click', () => {
      tool = b.dataset.tool;
      for (const o of document.querySelectorAll('#draw-tools [data-tool]')) o.classList.toggle('selected', o === b);
    });
  }
  $('draw-clear').addEventListener('click', () => {
    paintBackground();
    changed();
  });
  let start = null, snapshot = null, last = null;
  canvas.addEventListener('pointerdown', (e) => {
    canvas.setPointerCapture(e.pointerId);
    start = last = point(e);
    snapshot = ctx.getImageData(0, 0, canvas.width, canvas.height);
    if (tool === 'brush') brush(start, start);
  });
  canvas.addEventListener('pointermove', (e) => {
    if (!start) return;
    const p = point(e);
    if (tool === 'brush') {
      brush(last, p);
    } else {
      // The shape grows with the drag: redrawn over the picture as it was before it.
      ctx.putImageData(snapshot, 0, 0);
      stamp(tool, start.x, start.y, Math.max(6, Math.hypot(p.x - start.x, p.y - start.y)));
    }
    last = p;
    changed();
  });
  const end = (e) => {
    if (!start) return;
    const p = point(e);
    if (tool !== 'brush') {
      ctx.putImageData(snapshot, 0, 0);
      stamp(tool, start.x, start.y, Math.max(6, Math.hypot(p.x - start.x, p.y - start.y)));
    }
    start = snapshot = null;
    changed();
  };
  canvas.addEventListener('pointerup', end);
  canvas.addEventListener('pointercancel', end);
  app.pageHooks.draw = () => { if (version === 0) changed(); };
}

function brush(a, b) {
  ctx.strokeStyle = $('brush-color').value;
  ctx.lineWidth = 10;
  ctx.lineCap = 'round';
  ctx.beginPath();
  ctx.moveTo(a.x, a.y);
  ctx.lineTo(b.x, b.y);
  ctx.stroke();
}

/** The drawing as a PNG, for the How it works page. */
export function drawingBlob() {
  return new Promise((resolve) => canvas.toBlob(resolve, 'image/png'));
}

// Debouncing: an answer is asked 200 ms after the drawing stops changing, or every 600 ms
// while it keeps changing; never two requests at once.
let timer = null, firstChange = 0, inFlight = false, pending = false;

function changed() {
  version++;
  canvas.dataset.version = String(version);
  const now = performance.now();
  if (!firstChange) firstChange = now;
  clearTimeout(timer);
  if (now - firstChange > 600) send();
  else timer = setTimeout(send, 200);
}

async function send() {
  clearTimeout(timer);
  firstChange = 0;
  if (inFlight) {
    pending = true;
    return;
  }
  inFlight = true;
  const asked = version;
  const status = $('draw-status');
  try {
    const blob = await drawingBlob();
    const answer = await postPicture('/api/segment', blob, 'drawing.png');
    const answers = await Promise.all(answer.models.map(async (m) => ({ ...m, ...(await labelsFromPng(m.labelsPng)) })));
    renderAnswers(answers, asked);
    status.classList.remove('error');
    status.textContent = answers.map((a) => `${a.title} ${a.ms.toFixed(0)} ms`).join(' · ');
  } catch (e) {
    status.classList.add('error');
    status.textContent = e.message;
    if (e.status === 503) pending = true;
  } finally {
    inFlight = false;
    if (pending) {
      pending = false;
      setTimeout(send, 250);
    }
  }
}

function renderAnswers(answers, asked) {
  const panels = $('draw-panels');
  panels.replaceChildren(...answers.map((a) => {
    const c = el('canvas', { class: 'labels', dataset: { model: a.id } });
    paintLabels(c, a.labels, a.width, a.height, a.id);
    return el('div', { class: 'panel', dataset: { model: a.id } }, el('h4', {}, a.title, el('span', { class: 'time', text: `${a.ms.toFixed(0)} ms` })), c);
  }));
  panels.dataset.version = String(asked);
  renderLegend($('draw-legend'), null, answers);
}
