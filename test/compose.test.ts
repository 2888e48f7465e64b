// docker-compose.yml is checked statically (no Docker engine here): the services exist, the app
// services share one environment that names every variable the config reads and nothing it does not,
// images are pinned, every value has a `${VAR:-default}`, the app services have health checks on the
// admin port, and the `emulator` profile with compose.emulator.env points the stack at the emulator. The
// Dockerfile too: production dependencies only, the compiled dist/ run by plain node, no TypeScript loader.
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { test } from 'node:test';
import { parse } from 'yaml';
import { CONFIG_VARS, loadConfig } from '../src/core/config.ts';

interface Service {
  image?: string;
  build?: string;
  command?: string[];
  environment?: Record<string, string>;
  depends_on?: Record<string, unknown>;
  healthcheck?: { test: string[] };
  profiles?: string[];
  ports?: string[];
  networks?: Record<string, { ipv4_address?: string }>;
}
const compose = parse(await readFile(new URL('../docker-compose.yml', import.meta.url), 'utf8'), { merge: true }) as { services: Record<string, Service> };
const APP = ['webhook', 'worker', 'scheduler'];

/** As compose does: `${X:-default}` is its default when X is unset; `${X:?…}` must be set by the user. */
const byDefault = (v: string) => v.replace(/\$\{\w+:-([^}]*)\}/g, '$1');
const unset = (v: string) => /^\$\{\w+:-(.*)\}$/.exec(v)?.[1];

test('compose has redis, minio with bucket creation, webhook, worker, scheduler and (profile emulator) the emulator', () => {
  assert.deepEqual(Object.keys(compose.services).sort(), ['create-bucket', 'emulator', 'minio', 'redis', 'scheduler', 'webhook', 'worker']);
  assert.match(byDefault(compose.services.redis!.image!), /^redis:/);
  assert.ok(compose.services.redis!.command!.includes('--appendonly'), 'redis keeps an AOF');
  const cmd = compose.services.redis!.command!;
  assert.equal(cmd[cmd.indexOf('--appendfsync') + 1], 'always', 'a claim Redis acknowledged is on disk before fal is called');
  assert.match(byDefault(compose.services.minio!.image!), /^minio\/minio/);
  assert.deepEqual(compose.services.webhook!.command, ['webhook']);
  assert.deepEqual(compose.services.worker!.command, ['worker']);
  assert.deepEqual(compose.services.scheduler!.command, ['scheduler']);
  for (const s of APP) {
    assert.equal(compose.services[s]!.build, '.');
    assert.ok(compose.services[s]!.depends_on?.['create-bucket'], `${s} waits for the bucket`);
    assert.equal(compose.services[s]!.profiles, undefined, `${s} runs in every profile`);
  }
  assert.deepEqual(compose.services.emulator!.profiles, ['emulator']);
});

test('every image is pinned to a version, never latest (ours is built from the Dockerfile, on a pinned Node)', async () => {
  for (const [name, s] of Object.entries(compose.services)) {
    if (!s.image || s.build) continue;
    const image = byDefault(s.image);
    assert.doesNotMatch(image, /:latest$/, `${name}: ${image}`);
    assert.match(image, /:[\w.-]*\d[\w.-]*$/, `${name} names a version: ${image}`);
  }
  const df = await readFile(new URL('../Dockerfile', import.meta.url), 'utf8');
  assert.match(df, /^FROM node:22\.\d+\.\d+-/m, 'the base image names a Node release');
});

test('app services have a health check on /healthz of the admin port; redis and minio have theirs', () => {
  for (const s of APP) {
    const check = compose.services[s]!.healthcheck?.test.join(' ') ?? '';
    assert.match(check, /ADMIN_PORT/, `${s} checks its admin port`);
    assert.match(check, /\/healthz/, `${s} checks /healthz`);
  }
  for (const s of ['redis', 'minio', 'emulator']) assert.ok(compose.services[s]!.healthcheck, `${s} has a health check`);
});

test("MinIO's S3 port is published (for S3_PUBLIC_ENDPOINT) and the admin port only on the host's loopback", () => {
  assert.ok(compose.services.minio!.ports!.some((p) => byDefault(p) === '9000:9000'));
  const admin = compose.services.webhook!.ports!.map(byDefault).filter((p) => p.endsWith(':9090'));
  assert.deepEqual(admin, ['127.0.0.1:9090:9090']);
});

test('the app services name every config variable, and only those (plus AWS credentials), each as ${VAR:-default} or ${VAR:?}', () => {
  for (const s of APP) {
    const env = compose.services[s]!.environment!;
    const names = Object.keys(env).filter((k) => !k.startsWith('AWS_'));
    assert.deepEqual(names.sort(), Object.keys(CONFIG_VARS).sort(), `${s} environment`);
    for (const [k, v] of Object.entries(env)) assert.match(v, /^\$\{\w+:[-?][^}]*\}$/, `${s}: ${k} is ${v}`);
    assert.equal(byDefault(env.S3_ENDPOINT!), 'http://minio:9000');
    assert.equal(byDefault(env.REDIS_URL!), 'redis://redis:6379');
  }
});

