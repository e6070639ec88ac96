/* PoUW node dashboard: a dependency-free single-page app over the node's JSON API.
 *
 * Everything it shows that comes from the chain (job names, memos, addresses, ids) is untrusted.
 * The DOM is therefore built only with createElement/createElementNS, textContent and
 * setAttribute; there is no innerHTML, no string-built markup, and links are built from ids that
 * were checked against a strict pattern first. The node also sends a Content-Security-Policy that
 * forbids inline scripts, as a second line of defence.
 *
 * Updates: /api/status is polled every POLL_MS; when the tip moves (or the mempool or peers
 * change) the current view refreshes itself in place, without reloading the page.
 */
'use strict';

const POLL_MS = 2000;
const COIN = 100000000n;
const OPEN_ENDED_STEPS = 4294967295; // built-in jobs train "forever": total_steps = 2^32 - 1
const SVG_NS = 'http://www.w3.org/2000/svg';
const HEX64 = /^[0-9a-f]{64}$/;
const ADDRESS = /^pw1[02-9ac-hj-np-z]{6,90}$/;
const HEIGHT = /^[0-9]{1,15}$/;

// ---------------------------------------------------------------------------------------------
// DOM building: text is always a text node, never parsed as markup.

function setAttrs(el, attrs) {
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith('on') && typeof value === 'function') el.addEventListener(key.slice(2), value);
    else if (key === 'style' && typeof value === 'object') Object.assign(el.style, value); // CSSOM: allowed by the CSP
    else el.setAttribute(key, value === true ? '' : String(value));
  }
}

function fill(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  setAttrs(el, attrs);
  return fill(el, children);
}

function svg(tag, attrs, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  setAttrs(el, attrs);
  return fill(el, children);
}

const $ = (selector) => document.querySelector(selector);

// ---------------------------------------------------------------------------------------------
// Formatting.

const fmt = {
  int(n) {
    return n === null || n === undefined ? '—' : Number(n).toLocaleString('en-US');
  },
  coins(units) {
    let v;
    try { v = BigInt(units); } catch { return '—'; }
    const negative = v < 0n;
    if (negative) v = -v;
    let frac = (v % COIN).toString().padStart(8, '0').replace(/0+$/, '');
    if (frac.length < 2) frac = frac.padEnd(2, '0');
    return `${negative ? '−' : ''}${(v / COIN).toLocaleString('en-US')}.${frac}`;
  },
  si(n, unit) {
    if (n === null || n === undefined || !Number.isFinite(n)) return '—';
    const prefixes = ['', 'k', 'M', 'G', 'T', 'P', 'E', 'Z', 'Y'];
    let i = 0;
    while (Math.abs(n) >= 1000 && i < prefixes.length - 1) { n /= 1000; i += 1; }
    const digits = (Math.abs(n) >= 100 || (i === 0 && Number.isInteger(n))) ? 0 : Math.abs(n) >= 10 ? 1 : 2;
    return `${n.toFixed(digits)} ${prefixes[i]}${unit}`;
  },
  bytes(n) {
    if (n === null || n === undefined) return '—';
    if (n < 1024) return `${n} B`;
    if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KiB`;
    return `${(n / 1024 / 1024).toFixed(2)} MiB`;
  },
  duration(seconds) {
    if (seconds === null || seconds === undefined || !Number.isFinite(seconds)) return '—';
    const s = Math.max(0, Math.round(seconds));
    if (s < 60) return `${s} s`;
    if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
    if (s < 86400) return `${Math.floor(s / 3600)} h ${Math.floor(s % 3600 / 60)} min`;
    return `${Math.floor(s / 86400)} d ${Math.floor(s % 86400 / 3600)} h`;
  },
  age(seconds) {
    return seconds < 1 ? 'just now' : `${fmt.duration(seconds)} ago`;
  },
  time(ts) {
    return new Date(ts * 1000).toISOString().replace('T', ' ').replace(/\.\d+Z$/, ' UTC');
  },
  short(hex, n = 10) {
    return typeof hex === 'string' && hex.length > n + 2 ? `${hex.slice(0, n)}…` : String(hex ?? '—');
  },
  address(addr) {
    return typeof addr === 'string' && addr.length > 20 ? `${addr.slice(0, 10)}…${addr.slice(-6)}` : String(addr ?? '—');
  },
  log2Hex(hex) {
    const v = BigInt(`0x${hex}`);
    if (v === 0n) return -Infinity;
    const shift = Math.max(0, v.toString(2).length - 53);
    return Math.log2(Number(v >> BigInt(shift))) + shift;
  },
  percent(x) {
    return `${(100 * x).toFixed(1)} %`;
  },
  dims(spec) {
    return spec.dims.join(' → ');
  },
};

// ---------------------------------------------------------------------------------------------
// Links and small widgets.

const route = {
  block: (id) => `#/block/${encodeURIComponent(id)}`,
  job: (id) => `#/job/${encodeURIComponent(id)}`,
  tx: (id) => `#/tx/${encodeURIComponent(id)}`,
  account: (addr) => `#/account/${encodeURIComponent(addr)}`,
};

function blockLink(height, hash) {
  return h('a', { href: route.block(hash && HEX64.test(hash) ? hash : height), class: 'mono' }, fmt.int(height));
}

function hashLink(kind, hex, n = 12) {
  if (typeof hex !== 'string' || !HEX64.test(hex)) return h('span', { class: 'mono' }, String(hex ?? '—'));
  return h('a', { href: route[kind](hex), class: 'mono', title: hex }, fmt.short(hex, n));
}

function addressLink(addr, full = false) {
  if (typeof addr !== 'string' || !ADDRESS.test(addr)) return h('span', { class: 'mono' }, String(addr ?? '—'));
  return h('a', { href: route.account(addr), class: 'mono', title: addr }, full ? addr : fmt.address(addr));
}

function jobLink(jobId, names) {
  const name = names && names.get(jobId);
  if (typeof jobId !== 'string' || !HEX64.test(jobId)) return '—';
  return h('a', { href: route.job(jobId), title: jobId, class: name ? 'job-name' : 'mono' }, name || fmt.short(jobId));
}

/** An element showing "N s ago" for a timestamp, kept current by the clock tick. */
function ageOf(ts) {
  return h('span', { class: 'age', 'data-ts': ts, title: fmt.time(ts) }, fmt.age(nodeNow() - ts));
}

function pill(text, kind) {
  return h('span', { class: `pill pill-${kind || text}` }, text);
}

function panel(title, attrs, ...body) {
  return h('section', { class: 'panel', ...attrs }, h('header', { class: 'panel-head' }, title), ...body);
}

function facts(rows) {
  return h('dl', { class: 'facts' }, rows.filter(Boolean).map(([label, value]) => [h('dt', {}, label), h('dd', {}, value)]));
}

function table(name, columns, rows, empty) {
  if (!rows.length) return h('p', { class: 'empty', 'data-empty': name }, empty);
  return h('div', { class: 'table-wrap' },
    h('table', { 'data-table': name },
      h('thead', {}, h('tr', {}, columns.map(([label, cls]) => h('th', { class: cls }, label)))),
      h('tbody', {}, rows)));
}

function row(attrs, cells, columns) {
  return h('tr', attrs, cells.map((cell, i) => h('td', { class: columns[i][1] }, cell)));
}

function card(id, label, value, note) {
  return h('div', { class: 'card', id },
    h('div', { class: 'card-label' }, label),
    h('div', { class: 'card-value' }, value),
    h('div', { class: 'card-note' }, note));
}

// ---------------------------------------------------------------------------------------------
// Charts (inline SVG, no library).

function niceStep(span, count) {
  const raw = span / Math.max(1, count);
  const power = 10 ** Math.floor(Math.log10(raw));
  const unit = raw / power;
  return (unit < 1.5 ? 1 : unit < 3 ? 2 : unit < 7 ? 5 : 10) * power;
}

function linearTicks(lo, hi, count) {
  const step = niceStep(hi - lo, count);
  const ticks = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) ticks.push(Number(v.toPrecision(12)));
  return ticks;
}

