/**
 * What the router does for private environments (environments/access.ts holds the policy): berth's
 * own credentials, which no app ever sees, and the gate a private route carries.
 */
import type { IncomingMessage } from 'node:http';
import type { RouterErrorPage } from './error-pages.js';

/** Where a private environment's access link is exchanged for its cookie (see environments/access.ts). */
export const ACCESS_PATH = '/.berth/access';
/** berth's own credentials for private environments: no app sees them, private or not. */
export const CREDENTIAL_HEADER = 'x-berth-token';
export const CREDENTIAL_COOKIE = 'berth_access';

/** The value of berth's access cookie in a request, if any. */
export function credentialCookie(req: IncomingMessage): string | undefined {
  const prefix = `${CREDENTIAL_COOKIE}=`;
  return req.headers.cookie
    ?.split(/;\s*/)
    .find((part) => part.startsWith(prefix))
    ?.slice(prefix.length);
}

/** Takes berth's credentials out of a request before it goes to an app (other cookies stay). */
export function stripCredentials(req: IncomingMessage): void {
  delete req.headers[CREDENTIAL_HEADER];
  const cookie = req.headers.cookie;
  if (!cookie?.includes(`${CREDENTIAL_COOKIE}=`)) return;
  const kept = cookie.split(/;\s*/).filter((part) => !part.startsWith(`${CREDENTIAL_COOKIE}=`));
  if (kept.length > 0) req.headers.cookie = kept.join('; ');
  else delete req.headers.cookie;
}

/** A private environment's gate (environments/access.ts). */
export interface RouteGuard {
  /** Nothing: the request may go on; else the page that answers it. (The router takes berth's credentials out either way.) */
  check(req: IncomingMessage): Promise<RouterErrorPage | undefined>;
  /** A request for ACCESS_PATH: a cookie and where to go, or the page that answers it. */
  login(req: IncomingMessage): Promise<{ setCookie: string; location: string } | RouterErrorPage>;
}

export function guardFailedPage(name: string, err: unknown): RouterErrorPage {
  return { status: 503, code: 'environment_private', message: `environment ${name} is private, and whether this request may see it could not be checked: ${err instanceof Error ? err.message : String(err)}`, hint: 'Retry shortly.', environment: name };
}
