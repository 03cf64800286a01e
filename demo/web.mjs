/**
 * web: the demo's front.
 *
 *   GET /            the page (title "berth demo", GREETING, environment, version, a job form, live jobs)
 *   GET /app.js, /style.css
 *   GET /healthz     200 "ok"
 *   /api/*           proxied to the api (API_URL)
 *   /live            a WebSocket: {type: hello|jobs|reset|config|api, ...} messages (below)
 *
 * While at least one browser is connected to /live, web asks the api every POLL_MS for the jobs that
 * changed since the last revision it saw, and pushes them: `jobs` (changed jobs), `reset` (the api's
 * data is not the one it knew: the whole list), `api` (the api became unreachable or reachable),
 * `config` (settings reloaded). A new connection first gets `hello` with the config and the jobs known.
 *
 * Env: PORT (8080), HOST (all interfaces), API_URL (http://127.0.0.1:8081; in berth service mode the
 *   api's address comes as BERTH_SERVICE_API_ADDR=ip:port,…), POLL_MS (250), GREETING,
 * APP_VERSION, BERTH_ENVIRONMENT, BERTH_TAGS, BERTH_ENV_FILE (re-read on SIGHUP).
 */
import { readFileSync } from 'node:fs';
import http from 'node:http';
import { setTimeout as sleep } from 'node:timers/promises';
import { ApiClient, describeFailure, apiBaseUrl } from './lib/api-client.mjs';
import { renderPage } from './lib/page.mjs';
import { closeServer, handleSignals, listen, logger, sendJson, sendText } from './lib/service.mjs';
import { Settings } from './lib/settings.mjs';

const log = logger('web');
const settings = new Settings(log);
const apiUrl = () => apiBaseUrl(settings);
const asset = (name, type) => ({ body: readFileSync(new URL(`./public/${name}`, import.meta.url)), type });
const ASSETS = { '/app.js': asset('app.js', 'text/javascript; charset=utf-8'), '/style.css': asset('style.css', 'text/css; charset=utf-8') };
const SECURITY_HEADERS = {
  'content-security-policy': "default-src 'self'; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
  'x-content-type-options': 'nosniff',
  'referrer-policy': 'no-referrer',
};
const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'proxy-authenticate', 'proxy-authorization', 'te', 'trailer', 'transfer-encoding', 'upgrade', 'host']);
const proxyAgent = new http.Agent({ keepAlive: true, maxSockets: 64, timeout: 4000 });

const server = http.createServer((req, res) => {
  const path = req.url.split('?')[0];
  if (path === '/api' || path.startsWith('/api/')) return proxy(req, res);
  if (req.method !== 'GET' && req.method !== 'HEAD') return sendText(res, 405, 'method not allowed\n', { allow: 'GET, HEAD' });
  if (path === '/healthz') return sendText(res, 200, 'ok\n');
  if (path === '/') {
    const html = renderPage(settings.publicConfig('web'));
    res.writeHead(200, { 'content-type': 'text/html; charset=utf-8', 'content-length': Buffer.byteLength(html), 'cache-control': 'no-store', ...SECURITY_HEADERS });
    return res.end(req.method === 'HEAD' ? undefined : html);
  }
  const file = ASSETS[path];
  if (file) {
    res.writeHead(200, { 'content-type': file.type, 'content-length': file.body.length, 'cache-control': 'no-cache', ...SECURITY_HEADERS });
    return res.end(req.method === 'HEAD' ? undefined : file.body);
  }
  sendText(res, 404, 'not found\n');
});

/** Streams the request to the api and its answer back; 502 when the api cannot be reached. */
function proxy(req, res) {
  let target;
  try {
    target = new URL(req.url, apiUrl());
  } catch {
    return sendJson(res, 502, { error: 'API_URL is not a URL' });
  }
  const headers = Object.fromEntries(Object.entries(req.headers).filter(([name]) => !HOP_BY_HOP.has(name)));
  headers['x-forwarded-for'] = [req.headers['x-forwarded-for'], req.socket.remoteAddress].filter(Boolean).join(', ');
  headers['x-forwarded-host'] = req.headers.host ?? '';
  headers['x-forwarded-proto'] = 'http';
  const upstream = http.request(target, { method: req.method, headers, agent: proxyAgent }, (answer) => {
    const answerHeaders = Object.fromEntries(Object.entries(answer.headers).filter(([name]) => !HOP_BY_HOP.has(name)));
    res.writeHead(answer.statusCode ?? 502, answerHeaders);
    answer.pipe(res);
    answer.on('error', () => res.destroy());
  });
  upstream.setTimeout(10_000, () => upstream.destroy(Object.assign(new Error('timeout'), { code: 'ETIMEDOUT' })));
  upstream.on('error', (err) => {
    if (res.headersSent) res.destroy();
    else sendJson(res, 502, { error: `api unreachable (${err.code ?? err.message})` });
  });
  res.on('close', () => {
    if (!res.writableFinished) upstream.destroy();
  });
  req.pipe(upstream);
}