function logTicks(lo, hi) {
  const ticks = [];
  const decades = Math.log10(hi / lo);
  const mantissas = decades <= 1.5 ? [1, 2, 5] : decades <= 4 ? [1, 3] : [1];
  for (let e = Math.floor(Math.log10(lo)); e <= Math.ceil(Math.log10(hi)); e += 1) {
    for (const m of mantissas) {
      const v = m * 10 ** e;
      if (v >= lo * 0.999 && v <= hi * 1.001) ticks.push(v);
    }
  }
  return ticks;
}

function compact(v) {
  if (v === 0) return '0';
  const a = Math.abs(v);
  if (a >= 1e4 || a < 1e-2) return v.toExponential(0).replace('e+', 'e');
  return String(Number(v.toPrecision(3)));
}

const CHART = { width: 560, height: 240, left: 56, right: 16, top: 16, bottom: 40 };

function frame(yLabel, xLabel, xTicks, yTicks, xPos, yPos, xFormat, yFormat) {
  const { width, height, left, right, top, bottom } = CHART;
  return [
    yTicks.map((v) => [
      svg('line', { class: 'grid', x1: left, x2: width - right, y1: yPos(v), y2: yPos(v) }),
      svg('text', { class: 'tick', x: left - 8, y: yPos(v) + 4, 'text-anchor': 'end' }, yFormat(v)),
    ]),
    xTicks.map((v) => svg('text', { class: 'tick', x: xPos(v), y: height - bottom + 16, 'text-anchor': 'middle' }, xFormat(v))),
    svg('line', { class: 'axis', x1: left, x2: width - right, y1: height - bottom, y2: height - bottom }),
    svg('text', { class: 'axis-label', x: (left + width - right) / 2, y: height - 6, 'text-anchor': 'middle' }, xLabel),
    svg('text', { class: 'axis-label', x: 12, y: (top + height - bottom) / 2, 'text-anchor': 'middle',
      transform: `rotate(-90 12 ${(top + height - bottom) / 2})` }, yLabel),
  ];
}

