/**
 * The router's own answers: which environment, and why it cannot be reached. HTML for people by
 * default, `{error:{code,message}}` when the request's Accept prefers JSON. Nothing here reveals
 * other environments: an unknown name gets a 404 that names only what was asked for.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Duplex } from 'node:stream';
import { STATUS_CODES } from 'node:http';

export type RouterErrorCode =
  /** The Host names no environment (bare domain, an IP, another domain). */
  | 'no_environment_in_host'
  /** `NAME.<domain>` but no route NAME. */
  | 'environment_not_found'
  /** The route has no backend in rotation. */
  | 'no_healthy_backend'
  /** The environment sleeps, and waking it for this request failed. */
  | 'environment_asleep'
  /** A private environment, and the request brought no credential that lets it in. */
  | 'environment_private'
  /** A private environment, and the request's token may not look at it. */
  | 'access_denied'
  /** The backend failed before answering, and no retry could help. */
  | 'backend_failed'
  /** The backend accepted the request but sent no response headers in time. */
  | 'backend_timeout'
  /** An Upgrade other than WebSocket. */
  | 'upgrade_not_supported';

export interface RouterErrorPage {
  status: number;
  code: RouterErrorCode;
  /** One sentence that names the environment and the reason. */
  message: string;
  /** Lines shown under the message in HTML (e.g. one per backend); the JSON message already holds them. */
  details?: readonly string[];
  /** What to do about it, for people. */
  hint?: string;
  /** Set as X-Berth-Environment when the request named one. */
  environment?: string;
}

const CONNECTION_ERROR_TEXT: Record<string, string> = {
  ECONNREFUSED: 'connection refused',
  ECONNRESET: 'connection reset',
  EPIPE: 'connection closed while sending',
  EHOSTUNREACH: 'host unreachable',
  EHOSTDOWN: 'host down',
  ENETUNREACH: 'network unreachable',
  ETIMEDOUT: 'connection timed out',
  ECONNABORTED: 'connection aborted',
  ENOTFOUND: 'host not found',
  EAI_AGAIN: 'host name lookup failed',
};

/** Codes that mean the backend could not take the connection at all (or dropped it before answering). */
export const CONNECTION_ERROR_CODES: ReadonlySet<string> = new Set(['ECONNREFUSED', 'ECONNRESET', 'EPIPE', 'EHOSTUNREACH', 'EHOSTDOWN', 'ENETUNREACH', 'ETIMEDOUT', 'ECONNABORTED']);

export function errorCode(err: unknown): string | undefined {
  if (typeof err !== 'object' || err === null || !('code' in err)) return undefined;
  const code = err.code;
  return typeof code === 'string' ? code : undefined;
}

/** `connection refused` rather than `connect ECONNREFUSED 10.1.0.5:8080`: the address is shown next to it. */
export function describeBackendError(err: unknown): string {
  const code = errorCode(err);
  const message = err instanceof Error ? err.message : String(err);
  if (code === 'ECONNRESET' && message === 'socket hang up') return 'connection closed before a response';
  if (code !== undefined && CONNECTION_ERROR_TEXT[code]) return CONNECTION_ERROR_TEXT[code];
  return message;
}

/**
 * True when the client would rather read JSON than HTML: application/json weighs more than text/html,
 * or as much but named outright (not through a wildcard), as in `application/json, text/plain, * / *`.
 */
export function prefersJson(accept: string | undefined): boolean {
  if (!accept) return false;
  const json = weigh(accept, 'application', 'json');
  const html = weigh(accept, 'text', 'html');
  return json.q > 0 && (json.q > html.q || (json.q === html.q && json.specificity > html.specificity));
}

/** The q of the most specific media range matching type/subtype (specificity 2 exact, 1 type/*, 0 * / *). */
function weigh(accept: string, type: string, subtype: string): { q: number; specificity: number } {
  let best = { q: 0, specificity: -1 };
  for (const part of accept.split(',')) {
    const [range = '', ...params] = part.split(';');
    const [rangeType = '', rangeSubtype = ''] = range.trim().toLowerCase().split('/');
    let specificity: number;
    if (rangeType === type && rangeSubtype === subtype) specificity = 2;
    else if (rangeType === type && rangeSubtype === '*') specificity = 1;
    else if (rangeType === '*' && rangeSubtype === '*') specificity = 0;
    else continue;
    if (specificity < best.specificity) continue;
    let q = 1;
    for (const param of params) {
      const [key = '', value = ''] = param.trim().split('=');
      if (key.trim().toLowerCase() === 'q') q = Number.parseFloat(value) || 0;
    }
    best = { q, specificity };
  }
  return best.specificity === -1 ? { q: 0, specificity: -1 } : best;
}

export function renderJson(page: RouterErrorPage): string {
  return JSON.stringify({ error: { code: page.code, message: page.message } });
}

const HTML_ESCAPES: Record<string, string> = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' };

export function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/g, (c) => HTML_ESCAPES[c] ?? c);
}