// The live feed. `ws` is loaded once web listens (it costs ~40 ms of start-up): until then an
// upgrade waits for it.
let wss;
let wsLoaded;
function loadWs() {
  wsLoaded ??= import('ws').then(({ WebSocketServer }) => {
    wss = new WebSocketServer({ noServer: true, maxPayload: 4096, clientTracking: true });
  });
  return wsLoaded;
}
const clients = () => wss?.clients ?? new Set();
const api = new ApiClient(apiUrl);
const known = new Map(); // id → job, the most recent MAX_KNOWN
const MAX_KNOWN = 100;
let epoch; // of the api's data, as last seen
let rev = 0;
let apiUp; // undefined until the first poll
let polling;
let stopped = false;
const stopping = new AbortController();

server.on('upgrade', (req, socket, head) => {
  if (req.url.split('?')[0] !== '/live' || stopped) {
    socket.end('HTTP/1.1 404 Not Found\r\nconnection: close\r\ncontent-length: 0\r\n\r\n');
    return;
  }
  loadWs().then(() => wss.handleUpgrade(req, socket, head, accept), () => socket.destroy());
});

function accept(ws) {
  ws.isAlive = true;
  ws.on('pong', () => (ws.isAlive = true));
  ws.on('error', () => ws.terminate());
  ws.on('message', () => undefined); // nothing to say to us
  send(ws, { type: 'hello', config: settings.publicConfig('web'), apiUp, jobs: [...known.values()] });
  polling ??= poll().finally(() => (polling = undefined));
}

function send(ws, message) {
  if (ws.readyState !== ws.OPEN) return;
  if (ws.bufferedAmount > 1024 * 1024) return ws.terminate(); // a client that does not read
  ws.send(typeof message === 'string' ? message : JSON.stringify(message));
}

function broadcast(message) {
  const text = JSON.stringify(message);
  for (const ws of clients()) send(ws, text);
}

/** Runs while someone listens: asks the api what changed and tells every client. */
async function poll() {
  while (clients().size > 0 && !stopped) {
    try {
      await pollOnce();
      if (apiUp !== true) {
        if (apiUp === false) log('api reachable again');
        apiUp = true;
        broadcast({ type: 'api', up: true });
      }
    } catch (err) {
      if (stopped) break;
      if (apiUp !== false) {
        log(`api unreachable at ${apiUrl()}: ${describeFailure(err)}`);
        apiUp = false;
        broadcast({ type: 'api', up: false });
      }
    }
    await sleep(settings.int('POLL_MS', 250, 10, 60_000), undefined, { signal: stopping.signal }).catch(() => undefined);
  }
}

async function pollOnce() {
  let changed = [];
  let reset = false;
  for (let more = true; more; ) {
    const page = await api.request('GET', `/api/jobs?since=${rev}&limit=500`, { timeoutMs: 3000, signal: stopping.signal });
    if (page.epoch !== epoch || page.rev < rev) {
      // Other data than we knew (a new data dir): start over from nothing.
      const first = epoch === undefined;
      epoch = page.epoch;
      rev = 0;
      known.clear();
      changed = [];
      reset = !first;
      more = true;
      continue;
    }
    changed.push(...page.jobs);
    rev = page.rev;
    more = page.more;
  }
  for (const job of changed) known.set(job.id, job);
  if (known.size > MAX_KNOWN) {
    const oldest = [...known.values()].sort((a, b) => (a.createdAt < b.createdAt ? -1 : 1));
    for (const job of oldest.slice(0, known.size - MAX_KNOWN)) known.delete(job.id);
  }
  if (reset) broadcast({ type: 'reset', jobs: [...known.values()] });
  else if (changed.length > 0) broadcast({ type: 'jobs', jobs: changed.filter((job) => known.has(job.id)) });
}

const heartbeat = setInterval(() => {
  for (const ws of clients()) {
    if (!ws.isAlive) {
      ws.terminate();
      continue;
    }
    ws.isAlive = false;
    ws.ping();
  }
}, 30_000);
heartbeat.unref();

settings.onReload(() => broadcast({ type: 'config', config: settings.publicConfig('web') }));

handleSignals(log, {
  reload: () => settings.reload(),
  stop: async () => {
    stopped = true;
    stopping.abort();
    clearInterval(heartbeat);
    for (const ws of clients()) ws.close(1001, 'server stopping');
    setTimeout(() => {
      for (const ws of clients()) ws.terminate();
    }, 300).unref();
    await closeServer(server);
    await polling;
    api.close();
    proxyAgent.destroy();
  },
});

await listen(server, log, { port: settings.int('PORT', 8080, 0, 65535), host: settings.get('HOST') });
loadWs().catch((err) => log(`cannot load ws: ${err.message}; /live is unavailable`));
log(`started (api ${apiUrl()})`);
