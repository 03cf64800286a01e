/**
 * api: the demo's JSON API and the owner of its jobs.
 *
 *   GET  /healthz                 200 "ok"
 *   GET  /api/config              the settings the app runs with that anyone may see
 *   GET  /api/jobs                {epoch, rev, more, jobs}; ?status=pending|running|done, ?since=REV, ?limit=N
 *   POST /api/jobs {text}         201 a new pending job
 *   GET  /api/jobs/:id            the job
 *   POST /api/jobs/:id/claim      {worker, leaseMs}: pending → running (409 if it is not pending)   [worker]
 *   POST /api/jobs/:id/release    {worker}: running → pending                                       [worker]
 *   POST /api/jobs/:id/result     {worker, words, chars, sha256, workMs}: → done                   [worker]
 *
 * [worker] routes need `Authorization: Bearer $DEMO_SECRET_TOKEN` when that is set.
 * Env: PORT (8081), HOST (all interfaces), DATA_DIR (/var/lib/berth-demo), GREETING, APP_VERSION,
 * BERTH_ENVIRONMENT, BERTH_TAGS, DEMO_SECRET_TOKEN, BERTH_ENV_FILE (re-read on SIGHUP).
 */
import { timingSafeEqual } from 'node:crypto';
import http from 'node:http';
import { JobStore, MAX_TEXT, STATUSES } from './lib/jobs.mjs';
import { closeServer, handleSignals, HttpError, listen, logger, readJson, sendJson, sendText } from './lib/service.mjs';
import { Settings } from './lib/settings.mjs';

const log = logger('api');
const settings = new Settings(log);
const store = new JobStore(settings.get('DATA_DIR', '/var/lib/berth-demo'), log);
const MAX_LEASE_MS = 10 * 60_000;

const server = http.createServer((req, res) => {
  route(req, res).catch((err) => {
    if (!(err instanceof HttpError)) log(`${req.method} ${req.url.split('?')[0]} failed: ${err.stack ?? err}`);
    const status = err instanceof HttpError ? err.status : 500;
    if (res.headersSent) res.destroy();
    else sendJson(res, status, { error: status === 500 ? 'internal error' : err.message }, { ...(err.allow && { allow: err.allow.join(', ') }), ...(status === 413 && { connection: 'close' }) });
  });
});

async function route(req, res) {
  const url = new URL(req.url, 'http://api');
  const path = url.pathname;
  if (path === '/healthz') return only(req, ['GET', 'HEAD']) && sendText(res, 200, 'ok\n');
  if (path === '/api/config') return only(req, ['GET']) && sendJson(res, 200, settings.publicConfig('api'));
  if (path === '/api/jobs') {
    if (req.method === 'POST') return createJob(req, res);
    return only(req, ['GET', 'POST']) && listJobs(url, res);
  }
  const match = /^\/api\/jobs\/([0-9a-f]{1,64})(?:\/(claim|release|result))?$/.exec(path);
  if (!match) throw new HttpError(404, `no route ${path}`);
  const [, id, action] = match;
  const job = store.get(id);
  if (!action) {
    only(req, ['GET']);
    if (!job) throw new HttpError(404, `no job ${id}`);
    return sendJson(res, 200, job);
  }
  only(req, ['POST']);
  checkToken(req);
  const body = await readJson(req);
  if (!job) throw new HttpError(404, `no job ${id}`);
  const worker = typeof body.worker === 'string' ? body.worker.slice(0, 200) : 'unknown';
  if (action === 'claim') {
    if (job.status !== 'pending') throw new HttpError(409, `job ${id} is ${job.status}`);
    const leaseMs = Number.isInteger(body.leaseMs) ? Math.min(Math.max(body.leaseMs, 1000), MAX_LEASE_MS) : 60_000;
    store.update(job, { status: 'running', worker, leaseUntil: new Date(Date.now() + leaseMs).toISOString() });
  } else if (action === 'release') {
    if (job.status !== 'running' || job.worker !== worker) throw new HttpError(409, `job ${id} is not running for ${worker}`);
    store.update(job, { status: 'pending', worker: undefined, leaseUntil: undefined });
  } else {
    if (job.status === 'done') throw new HttpError(409, `job ${id} is done already`);
    if (job.status === 'running' && job.worker !== worker) throw new HttpError(409, `job ${id} is running for another worker`);
    const result = checkResult(body);
    store.update(job, { status: 'done', worker, leaseUntil: undefined, result });
  }
  const answer = structuredClone(job); // as of this change: the job may move on while it is saved
  await store.save();
  sendJson(res, 200, answer);
}

