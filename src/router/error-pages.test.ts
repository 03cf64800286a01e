import { describe, expect, it } from 'vitest';
import { backendFailedPage, describeBackendError, escapeHtml, noHealthyBackendPage, prefersJson, renderHtml, renderJson } from './error-pages.js';

describe('prefersJson', () => {
  it('picks JSON only when the client weighs it above HTML or names it outright', () => {
    expect(prefersJson(undefined)).toBe(false);
    expect(prefersJson('*/*')).toBe(false);
    expect(prefersJson('application/json')).toBe(true);
    expect(prefersJson('application/json, text/plain, */*')).toBe(true);
    expect(prefersJson('text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8')).toBe(false);
    expect(prefersJson('text/html, application/json')).toBe(false);
    expect(prefersJson('text/html;q=0.5, application/json')).toBe(true);
    expect(prefersJson('application/json;q=0, */*')).toBe(false);
    expect(prefersJson('application/*')).toBe(true);
  });
});

describe('pages', () => {
  const backend = (label: string | undefined, lastError: string | null) => ({ describe: () => `${label ? `${label} on ` : ''}h-1 (10.1.0.5:8080)`, lastError });

  it('names the environment and every backend with its last error when none is healthy', () => {
    const page = noHealthyBackendPage('shop', [backend('web', 'connection refused'), backend(undefined, 'health check GET / answered 500')]);
    expect(page.status).toBe(503);
    expect(page.message).toBe('environment shop has no healthy backend: web on h-1 (10.1.0.5:8080): connection refused; h-1 (10.1.0.5:8080): health check GET / answered 500');
    expect(JSON.parse(renderJson(page))).toEqual({ error: { code: 'no_healthy_backend', message: page.message } });
    expect(renderHtml(page)).toContain('<li><code>web on h-1 (10.1.0.5:8080): connection refused</code></li>');
    expect(noHealthyBackendPage('shop', []).message).toBe('environment shop has no backends');
  });

  it('names environment and backend on a proxy failure, 504 for a timeout', () => {
    expect(backendFailedPage('shop', backend('web', null), 'connection refused', false)).toMatchObject({ status: 502, code: 'backend_failed', message: 'environment shop: backend web on h-1 (10.1.0.5:8080) failed: connection refused' });
    expect(backendFailedPage('shop', backend('web', null), 'no response within 5 ms', true)).toMatchObject({ status: 504, code: 'backend_timeout' });
  });

  it('escapes what it renders', () => {
    expect(escapeHtml(`<a href="x">'&'</a>`)).toBe('&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;');
    expect(renderHtml({ status: 404, code: 'environment_not_found', message: 'no environment named <b>' })).toContain('no environment named &lt;b&gt;');
  });

  it('describes connection errors in words', () => {
    const err = (code: string, message = code) => Object.assign(new Error(message), { code });
    expect(describeBackendError(err('ECONNREFUSED', 'connect ECONNREFUSED 10.1.0.5:8080'))).toBe('connection refused');
    expect(describeBackendError(err('ECONNRESET', 'socket hang up'))).toBe('connection closed before a response');
    expect(describeBackendError(err('ECONNRESET', 'read ECONNRESET'))).toBe('connection reset');
    expect(describeBackendError(err('EHOSTUNREACH'))).toBe('host unreachable');
    expect(describeBackendError(new Error('something else'))).toBe('something else');
  });
});
