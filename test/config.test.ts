import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ConfigError, DEFAULT_ENDPOINT, loadConfig } from '../src/core/config.ts';

test('defaults: fal model and queue, webhook URL derived from the port', () => {
  const cfg = loadConfig({});
  assert.equal(cfg.FAL_ENDPOINT, DEFAULT_ENDPOINT);
  assert.equal(cfg.FAL_QUEUE_URL, 'https://queue.fal.run');
  assert.equal(cfg.webhookUrl, 'http://127.0.0.1:8080/fal/webhook');
  assert.deepEqual(cfg.RESULT_HOSTS, ['fal.media', '*.fal.media']);
  assert.equal(cfg.S3_FORCE_PATH_STYLE, false);
});

test('every bad variable is named in one error', () => {
  assert.throws(
    () => loadConfig({ WEBHOOK_PORT: 'eighty', REDIS_URL: 'localhost:6379', S3_FORCE_PATH_STYLE: 'maybe', FAL_QUEUE_URL: 'not a url', S3_PREFIX: 'no-slash' }),
    (err: unknown) => {
      assert.ok(err instanceof ConfigError);
      const names = err.problems.map((p) => p.split(':')[0]);
      assert.deepEqual(names.sort(), ['FAL_QUEUE_URL', 'REDIS_URL', 'S3_FORCE_PATH_STYLE', 'S3_PREFIX', 'WEBHOOK_PORT']);
      assert.match(err.message, /WEBHOOK_PORT: .*"eighty"/);
      return true;
    },
  );
});

test('RESULT_HOSTS accepts host, host:port and *.domain, and refuses URLs', () => {
  assert.deepEqual(loadConfig({ RESULT_HOSTS: 'a.example, *.fal.media ,127.0.0.1:9000' }).RESULT_HOSTS, ['a.example', '*.fal.media', '127.0.0.1:9000']);
  assert.throws(() => loadConfig({ RESULT_HOSTS: 'https://x.example/' }), /RESULT_HOSTS/);
});

test('WEBHOOK_PUBLIC_URL wins over the port', () => {
  assert.equal(loadConfig({ WEBHOOK_PUBLIC_URL: 'https://hooks.example.com/' }).webhookUrl, 'https://hooks.example.com/fal/webhook');
});

test('FACE_BUCKETS is a comma-separated list of bucket names (empty by default); MAX_ROW_BYTES defaults to 16 KiB', () => {
  assert.deepEqual(loadConfig({}).FACE_BUCKETS, []);
  assert.equal(loadConfig({}).MAX_ROW_BYTES, 16 * 1024);
  assert.deepEqual(loadConfig({ FACE_BUCKETS: 'faces-a, faces.b ,' }).FACE_BUCKETS, ['faces-a', 'faces.b']);
  assert.throws(() => loadConfig({ FACE_BUCKETS: 'ok-bucket,s3://Bad_Bucket' }), /FACE_BUCKETS: must be a comma-separated list of S3 bucket names/);
});

test('FACE_PREFIXES is a comma-separated list of s3://bucket/ or s3://bucket/prefix/ entries (empty by default)', () => {
  assert.deepEqual(loadConfig({}).FACE_PREFIXES, []);
  assert.deepEqual(loadConfig({ FACE_PREFIXES: 's3://faces/, s3://ours/teams/a/ ,' }).FACE_PREFIXES, ['s3://faces/', 's3://ours/teams/a/']);
  for (const bad of ['s3://ours/teams', 'ours/teams/', 's3://Bad_Bucket/', 's3://ours/../runs/', 's3://ours//x/']) {
    assert.throws(() => loadConfig({ FACE_PREFIXES: bad }), /FACE_PREFIXES: must be a comma-separated list of s3:\/\/bucket\/ or s3:\/\/bucket\/prefix\/ entries/, bad);
  }
});

