// Which Host names the admin listener answers (ADMIN_ALLOWED_HOSTS). A page on an attacker's domain
// that re-points its name at 127.0.0.1 (DNS rebinding) reaches the listener as same-origin to the
// browser, but its requests still carry the attacker's name in Host: those get 421 and nothing else.
import type { NextFunction, Request, Response } from 'express';

/** Loopback names every admin listener answers unless ADMIN_ALLOWED_HOSTS says otherwise. */
const LOOPBACK_NAMES = ['localhost', '127.0.0.1', '::1'];

/** The names allowed: ADMIN_ALLOWED_HOSTS when set, else the loopback names and the bound address. */
export function allowedAdminHosts(configured: readonly string[] | undefined, boundHost: string): string[] {
  if (configured?.length) return [...configured];
  const bound = boundHost.toLowerCase().replace(/^\[|\]$/g, '');
  // 0.0.0.0 and :: are not names anyone calls the listener by.
  return bound && bound !== '0.0.0.0' && bound !== '::' && !LOOPBACK_NAMES.includes(bound) ? [...LOOPBACK_NAMES, bound] : [...LOOPBACK_NAMES];
}

/** The host name of a Host header: port and IPv6 brackets dropped, lower case; undefined when malformed. */
export function hostName(header: string): string | undefined {
  const h = header.trim().toLowerCase();
  const v6 = /^\[([0-9a-f:.]+)\](?::\d{1,5})?$/.exec(h);
  if (v6) return v6[1];
  const m = /^([a-z0-9.-]+)(?::\d{1,5})?$/.exec(h);
  return m ? m[1]!.replace(/\.$/, '') : undefined;
}

export function hostMatches(name: string, patterns: readonly string[]): boolean {
  return patterns.some((p) => (p.startsWith('*.') ? name.endsWith(p.slice(1)) && name.length > p.length - 1 : name === p));
}

/** Express middleware: 421 Misdirected Request for any Host not allowed. */
export function requireAllowedHost(allowed: readonly string[]) {
  return (req: Request, res: Response, next: NextFunction) => {
    const header = req.headers.host;
    // HTTP/1.0 without Host cannot come from a browser (every browser sends one): nothing to rebind.
    if (header === undefined) return next();
    const name = hostName(header);
    if (name !== undefined && hostMatches(name, allowed)) return next();
    res
      .status(421)
      .type('text/plain')
      .send(`this admin listener does not answer to the host ${JSON.stringify(header.slice(0, 100))}: add it to ADMIN_ALLOWED_HOSTS if it is yours\n`);
  };
}
