// Who may use the dashboard: whoever holds DASHBOARD_TOKEN, shown as `Authorization: Bearer <token>`
// or through the login form, which starts a server-side session (Redis, with a TTL) and sets an
// HttpOnly, SameSite=Strict cookie holding only its random id (Secure when the request came over TLS,
// as TRUST_PROXY lets a proxy say). Sign-out deletes the session. Comparisons are constant-time. A
// `?token=` on a GET (the link `demo` prints) signs the browser in. Wrong tokens are throttled per
// client address (signInThrottle.ts). Changing requests (POST) from a browser must come from this
// origin and carry the CSRF field derived from the token.
import { createHmac, timingSafeEqual } from 'node:crypto';
import type { NextFunction, Request, Response } from 'express';
import type { Sessions } from './sessions.ts';
import type { SignInThrottle } from './signInThrottle.ts';

export const SESSION_COOKIE = 'pb_dashboard';
/** The query parameter that signs a browser in (the demo's dashboardUrl carries it). */
export const TOKEN_PARAM = 'token';

/** A value derived from the token for one purpose (never the token itself). */
export const derive = (token: string, purpose: string) => createHmac('sha256', token).update(`portrait-batch dashboard ${purpose}`).digest('hex');

/** Equal in constant time, whatever the lengths (both sides are hashed first). */
export function sameSecret(given: string, expected: string): boolean {
  const a = createHmac('sha256', 'compare').update(given).digest();
  const b = createHmac('sha256', 'compare').update(expected).digest();
  return timingSafeEqual(a, b);
}

/**
 * The request's cookies. Other apps on the same host name share the Cookie header: a value that is
 * not valid percent-encoding (`other=%E0%A4%A`) is theirs to worry about and is skipped, never a 500.
 */
export function cookies(req: Request): Record<string, string> {
  const out: Record<string, string> = {};
  for (const part of (req.headers.cookie ?? '').split(';')) {
    const i = part.indexOf('=');
    if (i <= 0) continue;
    const name = part.slice(0, i).trim();
    try {
      out[name] = decodeURIComponent(part.slice(i + 1).trim());
    } catch {
      // Not ours, or not decodable: ignored.
    }
  }
  return out;
}

export interface DashboardAuth {
  /** The CSRF field value every form carries. */
  csrf: string;
  /** The login form: throttled per client, a session on the right token. False when an answer was sent; true when signed in (the caller redirects). */
  login(req: Request, res: Response, refused: (status: number, message: string) => void): Promise<boolean>;
  /** Deletes the request's session and clears its cookie. */
  signOut(req: Request, res: Response): Promise<void>;
  /** Lets signed-in requests through; answers others 401 (with the login form for browsers), locked-out clients 429. */
  require(onRefused: (req: Request, res: Response) => void): (req: Request, res: Response, next: NextFunction) => void;
  /** For POSTs: same origin (by the Origin and Sec-Fetch-Site headers browsers send). */
  checkOrigin(req: Request): string | undefined;
  /** For POSTs of a signed-in browser: same origin, and the CSRF field unless the token came in the Authorization header. */
  checkPost(req: Request): string | undefined;
}

/** The address wrong tokens are counted by: the peer, or the client a trusted proxy names (TRUST_PROXY). */
const clientOf = (req: Request) => req.ip ?? req.socket.remoteAddress ?? 'unknown';

export function dashboardAuth(token: string, deps: { sessions: Sessions; throttle: SignInThrottle; sessionSeconds: number }): DashboardAuth {
  const { sessions, throttle } = deps;
  const csrf = derive(token, 'csrf');
  const bearer = (req: Request) => /^Bearer\s+(.+)$/i.exec(req.headers.authorization ?? '')?.[1]?.trim();
  const isToken = (given: unknown) => typeof given === 'string' && given.length > 0 && sameSecret(given, token);
  const cookieAttributes = (req: Request, maxAge: number) => `HttpOnly; SameSite=Strict; Path=/ui; Max-Age=${maxAge}${req.secure ? '; Secure' : ''}`;
  const signIn = async (req: Request, res: Response) => {
    await throttle.succeeded(clientOf(req));
    const id = await sessions.create();
    res.setHeader('Set-Cookie', `${SESSION_COOKIE}=${id}; ${cookieAttributes(req, deps.sessionSeconds)}`);
  };
  const tooMany = (res: Response, seconds: number) =>
    void res
      .status(429)
      .set('Retry-After', String(seconds))
      .type('text/plain')
      .send(`too many wrong dashboard tokens from this address: try again in ${seconds} s\n`);
  /** A presented token checked under the throttle: true when it is the token; otherwise the answer is sent. */
  const checkToken = async (req: Request, res: Response, given: unknown, wrong: () => void): Promise<boolean> => {
    const client = clientOf(req);
    const wait = await throttle.lockedFor(client);
    if (wait > 0) {
      tooMany(res, wait);
      return false;
    }
    if (isToken(given)) return true;
    const locked = await throttle.failed(client);
    if (locked > 0) tooMany(res, locked);
    else wrong();
    return false;
  };
  const guard =
    (onRefused: (req: Request, res: Response) => void) =>
    async (req: Request, res: Response, next: NextFunction): Promise<void> => {
      const fromHeader = bearer(req);
      if (fromHeader !== undefined) {
        const ok = await checkToken(req, res, fromHeader, () => void res.status(401).type('text/plain').send('the bearer token is not DASHBOARD_TOKEN\n'));
        return ok ? next() : undefined;
      }
      const fromQuery = req.method === 'GET' ? req.query[TOKEN_PARAM] : undefined;
      if (fromQuery !== undefined) {
        if (!(await checkToken(req, res, fromQuery, () => onRefused(req, res)))) return;
        // Signed in: the page is served and the cookie set; the page's script then drops the token
        // from the address bar (history.replaceState), and no-referrer keeps it from other sites.
        await signIn(req, res);
        return next();
      }
      if (await sessions.valid(cookies(req)[SESSION_COOKIE])) return next();
      onRefused(req, res);
    };
  return {
    csrf,
    async login(req, res, refused) {
      const given = (req.body as Record<string, unknown> | undefined)?.token;
      if (!(await checkToken(req, res, given, () => refused(401, 'That is not the dashboard token.')))) return false;
      await signIn(req, res);
      return true;
    },
    async signOut(req, res) {
      await sessions.revoke(cookies(req)[SESSION_COOKIE]);
      res.setHeader('Set-Cookie', `${SESSION_COOKIE}=; ${cookieAttributes(req, 0)}`);
    },
    require: (onRefused) => (req, res, next) => void guard(onRefused)(req, res, next).catch(next),
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
