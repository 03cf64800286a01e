/**
 * worker: takes pending jobs from the api, works on each (word count and sha256 of its text, after
 * WORK_MS of pretend work) and posts the result. No port.
 *
 * The api may be down (restarting, not started yet): the worker retries with backoff (200 ms
 * doubling to 5 s) and logs once when requests start failing, when the reason changes, and when
 * they succeed again — never once per poll. A result it could not post is kept and posted first
 * when the api is back. A job claimed by a worker that died is given back by the api when its lease
 * ends.
 *
 * Env: API_URL (http://127.0.0.1:8081), POLL_MS (200), WORK_MS (0), DEMO_SECRET_TOKEN (sent to the
 * api's worker routes), BERTH_ENV_FILE (re-read on SIGHUP).
 */
import { createHash } from 'node:crypto';
import { hostname } from 'node:os';
import { setTimeout as sleep } from 'node:timers/promises';
import { ApiClient, ApiError, describeFailure, failureKind, apiBaseUrl } from './lib/api-client.mjs';
import { handleSignals, logger, STOP_GRACE_MS } from './lib/service.mjs';
import { Settings } from './lib/settings.mjs';

const log = logger('worker');
const settings = new Settings(log);
const workerId = `${hostname()}/${process.pid}`;
const api = new ApiClient(
  () => apiBaseUrl(settings),
  () => settings.get('DEMO_SECRET_TOKEN'),
);
const MAX_BACKOFF_MS = 5000;

/** Aborted at SIGTERM: the loop takes no new job and stops waiting. */
const stopping = new AbortController();
/** Aborted when the grace period runs out: the job in hand is given back instead of finished. */
const giveUp = new AbortController();

let unsent; // a finished job's result the api has not taken yet
let failing; // the kind of failure (failureKind), while requests fail
let failures = 0;

async function run() {
  while (!stopping.signal.aborted) {
    let delay = settings.int('POLL_MS', 200, 10, 60_000);
    try {
      if (unsent) await postResult(unsent);
      const { jobs } = await api.request('GET', '/api/jobs?status=pending&limit=10', { signal: giveUp.signal });
      recovered();
      for (const job of jobs) {
        if (stopping.signal.aborted) break;
        await work(job);
      }
      if (jobs.length > 0) delay = 0; // more may be waiting
    } catch (err) {
      if (stopping.signal.aborted && giveUp.signal.aborted) break;
      failed(err);
      delay = Math.min(MAX_BACKOFF_MS, 200 * 2 ** Math.min(failures - 1, 5)) * (0.8 + Math.random() * 0.4);
    }
    await sleep(delay, undefined, { signal: stopping.signal }).catch(() => undefined);
  }
}

async function work(job) {
  const workMs = settings.int('WORK_MS', 0, 0, 3_600_000);
  try {
    await api.request('POST', `/api/jobs/${job.id}/claim`, { body: { worker: workerId, leaseMs: workMs + 30_000 }, signal: giveUp.signal });
  } catch (err) {
    if (err instanceof ApiError && (err.status === 409 || err.status === 404)) return; // another worker has it
    throw err;
  }
  const started = performance.now();
  try {
    if (workMs > 0) await sleep(workMs, undefined, { signal: giveUp.signal });
  } catch {
    // Out of time at shutdown: hand the job back rather than leave it to its lease.
    await api.request('POST', `/api/jobs/${job.id}/release`, { body: { worker: workerId }, timeoutMs: 200 }).catch(() => undefined);
    log(`job ${job.id} given back unfinished (stopping)`);
    return;
  }
  const text = job.text;
  unsent = {
    id: job.id,
    words: text.split(/\s+/).filter(Boolean).length,
    chars: [...text].length,
    sha256: createHash('sha256').update(text).digest('hex'),
    workMs: Math.round(performance.now() - started),
  };
  await postResult(unsent);
}

async function postResult(result) {
  const { id, ...body } = result;
  try {
    await api.request('POST', `/api/jobs/${id}/result`, { body: { worker: workerId, ...body }, signal: giveUp.signal });
    log(`job ${id} done (${body.words} words)`);
  } catch (err) {
    // The api no longer has the job, or someone else finished it: nothing left to post.
    if (!(err instanceof ApiError && (err.status === 404 || err.status === 409))) throw err;
    log(`job ${id}: result not taken (${err.message})`);
  }
  unsent = undefined;
}

function failed(err) {
  failures += 1;
  const kind = failureKind(err);
  if (kind === failing) return;
  log(`${failing === undefined ? 'api unavailable' : 'api still unavailable'} at ${apiBaseUrl(settings)}: ${describeFailure(err)}; retrying with backoff`);
  failing = kind;
}

function recovered() {
  if (failing !== undefined) log(`api reachable again (after ${failures} failed attempts)`);
  failing = undefined;
  failures = 0;
}

const loop = run();

handleSignals(log, {
  reload: () => settings.reload(),
  stop: async () => {
    stopping.abort();
    const timer = setTimeout(() => giveUp.abort(), STOP_GRACE_MS - 300);
    await loop;
    clearTimeout(timer);
    api.close();
  },
});

log(`started (api ${apiBaseUrl(settings)}, poll every ${settings.int('POLL_MS', 200, 10, 60_000)} ms, work ${settings.int('WORK_MS', 0, 0, 3_600_000)} ms)`);
