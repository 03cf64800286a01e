/**
 * Real Chromium for the dashboard's tests, driven by playwright-core (which bundles no browser):
 * Debian's `chromium`, or the one BERTH_CHROMIUM names. Screenshots go to test-results/screenshots.
 * Like the AWS tests without moto, the browser tests skip when there is no Chromium, except in CI
 * (CI or BERTH_REQUIRE_CHROMIUM set), where a missing Chromium is an error.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { chromium, type Browser, type Page } from 'playwright-core';
import { packageRoot } from '../../src/cli/paths.js';

export function chromiumPath(): string {
  const named = process.env['BERTH_CHROMIUM'];
  if (named) {
    if (!existsSync(named)) throw new Error(`BERTH_CHROMIUM names ${named}, which does not exist`);
    return named;
  }
  for (const name of ['chromium', 'chromium-browser', 'google-chrome']) {
    try {
      return execFileSync('sh', ['-c', `command -v ${name}`], { encoding: 'utf8' }).trim();
    } catch {
      // not this one
    }
  }
  throw new Error('no Chromium found: install Debian\'s `chromium` (apt-get install chromium), or set BERTH_CHROMIUM to a Chromium binary');
}

export const chromiumRequired = Boolean(process.env['CI'] || process.env['BERTH_REQUIRE_CHROMIUM']);

/** Whether the browser tests should run; says why when they do not. */
export function chromiumAvailable(suite: string): boolean {
  try {
    chromiumPath();
    return true;
  } catch (err) {
    if (chromiumRequired) return true; // run, and fail at launch with the reason
    process.stderr.write(`${suite}: SKIPPED, ${(err as Error).message}; in CI these tests run.\n`);
    return false;
  }
}

export function launchChromium(): Promise<Browser> {
  // As root (CI), Chromium's sandbox cannot start; the pages are berth's own.
  return chromium.launch({ executablePath: chromiumPath(), args: process.getuid?.() === 0 ? ['--no-sandbox'] : [] });
}

export const SCREENSHOT_DIR = join(packageRoot(), 'test-results', 'screenshots');

export function screenshotPath(name: string): string {
  if (!existsSync(SCREENSHOT_DIR)) mkdirSync(SCREENSHOT_DIR, { recursive: true });
  return join(SCREENSHOT_DIR, `${name}.png`);
}

/**
 * The little of the DOM that functions run in the page (page.waitForFunction) use, so tests need
 * not compile against the whole DOM library: `declare const document: PageDocument` where needed.
 */
export interface PageElement {
  getAttribute(name: string): string | null;
  readonly textContent: string | null;
}
export interface PageDocument {
  querySelector(selector: string): PageElement | null;
  querySelectorAll(selector: string): ArrayLike<PageElement>;
  readonly body: { readonly dataset: Record<string, string | undefined> };
}

declare const document: PageDocument;

/** The attribute `name` of every element matching `selector`, in document order. */
export function attributes(page: Page, selector: string, name: string): Promise<(string | null)[]> {
  return page.evaluate(([sel, attr]) => Array.from(document.querySelectorAll(sel), (el) => el.getAttribute(attr)), [selector, name] as const);
}

/** Every `[data-k]` number inside `selector`, by key: its data-v, the exact value (null for "none"). */
export function numbersIn(page: Page, selector: string): Promise<Record<string, number | null>> {
  return page.evaluate(
    (sel) => Object.fromEntries(Array.from(document.querySelectorAll(`${sel} [data-k]`), (el) => [el.getAttribute('data-k') ?? '', el.getAttribute('data-v') === '' ? null : Number(el.getAttribute('data-v'))])),
    selector,
  );
}
