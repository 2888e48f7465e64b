// The dashboard's sign-in and the admin listener's doors, on the real stack: wrong tokens are
// throttled per client address (429 + Retry-After, growing, one log line per lockout); the token is
// at least 32 characters; another app's undecodable cookie is ignored; sign-out ends the session
// (kept in Redis with a TTL, the cookie holds only its id); the cookie is Secure when a trusted proxy
// says the request came over TLS; and the listener answers only ADMIN_ALLOWED_HOSTS (421 otherwise).
import assert from 'node:assert/strict';
import { request } from 'node:http';
import { after, before, test } from 'node:test';
import type { RunningAdmin } from '../../src/index.ts';
import { dashboardKeys } from '../../src/ops/dashboard/keys.ts';
import { runCli } from '../helpers/cli.ts';
import { startTestStack, type TestStack } from '../helpers/stack.ts';
import { until } from './helpers.ts';

const FAILURES = 3;
let t: TestStack;
let admin: RunningAdmin;
let token: string;
const warnings: string[] = [];

before(async () => {
  // TRUST_PROXY=loopback: the test speaks as a proxy on loopback, naming clients by X-Forwarded-For.
  t = await startTestStack({
    workers: false,
    webhook: false,
    env: { TRUST_PROXY: 'loopback' },
    policy: { dashboard: { signInFailures: FAILURES, firstLockoutSeconds: 1, maxLockoutSeconds: 60 } },
  });
  // The log line of each lockout, as the process would write it (the test stack logs nothing).
  t.ctx.logger.warn = ((obj: unknown, msg?: string) => void warnings.push(typeof obj === 'string' ? obj : (msg ?? ''))) as typeof t.ctx.logger.warn;
  admin = await t.pb.startAdmin();
  token = t.local.env.DASHBOARD_TOKEN!;
});

after(async () => {
  await admin.close();
  await t.stop();
});

const url = (p: string) => `${admin.url}${p}`;
const login = (body: Record<string, string>, client: string) =>
  fetch(url('/ui/login'), {
    method: 'POST',
    redirect: 'manual',
    headers: { 'content-type': 'application/x-www-form-urlencoded', 'x-forwarded-for': client },
    body: new URLSearchParams(body),
  });

/** A GET with a Host header of the test's choosing (fetch does not let one set it). */
function getWithHost(path: string, host: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request(url(path), { headers: { host } }, (res) => {
      let body = '';
      res.on('data', (d: Buffer) => (body += d.toString()));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('error', reject);
    req.end();
  });
}

test('wrong tokens from one address lock it out: 429 with Retry-After, longer each time, one log line per lockout; other addresses are not affected', async () => {
  const client = '203.0.113.7';
  for (let i = 1; i < FAILURES; i++) assert.equal((await login({ token: `wrong-${i}` }, client)).status, 401, `failure ${i}`);
  const locking = await login({ token: 'wrong-last' }, client);
  assert.equal(locking.status, 429, `the ${FAILURES}th wrong token locks the address out`);
  assert.equal(locking.headers.get('retry-after'), '1');
  // While locked out even the right token is refused, and so are bearer and ?token= guesses.
  const locked = await login({ token }, client);
  assert.equal(locked.status, 429);
  assert.ok(Number(locked.headers.get('retry-after')) >= 1);
  assert.equal((await fetch(url('/ui'), { headers: { authorization: 'Bearer guess', 'x-forwarded-for': client } })).status, 429);
  // Another address signs in meanwhile.
  assert.equal((await login({ token }, '198.51.100.9')).status, 303);
  assert.equal(warnings.filter((w) => w.includes(client)).length, 1, `one log line for the lockout, not one per refused request: ${warnings.join(' | ')}`);

  // Once it lapses, the same address gets FAILURES tries again; the next lockout is twice as long.
  await until(async () => (await login({ token: 'still-wrong' }, client)).status === 401, 'the first lockout to lapse', 10_000);
  for (let i = 2; i < FAILURES; i++) assert.equal((await login({ token: `wrong-again-${i}` }, client)).status, 401);
  const second = await login({ token: 'wrong-again-last' }, client);
  assert.equal(second.status, 429);
  assert.equal(second.headers.get('retry-after'), '2', 'the second lockout doubles the first');
  assert.equal(warnings.filter((w) => w.includes(client)).length, 2);
  assert.match(warnings.find((w) => w.includes(client))!, /dashboard sign-in locked for 203\.0\.113\.7/);
  assert.ok((await t.ctx.redis.pttl(dashboardKeys.signInLockouts(client))) > 0, 'what is remembered of an address expires');
});

test('a DASHBOARD_TOKEN shorter than 32 characters is refused: exit 3 naming it; the embedded stack generates a long one', async () => {
  const run = runCli(['worker'], { DASHBOARD_TOKEN: 'short-token', LOG_LEVEL: 'info' });
  const { code, stderr } = await run.exited;
  assert.equal(code, 3, stderr);
  assert.match(stderr, /DASHBOARD_TOKEN: must be at least 32 characters/);
  assert.ok(token.length >= 32, `the generated token has ${token.length} characters`);
  await assert.rejects(t.pb.startAdmin({ dashboardToken: 'x'.repeat(31) }), /DASHBOARD_TOKEN: must be at least 32 characters/);
});

