/* The demo page's script: submits jobs through /api and keeps the list live over the /live WebSocket. */
/* global document, location */

const MAX_SHOWN = 100;
const jobs = new Map();
const $ = (id) => document.getElementById(id);

showConfig(JSON.parse($('boot').textContent));

function showConfig(config) {
  $('greeting').textContent = config.greeting;
  document.title = 'berth demo';
  const meta = $('meta');
  meta.replaceChildren();
  const parts = [];
  if (config.environment) parts.push(['environment', config.environment]);
  if (config.ref) parts.push(['ref', config.ref]);
  parts.push(['version', config.version]);
  parts.forEach(([label, value], i) => {
    if (i > 0) meta.append(' · ');
    const b = document.createElement('b');
    b.id = label;
    b.textContent = value;
    meta.append(`${label} `, b);
  });
}

function merge(list, replace) {
  if (replace) jobs.clear();
  for (const job of list) jobs.set(job.id, job);
  render();
}

function cell(text, className) {
  const td = document.createElement('td');
  td.textContent = text;
  if (className) td.className = className;
  return td;
}

function render() {
  const shown = [...jobs.values()].sort((a, b) => (a.createdAt < b.createdAt ? 1 : -1)).slice(0, MAX_SHOWN);
  const rows = shown.map((job) => {
    const tr = document.createElement('tr');
    tr.dataset.id = job.id;
    tr.append(
      cell(job.id),
      cell(job.text, 'text'),
      cell(job.status, `status-${job.status}`),
      cell(job.result ? String(job.result.words) : ''),
      cell(job.result ? `${job.result.sha256.slice(0, 12)}…` : ''),
      cell(new Date(job.updatedAt).toLocaleTimeString()),
    );
    tr.cells[1].title = job.text;
    return tr;
  });
  if (rows.length === 0) {
    const tr = document.createElement('tr');
    tr.className = 'empty';
    const td = cell('No jobs yet.');
    td.colSpan = 6;
    tr.append(td);
    rows.push(tr);
  }
  $('jobs').replaceChildren(...rows);
}

function liveStatus(text, state) {
  const badge = $('live-status');
  badge.textContent = text;
  badge.className = `badge ${state}`;
}

$('job-form').addEventListener('submit', async (event) => {
  event.preventDefault();
  const input = $('job-text');
  const status = $('form-status');
  status.textContent = 'submitting…';
  try {
    const res = await fetch('/api/jobs', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ text: input.value }) });
    const body = await res.json().catch(() => ({}));
    if (!res.ok) throw new Error(body.error ?? `HTTP ${res.status}`);
    merge([body], false);
    input.value = '';
    status.textContent = `job ${body.id} submitted`;
  } catch (err) {
    status.textContent = `could not submit: ${err.message}`;
  }
});

let retryMs = 500;
function connect() {
  const ws = new WebSocket(`${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/live`);
  ws.onopen = () => {
    retryMs = 500;
  };
  ws.onmessage = (event) => {
    const msg = JSON.parse(event.data);
    if (msg.type === 'hello') {
      showConfig(msg.config);
      merge(msg.jobs, true);
      liveStatus(msg.apiUp === false ? 'api unreachable' : 'live', msg.apiUp === false ? 'down' : 'up');
    } else if (msg.type === 'jobs') merge(msg.jobs, false);
    else if (msg.type === 'reset') merge(msg.jobs, true);
    else if (msg.type === 'config') showConfig(msg.config);
    else if (msg.type === 'api') liveStatus(msg.up ? 'live' : 'api unreachable', msg.up ? 'up' : 'down');
  };
  ws.onclose = () => {
    liveStatus('reconnecting…', 'down');
    setTimeout(connect, retryMs);
    retryMs = Math.min(retryMs * 2, 10_000);
  };
}
connect();
