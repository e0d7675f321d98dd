// The Models view: each loaded model's kind, classes, training data and validation mean IoU;
// when only the demo's models are loaded, the paper's FCN-32s/16s/8s offered for download into
// the server's weights cache (one at a time, with progress), loaded without a restart.
import { el, getJson } from './common.js';

const $ = (id) => document.getElementById(id);
const mb = (n) => `${(n / 1e6).toFixed(0)} MB`;

function renderModels(models) {
  const head = el('thead', {}, el('tr', {}, ...['Model', 'Classes', 'Trained on', 'Validation mean IoU'].map((t) => el('th', { scope: 'col', text: t }))));
  const rows = models.map((m) => el('tr', { dataset: { model: m.id } },
    el('td', {}, el('strong', { text: m.title }), el('div', { class: 'muted small', text: `${m.kind}, VGG16 width ${m.width}, ${m.source}` })),
    el('td', {}, el('div', { class: 'class-chips' }, ...m.classes.map((c) => el('span', { class: 'class-chip' }, el('span', { class: 'swatch', style: `background:${c.color}`, 'aria-hidden': 'true' }), c.name)))),
    el('td', { text: m.trainedOn }),
    el('td', {}, m.valMeanIoU === null ? el('span', { class: 'muted', text: `— (${m.iouSource})` }) : el('span', {}, `${(100 * m.valMeanIoU).toFixed(1)}%`, el('div', { class: 'muted small', text: m.iouSource })))));
  $('models-table').replaceChildren(head, el('tbody', {}, ...rows));
}

function weightRow(w, download, busy) {
  const mine = download && download.name === w.name ? download : null;
  const action = w.loaded ? el('span', { class: 'muted', text: 'loaded' })
    : el('button', { type: 'button', dataset: { fetch: w.name }, disabled: busy, onclick: () => fetchWeights(w.name) }, w.cache === 'cached' ? `Load ${w.name}` : w.cache === 'partial' ? `Resume ${w.name}` : `Download ${w.name} (~${mb(w.approxBytes)})`);
  const row = el('div', { class: 'weight-row', dataset: { weights: w.name } }, el('strong', { text: w.name }), el('span', { class: 'muted', text: w.description }), action);
  if (mine && (mine.state === 'downloading' || mine.state === 'loading')) {
    row.append(el('progress', { max: mine.total ?? 1, value: mine.received, 'aria-label': `${w.name} download` }),
      el('span', { class: 'small', text: mine.state === 'loading' ? 'loading into the server…' : `${mb(mine.received)}${mine.total ? ` of ${mb(mine.total)}` : ''}` }));
  }
  if (mine?.state === 'failed') {
    row.append(el('p', { class: 'status error byhand' }, `${mine.message.split('\n')[0]} — without network access from this machine, download `,
      el('code', { text: w.byHand.url }), ' elsewhere and put it at ', el('code', { text: w.byHand.file }), ', then press the button again.'));
  }
  return row;
}

let polling = null;
/** A download this page saw under way: when it is done, the page reloads to show the model. */
let watching = false;

async function refreshWeights() {
  const { weights, download } = await getJson('/api/weights');
  const busy = download && (download.state === 'downloading' || download.state === 'loading');
  $('weights-offer').replaceChildren(...weights.map((w) => weightRow(w, download, busy)));
  clearTimeout(polling);
  if (busy) {
    watching = true;
    polling = setTimeout(refreshWeights, 500);
  } else if (download?.state === 'done' && watching) {
    watching = false;
    $('weights-status').textContent = `${download.name} is loaded: the page reloads to show it beside the others`;
    location.hash = '#models';
    setTimeout(() => location.reload(), 600);
  }
}

async function fetchWeights(name) {
  $('weights-status').textContent = '';
  try {
    const r = await fetch(`/api/weights/${encodeURIComponent(name)}/fetch`, { method: 'POST' });
    if (!r.ok) throw new Error((await r.json()).error);
    // This page started it, so it reloads when it is done even if it never sees it under way:
    // from a near mirror, a download can be fetched and loaded before the first poll.
    watching = true;
  } catch (e) {
    $('weights-status').textContent = e.message;
    $('weights-status').classList.add('error');
  }
  refreshWeights();
}

export function setupModels(app, info) {
  renderModels(app.models);
  // Offered beside the demo's models, and kept while some of the paper's are still to fetch.
  const offered = info.demoOnly || app.models.some((m) => ['fcn32s', 'fcn16s', 'fcn8s'].includes(m.source));
  $('demo-offer').hidden = !offered;
  if (!info.demoOnly) $('demo-offer').querySelector('h2').textContent = "The paper's models, trained on Pascal VOC";
  app.pageHooks.models = () => {
    if (offered) refreshWeights().catch((e) => ($('weights-status').textContent = e.message));
  };
}