/** A line chart of points [{x, y, label}]; `log` plots y on a log scale (for losses). */
function lineChart({ id, points, xLabel, yLabel, yFormat = compact, yDomain, log = false, tone = 'blue' }) {
  const { width, height, left, right, top, bottom } = CHART;
  const usable = points.filter((p) => Number.isFinite(p.x) && Number.isFinite(p.y) && (!log || p.y > 0));
  const root = svg('svg', { id, class: `chart tone-${tone}`, viewBox: `0 0 ${width} ${height}`, role: 'img',
    'aria-label': `${yLabel} against ${xLabel}` });
  if (!usable.length) {
    return fill(root, [svg('text', { class: 'tick', x: width / 2, y: height / 2, 'text-anchor': 'middle' }, 'no data yet')]);
  }
  let [x0, x1] = [Math.min(...usable.map((p) => p.x)), Math.max(...usable.map((p) => p.x))];
  if (x0 === x1) { x0 -= 1; x1 += 1; }
  let [y0, y1] = yDomain || [Math.min(...usable.map((p) => p.y)), Math.max(...usable.map((p) => p.y))];
  if (log) { y0 /= 1.15; y1 *= 1.15; }
  if (y0 === y1) { y0 = log ? y0 / 2 : y0 - 1; y1 = log ? y1 * 2 : y1 + 1; }
  const fy = log ? Math.log10 : (v) => v;
  const xPos = (v) => left + (v - x0) / (x1 - x0) * (width - left - right);
  const yPos = (v) => height - bottom - (fy(v) - fy(y0)) / (fy(y1) - fy(y0)) * (height - top - bottom);
  const xTicks = linearTicks(x0, x1, 6).filter((v) => Number.isInteger(v));
  const yTicks = log ? logTicks(y0, y1) : linearTicks(y0, y1, 5);
  const path = usable.map((p, i) => `${i ? 'L' : 'M'}${xPos(p.x).toFixed(1)},${yPos(p.y).toFixed(1)}`).join(' ');
  const area = `${path} L${xPos(usable[usable.length - 1].x).toFixed(1)},${height - bottom} L${xPos(usable[0].x).toFixed(1)},${height - bottom} Z`;
  return fill(root, [
    frame(yLabel, xLabel, xTicks, yTicks, xPos, yPos, fmt.int, yFormat),
    log ? null : svg('path', { class: 'area', d: area }),
    svg('path', { class: 'line', d: path }),
    usable.length <= 80 ? usable.map((p) => svg('circle', { class: 'dot', cx: xPos(p.x), cy: yPos(p.y), r: 2.6 },
      svg('title', {}, p.label))) : null,
  ]);
}

/** Bars of the intervals between recent blocks, with the preset's target block time dashed. */
function intervalChart(blocks, blockTime) {
  const { width, height, left, right, top, bottom } = CHART;
  const root = svg('svg', { id: 'interval-chart', class: 'chart tone-blue', viewBox: `0 0 ${width} ${height}`,
    role: 'img', 'aria-label': 'Seconds between recent blocks' });
  if (!blocks.length) {
    return fill(root, [svg('text', { class: 'tick', x: width / 2, y: height / 2, 'text-anchor': 'middle' }, 'waiting for blocks')]);
  }
  const yMax = Math.max(blockTime * 2, ...blocks.map((b) => b.interval), 1);
  const step = (width - left - right) / blocks.length;
  const yPos = (v) => height - bottom - Math.max(0, v) / yMax * (height - top - bottom);
  const xPos = (i) => left + (i + 0.5) * step;
  const xTicks = blocks.map((b, i) => i).filter((i) => i % Math.ceil(blocks.length / 6) === 0);
  return fill(root, [
    frame('seconds', 'block height', xTicks, linearTicks(0, yMax, 4), xPos, yPos, (i) => fmt.int(blocks[i].height), compact),
    blocks.map((b, i) => svg('rect', { class: 'bar', x: left + i * step + step * 0.15, width: Math.max(1, step * 0.7),
      y: yPos(b.interval), height: Math.max(b.interval > 0 ? 1 : 0.5, height - bottom - yPos(b.interval)) },
    svg('title', {}, `block ${b.height}: ${b.interval} s`))),
    svg('line', { class: 'target-line', x1: left, x2: width - right, y1: yPos(blockTime), y2: yPos(blockTime) }),
    svg('text', { class: 'tick target-label', x: width - right - 4, y: yPos(blockTime) - 6, 'text-anchor': 'end' },
      `target ${blockTime} s`),
  ]);
}

// ---------------------------------------------------------------------------------------------
// The node: API access, polled state, and the node's clock.

class ApiError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

async function api(path) {
  const response = await fetch(path, { cache: 'no-store', headers: { Accept: 'application/json' } });
  const body = await response.json().catch(() => null);
  if (!response.ok) throw new ApiError(response.status, (body && body.error) || response.statusText);
  return body;
}

const store = {
  status: null, network: null, blocks: [], jobs: [], peers: [], mempool: null,
  clockOffset: 0, lastUpdate: 0, online: false,
};

function nodeNow() {
  return Date.now() / 1000 + store.clockOffset;
}

function jobNames() {
  return new Map(store.jobs.map((j) => [j.job_id, j.name]));
}

async function refreshChain() {
  const [network, blocks, jobs] = await Promise.all([
    api('/api/network?window=60'), api('/api/blocks?limit=10'), api('/api/jobs'),
  ]);
  store.clockOffset = network.time - Date.now() / 1000;
  Object.assign(store, { network, blocks: blocks.blocks, jobs: jobs.jobs });
}

