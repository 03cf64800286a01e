/**
 * What every service of the demo shares: one-line logs, signals (HUP reloads, TERM/INT stop within
 * the grace period and exit 0) and the small HTTP helpers of the two servers.
 */

/** One line per notable event on stdout; berth's supervisor stamps the time as it reads each line. */
export function logger(service) {
  return (line) => process.stdout.write(`${service}: ${line}\n`);
}

/** Stop must finish within this; the supervisor's KILL comes much later, but the demo promises 2 s. */
export const STOP_GRACE_MS = 1500;

/**
 * SIGHUP calls `reload`; SIGTERM and SIGINT call `stop` once, which resolves when the service has
 * finished what it was doing; then the process exits 0 — at the latest STOP_GRACE_MS + 300 ms later.
 */
export function handleSignals(log, { reload, stop }) {
  process.on('SIGHUP', () => reload());
  let stopping = false;
  const onStop = (signal) => {
    if (stopping) return;
    stopping = true;
    log(`${signal}: stopping`);
    setTimeout(() => {
      log('stop took too long; exiting anyway');
      process.exit(0);
    }, STOP_GRACE_MS + 300).unref();
    Promise.resolve()
      .then(stop)
      .then(
        () => {
          log('stopped');
          process.exit(0);
        },
        (err) => {
          log(`stop failed: ${err?.message ?? err}`);
          process.exit(1);
        },
      );
  };
  process.on('SIGTERM', () => onStop('SIGTERM'));
  process.on('SIGINT', () => onStop('SIGINT'));
}

/**
 * Listens on PORT (and HOST when set; otherwise every interface, IPv6 too where the host has it).
 * A port in use ends the process with one line and exit 1: the supervisor's backoff retries it.
 */
export function listen(server, log, { port, host }) {
  return new Promise((resolve) => {
    server.once('error', (err) => {
      log(`cannot listen on ${host ?? '*'}:${port}: ${err.code ?? err.message}`);
      process.exit(1);
    });
    server.listen({ port, ...(host && { host }) }, () => {
      const address = server.address();
      log(`listening on ${typeof address === 'object' && address ? `${address.address}:${address.port}` : port}`);
      resolve();
    });
  });
}

/**
 * Stops accepting connections and resolves once the requests in flight are answered; keep-alive
 * connections are closed as soon as they are idle, and anything left is cut after `graceMs`.
 */
export function closeServer(server, graceMs = STOP_GRACE_MS - 200) {
  return new Promise((resolve) => {
    const idle = setInterval(() => server.closeIdleConnections(), 50);
    const cut = setTimeout(() => server.closeAllConnections(), graceMs);
    server.close(() => {
      clearInterval(idle);
      clearTimeout(cut);
      resolve();
    });
    server.closeIdleConnections();
  });
}

export class HttpError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

export function sendJson(res, status, body, headers = {}) {
  const text = `${JSON.stringify(body)}\n`;
  res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(text), 'cache-control': 'no-store', ...headers });
  res.end(text);
}

export function sendText(res, status, text, headers = {}) {
  res.writeHead(status, { 'content-type': 'text/plain; charset=utf-8', 'content-length': Buffer.byteLength(text), 'cache-control': 'no-store', ...headers });
  res.end(text);
}

/** The request's JSON body (an object), at most `limit` bytes; HttpError 400/413/415 otherwise. */
export function readJson(req, limit = 64 * 1024) {
  return new Promise((resolve, reject) => {
    const type = req.headers['content-type'] ?? '';
    if (!/^application\/json\b/i.test(type)) {
      req.resume();
      reject(new HttpError(415, 'send the body as application/json'));
      return;
    }
    const chunks = [];
    let size = 0;
    req.on('data', (chunk) => {
      size += chunk.length;
      if (size > limit) {
        // Drain the rest unread, so the 413 reaches the client.
        req.removeAllListeners('data');
        req.resume();
        reject(new HttpError(413, `the body is over ${limit} bytes`));
        return;
      }
      chunks.push(chunk);
    });
    req.on('error', reject);
    req.on('end', () => {
      try {
        const value = JSON.parse(Buffer.concat(chunks).toString('utf8'));
        if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new Error('not an object');
        resolve(value);
      } catch {
        reject(new HttpError(400, 'the body is not a JSON object'));
      }
    });
  });
}
