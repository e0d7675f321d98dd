// The Training page: a run's loss and mean IoU curves per stage, where it is, how fast it goes
// and when it should end, its latest validation samples, and its final metrics — followed live
// through server-sent events while `fcn train` writes the run, in this process or another.
import { el, getJson } from './common.js';
import { paletteOf, namesOf, compactLegend } from './legend.js';

const $ = (id) => document.getElementById(id);
const SVG = 'http://www.w3.org/2000/svg';
const TITLES = { fcn32: 'FCN-32s', fcn16: 'FCN-16s', fcn8: 'FCN-8s' };

let source = null;
let followed = null;
let listTimer = null;
let userChose = false;
/** The runs listed so far: one not among them is new, and is followed unless the learner chose. */
let known = null;
/** The summary on show, drawn again when the charts' width changes. */
let shown = null;

/** The classes' colours as the loaded models give them, for the samples' legend. */
let classes = { palette: [], names: [] };

export function setupTraining(app) {
  classes = { palette: paletteOf(app.models[0]), names: namesOf(app.models[0]) };
  $('run-select').addEventListener('change', () => {
    userChose = true;
    follow($('run-select').value);
  });
  app.pageHooks.training = () => {
    refreshList();
    if (shown) render(shown);
  };
  let resizeTimer = null;
  window.addEventListener('resize', () => {
    clearTimeout(resizeTimer);
    resizeTimer = setTimeout(() => { if (shown && !$('page-training').hidden) render(shown); }, 150);
  });
}

async function refreshList() {
  clearTimeout(listTimer);
  let runs = [];
  try {
    ({ runs } = await getJson('/api/runs'));
  } catch (e) {
    $('training-status').textContent = e.message;
  }
  const select = $('run-select');
  const wanted = new URLSearchParams(location.search).get('run');
  select.replaceChildren(...runs.map((r) => el('option', { value: r.name, text: `${r.name} — ${r.status}, ${r.epochs}/${r.totalEpochs} epochs` })));
  if (runs.length === 0) {
    $('training-status').textContent = 'No training run yet: start one with fcn train (or fcn demo) — it appears here by itself.';
    // Looked for again while the page is open: a run started now shows up.
    if (!$('page-training').hidden) listTimer = setTimeout(refreshList, 2000);
    return;
  }
  // The run named in the address (?run=NAME) until the learner picks another; else a run
  // started since the list was last read (the newest first), else the one followed.
  const fresh = known ? runs.filter((r) => !known.has(r.name)) : [];
  known = new Set(runs.map((r) => r.name));
  const preferred = userChose ? followed : wanted && runs.some((r) => r.name === wanted) ? wanted : fresh[0]?.name ?? followed;
  const pick = runs.find((r) => r.name === preferred) ?? runs.find((r) => r.name === followed) ?? runs[0];
  select.value = pick.name;
  if (pick.name !== followed) follow(pick.name);
  // Runs started later show up while the page is open.
  if (!$('page-training').hidden) listTimer = setTimeout(refreshList, 3000);
}

function follow(name) {
  source?.close();
  followed = name;
  const badge = $('live-badge');
  badge.textContent = 'connecting…';
  badge.classList.remove('live');
  source = new EventSource(`/api/runs/${encodeURIComponent(name)}/events`);
  source.addEventListener('open', () => {
    badge.textContent = 'connected';
  });
  source.addEventListener('error', () => {
    badge.textContent = 'reconnecting…';
    badge.classList.remove('live', 'done');
  });
  source.addEventListener('summary', (e) => render(JSON.parse(e.data)));
}

const fmt = (v, digits = 3) => (v === null || v === undefined || Number.isNaN(v) ? '—' : Number(v).toFixed(digits));

function duration(s) {
  if (s === null || s === undefined) return '—';
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
  return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
}