/** True when the method is one of `methods`; otherwise HttpError 405. */
function only(req, methods) {
  if (!methods.includes(req.method)) throw Object.assign(new HttpError(405, `use ${methods.join(' or ')}`), { allow: methods });
  return true;
}

function checkToken(req) {
  const token = settings.get('DEMO_SECRET_TOKEN');
  if (!token) return;
  const given = Buffer.from(/^Bearer (.+)$/.exec(req.headers.authorization ?? '')?.[1] ?? '');
  const wanted = Buffer.from(token);
  if (given.length !== wanted.length || !timingSafeEqual(given, wanted)) throw new HttpError(401, 'worker routes need Authorization: Bearer <DEMO_SECRET_TOKEN>');
}

function checkResult(body) {
  const { words, chars, sha256, workMs } = body;
  const count = (value) => Number.isInteger(value) && value >= 0;
  if (!count(words) || !count(chars) || typeof sha256 !== 'string' || !/^[0-9a-f]{64}$/.test(sha256)) {
    throw new HttpError(400, 'a result is {words, chars, sha256} (whole numbers and 64 hex digits)');
  }
  return { words, chars, sha256, workMs: count(workMs) ? workMs : 0 };
}

function listJobs(url, res) {
  const q = url.searchParams;
  const status = q.get('status') ?? undefined;
  if (status !== undefined && !STATUSES.includes(status)) throw new HttpError(400, `status is one of ${STATUSES.join(', ')}`);
  const since = q.has('since') ? Number(q.get('since')) : undefined;
  const limit = q.has('limit') ? Number(q.get('limit')) : 100;
  if (since !== undefined && !(Number.isInteger(since) && since >= 0)) throw new HttpError(400, 'since is a revision: a whole number');
  if (!(Number.isInteger(limit) && limit >= 1 && limit <= 1000)) throw new HttpError(400, 'limit is a whole number from 1 to 1000');
  sendJson(res, 200, { epoch: store.epoch, ...store.list({ since, status, limit }) });
}

async function createJob(req, res) {
  const body = await readJson(req);
  const text = typeof body.text === 'string' ? body.text.trim() : '';
  if (!text) throw new HttpError(400, 'a job needs some text: {"text": "..."}');
  if (text.length > MAX_TEXT) throw new HttpError(413, `a job's text is at most ${MAX_TEXT} characters`);
  const job = store.create(text);
  if (!job) throw new HttpError(503, 'too many unfinished jobs; try again later');
  const answer = structuredClone(job); // a worker may claim it while it is saved
  await store.save();
  sendJson(res, 201, answer, { location: `/api/jobs/${job.id}` });
}

const leases = setInterval(() => {
  if (store.requeueExpired() > 0) store.save().catch((err) => log(`cannot save ${store.file}: ${err.message}`));
}, 1000);
leases.unref();

handleSignals(log, {
  reload: () => settings.reload(),
  stop: async () => {
    clearInterval(leases);
    await closeServer(server);
    await store.save();
  },
});

await listen(server, log, { port: settings.int('PORT', 8081, 0, 65535), host: settings.get('HOST') });
log(`started (${store.size} jobs in ${store.file})`);