export function renderHtml(page: RouterErrorPage): string {
  const title = `${page.status} ${STATUS_CODES[page.status] ?? 'Error'}`;
  const details = page.details?.length ? `<ul>${page.details.map((d) => `<li><code>${escapeHtml(d)}</code></li>`).join('')}</ul>` : '';
  const hint = page.hint ? `<p>${escapeHtml(page.hint)}</p>` : '';
  return (
    `<!doctype html><html><head><meta charset="utf-8"><title>${escapeHtml(title)}</title>` +
    '<style>body{font:15px/1.5 system-ui,sans-serif;max-width:46rem;margin:3rem auto;padding:0 1rem;color:#222}' +
    'code{background:#f3f3f3;padding:.1rem .3rem;border-radius:3px}small{color:#777}</style></head><body>' +
    `<h1>${escapeHtml(title)}</h1><p>${escapeHtml(page.message)}</p>${details}${hint}` +
    `<p><small>berth router · ${escapeHtml(page.code)}</small></p></body></html>\n`
  );
}

function headersFor(page: RouterErrorPage, json: boolean, body: string): Record<string, string> {
  const headers: Record<string, string> = {
    'content-type': json ? 'application/json; charset=utf-8' : 'text/html; charset=utf-8',
    'content-length': String(Buffer.byteLength(body)),
    'cache-control': 'no-store',
  };
  if (page.environment) headers['x-berth-environment'] = page.environment;
  return headers;
}

/** Answers with the page, or cuts the response off when the backend's headers already went out. */
export function sendErrorPage(req: IncomingMessage, res: ServerResponse, page: RouterErrorPage): void {
  if (res.headersSent) {
    res.destroy();
    return;
  }
  const json = prefersJson(req.headers.accept);
  const body = json ? renderJson(page) : renderHtml(page);
  // Headers a failed proxy attempt set (X-Berth-Backend) stay: they say which backend failed.
  for (const [name, value] of Object.entries(headersFor(page, json, body))) res.setHeader(name, value);
  res.statusCode = page.status;
  res.end(req.method === 'HEAD' ? undefined : body);
}

/** The same page written straight to an upgrade request's socket (no ServerResponse there). */
export function writeErrorToSocket(req: IncomingMessage, socket: Duplex, page: RouterErrorPage, extraHeaders: Record<string, string> = {}): void {
  if (!socket.writable) {
    socket.destroy();
    return;
  }
  const json = prefersJson(req.headers.accept);
  const body = json ? renderJson(page) : renderHtml(page);
  const headers = { ...headersFor(page, json, body), ...extraHeaders, connection: 'close' };
  const head = [`HTTP/1.1 ${page.status} ${STATUS_CODES[page.status] ?? 'Error'}`, ...Object.entries(headers).map(([k, v]) => `${k}: ${v}`)];
  socket.end(`${head.join('\r\n')}\r\n\r\n${body}`);
}

/** The bare domain, an IP or a foreign name: say how addresses work, nothing about what exists. */
export function noEnvironmentPage(domain: string, port: string): RouterErrorPage {
  const example = `NAME.${domain}${port ? `:${port}` : ''}`;
  return {
    status: 404,
    code: 'no_environment_in_host',
    message: `this address names no environment: use http://${example}/ to reach the environment NAME`,
    hint: `Environments answer at their own name under ${domain}.`,
  };
}

export function environmentNotFoundPage(name: string): RouterErrorPage {
  return {
    status: 404,
    code: 'environment_not_found',
    message: `no environment named ${name}`,
    hint: 'Check the name in the address; the environment may have been removed or not be routed yet.',
    environment: name,
  };
}

export interface UnavailableBackend {
  describe(): string;
  lastError: string | null;
}

export function noHealthyBackendPage(name: string, backends: readonly UnavailableBackend[]): RouterErrorPage {
  if (backends.length === 0) {
    return { status: 503, code: 'no_healthy_backend', message: `environment ${name} has no backends`, hint: 'It is being deployed or was scaled to zero.', environment: name };
  }
  const details = backends.map((b) => `${b.describe()}: ${b.lastError ?? 'unhealthy'}`);
  return {
    status: 503,
    code: 'no_healthy_backend',
    message: `environment ${name} has no healthy backend: ${details.join('; ')}`,
    details,
    hint: 'Backends return to rotation as soon as a health check passes; retry shortly.',
    environment: name,
  };
}

/** A sleeping environment that could not be woken for this request. */
export function asleepPage(name: string, reason: string): RouterErrorPage {
  return {
    status: 503,
    code: 'environment_asleep',
    message: `environment ${name} is asleep and could not be woken: ${reason}`,
    hint: `The next request tries again; berth env show ${name} says more.`,
    environment: name,
  };
}

export function backendFailedPage(name: string, backend: UnavailableBackend, reason: string, timedOut: boolean): RouterErrorPage {
  return {
    status: timedOut ? 504 : 502,
    code: timedOut ? 'backend_timeout' : 'backend_failed',
    message: `environment ${name}: backend ${backend.describe()} failed: ${reason}`,
    hint: timedOut ? 'The application took too long to answer.' : 'The request could not be retried on another backend; retry it.',
    environment: name,
  };
}