/** The badge says whether the run is being written now (live) or how it ended. */
function badgeFor(status) {
  const badge = $('live-badge');
  const live = status === 'running' || status === 'starting';
  badge.textContent = live ? 'live' : status;
  badge.classList.toggle('live', live);
  badge.classList.toggle('done', status === 'completed');
  badge.classList.toggle('bad', status === 'failed' || status === 'stopped' || status === 'interrupted');
}

function render(s) {
  shown = s;
  $('training-body').hidden = false;
  badgeFor(s.status);
  // The run list's entry follows the run too.
  const option = [...$('run-select').options].find((o) => o.value === s.name);
  if (option) option.textContent = `${s.name} — ${s.status}, ${s.epochs.length}/${s.current.totalEpochs} epochs`;
  const c = s.current;
  const where = s.status === 'completed'
    ? `${s.epochs.length} epoch${s.epochs.length === 1 ? '' : 's'} in ${c.stages} stage${c.stages === 1 ? '' : 's'}`
    : `stage ${c.stage}/${c.stages} (${TITLES[c.model] ?? c.model ?? '?'}), epoch ${c.epoch}/${c.epochs} (${c.globalEpoch}/${c.totalEpochs} in all), step ${c.step}${c.batchesPerEpoch ? `, batch ${c.batch}/${c.batchesPerEpoch}` : ''}`;
  const speed = c.imagesPerSecond ? `${c.imagesPerSecond.toFixed(1)} images/s` : null;
  const eta = s.status === 'running' && c.etaSeconds !== null ? `about ${duration(c.etaSeconds)} left` : null;
  const status = $('training-status');
  status.dataset.run = s.name;
  status.dataset.status = s.status;
  status.dataset.step = c.step;
  status.textContent = [`${s.name}: ${s.status}`, where, c.loss !== null ? `loss ${fmt(c.loss, 4)}` : null, speed, eta, s.best ? `best val mean IoU ${fmt(s.best.meanIoU)} (epoch ${s.best.epoch})` : null, s.message]
    .filter(Boolean).join(' · ');

  const epochBands = bandsOf(s.epochs.map((e) => ({ x: e.epoch, stage: e.stage, model: e.model })), 0.5);
  // Losses on a log scale: a fresh network's first losses are many times the later ones.
  chart($('chart-steps'), {
    series: [{ cls: 'train', name: 'train', points: s.steps.map((p) => [p.step, p.loss]) }],
    bands: bandsOf(s.steps.map((p) => ({ x: p.step, stage: p.stage, model: s.config.stages[p.stage - 1]?.model })), 0),
    xLabel: 'step', yLabel: 'loss (log scale)', log: true,
  });
  chart($('chart-loss'), {
    series: [
      { cls: 'train', name: 'train', points: s.epochs.map((e) => [e.epoch, e.train.loss]) },
      { cls: 'val', name: 'validation', points: s.epochs.filter((e) => e.val).map((e) => [e.epoch, e.val.loss]) },
    ],
    bands: epochBands, xLabel: 'epoch', yLabel: 'loss (log scale)', dots: true, log: true,
  });
  chart($('chart-miou'), {
    series: [
      { cls: 'train', name: 'train', points: s.epochs.map((e) => [e.epoch, e.train.meanIoU]) },
      { cls: 'val', name: 'validation', points: s.epochs.filter((e) => e.val).map((e) => [e.epoch, e.val.meanIoU]) },
    ],
    bands: epochBands, xLabel: 'epoch', yLabel: 'mean IoU', yMin: 0, dots: true,
  });

  const samples = $('samples');
  const latest = s.samples.at(-1);
  if (!latest) samples.replaceChildren(el('p', { class: 'muted', text: 'none yet: they come after the first epoch' }));
  else if (samples.dataset.file !== latest.file) {
    const legend = compactLegend(classes.palette, classes.names, classes.names.map((_, index) => ({ index })), { label: 'Class colours' });
    samples.replaceChildren(el('p', { class: 'small muted', text: `${latest.file} (${s.samples.length} epoch${s.samples.length === 1 ? '' : 's'} so far)` }), el('img', { src: latest.url, alt: `validation samples ${latest.file}` }), legend);
    samples.dataset.file = latest.file;
  }

  const final = $('final-metrics');
  if (!s.final?.metrics) final.replaceChildren();
  else {
    const m = s.final.metrics;
    const rows = [['pixel accuracy', m.pixelAccuracy], ['mean accuracy', m.meanAccuracy], ['mean IoU', m.meanIoU], ['frequency-weighted IoU', m.frequencyWeightedIoU]];
    final.replaceChildren(
      el('h3', { text: `Final metrics (${s.final.source})` }),
      el('table', { id: 'final-table' }, el('tbody', {}, rows.map(([k, v]) => el('tr', {}, el('th', { text: k }), el('td', { class: 'num', text: fmt(v, 4) }))))),
      ...(s.final.perClass ? [el('h3', { text: 'IoU per class' }), el('table', {}, el('tbody', {}, s.final.perClass.map((p) => el('tr', {}, el('th', { text: p.name }), el('td', { class: 'num', text: fmt(p.iou, 4) })))))] : []),
    );
  }
}