async function poll() {
  const status = await api('/api/status');
  const before = store.status;
  const tipMoved = !before || before.tip !== status.tip;
  const poolMoved = !before || before.mempool !== status.mempool || tipMoved;
  const [peers, mempool] = await Promise.all([
    api('/api/peers').then((r) => r.peers).catch(() => []),
    poolMoved ? api('/api/mempool') : Promise.resolve(store.mempool),
  ]);
  const peersMoved = JSON.stringify(peers) !== JSON.stringify(store.peers);
  if (tipMoved) await refreshChain();
  Object.assign(store, { status, peers, mempool, lastUpdate: Date.now(), online: true });
  return tipMoved || poolMoved || peersMoved ? { tipMoved } : null;
}

// ---------------------------------------------------------------------------------------------
// Shared pieces of views.

const BLOCK_COLUMNS = [['Height', 'num'], ['Age', ''], ['Miner', ''], ['Job', ''], ['Steps', 'num'],
  ['Winning tile', ''], ['Txs', 'num'], ['Size', 'num']];

function tileText(tile) {
  if (!tile) return h('span', { class: 'muted' }, 'none');
  return [`step ${tile.step} · matmul ${tile.matmul} · tile ${tile.tile} `,
    h('span', { class: 'muted' }, tile.shape.join('×'))];
}

function blocksTable(blocks, names) {
  return table('blocks', BLOCK_COLUMNS, blocks.map((b) => row({ 'data-height': b.height }, [
    blockLink(b.height, b.hash), ageOf(b.timestamp), addressLink(b.miner), jobLink(b.job_id, names),
    fmt.int(b.steps), tileText(b.tile), fmt.int(b.txs), fmt.bytes(b.size),
  ], BLOCK_COLUMNS)), 'No blocks yet.');
}

function progress(job) {
  if (job.spec.total_steps >= OPEN_ENDED_STEPS) return [fmt.int(job.steps_done), h('span', { class: 'muted' }, ' steps, open-ended')];
  const share = job.spec.total_steps ? job.steps_done / job.spec.total_steps : 0;
  return h('div', { class: 'progress', title: fmt.percent(share) },
    h('div', { class: 'progress-text' }, `${fmt.int(job.steps_done)} / ${fmt.int(job.spec.total_steps)}`),
    h('div', { class: 'progress-bar' }, h('div', { class: 'progress-fill', style: { width: `${(100 * Math.min(1, share)).toFixed(1)}%` } })));
}

function budget(job) {
  if (!job.spec.fee_per_step) return h('span', { class: 'muted' }, 'no fee');
  return [fmt.coins(job.escrow_spent), h('span', { class: 'muted' }, ' spent · '), fmt.coins(job.escrow_left),
    h('span', { class: 'muted' }, ' left')];
}

const JOB_COLUMNS = [['Name', ''], ['Status', ''], ['Owner', ''], ['Model', ''], ['Dataset', ''],
  ['Progress', ''], ['Accuracy', 'num'], ['Budget (coins)', ''], ['Updated', 'num']];

function jobsTable(jobs) {
  return table('jobs', JOB_COLUMNS, jobs.map((j) => row({ 'data-job': j.job_id }, [
    h('a', { href: route.job(j.job_id), class: 'job-name' }, j.name || fmt.short(j.job_id)),
    pill(j.status), addressLink(j.owner),
    [fmt.dims(j.spec), h('span', { class: 'muted' }, ` · batch ${j.spec.batch_size}`)],
    h('span', { class: 'mono', title: j.spec.dataset_id }, fmt.short(j.spec.dataset_id, 8)),
    progress(j),
    j.accuracy === null || j.accuracy === undefined ? h('span', { class: 'muted' }, '—')
      : h('span', { class: 'job-accuracy', title: 'latest held-out accuracy' }, fmt.percent(j.accuracy)),
    budget(j), fmt.int(j.updated_height),
  ], JOB_COLUMNS)), 'No jobs on chain.');
}

function txSummary(tx, names) {
  switch (tx.kind) {
    case 'transfer':
      return [fmt.coins(tx.amount), h('span', { class: 'muted' }, ' to '), addressLink(tx.to),
        tx.memo ? h('span', { class: 'memo' }, tx.memo) : null];
    case 'job_submit':
      return [h('span', { class: 'job-name' }, tx.name), h('span', { class: 'muted' },
        ` · ${fmt.dims(tx.spec)} · ${fmt.int(tx.spec.total_steps)} steps at ${fmt.coins(tx.spec.fee_per_step)} a step`)];
    case 'job_cancel':
      return ['cancel ', jobLink(tx.job_id, names)];
    case 'dataset_publish':
      return [h('span', { class: 'job-name' }, tx.name), h('span', { class: 'muted' }, ` · ${fmt.bytes(tx.size)} · `),
        h('span', { class: 'mono', title: tx.dataset_id }, fmt.short(tx.dataset_id, 8))];
    default:
      return String(tx.kind);
  }
}

const KIND = { transfer: 'Transfer', job_submit: 'Job submit', job_cancel: 'Job cancel', dataset_publish: 'Dataset' };

const TX_COLUMNS = [['Txid', ''], ['Kind', ''], ['From', ''], ['Details', 'wide'], ['Fee', 'num'], ['Size', 'num']];

