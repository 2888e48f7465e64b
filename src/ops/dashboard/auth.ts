// Who may use the dashboard: whoever holds DASHBOARD_TOKEN, shown as `Authorization: Bearer <token>`
// or through the login form, which sets an HttpOnly, SameSite=Strict cookie holding a value derived
// from the token (never the token). Comparisons are constant-time. A `?token=` on a GET (the link
// `demo` prints) signs the browser in. Changing requests
// (POST) from a browser must come from this origin and carry the CSRF field derived from the token.
import { createHmac, timingSafeEqual } from 'node:crypto';
import type { NextFunction, Request, Response } from 'express';

export const SESSION_COOKIE = 'pb_dashboard';
/** The query parameter that signs a browser in (the demo's dashboardUrl carries it). */
export const TOKEN_PARAM = 'token';
const SESSION_SECONDS = 12 * 3600;

const derive = (token: string, purpose: string) => createHmac('sha256', token).update(`portrait-batch dashboard ${purpose}`).digest('hex');

/** Equal in constant time, whatever the lengths (both sides are hashed first). */
export function sameSecret(given: string, expected: string): boolean {
  const a = createHmac('sha256', 'compare').update(given).digest();
  const b = createHmac('sha256', 'compare').update(expected).digest();
  return timingSafeEqual(a, b);
}

function cookies(req: Request): Record<string, string> {
  const out: Record<string, string> = {};
  for (const part of (req.headers.cookie ?? '').split(';')) {
    const i = part.indexOf('=');
    if (i > 0) out[part.slice(0, i).trim()] = decodeURIComponent(part.slice(i + 1).trim());
  }
  return out;
}

export interface DashboardAuth {
  /** The CSRF field value every form carries. */
  csrf: string;
  /** Sets the session cookie. */
  signIn(req: Request, res: Response): void;
  signOut(res: Response): void;
  /** True when `given` is the token. */
  isToken(given: unknown): boolean;
  /** Lets signed-in requests through; answers others 401 (with the login form for browsers). */
  require(onRefused: (req: Request, res: Response) => void): (req: Request, res: Response, next: NextFunction) => void;
  /** For POSTs: same origin (by the Origin and Sec-Fetch-Site headers browsers send). */
  checkOrigin(req: Request): string | undefined;
  /** For POSTs of a signed-in browser: same origin, and the CSRF field unless the token came in the Authorization header. */
  checkPost(req: Request): string | undefined;
}

export function dashboardAuth(token: string): DashboardAuth {
  const session = derive(token, 'session');
  const csrf = derive(token, 'csrf');
  const bearer = (req: Request) => /^Bearer\s+(.+)$/i.exec(req.headers.authorization ?? '')?.[1]?.trim();
  const isToken = (given: unknown) => typeof given === 'string' && given.length > 0 && sameSecret(given, token);
  const signIn = (req: Request, res: Response) => {
    const secure = req.secure ? '; Secure' : '';
    res.setHeader('Set-Cookie', `${SESSION_COOKIE}=${session}; HttpOnly; SameSite=Strict; Path=/ui; Max-Age=${SESSION_SECONDS}${secure}`);
  };
  return {
    csrf,
    signIn,
    signOut: (res) => res.setHeader('Set-Cookie', `${SESSION_COOKIE}=; HttpOnly; SameSite=Strict; Path=/ui; Max-Age=0`),
    isToken,
    require: (onRefused) => (req, res, next) => {
      const fromHeader = bearer(req);
      if (fromHeader !== undefined) {
        if (isToken(fromHeader)) return next();
        return void res.status(401).type('text/plain').send('the bearer token is not DASHBOARD_TOKEN\n');
      }
      const fromQuery = req.method === 'GET' ? req.query[TOKEN_PARAM] : undefined;
      if (fromQuery !== undefined && isToken(fromQuery)) {
        // Signed in: the page is served and the cookie set; the page's script then drops the token
        // from the address bar (history.replaceState), and no-referrer keeps it from other sites.
        signIn(req, res);
        return next();
      }
      const cookie = cookies(req)[SESSION_COOKIE];
      if (cookie && sameSecret(cookie, session)) return next();
      onRefused(req, res);
    },
    checkOrigin,
    checkPost(req) {
      const wrongOrigin = checkOrigin(req);
      if (wrongOrigin) return wrongOrigin;
      if (bearer(req) !== undefined) return undefined;
      const field = (req.body as Record<string, unknown> | undefined)?.csrf;
      if (typeof field !== 'string' || !sameSecret(field, csrf)) return 'the form is missing its CSRF field or it is stale: reload the page';
      return undefined;
    },
  };
}

/** Browsers name the page a POST comes from (Origin, Sec-Fetch-Site): it must be this origin. */
function checkOrigin(req: Request): string | undefined {
  const origin = req.headers.origin;
  if (origin === 'null') return 'request from an opaque origin refused';
  if (origin !== undefined) {
    const host = req.headers.host ?? '';
    if (origin !== `http://${host}` && origin !== `https://${host}`) return `cross-origin request from ${origin} refused`;
  }
  const site = req.headers['sec-fetch-site'];
  if (site !== undefined && site !== 'same-origin' && site !== 'none') return `cross-site request (${String(site)}) refused`;
  return undefined;
}