test('the emulator profile runs offline: compose.emulator.env points fal, its keys and RESULT_HOSTS at the emulator on the compose network', async () => {
  const file = Object.fromEntries(
    (await readFile(new URL('../compose.emulator.env', import.meta.url), 'utf8'))
      .split('\n')
      .filter((l) => l.trim() && !l.startsWith('#'))
      .map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)]),
  ) as Record<string, string>;
  const emu = compose.services.emulator!;
  const address = emu.networks!.default!.ipv4_address!;
  const publicUrl = emu.command![emu.command!.indexOf('--public-url') + 1]!;
  assert.equal(emu.command![emu.command!.indexOf('--host') + 1], '0.0.0.0', 'listens on the compose network');
  assert.equal(new URL(publicUrl).hostname, address);
  assert.equal(file.FAL_QUEUE_URL, publicUrl);
  assert.equal(file.FAL_JWKS_URL, `${publicUrl}/.well-known/jwks.json`);
  assert.equal(file.RESULT_HOSTS, new URL(publicUrl).host, 'result images may come from the emulator');
  // With the file, the app environment is a valid configuration.
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries(compose.services.worker!.environment!)) {
    const name = /^\$\{(\w+)/.exec(v)?.[1];
    env[k] = name && file[name] !== undefined ? file[name]! : (unset(v) ?? 'x');
  }
  const cfg = loadConfig(env);
  assert.equal(cfg.FAL_QUEUE_URL, publicUrl);
  assert.equal(cfg.webhookUrl, 'http://webhook:8080/fal/webhook');
});

test('.dockerignore keeps the image to what it runs', async () => {
  const ignored = (await readFile(new URL('../.dockerignore', import.meta.url), 'utf8')).split('\n');
  for (const p of ['node_modules', '.git', 'test', 'demo-data', 'test-artifacts', 'dist']) assert.ok(ignored.includes(p), `${p} is ignored`);
});

test('the compose values pass the config validation', () => {
  const env = { ...compose.services.worker!.environment! };
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

test('the Dockerfile installs production dependencies and runs the compiled CLI', async () => {
  const df = await readFile(new URL('../Dockerfile', import.meta.url), 'utf8');
  assert.match(df, /^FROM node:22/m, 'Node 22 LTS');
  // The image is the last stage; an earlier one may build.
  const image = df.slice(df.lastIndexOf('\nFROM '));
  assert.match(image, /npm ci --omit=dev/);
  assert.match(image, /ENTRYPOINT \["node", "dist\/cli.js"\]/);
  assert.match(image, /COPY --from=\w+ \/app\/dist \.\/dist/, 'the image takes the compiled dist/ from the build stage');
});

test('the image has no TypeScript loader: plain node runs dist/, src/ is not in it, tsx is a dev dependency', async () => {
  const df = await readFile(new URL('../Dockerfile', import.meta.url), 'utf8');
  const image = df.slice(df.lastIndexOf('\nFROM '));
  const instructions = image.split('\n').filter((l) => l.trim() && !l.trim().startsWith('#'));
  for (const l of instructions) {
    assert.doesNotMatch(l, /\btsx\b|ts-node|--import|--loader|--experimental-strip-types|\.ts\b/, `no TypeScript loader or source in the image: ${l}`);
    assert.doesNotMatch(l, /^COPY\s+(\S+\s+)*src\b/, `src/ is not copied into the image: ${l}`);
  }
  assert.doesNotMatch(image, /npm (ci|install)(?![^\n]*--omit=dev)/, 'every install in the image omits the dev dependencies');
  const pkg = JSON.parse(await readFile(new URL('../package.json', import.meta.url), 'utf8')) as { dependencies: Record<string, string>; devDependencies: Record<string, string> };
  for (const loader of ['tsx', 'ts-node', '@swc-node/register', 'esbuild-register', 'typescript', 's3rver']) {
    assert.equal(pkg.dependencies[loader], undefined, `${loader} is not a production dependency`);
  }
  assert.ok(pkg.devDependencies.tsx, 'tsx runs the tests and the bench, as a dev dependency');
});

test("the README's configuration table documents every config variable", async () => {
  const readme = await readFile(new URL('../README.md', import.meta.url), 'utf8');
  const section = readme.slice(readme.indexOf('## Configuration'), readme.indexOf('\n## ', readme.indexOf('## Configuration') + 1));
  const tableRows = section.split('\n').filter((l) => l.startsWith('| `'));
  for (const name of Object.keys(CONFIG_VARS)) assert.ok(tableRows.some((l) => l.split('|')[1]!.includes(`\`${name}\``)), `${name} is in the README's table`);
});
