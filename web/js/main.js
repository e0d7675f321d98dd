// The page: tabs by the address's #fragment, the models line, and each page's setup.
import { getJson, setPalette } from './common.js';
import { setupSegment } from './segment.js';
import { setupDraw } from './draw.js';
import { setupHow } from './how.js';
import { setupTraining } from './training.js';

const TABS = ['segment', 'draw', 'how', 'training'];

/** What the pages share: the models, the limits, and the pictures last shown. */
export const app = { models: [], limits: null, pageHooks: {} };

function show(tab) {
  if (!TABS.includes(tab)) tab = 'segment';
  for (const t of TABS) {
    document.getElementById(`page-${t}`).hidden = t !== tab;
    document.querySelector(`nav a[data-tab="${t}"]`).classList.toggle('active', t === tab);
  }
  app.pageHooks[tab]?.();
}

async function start() {
  try {
    const info = await getJson('/api/models');
    app.models = info.models;
    setPalette(info.models);
    app.limits = info.limits;
    const m = info.models[0];
    const names = [...new Set(info.models.map((x) => x.title))].join(' · ');
    document.getElementById('models-line').textContent =
      `${names} — VGG16 width ${m.width}, ${m.classes.length} classes (${m.classes.slice(1, 6).map((c) => c.name).join(', ')}${m.classes.length > 6 ? ', …' : ''}), ${info.precision}`;
  } catch (e) {
    document.getElementById('models-line').textContent = `cannot reach the server: ${e.message}`;
    return;
  }
  setupSegment(app);
  setupDraw(app);
  setupHow(app);
  setupTraining(app);
  window.addEventListener('hashchange', () => show(location.hash.slice(1)));
  show(location.hash.slice(1));
  document.body.dataset.ready = 'true';
}

start();
