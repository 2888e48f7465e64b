// docker-compose.yml is checked statically (no Docker engine here): the services exist, the app
// services share one environment that names every variable the config reads and nothing it does not.
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { test } from 'node:test';
import { parse } from 'yaml';
import { CONFIG_VARS, loadConfig } from '../src/core/config.ts';

const compose = parse(await readFile(new URL('../docker-compose.yml', import.meta.url), 'utf8')) as {
  services: Record<string, { image?: string; build?: string; command?: string[]; environment?: Record<string, string>; depends_on?: Record<string, unknown> }>;
};

test('compose has redis, minio with bucket creation, webhook, worker and scheduler services', () => {
  assert.deepEqual(Object.keys(compose.services).sort(), ['create-bucket', 'minio', 'redis', 'scheduler', 'webhook', 'worker']);
  assert.match(compose.services.redis!.image!, /^redis:/);
  assert.ok(compose.services.redis!.command!.includes('--appendonly'), 'redis keeps an AOF');
  assert.match(compose.services.minio!.image!, /^minio\/minio/);
  assert.deepEqual(compose.services.webhook!.command, ['webhook']);
  assert.deepEqual(compose.services.worker!.command, ['worker']);
  assert.deepEqual(compose.services.scheduler!.command, ['scheduler']);
  for (const s of ['webhook', 'worker', 'scheduler']) {
    assert.equal(compose.services[s]!.build, '.');
    assert.ok(compose.services[s]!.depends_on?.['create-bucket'], `${s} waits for the bucket`);
  }
});

test('the app services name every config variable, and only those (plus AWS credentials)', () => {
  for (const s of ['webhook', 'worker', 'scheduler']) {
    const env = compose.services[s]!.environment!;
    const names = Object.keys(env).filter((k) => !k.startsWith('AWS_'));
    assert.deepEqual(names.sort(), Object.keys(CONFIG_VARS).sort(), `${s} environment`);
    assert.equal(env.S3_ENDPOINT, 'http://minio:9000');
    assert.equal(env.REDIS_URL, 'redis://redis:6379');
  }
});

test('the compose values pass the config validation', () => {
  const env = { ...compose.services.worker!.environment! };
  // As compose does: `${X:-default}` is its default when X is unset; `${X:?…}` must be set by the user.
  const unset = (v: string) => /^\$\{\w+:-(.*)\}$/.exec(v)?.[1];
  for (const [k, v] of Object.entries(env)) if (typeof v === 'string' && v.startsWith('${')) env[k] = unset(v) ?? 'x';
  const cfg = loadConfig(env);
  assert.equal(cfg.S3_FORCE_PATH_STYLE, true);
  // Out of the box (nothing public set): results are polled and faces go to fal storage.
  assert.equal(cfg.delivery.mode, 'poll');
  assert.equal(cfg.facesViaFalStorage, true);
  // With the public addresses set: webhooks, and faces presigned against the public S3 address.
  const pub = loadConfig({ ...env, WEBHOOK_PUBLIC_URL: 'https://hooks.example.com', S3_PUBLIC_ENDPOINT: 'https://s3.example.com' });
  assert.equal(pub.webhookUrl, 'https://hooks.example.com/fal/webhook');
  assert.equal(pub.delivery.mode, 'webhook');
  assert.equal(pub.facesViaFalStorage, false);
});

test('the Dockerfile installs production dependencies and runs the CLI', async () => {
  const df = await readFile(new URL('../Dockerfile', import.meta.url), 'utf8');
  assert.match(df, /^FROM node:22/m, 'Node 22 LTS');
  assert.match(df, /npm ci --omit=dev/);
  assert.match(df, /ENTRYPOINT \["node", "bin\/portrait-batch.js"\]/);
});

test("the README's configuration table documents every config variable", async () => {
  const readme = await readFile(new URL('../README.md', import.meta.url), 'utf8');
  const section = readme.slice(readme.indexOf('## Configuration'), readme.indexOf('\n## ', readme.indexOf('## Configuration') + 1));
  const tableRows = section.split('\n').filter((l) => l.startsWith('| `'));
  for (const name of Object.keys(CONFIG_VARS)) assert.ok(tableRows.some((l) => l.split('|')[1]!.includes(`\`${name}\``)), `${name} is in the README's table`);
});