function txTable(name, txs, names, empty) {
  return table(name, TX_COLUMNS, txs.map((tx) => row({ 'data-txid': tx.txid }, [
    hashLink('tx', tx.txid, 10), KIND[tx.kind] || String(tx.kind), addressLink(tx.from), txSummary(tx, names),
    fmt.coins(tx.fee), fmt.bytes(tx.size),
  ], TX_COLUMNS)), empty);
}

function peersTable(peers) {
  const columns = [['Peer', ''], ['Direction', ''], ['Height', 'num'], ['Latency', 'num'], ['Connected', 'num']];
  return table('peers', columns, peers.map((p) => row({}, [
    [h('div', { class: 'mono' }, String(p.address ?? '—')), h('div', { class: 'muted small' }, String(p.user_agent || 'unknown agent'))],
    String(p.direction ?? '—'), fmt.int(p.height),
    p.latency_ms === null || p.latency_ms === undefined ? '—' : `${fmt.int(p.latency_ms)} ms`,
    fmt.duration(p.connected_s),
  ], columns)), 'No peers connected: this node is on its own.');
}

function errorBox(error) {
  return h('div', { class: 'notice notice-error', role: 'alert' }, error instanceof ApiError && error.status === 404
    ? `Not found: ${error.message}` : `Could not load: ${error.message}`);
}

function title(text, ...extra) {
  return h('div', { class: 'title-row' }, h('h1', {}, text), ...extra);
}

// ---------------------------------------------------------------------------------------------
// Views. Each view mounts into the page and returns an update function the poller calls when the
// chain moves; updates rebuild only the parts that change, so forms keep their focus.

const views = {};

views.overview = (el) => {
  const cards = h('div', { class: 'cards', id: 'cards' });
  const blocks = h('div');
  const intervals = h('div');
  const jobs = h('div');
  const peers = h('div');
  const mempool = h('div');
  fill(el, [
    cards,
    panel(['Recent blocks', h('a', { href: '#/blocks', class: 'panel-link' }, 'All blocks →')], { id: 'recent-blocks' }, blocks),
    panel(['Training jobs', h('a', { href: '#/jobs', class: 'panel-link' }, 'All jobs →')], { id: 'jobs' }, jobs),
    h('div', { class: 'grid-2 even' },
      panel('Block intervals', { id: 'intervals' }, intervals),
      h('div', { class: 'stack' }, panel('Peers', { id: 'peers' }, peers), panel('Mempool', { id: 'mempool' }, mempool))),
  ]);
  return () => {
    const { status, network } = store;
    if (!status || !network) return;
    const rate = network.mac_rate === null ? null : Number(network.mac_rate);
    const meanInterval = network.window_blocks ? network.window_seconds / network.window_blocks : null;
    cards.replaceChildren(
      card('stat-height', 'Height', fmt.int(status.height), hashLink('block', status.tip, 16)),
      card('stat-tip-age', 'Tip age', h('span', { class: 'age', 'data-ts': status.tip_timestamp }, fmt.age(nodeNow() - status.tip_timestamp)),
        fmt.time(status.tip_timestamp)),
      card('stat-work-rate', 'Useful work', fmt.si(rate, 'MAC/s'),
        rate === null ? 'needs blocks a second apart' : `over the last ${fmt.int(network.window_blocks)} blocks`),
      card('stat-block-work', 'Work per block', fmt.si(Number(network.expected_block_macs), 'MAC'),
        h('span', { title: `target 0x${status.next_target}` }, `target 2^${fmt.log2Hex(status.next_target).toFixed(2)}`)),
      card('stat-block-time', 'Mean block time', meanInterval === null ? '—' : `${meanInterval.toFixed(2)} s`,
        `target ${status.block_time} s`),
      card('stat-mempool', 'Mempool', `${fmt.int(status.mempool)} txs`, fmt.bytes(status.mempool_bytes)),
      card('stat-peers', 'Peers', fmt.int(status.peers), status.sync),
      card('stat-rejected', 'Rejected blocks', fmt.int(status.blocks_rejected ?? 0),
        `${fmt.int(status.blocks_imported ?? 0)} accepted since start`),
      card('stat-chain', 'Network', status.preset, `chain id 0x${status.chain_id.toString(16)}`),
    );
    blocks.replaceChildren(blocksTable(store.blocks, jobNames()));
    intervals.replaceChildren(intervalChart(network.blocks, network.block_time),
      h('p', { class: 'caption' }, 'Expected MACs per block = reference work × 2^256 ∕ target; the rate divides the ',
        'expected work of the blocks in the window by the time they took.'));
    jobs.replaceChildren(jobsTable(store.jobs.slice(0, 8)));
    peers.replaceChildren(peersTable(store.peers));
    const pending = store.mempool ? store.mempool.txs.slice(0, 10) : [];
    mempool.replaceChildren(txTable('mempool', pending, jobNames(), 'The mempool is empty.'));
  };
};

views.blocks = async (el, arg, query) => {
  const before = HEIGHT.test(query.get('before') || '') ? Number(query.get('before')) : null;
  const body = h('div');
  const nav = h('div', { class: 'pager' });
  fill(el, [title('Blocks'), panel('Canonical chain, newest first', {}, body, nav)]);
  return async () => {
    const { blocks } = await api(`/api/blocks?limit=25${before === null ? '' : `&before=${before}`}`);
    body.replaceChildren(blocksTable(blocks, jobNames()));
    const lowest = blocks.length ? blocks[blocks.length - 1].height : 0;
    nav.replaceChildren(
      before !== null ? h('a', { href: '#/blocks', class: 'button' }, '← Newest') : null,
      lowest > 0 ? h('a', { href: `#/blocks?before=${lowest - 1}`, class: 'button' }, 'Older →') : null,
    );
  };
};

