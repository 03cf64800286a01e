/** The demo's one HTML page, rendered by web with its current settings (escaped: they are text). */

const ESCAPES = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' };

export function escapeHtml(text) {
  return String(text).replace(/[&<>"']/g, (char) => ESCAPES[char]);
}

/** JSON that is safe inside a <script type="application/json"> element. */
function scriptJson(value) {
  return JSON.stringify(value).replace(/</g, '\\u003c').replace(/\u2028/g, '\\u2028').replace(/\u2029/g, '\\u2029');
}

export function renderPage(config) {
  const meta = [
    config.environment && `environment <b id="environment">${escapeHtml(config.environment)}</b>`,
    config.ref && `ref <b id="ref">${escapeHtml(config.ref)}</b>`,
    `version <b id="version">${escapeHtml(config.version)}</b>`,
  ]
    .filter(Boolean)
    .join(' · ');
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>berth demo</title>
<link rel="stylesheet" href="/style.css">
<script type="application/json" id="boot">${scriptJson(config)}</script>
<script type="module" src="/app.js"></script>
</head>
<body>
<header>
  <h1 id="greeting">${escapeHtml(config.greeting)}</h1>
  <p class="meta" id="meta">${meta}</p>
</header>
<main>
  <form id="job-form" autocomplete="off">
    <label for="job-text">Text to process</label>
    <textarea id="job-text" name="text" rows="3" maxlength="10000" required placeholder="Count my words"></textarea>
    <button type="submit">Submit job</button>
    <span id="form-status" role="status"></span>
  </form>
  <section>
    <h2>Jobs <span id="live-status" class="badge">connecting…</span></h2>
    <table>
      <thead><tr><th>id</th><th>text</th><th>status</th><th>words</th><th>sha256</th><th>updated</th></tr></thead>
      <tbody id="jobs"><tr class="empty"><td colspan="6">No jobs yet.</td></tr></tbody>
    </table>
  </section>
</main>
</body>
</html>
`;
}