test("another app's undecodable cookie on the same host is ignored: a signed-in user still gets the page", async () => {
  const signedIn = await login({ token }, '192.0.2.10');
  assert.equal(signedIn.status, 303);
  const session = signedIn.headers.get('set-cookie')!.split(';')[0]!;
  const res = await fetch(url('/ui'), { headers: { cookie: `other=%E0%A4%A; ${session}; broken=%` } });
  assert.equal(res.status, 200, await res.text());
});

test('sign-out revokes the session: the cookie holds only a random id, the session lives in Redis with a TTL and is gone after sign-out', async () => {
  const first = await login({ token }, '192.0.2.11');
  const second = await login({ token }, '192.0.2.11');
  const cookie = first.headers.get('set-cookie')!.split(';')[0]!;
  const id = cookie.split('=')[1]!;
  assert.notEqual(second.headers.get('set-cookie')!.split(';')[0], cookie, 'each sign-in is its own session, not a value derived from the token');
  const ttl = await t.ctx.redis.ttl(dashboardKeys.session(id));
  assert.ok(ttl > 0 && ttl <= t.ctx.policy.dashboard.sessionSeconds, `the session expires (TTL ${ttl} s)`);
  assert.equal((await fetch(url('/ui'), { headers: { cookie } })).status, 200);

  const page = await (await fetch(url('/ui'), { headers: { cookie } })).text();
  const csrf = /name="csrf" value="([0-9a-f]+)"/.exec(page)![1]!;
  const out = await fetch(url('/ui/logout'), {
    method: 'POST',
    redirect: 'manual',
    headers: { cookie, origin: admin.url, 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({ csrf }),
  });
  assert.equal(out.status, 303);
  assert.match(out.headers.get('set-cookie') ?? '', /Max-Age=0/);
  // A copy of the cookie kept by the browser (or anyone who saw it) no longer signs in.
  assert.equal((await fetch(url('/ui'), { headers: { cookie } })).status, 401, 'the old cookie is refused after sign-out');
  assert.equal(await t.ctx.redis.exists(dashboardKeys.session(id)), 0);
  assert.equal((await fetch(url('/ui'), { headers: { cookie: second.headers.get('set-cookie')!.split(';')[0]! } })).status, 200, 'only that session ended');
});

test('the session cookie is Secure when the trusted proxy says the request came over TLS, and not otherwise', async () => {
  const overTls = await fetch(url('/ui/login'), {
    method: 'POST',
    redirect: 'manual',
    headers: { 'content-type': 'application/x-www-form-urlencoded', 'x-forwarded-proto': 'https', 'x-forwarded-for': '192.0.2.20' },
    body: new URLSearchParams({ token }),
  });
  assert.match(overTls.headers.get('set-cookie') ?? '', /; Secure/);
  const plain = await login({ token }, '192.0.2.21');
  assert.doesNotMatch(plain.headers.get('set-cookie') ?? '', /Secure/);

  // Without TRUST_PROXY, nobody's X-Forwarded-Proto is believed.
  const other = await startTestStack({ workers: false, webhook: false });
  try {
    const untrusting = await other.pb.startAdmin();
    const res = await fetch(`${untrusting.url}/ui/login`, {
      method: 'POST',
      redirect: 'manual',
      headers: { 'content-type': 'application/x-www-form-urlencoded', 'x-forwarded-proto': 'https' },
      body: new URLSearchParams({ token: other.local.env.DASHBOARD_TOKEN! }),
    });
    assert.equal(res.status, 303);
    assert.doesNotMatch(res.headers.get('set-cookie') ?? '', /Secure/);
    await untrusting.close();
  } finally {
    await other.stop();
  }
});

test('the admin listener answers only its allowed host names: a DNS-rebinding name gets 421 on /metrics, /readyz, /healthz and /ui', async () => {
  for (const path of ['/metrics', '/readyz', '/healthz', '/ui', '/ui/login']) {
    const res = await getWithHost(path, `rebind.attacker.example:${admin.port}`);
    assert.equal(res.status, 421, path);
    assert.match(res.body, /ADMIN_ALLOWED_HOSTS/);
    assert.doesNotMatch(res.body, /portrait_batch_|"ready"/, 'nothing of the page itself');
  }
  for (const host of [`127.0.0.1:${admin.port}`, `localhost:${admin.port}`, 'localhost']) assert.equal((await getWithHost('/healthz', host)).status, 200, host);
  assert.equal((await fetch(url('/metrics'))).status, 200, 'the address it is called by in every other test');
});

test('ADMIN_ALLOWED_HOSTS names the hosts a deployment is called by (e.g. a compose service name)', async () => {
  const other = await startTestStack({ workers: false, webhook: false, env: { ADMIN_ALLOWED_HOSTS: 'webhook, *.internal.example,127.0.0.1' } });
  try {
    const a = await other.pb.startAdmin();
    const get = (host: string) =>
      new Promise<number>((resolve, reject) => {
        const req = request(`${a.url}/healthz`, { headers: { host } }, (res) => {
          res.resume();
          resolve(res.statusCode ?? 0);
        });
        req.on('error', reject);
        req.end();
      });
    assert.equal(await get('webhook:9090'), 200);
    assert.equal(await get('pb.internal.example'), 200);
    assert.equal(await get('internal.example'), 421, '*.domain matches subdomains only');
    assert.equal(await get('localhost'), 421, 'the list replaces the default');
    await a.close();
  } finally {
    await other.stop();
  }
});