views.block = async (el, arg) => {
  if (!HEX64.test(arg) && !HEIGHT.test(arg)) throw new ApiError(404, 'not a block height or hash');
  return async () => {
    const b = await api(`/api/blocks/${encodeURIComponent(arg)}`);
    const names = jobNames();
    const tip = store.status ? store.status.height : b.height;
    el.replaceChildren(
      title(`Block ${fmt.int(b.height)}`, h('div', { class: 'pager' },
        b.height > 0 ? h('a', { href: route.block(b.height - 1), class: 'button' }, '← Parent') : null,
        b.height < tip ? h('a', { href: route.block(b.height + 1), class: 'button' }, 'Child →') : null)),
      h('div', { class: 'grid-2 even' },
        panel('Block', { id: 'block-summary' }, facts([
          ['Hash', h('span', { class: 'mono break' }, b.hash)],
          ['Time', [fmt.time(b.timestamp), ' (', ageOf(b.timestamp), ')']],
          ['Miner', addressLink(b.miner, true)],
          ['Job', jobLink(b.job_id, names)],
          ['Steps of progress', fmt.int(b.steps)],
          ['Winning tile', tileText(b.tile)],
          ['Transactions', fmt.int(b.txs)],
          ['Size', `${fmt.bytes(b.size)} (work data ${fmt.bytes(b.work_bytes)}, proof ${fmt.bytes(b.seal.proof_bytes)})`],
        ])),
        panel('Header and seal', { id: 'block-header' }, facts([
          ['Parent', b.height > 0 ? hashLink('block', b.header.prev_hash, 24) : 'none (genesis)'],
          ['Target', h('span', { class: 'mono', title: b.header.target }, `2^${fmt.log2Hex(b.header.target).toFixed(2)}`)],
          ['Tx root', h('span', { class: 'mono break' }, b.header.tx_root)],
          ['Start state', h('span', { class: 'mono break' }, b.header.start_state_hash)],
          ['Final state', h('span', { class: 'mono break' }, b.seal.final_state_hash)],
          ['Trajectory root', h('span', { class: 'mono break' }, b.seal.trajectory_root)],
          ['State root', h('span', { class: 'mono break' }, b.seal.state_root)],
        ]))),
      panel('Transactions', { id: 'block-txs' }, txTable('block-txs', b.transactions, names, 'No transactions in this block.')),
    );
  };
};

views.jobs = async (el) => {
  const body = h('div');
  fill(el, [title('Training jobs'), panel('Jobs by last activity', {}, body)]);
  return async () => {
    body.replaceChildren(jobsTable(store.jobs));
  };
};

views.job = async (el, arg) => {
  if (!HEX64.test(arg)) throw new ApiError(404, 'not a job id');
  return async () => {
    const job = await api(`/api/jobs/${arg}`);
    const history = job.history || [];
    const latest = history.length ? history[history.length - 1] : null;
    const points = (key) => history.map((r) => ({ x: r.steps, y: r[key],
      label: `step ${r.steps} (block ${r.height}): accuracy ${fmt.percent(r.accuracy)}, loss ${r.loss.toFixed(4)}` }));
    el.replaceChildren(
      title(h('span', { class: 'job-name', id: 'job-title' }, job.name || 'unnamed job'), pill(job.status),
        h('a', { class: 'button primary', id: 'download-model', href: `/api/jobs/${arg}/model?format=npz`, download: `${arg.slice(0, 16)}.npz` },
          'Download model (.npz)')),
      h('div', { class: 'cards' },
        card('job-accuracy-now', 'Held-out accuracy', latest ? fmt.percent(latest.accuracy) : '—',
          latest ? `${fmt.int(latest.correct)} of ${fmt.int(latest.total)} correct` : 'not evaluated yet'),
        card('job-loss-now', 'Held-out loss', latest ? latest.loss.toFixed(4) : '—', 'mean per example'),
        card('job-steps', 'Steps trained', fmt.int(job.steps_done),
          job.spec.total_steps >= OPEN_ENDED_STEPS ? 'open-ended' : `${fmt.int(job.steps_left)} left`),
        card('job-budget', 'Budget spent', job.spec.fee_per_step ? fmt.coins(job.escrow_spent) : '—',
          job.spec.fee_per_step ? `${fmt.coins(job.escrow_left)} left in escrow` : 'no fee (built-in job)')),
      h('div', { class: 'grid-2 even' },
        panel('Held-out accuracy', { id: 'job-accuracy' }, lineChart({ id: 'accuracy-chart', points: points('accuracy'),
          xLabel: 'training steps', yLabel: 'accuracy', yDomain: [0, 1], yFormat: (v) => `${Math.round(v * 100)}%`, tone: 'green' })),
        panel('Held-out loss', { id: 'job-loss' }, lineChart({ id: 'loss-chart', points: points('loss'),
          xLabel: 'training steps', yLabel: 'loss (log scale)', log: true, tone: 'amber' }))),
      panel('Job', { id: 'job-facts' }, facts([
        ['Job id', h('span', { class: 'mono break' }, job.job_id)],
        ['Owner', addressLink(job.owner, true)],
        ['Model', `${fmt.dims(job.spec)} (batch ${job.spec.batch_size}, learning rate 2^-${job.spec.lr_shift})`],
        ['Dataset', h('span', { class: 'mono break' }, job.spec.dataset_id)],
        ['Steps', `${fmt.int(job.steps_done)} done of ${job.spec.total_steps >= OPEN_ENDED_STEPS ? 'an open-ended budget' : fmt.int(job.spec.total_steps)}`],
        ['Fee per step', fmt.coins(job.spec.fee_per_step)],
        ['Escrow', `${fmt.coins(job.escrow_spent)} spent, ${fmt.coins(job.escrow_left)} left`],
        ['Model hash', h('span', { class: 'mono break' }, job.model_hash)],
        ['Active', `created at block ${fmt.int(job.created_height)}, last trained at block ${fmt.int(job.updated_height)}`],
      ])),
    );
  };
};

