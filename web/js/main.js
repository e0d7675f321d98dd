// The page: tabs by the address's #fragment, the models line, and each page's setup. While
// the server still prepares its models (the demo trains first), the Training view follows
// that training with a banner and its time left; the page reloads into Segment once they are ready.
import { getJson, setPalette } from './common.js';
import { setupSegment } from './segment.js';
import { setupDraw } from './draw.js';
import { setupHow } from './how.js';
import { setupTraining } from './training.js';
import { setupCamera } from './camera.js';
import { setupModels } from './models.js';

const TABS = ['segment', 'draw', 'how', 'training', 'camera', 'models'];
const $ = (id) => document.getElementById(id);

/** What the pages share: the models, the limits, and the pictures last shown. */
export const app = { models: [], limits: null, precision: null, pageHooks: {} };

function show(tab) {
  if (!TABS.includes(tab)) tab = 'segment';
  for (const t of TABS) {
    $(`page-${t}`).hidden = t !== tab;
    document.querySelector(`nav a[data-tab="${t}"]`).classList.toggle('active', t === tab);
  }
  app.pageHooks[tab]?.();
}

function modelsLine(info) {
  const m = info.models[0];
  const names = [...new Set(info.models.map((x) => x.title))].join(' · ');
  return `${names} — VGG16 width ${m.width}, ${m.classes.length} classes (${m.classes.slice(1, 6).map((c) => c.name).join(', ')}${m.classes.length > 6 ? ', …' : ''}), ${info.precision}`;
}

const clock = (s) => (s >= 90 ? `${Math.round(s / 60)} min` : `${Math.max(1, Math.round(s))} s`);

/** The banner while the models are prepared: what happens, how far, the time left. */
async function showPreparing(preparing) {
  const banner = $('prep-banner');
  banner.hidden = false;
  banner.classList.toggle('failed', preparing.state === 'failed');
  $('prep-title').textContent = preparing.state === 'failed' ? 'The models could not be prepared' : 'Preparing the models';
  let detail = `${preparing.message}.`;
  if (preparing.run && preparing.state === 'training') {
    try {
      const run = await getJson(`/api/runs/${encodeURIComponent(preparing.run)}`);
      const c = run.current;
      $('prep-progress').value = c.totalEpochs ? Math.min(1, (c.globalEpoch - 1 + (c.batchesPerEpoch ? c.batch / c.batchesPerEpoch : 0)) / c.totalEpochs) : 0;
      detail += ` Epoch ${c.globalEpoch} of ${c.totalEpochs}${c.model ? ` (${c.model})` : ''}${c.etaSeconds !== null ? `, about ${clock(c.etaSeconds)} left` : ''}. Segment opens by itself when they are ready.`;
    } catch {
      detail += ' The run starts in a moment (its data is being made).';
    }
  }
  $('prep-detail').textContent = detail;
  $('prep-progress').hidden = preparing.state === 'failed';
}

/** Polls until the models are ready, then reloads the page into Segment. */
async function waitForModels(info) {
  $('models-line').textContent = 'no model yet: the demo models are being trained on this machine';
  setupTraining(app);
  window.addEventListener('hashchange', () => show(location.hash.slice(1)));
  show('training');
  document.body.dataset.ready = 'preparing';
  for (;;) {
    if (info.preparing) await showPreparing(info.preparing);
    if (info.models.length > 0 && !info.preparing) break;
    await new Promise((r) => setTimeout(r, 2000));
    try {
      info = await getJson('/api/models');
    } catch {
      /* the server may be restarting: ask again */
    }
  }
  location.hash = '#segment';
  location.reload();
}

async function start() {
  let info;
  try {
    info = await getJson('/api/models');
  } catch (e) {
    $('models-line').textContent = `cannot reach the server: ${e.message}`;
    return;
  }
  app.limits = info.limits;
  app.precision = info.precision;
  if (info.models.length === 0 || info.preparing) return waitForModels(info);
  app.models = info.models;
  setPalette(info.models);
  $('models-line').textContent = modelsLine(info);
  setupSegment(app);
  setupDraw(app);
  setupHow(app);
  setupTraining(app);
  setupCamera(app);
  setupModels(app, info);
  window.addEventListener('hashchange', () => show(location.hash.slice(1)));
  show(location.hash.slice(1));
  document.body.dataset.ready = 'true';
}

start();