/** Stretches of x where one stage ran: [{from, to, label}]. */
function bandsOf(points, pad) {
  const bands = [];
  for (const p of points) {
    const last = bands.at(-1);
    if (last && last.stage === p.stage) last.to = p.x;
    else bands.push({ stage: p.stage, from: p.x, to: p.x, label: `${p.stage}: ${TITLES[p.model] ?? p.model ?? ''}`, title: TITLES[p.model] ?? p.model });
  }
  return bands.map((b) => ({ ...b, from: b.from - pad, to: b.to + pad }));
}

function node(tag, attrs, text) {
  const n = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) n.setAttribute(k, String(v));
  if (text !== undefined) n.textContent = text;
  return n;
}

/** A stage's label above its band: in full where it fits before the next band, else its number, else left out. */
function stageLabels(svg, bands, sx, x0, x1, y, end) {
  let right = -Infinity;
  bands.forEach((b, i) => {
    const from = sx(Math.max(b.from, x0)) + 3;
    const limit = i + 1 < bands.length ? sx(Math.max(bands[i + 1].from, x0)) : end;
    for (const text of [b.label, b.title, String(b.stage)].filter(Boolean)) {
      const t = node('text', { class: 'stage-label', x: from, y }, text);
      svg.append(t);
      const w = t.getComputedTextLength() || 7 * text.length;
      if (from + w <= limit && from >= right + 4) {
        right = from + w;
        return;
      }
      t.remove();
    }
  });
}

/** Log-scale ticks: 1, 2 and 5 × 10^k within [lo, hi], or only the decades when there are many. */
function logTicks(lo, hi) {
  const out = [];
  for (let e = Math.floor(Math.log10(lo)); e <= Math.ceil(Math.log10(hi)); e++) for (const m of [1, 2, 5]) out.push(m * 10 ** e);
  const inside = out.filter((v) => v >= lo && v <= hi);
  return inside.length > 9 ? inside.filter((v) => Number.isInteger(Math.log10(v))) : inside;
}

/**
 * A line chart drawn at the SVG's own width in pixels (so that its 12 px text stays 12 px on
 * any screen), axes with a few ticks, stages as labelled bands, y on a log scale when asked.
 */
