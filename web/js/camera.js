// The Camera view: frames from getUserMedia, each scaled to the working size and segmented by
// the server (the chosen models, at the server's --precision), one frame in flight at a time;
// each model's labels laid over the frame, with its frames per second and a legend.
import { paletteOf, el, postPicture, labelsFromPng } from './common.js';

const $ = (id) => document.getElementById(id);

let stream = null;
let running = false;
/** Times (ms) of the recent answered frames, for frames per second. */
const answered = [];

function fps() {
  const now = performance.now();
  while (answered.length && now - answered[0] > 5000) answered.shift();
  if (answered.length < 2) return null;
  return (answered.length - 1) / ((answered.at(-1) - answered[0]) / 1000);
}

/** The frame at the working size: its longest side `size` pixels. */
function grab(video, size) {
  const scale = size / Math.max(video.videoWidth, video.videoHeight);
  const c = document.createElement('canvas');
  c.width = Math.max(1, Math.round(video.videoWidth * scale));
  c.height = Math.max(1, Math.round(video.videoHeight * scale));
  c.getContext('2d').drawImage(video, 0, 0, c.width, c.height);
  return c;
}

function panelFor(model) {
  let panel = document.querySelector(`#camera-panels [data-model="${model.id}"]`);
  if (!panel) {
    panel = el('div', { class: 'camera-panel', dataset: { model: model.id } },
      el('h3', {}, model.title, ' ', el('span', { class: 'fps' })),
      el('canvas', { role: 'img', 'aria-label': `${model.title}'s labels over the camera frame` }),
      el('div', { class: 'camera-legend' }));
    $('camera-panels').append(panel);
  }
  return panel;
}

/** The frame with the labels over it (background left clear), and the classes present. */
function drawAnswer(panel, frame, labels, opacity, classNames, palette) {
  const canvas = panel.querySelector('canvas');
  canvas.width = frame.width;
  canvas.height = frame.height;
  const ctx = canvas.getContext('2d');
  ctx.drawImage(frame, 0, 0);
  const im = ctx.getImageData(0, 0, frame.width, frame.height);
  const present = new Set();
  for (let i = 0; i < labels.length; i++) {
    const k = labels[i];
    if (k === 0 || k === 255) continue;
    present.add(k);
    const [r, g, b] = palette[k];
    im.data[4 * i] += opacity * (r - im.data[4 * i]);
    im.data[4 * i + 1] += opacity * (g - im.data[4 * i + 1]);
    im.data[4 * i + 2] += opacity * (b - im.data[4 * i + 2]);
  }
  ctx.putImageData(im, 0, 0);
  panel.querySelector('.camera-legend').replaceChildren(...[...present].sort((a, b) => a - b).map((k) =>
    el('span', {}, el('span', { class: 'swatch', style: `background:rgb(${palette[k].join(',')})`, 'aria-hidden': 'true' }), classNames.get(k) ?? `class ${k}`)));
}

async function loop(app) {
  const video = $('camera-video');
  while (running) {
    const size = Number($('camera-size').value);
    const frame = grab(video, size);
    const blob = await new Promise((r) => frame.toBlob(r, 'image/png'));
    let answer;
    try {
      answer = await postPicture(`/api/segment?model=${encodeURIComponent($('camera-models').value)}`, blob, 'frame.png');
    } catch (e) {
      $('camera-status').textContent = e.message;
      // A busy server (503) is asked again a little later; anything else stops the loop.
      if (e.status === 503) { await new Promise((r) => setTimeout(r, 500)); continue; }
      return stop();
    }
    answered.push(performance.now());
    const rate = fps();
    const shown = new Set(answer.models.map((m) => String(m.id)));
    for (const p of document.querySelectorAll('#camera-panels [data-model]')) if (!shown.has(p.dataset.model)) p.remove();
    for (const m of answer.models) {
      const model = app.models.find((x) => x.id === m.id);
      const panel = panelFor(model);
      const { labels } = await labelsFromPng(m.labelsPng);
      drawAnswer(panel, frame, labels, Number($('camera-opacity').value) / 100, new Map(model.classes.map((c) => [c.index, c.name])), paletteOf(m.id));
      panel.querySelector('.fps').textContent = `${Math.round(m.ms)} ms`;
    }
    const panels = $('camera-panels');
    panels.dataset.frames = String(Number(panels.dataset.frames ?? 0) + 1);
    if (rate !== null) panels.dataset.fps = rate.toFixed(2);
    $('camera-status').textContent = `${rate === null ? '…' : rate.toFixed(1)} frames/s at ${frame.width}×${frame.height}, ${answer.models.length} model${answer.models.length === 1 ? '' : 's'}, ${app.precision}`;
  }
}

async function start(app) {
  if (running) return;
  $('camera-status').textContent = 'asking for the camera…';
  try {
    stream = await navigator.mediaDevices.getUserMedia({ video: { width: { ideal: 640 }, height: { ideal: 480 } }, audio: false });
  } catch (e) {
    $('camera-status').textContent = `no camera: ${e.message} (the page needs a camera and your permission; on another machine than this one, the address must be https or localhost)`;
    return;
  }
  const video = $('camera-video');
  video.srcObject = stream;
  await video.play();
  running = true;
  answered.length = 0;
  $('camera-start').disabled = true;
  $('camera-stop').disabled = false;
  loop(app);
}

function stop() {
  running = false;
  stream?.getTracks().forEach((t) => t.stop());
  stream = null;
  $('camera-start').disabled = false;
  $('camera-stop').disabled = true;
}

export function setupCamera(app) {
  $('camera-models').append(...app.models.map((m) => el('option', { value: m.id, text: `${m.title} alone` })));
  $('camera-start').addEventListener('click', () => start(app));
  $('camera-stop').addEventListener('click', stop);
  window.addEventListener('hashchange', () => { if (location.hash !== '#camera') stop(); });
}
