/**
 * JSON requests to the api, for the worker and for web's live feed: keep-alive connections, a
 * timeout, and one retry when a kept-alive connection turns out to have been closed by the api.
 */
import http from 'node:http';

export class ApiError extends Error {
  constructor(status, body) {
    super(`HTTP ${status}${body?.error ? `: ${body.error}` : ''}`);
    this.status = status;
    this.body = body;
  }
}

export class ApiClient {
  #agent = new http.Agent({ keepAlive: true, maxSockets: 8, timeout: 4000 });

  /** `baseUrl()` is called per request: API_URL may change on reload. */
  constructor(baseUrl, token = () => undefined) {
    this.baseUrl = baseUrl;
    this.token = token;
  }

  /** The parsed JSON answer of a 2xx; ApiError for any other status; a network error as it is. */
  async request(method, path, { body, timeoutMs = 5000, signal } = {}) {
    try {
      return await this.#once(method, path, body, timeoutMs, signal);
    } catch (err) {
      if (!err.reusedSocket || err.code !== 'ECONNRESET') throw err;
      return this.#once(method, path, body, timeoutMs, signal);
    }
  }

  #once(method, path, body, timeoutMs, signal) {
    const url = new URL(path, this.baseUrl());
    if (url.protocol !== 'http:') return Promise.reject(new Error(`API_URL must be an http:// address (got ${url.protocol})`));
    const payload = body === undefined ? undefined : JSON.stringify(body);
    const token = this.token();
    const headers = {
      accept: 'application/json',
      ...(payload !== undefined && { 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload) }),
      ...(token && { authorization: `Bearer ${token}` }),
    };
    return new Promise((resolve, reject) => {
      const req = http.request(url, { method, headers, agent: this.#agent, signal }, (res) => {
        const chunks = [];
        res.on('data', (chunk) => chunks.push(chunk));
        res.on('error', reject);
        res.on('end', () => {
          let parsed;
          try {
            parsed = JSON.parse(Buffer.concat(chunks).toString('utf8'));
          } catch {
            parsed = undefined;
          }
          if (res.statusCode >= 200 && res.statusCode < 300 && parsed !== undefined) resolve(parsed);
          else reject(new ApiError(res.statusCode, parsed));
        });
      });
      req.setTimeout(timeoutMs, () => req.destroy(Object.assign(new Error(`no answer within ${timeoutMs} ms`), { code: 'ETIMEDOUT' })));
      req.on('error', (err) => {
        err.reusedSocket = req.reusedSocket;
        reject(err);
      });
      req.end(payload);
    });
  }

  close() {
    this.#agent.destroy();
  }
}

/**
 * The kind of failure, for logging on changes only: every network error (refused, reset, timeout —
 * the api restarting goes through several) is one kind; each HTTP status is its own.
 */
export function failureKind(err) {
  return err instanceof ApiError ? `HTTP ${err.status}` : 'unreachable';
}

/** Why a request failed, in a few words: the HTTP status, or the network error's code. */
export function describeFailure(err) {
  if (err instanceof ApiError) return `HTTP ${err.status}`;
  if (err?.name === 'AbortError') return 'aborted';
  return err?.code ?? err?.message ?? String(err);
}

/**
 * Where the api answers: in berth's service mode it runs on other hosts, whose addresses berth gives
 * as BERTH_SERVICE_API_ADDR=ip:port,…; otherwise API_URL (default: this host).
 */
export function apiBaseUrl(settings) {
  const addr = settings.get('BERTH_SERVICE_API_ADDR');
  return addr ? `http://${String(addr).split(',')[0]}` : settings.get('API_URL', 'http://127.0.0.1:8081');
}
