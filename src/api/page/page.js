// The status page (README "Status page"): polls /api/status every second for
// states, figures and events, and /api/history for the graphs, and redraws in
// place. Every text from the daemon goes in through textContent.
'use strict';

const STATUS_EVERY_MS = 1000;
const HISTORY_EVERY_MS = 2000;
const CHART_HEIGHT_PX = 100;
/** The narrowest x range: a young daemon's first samples are not squeezed into a 10-minute axis. */
const MIN_SPAN_S = 60;

/** The x range of every chart: the samples held, [start, end] in seconds. */
let xWindow;
const cards = new Map(); // uplink name -> { root, parts, charts }
let cardNames = '';

const css = (name) => getComputedStyle(document.documentElement).getPropertyValue(name).trim();

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  for (const c of children) node.append(c);
  return node;
}

function duration(ms) {
  const s = Math.max(0, Math.round(ms / 1000));
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m ${s % 60}s`;
  if (s < 86400) return `${Math.floor(s / 3600)}h ${Math.floor((s % 3600) / 60)}m`;
  return `${Math.floor(s / 86400)}d ${Math.floor((s % 86400) / 3600)}h`;
}

function rate(bps) {
  if (bps >= 1e9) return `${(bps / 1e9).toFixed(2)} Gbit/s`;
  if (bps >= 1e6) return `${(bps / 1e6).toFixed(2)} Mbit/s`;
  if (bps >= 1e3) return `${(bps / 1e3).toFixed(1)} kbit/s`;
  return `${Math.round(bps)} bit/s`;
}

const latency = (ms) => (ms === null || ms === undefined ? '–' : `${ms.toFixed(ms < 1 ? 2 : 1)} ms`);
const percent = (ratio) => `${(ratio * 100).toFixed(ratio > 0 && ratio < 0.1 ? 1 : 0)}%`;

/** The families a status uplink has: its own figures are IPv4's when it has no `families`. */
const familiesOf = (u) => (u.families ? Object.entries(u.families) : [['ipv4', u]]);

/** The smallest of 1, 2, 5 × 10^k at or above v: the top of a y axis. */
function niceCeil(v) {
  const power = 10 ** Math.floor(Math.log10(v));
  return [1, 2, 5, 10].map((m) => m * power).find((n) => n >= v * (1 - 1e-9));
}

/**
 * A small time chart over the history window; its legend is the coloured
 * labels in its title. The y axis runs from 0 to a round number at or above
 * the highest value (`floor` when all are lower), labelled at 0, half and top.
 */
function chart(container, title, series, format, floor) {
  const colors = ['--series-1', '--series-2', '--series-3'].map(css);
  const heading = el('h3', {}, title, ...series.map((label, i) => {
    const key = el('span', { class: 'key' }, label);
    key.style.setProperty('--key', colors[i]);
    return key;
  }));
  const box = el('div', { class: 'chart' }, heading);
  container.append(box);
  const axis = { stroke: css('--muted'), grid: { stroke: css('--line'), width: 1 }, ticks: { show: false }, font: '11px system-ui, sans-serif' };
  // Seconds on the labels while the graphs span a few minutes only.
  const clock = (u, ticks) => {
    const format = u.scales.x.max - u.scales.x.min < 300 ? { hour: '2-digit', minute: '2-digit', second: '2-digit', hourCycle: 'h23' } : { hour: '2-digit', minute: '2-digit', hourCycle: 'h23' };
    return ticks.map((t) => new Date(t * 1000).toLocaleTimeString([], format));
  };
  const top = (u) => u.scales.y.max;
  return new uPlot({
    width: Math.max(200, container.clientWidth), height: CHART_HEIGHT_PX,
    legend: { show: false },
    cursor: { drag: { x: false, y: false }, points: { show: false } },
    scales: { x: { time: true, range: (u, min, max) => xWindow ?? [min, max] }, y: { range: (u, min, max) => [0, niceCeil(Math.max(max ?? 0, floor))] } },
    axes: [{ ...axis, size: 28, values: clock, space: 90 },
      { ...axis, size: 62, splits: (u) => [0, top(u) / 2, top(u)], values: (u, ticks) => ticks.map(format) }],
    series: [{}, ...series.map((label, i) => ({ label, stroke: colors[i], width: 1.5, points: { show: false } }))],
  }, [[], ...series.map(() => [])], box);
}

/** Short axis labels: 20M, 512k, 1.5 ms. */
function shortRate(bps) {
  if (bps >= 1e9) return `${+(bps / 1e9).toFixed(1)}G`;
  if (bps >= 1e6) return `${+(bps / 1e6).toFixed(1)}M`;
  if (bps >= 1e3) return `${+(bps / 1e3).toFixed(1)}k`;
  return `${+bps.toFixed(0)}`;
}

function buildCard(u) {
  const root = el('article', { class: 'uplink', 'data-uplink': u.name });
  const name = el('h2', {}, u.name);
  const iface = el('span', { class: 'muted' });
  const states = el('div', { class: 'states' });
  const figures = el('dl', { class: 'figures' });
  const parts = { iface, states, figures, fields: {} };
  const per = u.families ? ' (ipv4 · ipv6)' : '';
  for (const [key, label] of [['share', 'share of new'], ['connections', 'connections'], ['rx', 'rx'], ['tx', 'tx'],
    ['latency', `latency${per}`], ['loss', `loss${per}`], ['address', `address${per}`], ['tier', 'tier · weight']]) {
    const dd = el('dd', { 'data-field': key });
    parts.fields[key] = dd;
    figures.append(el('div', {}, el('dt', {}, label), dd));
  }
  root.append(el('div', { class: 'head' }, name, iface), states, figures);
  document.getElementById('uplinks').append(root);
  const families = familiesOf(u).map(([f]) => f);
  const charts = {
    latency: chart(root, 'latency', families, (v) => `${+v.toFixed(v < 1 ? 2 : v < 10 ? 1 : 0)} ms`, 0.1),
    loss: chart(root, 'loss', families, (v) => `${v.toFixed(0)}%`, 100),
    throughput: chart(root, 'throughput, bit/s', ['rx', 'tx'], shortRate, 1000),
  };
  new ResizeObserver(() => {
    const width = Math.max(200, root.clientWidth - 32);
    for (const c of Object.values(charts)) if (c.width !== width) c.setSize({ width, height: CHART_HEIGHT_PX });
  }).observe(root);
  return { root, parts, charts, families };
}

function renderUplinks(uplinks, now) {
  const names = uplinks.map((u) => u.name).join('\n');
  if (names !== cardNames) {
    for (const c of cards.values()) c.root.remove();
    cards.clear();
    for (const u of uplinks) cards.set(u.name, buildCard(u));
    cardNames = names;
  }
  for (const u of uplinks) {
    const { root, parts } = cards.get(u.name);
    root.classList.toggle('down', u.state === 'down');
    root.dataset.state = u.state;
    parts.iface.textContent = u.interface;
    parts.states.replaceChildren(...familiesOf(u).map(([family, f]) => {
      const badge = el('span', { class: `state ${f.state}`, 'data-family': family, 'data-state': f.state, title: `since ${f.since}` },
        `${u.families ? `${family} ` : ''}${f.state}`, el('span', { class: 'since' }, `for ${duration(now - Date.parse(f.since))}`));
      return badge;
    }));
    const fields = parts.fields;
    fields.share.textContent = percent(u.share);
    fields.connections.textContent = String(u.connections);
    fields.latency.textContent = familiesOf(u).map(([, f]) => latency(f.latency_ms)).join(' · ');
    fields.loss.textContent = familiesOf(u).map(([, f]) => percent(f.loss)).join(' · ');
    fields.rx.textContent = rate(u.rx_bps);
    fields.tx.textContent = rate(u.tx_bps);
    // A router pair's backup does not hold the uplink's shared address (README "Router pair").
    fields.address.textContent = familiesOf(u).map(([, f]) => f.address ?? '–').join(' · ') + (u.holds_address === false ? ' (not held)' : '');
    fields.tier.textContent = `${u.tier} · ${u.weight}`;
  }
}

function renderEvents(events) {
  const list = document.getElementById('timeline');
  if (events.length === 0) {
    list.replaceChildren(el('li', { class: 'muted' }, 'no events yet'));
    return;
  }
  list.replaceChildren(...events.map((e) => {
    const at = new Date(e.at);
    const what = el('span', {}, el('span', { class: `event-${e.event}` }, `${e.uplink ?? 'uplinkd'}${e.family ? ` ${e.family}` : ''} ${e.event}`), `: ${e.reason}`);
    return el('li', {}, el('time', { datetime: e.at, title: e.at }, at.toLocaleTimeString()), what);
  }));
}

async function fetchJson(path) {
  const res = await fetch(path, { cache: 'no-store' });
  if (!res.ok) throw new Error(`${path}: HTTP ${res.status}`);
  return res.json();
}

async function refreshStatus() {
  try {
    const status = await fetchJson('api/status');
    const now = Date.now();
    renderUplinks(status.uplinks, now);
    renderEvents(status.events);
    const up = status.uplinks.filter((u) => u.state === 'up').length;
    document.getElementById('summary').textContent = `${up} of ${status.uplinks.length} uplinks up`;
    document.getElementById('updated').textContent = `updated ${new Date(now).toLocaleTimeString()}`;
    document.body.dataset.updated = String(now);
  } catch (err) {
    document.getElementById('summary').textContent = `the daemon does not answer (${err.message})`;
  }
}

async function refreshHistory() {
  if (cards.size === 0) return;
  try {
    const history = await fetchJson('api/history');
    const x = history.at.map((ms) => ms / 1000);
    // The samples held (the whole window once the ring is full), at least MIN_SPAN_S.
    const end = x.at(-1) ?? Date.now() / 1000;
    xWindow = [Math.min(Math.max(x[0] ?? end, end - history.window_ms / 1000), end - MIN_SPAN_S), end];
    const scale = (series, k) => series.map((v) => (v === null ? null : v * k));
    for (const [name, card] of cards) {
      const h = history.uplinks[name];
      if (!h) continue;
      const fam = card.families.map((f) => h.families[f] ?? { latency_ms: x.map(() => null), loss: x.map(() => null) });
      card.charts.latency.setData([x, ...fam.map((f) => f.latency_ms)]);
      card.charts.loss.setData([x, ...fam.map((f) => scale(f.loss, 100))]);
      card.charts.throughput.setData([x, h.rx_bps, h.tx_bps]);
    }
  } catch {
    // The status poll says when the daemon does not answer.
  }
}

async function start() {
  await refreshStatus();
  await refreshHistory();
  setInterval(refreshStatus, STATUS_EVERY_MS);
  setInterval(refreshHistory, HISTORY_EVERY_MS);
}

start();