function chart(svg, { series, bands, xLabel, yLabel, yMin, dots, log }) {
  svg.replaceChildren();
  const W = Math.max(240, Math.round(svg.clientWidth || svg.parentElement?.clientWidth || 480)), H = 240, L = 52, R = 12, T = 22, B = 38;
  svg.setAttribute('viewBox', `0 0 ${W} ${H}`);
  svg.dataset.scale = log ? 'log' : 'linear';
  const all = series.flatMap((s) => s.points).filter(([, y]) => Number.isFinite(y) && (!log || y > 0));
  svg.dataset.points = String(series[0].points.length);
  if (all.length === 0) {
    svg.append(node('text', { x: W / 2, y: H / 2, 'text-anchor': 'middle' }, 'no data yet'));
    return;
  }
  let x0 = Math.min(...all.map((p) => p[0]), ...bands.map((b) => b.from)), x1 = Math.max(...all.map((p) => p[0]), ...bands.map((b) => b.to));
  const f = log ? Math.log10 : (v) => v;
  let y0 = log ? f(Math.min(...all.map((p) => p[1]))) : yMin ?? Math.min(...all.map((p) => p[1]));
  let y1 = f(Math.max(...all.map((p) => p[1])));
  if (x1 === x0) { x0 -= 1; x1 += 1; }
  if (y1 === y0) { y1 += 0.5; y0 = log ? y0 - 0.5 : yMin ?? y0 - 0.5; }
  const pad = (y1 - y0) * 0.05;
  y1 += pad;
  if (log || yMin === undefined) y0 -= pad;
  const sx = (x) => L + ((x - x0) / (x1 - x0)) * (W - L - R);
  const sy = (y) => H - B - ((f(y) - y0) / (y1 - y0)) * (H - T - B);
  bands.forEach((b, i) => {
    svg.append(node('rect', { class: `stage-band${i % 2 ? ' odd' : ''}`, x: sx(Math.max(b.from, x0)), y: T, width: Math.max(1, sx(Math.min(b.to, x1)) - sx(Math.max(b.from, x0))), height: H - T - B }));
  });
  stageLabels(svg, bands, sx, x0, x1, T - 6, W - R);
  const yTicks = log ? logTicks(10 ** y0, 10 ** y1) : niceTicks(y0, y1, 5);
  for (const y of yTicks) {
    svg.append(node('line', { class: 'grid', x1: L, x2: W - R, y1: sy(y), y2: sy(y) }));
    svg.append(node('text', { x: L - 4, y: sy(y) + 4, 'text-anchor': 'end' }, label(y)));
  }
  // Steps and epochs are whole numbers: so are their ticks.
  for (const x of niceTicks(x0, x1, Math.max(2, Math.floor((W - L - R) / 60))).filter(Number.isInteger)) {
    svg.append(node('text', { x: sx(x), y: H - B + 16, 'text-anchor': 'middle' }, String(x)));
  }
  svg.append(node('line', { class: 'axis', x1: L, x2: W - R, y1: H - B, y2: H - B }));
  svg.append(node('line', { class: 'axis', x1: L, x2: L, y1: T, y2: H - B }));
  svg.append(node('text', { x: (L + W - R) / 2, y: H - 4, 'text-anchor': 'middle' }, xLabel));
  svg.append(node('text', { x: 14, y: (T + H - B) / 2, transform: `rotate(-90 14 ${(T + H - B) / 2})`, 'text-anchor': 'middle' }, yLabel));
  for (const s of series) {
    const pts = s.points.filter(([, y]) => Number.isFinite(y) && (!log || y > 0));
    if (pts.length === 0) continue;
    svg.append(node('path', { class: `series-${s.cls}`, d: pts.map(([x, y], i) => `${i ? 'L' : 'M'}${sx(x).toFixed(1)},${sy(y).toFixed(1)}`).join(' '), 'data-series': s.name }));
    if (dots || pts.length === 1) for (const [x, y] of pts) svg.append(node('circle', { class: `dot-${s.cls}`, cx: sx(x), cy: sy(y), r: 3 }));
  }
}

/** Round values (1, 2 or 5 × 10^k apart) between lo and hi, about `count` of them. */
function niceTicks(lo, hi, count) {
  const raw = (hi - lo) / count;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((m) => m * mag).find((s) => s >= raw) ?? 10 * mag;
  const out = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + 1e-9; v += step) out.push(Number((Math.round(v / step) * step).toFixed(10)));
  return out;
}

const label = (v) => (Math.abs(v) >= 100 || Number.isInteger(v) ? String(Math.round(v)) : Number(v.toPrecision(3)).toString());