views.account = async (el, arg) => {
  const input = h('input', { type: 'text', id: 'account-input', value: arg, placeholder: 'pw1…', spellcheck: 'false',
    autocomplete: 'off', 'aria-label': 'Address' });
  const form = h('form', { class: 'lookup', id: 'account-form', onsubmit: (event) => {
    event.preventDefault();
    const addr = input.value.trim().toLowerCase();
    if (addr) location.hash = route.account(addr);
  } }, input, h('button', { type: 'submit', class: 'button primary' }, 'Look up'));
  const body = h('div', { id: 'account-body', class: 'stack' });
  fill(el, [title('Account'), form, body]);
  if (!arg) {
    body.replaceChildren(h('p', { class: 'empty' }, 'Enter an address to see its balance, nonce and recent transactions.'));
    return null;
  }
  return async () => {
    const account = await api(`/api/accounts/${encodeURIComponent(arg)}`);
    const names = jobNames();
    const columns = [['When', ''], ['Block', 'num'], ['Txid', ''], ['Kind', ''], ['Counterparty', ''],
      ['Amount', 'num'], ['Fee', 'num'], ['Memo / details', 'wide']];
    const historyRow = (tx) => {
      const outgoing = tx.from === account.address;
      const incoming = tx.to === account.address;
      const direction = outgoing && incoming ? 'self' : outgoing ? 'out' : 'in';
      const transfer = tx.kind === 'transfer';
      return row({ 'data-txid': tx.txid }, [
        tx.timestamp ? ageOf(tx.timestamp) : pill('pending'),
        tx.height === undefined ? '—' : blockLink(tx.height, tx.block_hash),
        hashLink('tx', tx.txid, 8),
        [KIND[tx.kind] || String(tx.kind), ' ', pill(direction, direction)],
        transfer ? addressLink(outgoing ? tx.to : tx.from) : '—',
        transfer ? `${direction === 'in' ? '+' : direction === 'out' ? '−' : ''}${fmt.coins(tx.amount)}` : '—',
        outgoing ? fmt.coins(tx.fee) : '—',
        transfer ? tx.memo && h('span', { class: 'memo' }, tx.memo) : txSummary(tx, names),
      ], columns);
    };
    body.replaceChildren(
      h('div', { class: 'cards' },
        card('account-balance', 'Balance', fmt.coins(account.balance), 'coins'),
        card('account-nonce', 'Nonce', fmt.int(account.nonce), `next ${fmt.int(account.next_nonce)}`),
        card('account-pending', 'Pending', fmt.int(account.pending.length), 'in the mempool')),
      panel('Pending and recent transactions', { id: 'account-history' },
        table('account-history', columns, [...account.pending, ...account.history].map(historyRow),
          'No transactions in the recent blocks.')),
    );
  };
};

views.tx = async (el, arg) => {
  if (!HEX64.test(arg)) throw new ApiError(404, 'not a txid');
  return async () => {
    const tx = await api(`/api/tx/${arg}`);
    const detail = [];
    if (tx.kind === 'transfer') {
      detail.push(['To', addressLink(tx.to, true)], ['Amount', `${fmt.coins(tx.amount)} coins`],
        ['Memo', h('span', { class: 'memo' }, tx.memo || '—')]);
    } else if (tx.kind === 'job_submit') {
      detail.push(['Job name', h('span', { class: 'job-name' }, tx.name)], ['Model', fmt.dims(tx.spec)],
        ['Budget', `${fmt.int(tx.spec.total_steps)} steps at ${fmt.coins(tx.spec.fee_per_step)} coins a step`]);
    } else if (tx.kind === 'job_cancel') {
      detail.push(['Job', jobLink(tx.job_id, jobNames())]);
    } else if (tx.kind === 'dataset_publish') {
      detail.push(['Name', h('span', { class: 'job-name' }, tx.name)], ['Size', fmt.bytes(tx.size)],
        ['Dataset id', h('span', { class: 'mono break' }, tx.dataset_id)]);
    }
    el.replaceChildren(title(KIND[tx.kind] || 'Transaction', pill(tx.status)),
      panel('Transaction', { id: 'tx-facts' }, facts([
        ['Txid', h('span', { class: 'mono break' }, tx.txid)],
        ['Status', tx.status === 'confirmed'
          ? [`confirmed in block `, blockLink(tx.height, tx.block_hash), ` (${fmt.int(tx.confirmations)} confirmations)`]
          : 'pending in the mempool'],
        ['From', addressLink(tx.from, true)],
        ...detail,
        ['Fee', `${fmt.coins(tx.fee)} coins`],
        ['Nonce', fmt.int(tx.nonce)],
        ['Size', fmt.bytes(tx.size)],
      ])));
  };
};

