// A terminal on a host in the dashboard: xterm.js on the page, joined to the host's terminal by
// the shell WebSocket (GET /v1/hosts/:id/shell, src/shells/shell-endpoint.ts). The dashboard's
// cookie authenticates it. Binary frames are the terminal's bytes; the size follows the dialog.
import { Terminal } from '/dashboard/xterm.mjs';
import { FitAddon } from '/dashboard/addon-fit.mjs';

let stylesheet = null;

/** Opens the dialog with a terminal on `hostId`; returns a function that closes both. */
export function openTerminal(hostId, el) {
  if (!stylesheet) {
    stylesheet = document.createElement('link');
    stylesheet.rel = 'stylesheet';
    stylesheet.href = '/dashboard/xterm.css';
    document.head.append(stylesheet);
  }
  el.host.textContent = hostId;
  el.status.textContent = 'connecting…';
  el.status.dataset.state = 'connecting';
  el.screen.replaceChildren();
  el.dialog.showModal();
  const term = new Terminal({ cursorBlink: true, fontSize: 14, scrollback: 5000 });
  const fit = new FitAddon();
  term.loadAddon(fit);
  term.open(el.screen);
  fit.fit();
  const query = new URLSearchParams({ cols: String(term.cols), rows: String(term.rows), term: 'xterm-256color' });
  const ws = new WebSocket(`${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/v1/hosts/${encodeURIComponent(hostId)}/shell?${query}`);
  ws.binaryType = 'arraybuffer';
  const encoder = new TextEncoder();
  let ended = false;
  const status = (state, text) => {
    el.status.dataset.state = state;
    el.status.textContent = text;
  };
  ws.addEventListener('open', () => {
    status('open', 'connected');
    term.focus();
  });
  ws.addEventListener('message', (m) => {
    if (m.data instanceof ArrayBuffer) return term.write(new Uint8Array(m.data));
    const frame = JSON.parse(m.data);
    if (frame.type !== 'exit') return;
    ended = true;
    const how = frame.error ?? (frame.signal ? `ended by ${frame.signal}` : `exit code ${frame.code}`);
    status('ended', `ended: ${how}`);
    term.write(`\r\n\x1b[2m[${how}]\x1b[0m\r\n`);
  });
  ws.addEventListener('close', () => {
    if (!ended) status('ended', 'the connection was closed (is the host still running?)');
  });
  const typed = term.onData((data) => ws.readyState === WebSocket.OPEN && ws.send(encoder.encode(data)));
  const resized = term.onResize(({ cols, rows }) => ws.readyState === WebSocket.OPEN && ws.send(JSON.stringify({ type: 'resize', cols, rows })));
  const refit = () => fit.fit();
  window.addEventListener('resize', refit);
  let closed = false;
  const close = () => {
    if (closed) return;
    closed = true;
    window.removeEventListener('resize', refit);
    typed.dispose();
    resized.dispose();
    ws.close();
    term.dispose();
    if (el.dialog.open) el.dialog.close();
  };
  return close;
}
