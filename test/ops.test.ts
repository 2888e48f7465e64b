// The admin listener: /metrics counts what a run did, /healthz and /readyz tell an orchestrator how
// the process is (503 naming Redis when it is down), and the dashboard answers only its token.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { freePort } from '../src/local/ports.ts';
import { faceDataUri } from './helpers/faces.ts';
import { startTestStack, type TestStack } from './helpers/stack.ts';

/** `name{labels} value` lines of a Prometheus text exposition, by name and label text. */
function parseMetrics(text: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][\w:]*)(\{[^}]*\})?\s+(\S+)$/.exec(line);
    if (m) out.set(`${m[1]}${m[2] ?? ''}`, Number(m[3]));
  }
  return out;
}

async function manifest(t: TestStack, rows: number, extra = ''): Promise<string> {
  const lines = ['id,face_url'];
  for (let i = 0; i < rows; i++) lines.push(`r${i},"${await faceDataUri(i)}"`);
  return t.manifest(`m-${Date.now()}.csv`, `${lines.join('\n')}\n${extra}`);
}

test('/metrics after a run: submits, stores, webhooks, cost, timings and queue depths match the run', async () => {
  // PREFLIGHT off: the dead face is for fal to fail (preflight would reject it first).
  const t = await startTestStack({ env: { PREFLIGHT: 'off' } });
  try {
    const admin = await t.pb.startAdmin();
    // One rejected row (bad image_size) and one that fal fails (its face cannot be downloaded).
    const dead = `http://127.0.0.1:${await freePort()}/gone.png`;
    const { runId } = await t.pb.startRun(await manifest(t, 4, `bad,faces/missing.png\nlost,${dead}\n`));
    const run = await t.pb.waitForRun(runId, { timeoutMs: 60_000 });
    assert.deepEqual([run.completed, run.failed, run.rejected], [4, 1, 1]);

    const res = await fetch(`${admin.url}/metrics`);
    assert.equal(res.status, 200);
    assert.match(res.headers.get('content-type') ?? '', /text\/plain/);
    const m = parseMetrics(await res.text());
    assert.equal(m.get('portrait_batch_submits_total{outcome="submitted"}'), run.submits, 'every fal submission counted once');
    assert.equal(m.get('portrait_batch_stores_total{outcome="completed"}'), run.completed);
    assert.equal(m.get('portrait_batch_stores_total{outcome="failed"}'), 1, 'the row fal failed');
    assert.equal(m.get('portrait_batch_webhooks_verified_total'), t.local.emulator!.stats().webhooksDelivered);
    assert.equal(m.get('portrait_batch_webhooks_received_total'), t.local.emulator!.stats().webhookAttempts);
    assert.equal(m.get('portrait_batch_webhooks_refused_total{reason="signature"}'), 0);
    const costMicros = (await t.ctx.rows.getRun(runId))!.costMicros;
    assert.ok(costMicros > 0);
    assert.equal(Math.round(m.get('portrait_batch_cost_total{currency="USD"}')! * 1e6), costMicros, 'the cost the spend guard counted');
    assert.equal(m.get('portrait_batch_stored_latency_seconds_count'), run.completed);
    assert.equal(m.get('portrait_batch_fal_run_seconds_count'), run.completed, "fal's own timings read from each payload");
    assert.equal(m.get('portrait_batch_fal_queue_seconds_count'), run.completed);
    assert.equal(m.get('portrait_batch_queue_jobs{queue="pb-submit",state="active"}'), 0);
    assert.equal(m.get('portrait_batch_queue_jobs{queue="pb-results",state="waiting"}'), 0);
    assert.ok(m.has('process_resident_memory_bytes'), 'process metrics too');
  } finally {
    await t.stop();
  }
});