/** Resolves a search: heights and pw1 addresses directly, 64 hex digits by asking the node. */
views.search = async (el, arg) => {
  const q = arg.trim().toLowerCase();
  let target = null;
  if (HEIGHT.test(q)) target = route.block(q);
  else if (ADDRESS.test(q)) target = route.account(q);
  else if (HEX64.test(q)) {
    for (const [kind, path] of [['block', `/api/blocks/${q}`], ['job', `/api/jobs/${q}`], ['tx', `/api/tx/${q}`]]) {
      if (await api(path).then(() => true, () => false)) { target = route[kind](q); break; }
    }
  }
  if (target) location.replace(target);
  else fill(el, [title('Search'), h('p', { class: 'notice' }, 'Nothing on this chain matches ', h('span', { class: 'mono' }, arg), '.')]);
  return null;
};

// ---------------------------------------------------------------------------------------------
// Router, poller and clock.

let current = { el: null, update: null, rendered: false };

function parseRoute() {
  const [path, search] = location.hash.replace(/^#\/?/, '').split('?');
  const [name, ...rest] = path.split('/');
  let arg = '';
  try { arg = decodeURIComponent(rest.join('/')); } catch { arg = ''; }
  return { name: views[name] ? name : 'overview', arg, query: new URLSearchParams(search || '') };
}

/** Refreshes the current view. A failure replaces a view that never rendered (a block that does not
 * exist); a view that did render keeps its last content, and the next poll tries again. */
async function runUpdate(view) {
  if (!view.update || view !== current) return;
  try {
    await view.update();
    view.rendered = true;
  } catch (error) {
    if (view !== current) return;
    if (!view.rendered) view.el.replaceChildren(errorBox(error));
  }
}

async function navigate() {
  const { name, arg, query } = parseRoute();
  const view = { el: h('div', { class: `view view-${name}`, 'data-view': name }), update: null, rendered: false };
  current = view;
  for (const link of document.querySelectorAll('#nav a')) {
    link.classList.toggle('active', link.dataset.route === name || link.dataset.route === `${name}s`);
  }
  $('#view').replaceChildren(view.el);
  window.scrollTo(0, 0);
  try {
    view.update = await views[name](view.el, arg, query);
  } catch (error) {
    if (view === current) view.el.replaceChildren(errorBox(error));
    return;
  }
  await runUpdate(view);
}

function staleAfter(blockTime) {
  // The tip counts as stale after ten block times (at least a minute): a warning, not a verdict.
  return Math.max(60, 10 * blockTime);
}

function renderChrome() {
  const live = $('#live');
  live.classList.toggle('offline', !store.online);
  $('#live-text').textContent = store.online
    ? `live · updated ${fmt.duration((Date.now() - store.lastUpdate) / 1000)} ago`
    : 'offline · retrying';
  const s = store.status;
  if (!s) return;
  const age = nodeNow() - s.tip_timestamp;
  const stale = age > staleAfter(s.block_time);
  $('#chainbar').replaceChildren(...[h('div', { class: 'chainbar-inner' },
    pill(s.preset, 'preset'), h('span', {}, 'height ', h('strong', { id: 'chain-height' }, fmt.int(s.height))),
    h('span', {}, 'genesis ', h('span', { class: 'mono', title: s.genesis }, fmt.short(s.genesis, 12))),
    h('span', {}, 'sync ', h('strong', {}, s.sync))),
  stale ? h('div', { class: 'notice notice-warning', id: 'stale-tip', role: 'status' },
    `The tip is ${fmt.age(age)} old (blocks are due every ${s.block_time} s): no miner may be running, `,
    'or this node may be cut off from its peers.') : null].filter(Boolean));
}

async function pollLoop() {
  try {
    const change = await poll();
    renderChrome();
    if (change && (change.tipMoved || !current.rendered || parseRoute().name === 'overview')) {
      await runUpdate(current);
    }
  } catch {
    store.online = false;
    renderChrome();
  }
  setTimeout(pollLoop, POLL_MS);
}

function tick() {
  const now = nodeNow();
  for (const el of document.querySelectorAll('[data-ts]')) {
    el.textContent = fmt.age(now - Number(el.getAttribute('data-ts')));
  }
  if (store.online) $('#live-text').textContent = `live · updated ${fmt.duration((Date.now() - store.lastUpdate) / 1000)} ago`;
}

function start() {
  $('#search').addEventListener('submit', (event) => {
    event.preventDefault();
    const q = $('#search-input').value.trim();
    if (q) location.hash = `#/search/${encodeURIComponent(q)}`;
    $('#search-input').value = '';
  });
  window.addEventListener('hashchange', navigate);
  setInterval(tick, 1000);
  poll().then(renderChrome, () => { store.online = false; renderChrome(); })
    .finally(() => { navigate(); setTimeout(pollLoop, POLL_MS); });
}

start();
