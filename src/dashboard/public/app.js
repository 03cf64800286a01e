// The berth dashboard: renders the server's snapshots (GET /v1/dashboard/stream, Server-Sent
// Events) and follows a command's output on demand. Plain browser JavaScript, no build step. The
// API token travels in the HttpOnly cookie set when the page was opened with ?token=.
//
// Every number is rendered with its exact value in `data-v` (the text is the same value, formatted),
// so tests and scripts can read the page as precisely as /metrics and the CLI's --json.

const $ = (id) => document.getElementById(id);
const ESC = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' };
const esc = (v) => String(v ?? '').replace(/[&<>"']/g, (c) => ESC[c]);
const SLOTS = ['ready', 'reconnecting', 'warming', 'claiming', 'claimed', 'quarantined', 'retiring', 'stale'];
const STAGES = ['claim', 'init', 'services', 'ready', 'route', 'balance'];

let latest = null;
/** The role of the token this page was opened with (GET /v1/whoami): terminals need `use`. */
let role = null;
const rendered = new Map();
const activity = [];

function num(value, text = fmtInt(value), key = '') {
  return `<b data-k="${esc(key)}" data-v="${esc(value ?? '')}">${esc(text)}</b>`;
}
function fmtInt(n) {
  return n === null || n === undefined ? '–' : Math.round(n).toLocaleString('en-US');
}
function fmtMs(ms) {
  if (ms === null || ms === undefined) return '–';
  if (ms < 10) return `${ms.toFixed(1)} ms`;
  if (ms < 1000) return `${Math.round(ms)} ms`;
  if (ms < 60_000) return `${(ms / 1000).toFixed(1)} s`;
  return `${(ms / 60_000).toFixed(1)} min`;
}
function fmtDuration(s) {
  if (s === null || s === undefined) return '–';
  if (s < 120) return `${s.toFixed(1)} s`;
  if (s < 7200) return `${(s / 60).toFixed(1)} min`;
  return `${(s / 3600).toFixed(1)} h`;
}
function fmtTime(iso) {
  return iso ? new Date(iso).toLocaleTimeString('en-GB') : '–';
}
/** "schedule rule 1 until Mon 19:00, then 2": what sizes the pool now, and until when (the browser's time). */
function scheduleText(s) {
  const now = s.rule === null ? 'no schedule rule holds' : `schedule rule ${s.rule + 1}`;
  if (!s.next) return now;
  const when = new Date(s.next.at).toLocaleString('en-GB', { weekday: 'short', hour: '2-digit', minute: '2-digit' });
  return `${now} until ${when}, then ${s.next.size}`;
}
function state(s) {
  return `<span class="state state-${esc(s)}">${esc(s)}</span>`;
}
/** Sets innerHTML only when it changed: a snapshot that changes nothing costs no layout. */
function put(el, html) {
  if (rendered.get(el.id) === html) return;
  rendered.set(el.id, html);
  el.innerHTML = html;
}

// ---- totals and pools ------------------------------------------------------------------------

function renderTotals(s) {
  const t = s.totals;
  const claims = t.claims.hit + t.claims.miss;
  const stat = (label, key, value, text) => `<div class="stat" data-stat="${key}">${num(value, text, key)}<span>${esc(label)}</span></div>`;
  put(
    $('totals'),
    [
      stat('hosts', 'hosts', t.hosts),
      stat('ready in pools', 'poolReady', t.poolReady),
      stat('environments', 'environments', t.environments),
      stat('claims served warm', 'claims.hit', t.claims.hit),
      stat('claims launched cold', 'claims.miss', t.claims.miss),
      stat('claims failed', 'claims.failed', t.claims.failed),
      stat('hit rate', 'hitRate', claims === 0 ? null : t.claims.hit / claims, claims === 0 ? '–' : `${((100 * t.claims.hit) / claims).toFixed(1)} %`),
      stat('router requests', 'routerRequests', t.routerRequests),
      stat('service restarts', 'serviceRestarts', t.serviceRestarts),
    ].join(''),
  );
}

function sparkline(levels, size) {
  if (levels.length < 2) return '<p class="muted legend">level history starts with the server</p>';
  const w = 300;
  const h = 56;
  const t0 = levels[0].at;
  const span = Math.max(1, levels[levels.length - 1].at - t0);
  const top = Math.max(1, size, ...levels.map((l) => Math.max(l.ready, l.claimed, l.warming)));
  const x = (l) => (((l.at - t0) / span) * w).toFixed(1);
  const y = (l, key) => (h - 2 - (l[key] / top) * (h - 4)).toFixed(1);
  // Steps: a level holds until the next sample.
  const line = (key) => levels.map((l, i) => (i === 0 ? '' : `${x(l)},${y(levels[i - 1], key)} `) + `${x(l)},${y(l, key)}`).join(' ');
  const minutes = Math.max(1, Math.round(span / 60_000));
  return (
    `<svg class="spark" viewBox="0 0 ${w} ${h}" preserveAspectRatio="none" role="img" aria-label="pool level, last ${minutes} min">` +
    ['warming', 'claimed', 'ready'].map((k) => `<polyline class="${k}" points="${line(k)}"/>`).join('') +
    `</svg><div class="legend">last ${minutes} min <i class="s-ready"></i>ready <i class="s-warming"></i>warming <i class="s-claimed"></i>claimed</div>`
  );
}

function poolCard(p, price) {
  const total = SLOTS.reduce((n, k) => n + p[k], 0) || 1;
  const bar = SLOTS.filter((k) => p[k] > 0)
    .map((k) => `<i class="s-${k}" style="width:${((100 * p[k]) / total).toFixed(2)}%" title="${k}: ${p[k]}"></i>`)
    .join('');
  const row = (label, key, value, text) => `<dt>${esc(label)}</dt><dd>${num(value, text, key)}</dd>`;
  const cost = p.idleCost === null ? '' : ` · ${price.currency} ${p.idleCost.toFixed(2)}`;
  return (
    `<article class="card" data-pool="${esc(p.name)}">` +
    `<h3><span>${esc(p.name)}</span><small class="muted">${esc(p.image)} · gen ${p.generation}</small></h3>` +
    `<div><span class="level">${num(p.ready, undefined, 'ready')} / ${num(p.targetSize ?? p.size, undefined, 'targetSize')}</span> <span class="muted">ready${p.schedule ? ` · ${scheduleText(p.schedule)}` : ''}${p.demand ? ` · sized by demand (peak ${p.demand.peak})` : ''}${p.rolling ? ' · rolling to a new generation' : ''}</span></div>` +
    `<div class="slots" title="${SLOTS.map((k) => `${k} ${p[k]}`).join(', ')}">${bar}</div>` +
    sparkline(p.levels, p.targetSize ?? p.size) +
    `<dl class="kv">` +
    (p.reconnecting ? row('reconnecting', 'reconnecting', p.reconnecting) : '') +
    row('warming', 'warming', p.warming) +
    row('claimed', 'claimed', p.claimed) +
    row('quarantined', 'quarantined', p.quarantined) +
    row('stale', 'stale', p.stale) +
    `<dt>claims</dt><dd>${num(p.hits, undefined, 'hits')} warm · ${num(p.misses, undefined, 'misses')} cold · ${num(p.failed, undefined, 'failed')} failed · ${num(p.rollbacks, undefined, 'rollbacks')} rolled back</dd>` +
    row('hit rate', 'hitRate', p.hitRate, p.hitRate === null ? '–' : `${(100 * p.hitRate).toFixed(1)} %`) +
    row('idle cost', 'idleHostSeconds', p.idleHostSeconds, `${(p.idleHostSeconds / 3600).toFixed(2)} host-h${cost}`) +
    row('refill', 'refillMeanMs', p.refillMeanMs, p.refillMeanMs === null ? 'none yet' : `${fmtMs(p.refillMeanMs)} mean of ${p.refills}`) +
    row('cold claim', 'coldClaimSeconds', p.coldClaimSeconds, p.coldClaimSeconds === null ? 'no miss yet' : fmtMs(p.coldClaimSeconds * 1000)) +
    row('time saved', 'secondsSaved', p.secondsSaved, p.secondsSaved === null ? '–' : fmtDuration(p.secondsSaved)) +
    `</dl>` +
    (p.full ? '' : `<p class="warn" data-k="notFullReason">${esc(p.notFullReason)}</p>`) +
    (p.lastFailure ? `<p class="warn">last failure ${esc(fmtTime(p.lastFailure.at))}: ${esc(p.lastFailure.reason)}</p>` : '') +
    `</article>`
  );
}

function renderPools(s) {
  put($('pool-cards'), s.pools.length === 0 ? '<p class="muted">No pools yet: <code>berth pool create</code>.</p>' : s.pools.map((p) => poolCard(p, s.price)).join(''));
}

// ---- latency histogram ------------------------------------------------------------------------

function renderLatency(s) {
  const h = s.latency;
  if (h.count === 0) return put($('latency-chart'), '<p class="muted">No claims yet.</p>');
  // Buckets from the first to the last that holds a claim.
  const first = h.counts.findIndex((n) => n > 0);
  let last = h.counts.length - 1;
  while (last > first && h.counts[last] === 0) last--;
  const bins = [];
  for (let i = first; i <= last; i++) bins.push({ le: i < h.boundsMs.length ? h.boundsMs[i] : null, n: h.counts[i] });
  const w = 900;
  const ht = 200;
  const bw = w / bins.length;
  const max = Math.max(...bins.map((b) => b.n));
  const bars = bins
    .map((b, i) => {
      const bh = max === 0 ? 0 : (b.n / max) * (ht - 40);
      const label = b.le === null ? '> ' + fmtMs(h.boundsMs[h.boundsMs.length - 1]) : '≤ ' + fmtMs(b.le);
      return (
        `<g data-le="${b.le === null ? '+Inf' : b.le}" data-v="${b.n}"><rect x="${(i * bw + 2).toFixed(1)}" y="${(ht - 22 - bh).toFixed(1)}" width="${(bw - 4).toFixed(1)}" height="${bh.toFixed(1)}"><title>${esc(label)}: ${b.n}</title></rect>` +
        `<text x="${(i * bw + bw / 2).toFixed(1)}" y="${ht - 8}" text-anchor="middle">${esc(label)}</text>` +
        (b.n > 0 ? `<text x="${(i * bw + bw / 2).toFixed(1)}" y="${(ht - 26 - bh).toFixed(1)}" text-anchor="middle">${b.n}</text>` : '') +
        `</g>`
      );
    })
    .join('');
  put(
    $('latency-chart'),
    `<svg viewBox="0 0 ${w} ${ht}" role="img" aria-label="claim latency histogram">${bars}</svg>` +
      `<p class="muted">${num(h.count, undefined, 'latency.count')} claims, mean ${esc(fmtMs(h.sumMs / h.count))}</p>`,
  );
}

// ---- environments, hosts, commands ----------------------------------------------------------

function timingBar(t) {
  const total = t.totalMs ?? STAGES.reduce((n, k) => n + (t[`${k}Ms`] ?? 0), 0);
  if (!total) return '<span class="muted">–</span>';
  const parts = STAGES.filter((k) => t[`${k}Ms`] > 0)
    .map((k) => `<i class="t-${k}" style="width:${((100 * t[`${k}Ms`]) / total).toFixed(2)}%" title="${k} ${fmtMs(t[`${k}Ms`])}"></i>`)
    .join('');
  const detail = STAGES.filter((k) => t[`${k}Ms`] !== undefined).map((k) => `${k} ${fmtMs(t[`${k}Ms`])}`).join(' · ');
  return `<div class="timing" title="${esc(detail)}">${parts}</div> <span data-k="totalMs" data-v="${total}">${esc(fmtMs(total))}</span> <small class="muted">${esc(detail)}</small>`;
}

function renderEnvironments(s) {
  if (s.environments.length === 0) return put($('env-table'), '<p class="muted">No environments yet: <code>berth env create</code>.</p>');
  const rows = s.environments
    .map(
      (e) =>
        `<tr data-env="${esc(e.name)}"><td><b>${esc(e.name)}</b>${e.private ? ' <small class="muted" title="only tokens that may see it get through">private</small>' : ''}</td><td>${state(e.state)}</td>` +
        `<td>${e.url ? `<a href="${esc(e.url)}" target="_blank" rel="noopener">${esc(e.url)}</a>` : '<span class="muted">–</span>'}</td>` +
        `<td>${esc(e.pool)}</td><td>${esc(e.stack)} <small class="muted">${esc(e.mode)}</small></td><td>${esc(e.user ?? '')}</td><td class="num">${e.hosts}</td>` +
        `<td>${e.operation ? `<small class="muted">${esc(e.operation)}</small> ` : ''}${timingBar(e.timings)}</td><td><small>${esc(e.settingNames.join(', '))}</small></td></tr>`,
    )
    .join('');
  put($('env-table'), `<table><thead><tr><th>name</th><th>state</th><th>URL</th><th>pool</th><th>stack</th><th>user</th><th class="num">hosts</th><th>latest → ready</th><th>settings</th></tr></thead><tbody>${rows}</tbody></table>`);
}

// The hosts table draws only the rows in and near its scroll window (rows have one fixed height),
// with spacers for the rest: a thousand hosts cost the page what forty do. `data-rows` on the table
// says how many hosts it holds; scrolling draws the others.
const HOST_ROW_PX = 30;
const HOST_OVERSCAN = 10;
let hostList = [];

function canShell() {
  return role === 'use' || role === 'admin';
}

function hostRow(h) {
  // One element per cell: the state and the agent's dot are styled on the cell.
  return (
    `<tr data-host="${esc(h.id)}"><td class="mono">${esc(h.id)}</td><td class="st state-${esc(h.state)}" title="${esc(h.stateReason)}">${esc(h.state)}</td><td>${esc(h.pool ?? '')}</td><td>${esc(h.group ?? '')}</td>` +
    `<td>${esc(h.image)}</td><td>${esc(h.ip ?? '')}</td><td class="agent${h.agentConnected ? ' on' : ''}">${h.agentConnected ? 'connected' : 'away'} · ${esc(fmtTime(h.agentLastSeen))}</td>` +
    // No terminal on a pool's waiting host: the next claim would get what it changed.
    `<td>${canShell() && h.state === 'running' && h.agentConnected && (!h.pool || h.group) ? `<button type="button" class="shell" data-shell="${esc(h.id)}">shell</button>` : ''}</td></tr>`
  );
}

function drawHostWindow() {
  const box = $('host-table');
  // Its height is set here, not measured: the rows of the list and the header, at most 32rem. (A
  // measure would make the browser lay out the whole page in the middle of drawing it.)
  const height = Math.min(32 * 16, (hostList.length + 1) * HOST_ROW_PX + 2);
  box.style.height = `${height}px`;
  // Where the list ends now, if it got shorter than the scroll position (a filter).
  const top = Math.min(box.scrollTop, Math.max(0, (hostList.length + 1) * HOST_ROW_PX - height));
  const first = Math.max(0, Math.floor(top / HOST_ROW_PX) - HOST_OVERSCAN);
  const last = Math.min(hostList.length, Math.ceil((top + height) / HOST_ROW_PX) + HOST_OVERSCAN);
  const spacer = (rows) => (rows > 0 ? `<tr class="spacer" style="height:${rows * HOST_ROW_PX}px"><td colspan="8"></td></tr>` : '');
  put(
    box,
    `<table data-rows="${hostList.length}"><thead><tr><th>host</th><th>state</th><th>pool</th><th>group</th><th>image</th><th>ip</th><th>agent, last seen</th><th></th></tr></thead>` +
      `<tbody>${spacer(first)}${hostList.slice(first, last).map(hostRow).join('')}${spacer(hostList.length - last)}</tbody></table>`,
  );
}

function renderHosts(s) {
  const filter = $('host-filter').value.trim().toLowerCase();
  hostList = filter ? s.hosts.filter((h) => [h.id, h.state, h.pool, h.group, h.image, h.ip].some((v) => v && v.toLowerCase().includes(filter))) : s.hosts;
  $('hosts-count').textContent = filter ? `${hostList.length} of ${s.hosts.length}` : `${s.hosts.length}`;
  drawHostWindow();
}

function renderCommands(s) {
  if (s.commands.length === 0) return put($('command-table'), '<p class="muted">No commands yet: <code>berth run</code>.</p>');
  const rows = s.commands
    .map(
      (c) =>
        `<tr class="clickable" data-command="${esc(c.id)}"><td><code>${esc(c.id)}</code></td><td>${state(c.status)}</td><td><code>${esc(c.summary)}</code></td>` +
        `<td>${esc(Object.entries(c.invocations).map(([k, n]) => `${n} ${k}`).join(', '))}</td><td>${esc(fmtTime(c.createdAt))}</td></tr>`,
    )
    .join('');
  put($('command-table'), `<table><thead><tr><th>command</th><th>status</th><th>commands</th><th>invocations</th><th>sent</th></tr></thead><tbody>${rows}</tbody></table>`);
}

/** Follows a command's output (GET /v1/commands/:id/output, newline-delimited JSON) into the panel. */
let following = null;
async function showOutput(id) {
  following?.abort();
  const controller = new AbortController();
  following = controller;
  $('command-output').hidden = false;
  $('output-id').textContent = id;
  $('output-status').textContent = 'following…';
  const out = $('output-text');
  out.textContent = '';
  const append = (text, cls) => {
    const span = document.createElement('span');
    if (cls) span.className = cls;
    span.textContent = text;
    out.append(span);
    out.scrollTop = out.scrollHeight;
  };
  try {
    const res = await fetch(`/v1/commands/${encodeURIComponent(id)}/output`, { signal: controller.signal });
    if (!res.ok || !res.body) throw new Error(`HTTP ${res.status}`);
    const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = '';
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += value;
      let nl;
      while ((nl = buffer.indexOf('\n')) >= 0) {
        const line = buffer.slice(0, nl);
        buffer = buffer.slice(nl + 1);
        if (!line) continue;
        const ev = JSON.parse(line);
        if (ev.type === 'output') append(`[${ev.hostId}] ${ev.data}`, ev.stream === 'stderr' ? 'stderr' : '');
        else if (ev.type === 'status') $('output-status').textContent = `${ev.hostId}: ${ev.status}`;
        else if (ev.type === 'command') $('output-status').textContent = ev.command.status;
      }
    }
  } catch (err) {
    if (!controller.signal.aborted) $('output-status').textContent = `stopped: ${err.message}`;
  }
}

// ---- activity and the live feed -------------------------------------------------------------

function renderActivity() {
  put(
    $('activity-list'),
    activity
      .map((e) => `<li><time>${esc(fmtTime(e.at))}</time><b>${esc(e.kind)}</b> <code>${esc(e.id)}</code> ${e.from ? `${esc(e.from)} → ` : ''}${state(e.state)}${e.reason ? ` <span class="muted">${esc(e.reason)}</span>` : ''}${e.actor ? ` <span class="muted">by ${esc(e.actor)}</span>` : ''}</li>`)
      .join(''),
  );
}

function render() {
  if (!latest) return;
  // The hosts first: their window reads the scroll position, cheap only before anything else changed.
  renderHosts(latest);
  renderTotals(latest);
  renderPools(latest);
  renderLatency(latest);
  renderEnvironments(latest);
  renderCommands(latest);
  $('updated').textContent = `updated ${fmtTime(latest.at)}`;
  document.body.dataset.snapshotAt = latest.at;
}

function setLive(stateName, text) {
  $('live').dataset.state = stateName;
  $('live').textContent = text;
}

function connect() {
  const source = new EventSource('/v1/dashboard/stream');
  source.addEventListener('open', () => setLive('live', 'live'));
  source.addEventListener('snapshot', (m) => {
    // Marks for the first-load benchmark: when the first snapshot arrived and when it was drawn.
    if (!latest) performance.mark('berth:first-snapshot');
    const first = !latest;
    latest = JSON.parse(m.data);
    render();
    if (first) {
      performance.mark('berth:first-render');
      // After the next frame's style, layout and paint.
      requestAnimationFrame(() => setTimeout(() => performance.mark('berth:first-paint'), 0));
    }
  });
  source.addEventListener('change', (m) => {
    activity.unshift(JSON.parse(m.data));
    activity.length = Math.min(activity.length, 200);
    renderActivity();
  });
  source.addEventListener('failure', (m) => setLive('down', `snapshot failed: ${JSON.parse(m.data).message}`));
  source.addEventListener('error', async () => {
    setLive('down', 'reconnecting…');
    // An EventSource retries by itself, even when the token was refused: check, and go to the
    // token page instead of retrying forever.
    const res = await fetch('/dashboard/app.css', { method: 'HEAD' }).catch(() => null);
    if (res && res.status === 401) {
      source.close();
      location.assign('/dashboard');
    }
  });
}

$('host-filter').addEventListener('input', () => {
  $('host-table').scrollTop = 0;
  if (latest) renderHosts(latest);
});
$('host-table').addEventListener('scroll', () => requestAnimationFrame(drawHostWindow), { passive: true });
// A terminal on a host (terminal.js, loaded with xterm.js only when one is opened).
let closeShell = null;
$('host-table').addEventListener('click', async (e) => {
  const id = e.target instanceof Element ? e.target.closest('[data-shell]')?.getAttribute('data-shell') : null;
  if (!id) return;
  closeShell?.();
  const { openTerminal } = await import('/dashboard/terminal.js');
  closeShell = openTerminal(id, { dialog: $('shell-dialog'), host: $('shell-host'), status: $('shell-status'), screen: $('shell-screen') });
});
$('shell-close').addEventListener('click', () => closeShell?.());
// Escape would close the dialog: in a terminal it belongs to the program (vi, less), not the page.
$('shell-dialog').addEventListener('cancel', (e) => e.preventDefault());
$('command-table').addEventListener('click', (e) => {
  const row = e.target.closest('tr[data-command]');
  if (row) void showOutput(row.dataset.command);
});
$('output-close').addEventListener('click', () => {
  following?.abort();
  $('command-output').hidden = true;
});
async function whoami() {
  const res = await fetch('/v1/whoami').catch(() => null);
  if (!res?.ok) return;
  const me = await res.json();
  role = me.role;
  $('whoami').textContent = `${me.tokenName} · ${me.role}`;
  if (latest) renderHosts(latest);
}
void whoami();
connect();