test('/healthz answers while the process lives; /readyz answers 503 naming Redis when Redis is down', async () => {
  const t = await startTestStack({ workers: false, webhook: false });
  try {
    const admin = await t.pb.startAdmin();
    const health = await fetch(`${admin.url}/healthz`);
    assert.equal(health.status, 200);
    assert.equal(((await health.json()) as { ok: boolean }).ok, true);
    const ready = await fetch(`${admin.url}/readyz`);
    assert.equal(ready.status, 200);
    assert.deepEqual(((await ready.json()) as { down: string[] }).down, []);

    await t.local.redis!.stop();
    const down = await fetch(`${admin.url}/readyz`);
    assert.equal(down.status, 503);
    const body = (await down.json()) as { ready: boolean; down: string[]; checks: { redis: { ok: boolean; error: string }; s3: { ok: boolean } } };
    assert.equal(body.ready, false);
    assert.deepEqual(body.down, ['redis']);
    assert.match(body.checks.redis.error, /redis \(127\.0\.0\.1:\d+\)/);
    assert.equal(body.checks.s3.ok, true, 'S3 is still up and said so');
    assert.equal((await fetch(`${admin.url}/healthz`)).status, 200, 'the process itself is alive');
    // Metrics are still served without Redis (no queue depths this time).
    const metrics = await fetch(`${admin.url}/metrics`);
    assert.equal(metrics.status, 200);
    assert.doesNotMatch(await metrics.text(), /portrait_batch_queue_jobs\{/);
  } finally {
    await t.stop();
  }
});

test('the dashboard is off without DASHBOARD_TOKEN; metrics and health are still served', async () => {
  const t = await startTestStack({ workers: false, webhook: false });
  try {
    const admin = await t.pb.startAdmin({ dashboardToken: '' });
    const ui = await fetch(`${admin.url}/ui`);
    assert.equal(ui.status, 404);
    assert.match(await ui.text(), /DASHBOARD_TOKEN/);
    assert.equal((await fetch(`${admin.url}/metrics`)).status, 200);
    assert.equal((await fetch(`${admin.url}/healthz`)).status, 200);
    assert.equal(admin.host, '127.0.0.1', 'loopback by default');
  } finally {
    await t.stop();
  }
});

test('every dashboard request needs the token: bearer, or the login cookie; POSTs need the same origin and the CSRF field; values are escaped', async () => {
  const t = await startTestStack();
  try {
    const token = t.local.env.DASHBOARD_TOKEN!;
    const admin = await t.pb.startAdmin();
    const { runId } = await t.pb.startRun(await manifest(t, 2, `evil,<img src=x onerror=alert(1)>\n`));
    await t.pb.waitForRun(runId, { timeoutMs: 60_000 });
    const url = (p: string) => `${admin.url}${p}`;
    const runPath = `/ui/runs/${runId}`;

    // Not signed in: 401 (a browser gets the login form), whatever the page.
    for (const p of ['/ui', runPath, `${runPath}/status.json`, '/ui/runs.json']) assert.equal((await fetch(url(p))).status, 401, p);
    const form = await fetch(url('/ui'), { headers: { accept: 'text/html' } });
    assert.equal(form.status, 401);
    assert.match(await form.text(), /<form class="login" method="post" action="\/ui\/login">/);
    assert.equal((await fetch(url('/ui'), { headers: { authorization: 'Bearer wrong' } })).status, 401);
    assert.equal((await fetch(url('/ui'), { headers: { cookie: `pb_dashboard=${token}` } })).status, 401, 'the cookie holds a derived value, not the token');

    // Bearer header.
    const page = await fetch(url(runPath), { headers: { authorization: `Bearer ${token}` } });
    assert.equal(page.status, 200);
    const html = await page.text();
    assert.ok(!html.includes('<img src=x onerror'), 'a manifest value never becomes markup');
    assert.match(html, /&#60;img src=x onerror=alert\(1\)&#62;/);
    assert.match(page.headers.get('content-security-policy') ?? '', /script-src 'self'/);

    // Login form: a wrong token is refused, the right one sets an HttpOnly SameSite=Strict cookie.
    const post = (body: Record<string, string>, headers: Record<string, string> = {}) =>
      fetch(url('/ui/login'), { method: 'POST', redirect: 'manual', headers: { 'content-type': 'application/x-www-form-urlencoded', ...headers }, body: new URLSearchParams(body) });
    assert.equal((await post({ token: 'nope' })).status, 401);
    const login = await post({ token });
    assert.equal(login.status, 303);
    const setCookie = login.headers.get('set-cookie') ?? '';
    assert.match(setCookie, /HttpOnly/);
    assert.match(setCookie, /SameSite=Strict/);
    assert.ok(!setCookie.includes(token), 'the token itself is not stored in the browser');
    const cookie = setCookie.split(';')[0]!;
    assert.equal((await fetch(url('/ui'), { headers: { cookie } })).status, 200);

    // ?token= (the demo's link) serves the page and signs the browser in.
    const link = await fetch(url(`${runPath}?token=${token}&status=failed`));
    assert.equal(link.status, 200);
    assert.match(link.headers.get('set-cookie') ?? '', /^pb_dashboard=[0-9a-f]+; HttpOnly; SameSite=Strict/);
    assert.equal((await fetch(url(`${runPath}?token=wrong`))).status, 401);

    // Cancel and retry: refused without the CSRF field or from another origin.
    const csrf = /name="csrf" value="([0-9a-f]+)"/.exec(await (await fetch(url(runPath), { headers: { cookie } })).text())![1]!;
    const action = (path: string, body: Record<string, string>, headers: Record<string, string> = {}) =>
      fetch(url(path), { method: 'POST', redirect: 'manual', headers: { cookie, 'content-type': 'application/x-www-form-urlencoded', ...headers }, body: new URLSearchParams(body) });
    assert.equal((await action(`${runPath}/retry`, {})).status, 403, 'no CSRF field');
    assert.equal((await action(`${runPath}/retry`, { csrf }, { origin: 'http://evil.example' })).status, 403, 'another origin');
    assert.equal((await action(`${runPath}/retry`, { csrf }, { 'sec-fetch-site': 'cross-site' })).status, 403, 'a cross-site form');
    const retried = await action(`${runPath}/retry`, { csrf }, { origin: admin.url });
    assert.equal(retried.status, 409, 'nothing failed, so nothing to retry: one sentence');
    assert.match(await retried.text(), /no failed rows|nothing to retry|failed rows/i);
    const cancel = await action(`${runPath}/cancel`, { csrf }, { origin: admin.url });
    assert.equal(cancel.status, 303);
    assert.match(cancel.headers.get('location')!, /done=already-finished/);
  } finally {
    await t.stop();
  }
});

test('LOG_FORMAT=pretty writes readable lines to stderr; json (the default) one object a line', async () => {
  const { spawnSync } = await import('node:child_process');
  const script = "import('./src/core/logger.ts').then((m) => m.createLogger('probe', 'info').child({ runId: 'run-1', row: 'r7' }).info('run run-1 is 30% done'))";
  const run = (format: string) => spawnSync(process.execPath, ['--import', 'tsx', '-e', script], { env: { ...process.env, LOG_FORMAT: format }, encoding: 'utf8' });
  const pretty = run('pretty');
  assert.equal(pretty.stdout, '', 'logs never go to stdout');
  assert.match(pretty.stderr, /INFO.*\(probe\): run run-1 is 30% done/);
  assert.match(pretty.stderr, /runId: "run-1"/);
  const json = JSON.parse(run('json').stderr.trim().split('\n').pop()!) as Record<string, unknown>;
  assert.deepEqual([json.runId, json.row, json.msg], ['run-1', 'r7', 'run run-1 is 30% done']);
});