test('SUBMIT_RETRY_WINDOW and STORE_RETRY_WINDOW are durations within ROW_DEADLINE_MS; the defaults (2 h) are cut to a shorter deadline', () => {
  const cfg = loadConfig({});
  assert.equal(cfg.SUBMIT_RETRY_WINDOW, 2 * 3600_000);
  assert.equal(cfg.STORE_RETRY_WINDOW, 2 * 3600_000);
  assert.equal(loadConfig({ SUBMIT_RETRY_WINDOW: '90m', STORE_RETRY_WINDOW: '1500ms' }).SUBMIT_RETRY_WINDOW, 90 * 60_000);
  assert.equal(loadConfig({ STORE_RETRY_WINDOW: '1500ms' }).STORE_RETRY_WINDOW, 1500);
  assert.equal(loadConfig({ ROW_DEADLINE_MS: '60000' }).STORE_RETRY_WINDOW, 60_000, 'the default is cut to the deadline');
  assert.throws(() => loadConfig({ SUBMIT_RETRY_WINDOW: '7200' }), /SUBMIT_RETRY_WINDOW: must be a duration: a whole number with a unit, e\.g\. 2h/);
  assert.throws(() => loadConfig({ STORE_RETRY_WINDOW: '2 weeks' }), /STORE_RETRY_WINDOW: must be a duration/);
  assert.throws(() => loadConfig({ STORE_RETRY_WINDOW: '10ms' }), /STORE_RETRY_WINDOW: must be at least 1s/);
  assert.throws(() => loadConfig({ ROW_DEADLINE_MS: '60000', STORE_RETRY_WINDOW: '2m' }), /STORE_RETRY_WINDOW: must be at most ROW_DEADLINE_MS \(60000 ms\), got "2m"/);
});

test('DASHBOARD_TOKEN needs 32 characters; TRUST_PROXY is Express trust proxy; ADMIN_ALLOWED_HOSTS a list of names', () => {
  assert.throws(() => loadConfig({ DASHBOARD_TOKEN: 'x'.repeat(31) }), /DASHBOARD_TOKEN: must be at least 32 characters/);
  assert.equal(loadConfig({ DASHBOARD_TOKEN: 'x'.repeat(32) }).DASHBOARD_TOKEN, 'x'.repeat(32));
  assert.equal(loadConfig({}).TRUST_PROXY, false);
  assert.equal(loadConfig({ TRUST_PROXY: 'true' }).TRUST_PROXY, true);
  assert.equal(loadConfig({ TRUST_PROXY: '2' }).TRUST_PROXY, 2);
  assert.deepEqual(loadConfig({ TRUST_PROXY: 'loopback, 10.0.0.0/8' }).TRUST_PROXY, ['loopback', '10.0.0.0/8']);
  assert.throws(() => loadConfig({ TRUST_PROXY: 'everyone' }), /TRUST_PROXY: must be false, true, a hop count/);
  assert.equal(loadConfig({}).ADMIN_ALLOWED_HOSTS, undefined, 'unset: loopback names and ADMIN_HOST');
  assert.deepEqual(loadConfig({ ADMIN_ALLOWED_HOSTS: 'Webhook, *.internal.example, [::1]' }).ADMIN_ALLOWED_HOSTS, ['webhook', '*.internal.example', '::1']);
  assert.throws(() => loadConfig({ ADMIN_ALLOWED_HOSTS: 'http://x.example/' }), /ADMIN_ALLOWED_HOSTS/);
});

test('MAX_MANIFEST_BYTES (512 MiB), MAX_MANIFEST_ROWS (10^6) and RUN_RETENTION (7 days): defaults, and bad values named', () => {
  const cfg = loadConfig({});
  assert.deepEqual([cfg.MAX_MANIFEST_BYTES, cfg.MAX_MANIFEST_ROWS, cfg.RUN_RETENTION], [512 * 2 ** 20, 1_000_000, 7 * 86_400_000]);
  assert.equal(loadConfig({ RUN_RETENTION: '36h' }).RUN_RETENTION, 36 * 3_600_000);
  assert.throws(
    () => loadConfig({ MAX_MANIFEST_BYTES: '0', MAX_MANIFEST_ROWS: 'many', RUN_RETENTION: 'forever' }),
    (err: Error) => {
      assert.ok(err instanceof ConfigError);
      assert.match(err.message, /MAX_MANIFEST_BYTES: must be at least 1/);
      assert.match(err.message, /MAX_MANIFEST_ROWS: must be a whole number/);
      assert.match(err.message, /RUN_RETENTION: must be a duration/);
      return true;
    },
  );
});
