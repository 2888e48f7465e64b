// Faces a run may read: one team's drop-folder upload names other teams' files, another run's inputs
// and portraits, and a presigned link to our own S3. Each such row is rejected with its reason, never
// handed to fal, and the dashboard shows no picture of it; a face in the manifest's own folder and one
// under FACE_PREFIXES complete. Real redis-server, s3rver, emulator and workers; the drop folder polled.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { runLayout } from '../../src/core/layout.ts';
import type { RunningAdmin } from '../../src/index.ts';
import { dashboardFaceRefusal } from '../../src/ops/dashboard/thumbnails.ts';
import { dropRunId, startDropFolder } from '../../src/triggers/dropFolder.ts';
import { facePng } from '../helpers/faces.ts';
import { startTestStack, TEST_DEFAULTS, type TestStack } from '../helpers/stack.ts';

const bucket = TEST_DEFAULTS.S3_BUCKET!;
let t: TestStack;
let admin: RunningAdmin;
let runId = '';
let report = new Map<string, { status: string; error: string }>();
let page = '';
let acceptedBefore: Record<string, number> = {};

// Row id → face. The first two may be read; every other one is someone else's or the service's own.
const faces: Record<string, string> = {
  'own-folder': `s3://${bucket}/incoming/teamA/faces/me.png`,
  'face-prefix': `s3://${bucket}/shared-faces/ok.png`,
  'team-b': `s3://${bucket}/teams/teamB/private-face.png`,
  'failed-manifest': `s3://${bucket}/failed/teamB/other.csv`,
  'run-input': `s3://${bucket}/runs/victim/inputs/secret.png`,
  'run-image': `s3://${bucket}/runs/victim/images/secret/0.png`,
  'drop-upload': `s3://${bucket}/incoming/teamB/face.png`,
};
const denied = ['team-b', 'failed-manifest', 'run-input', 'run-image', 'drop-upload', 'presigned-image'];

before(async () => {
  // FACE_PREFIXES names shared-faces/, and (to show they never count) the service's own runs/ and failed/.
  t = await startTestStack({ env: { FACE_PREFIXES: `s3://${bucket}/shared-faces/,s3://${bucket}/runs/,s3://${bucket}/failed/` } });
  admin = await t.pb.startAdmin();
  const png = await facePng(7);
  for (const url of Object.values(faces)) await t.ctx.storage.putObject(url.slice(`s3://${bucket}/`.length), png, 'image/png');
  // In the manifest's folder, a PNG cut after its header: preflight reads its size, fal cannot decode it,
  // so the row fails and can be retried.
  await t.ctx.storage.putObject('incoming/teamA/faces/broken.png', png.subarray(0, 60), 'image/png');
  // A link to our own S3, presigned with the service's credentials (as fal was once given): judged as the object it names.
  const presigned = await t.ctx.storage.presign('runs/victim/images/secret/0.png', 600);
  assert.match(presigned, /^http:\/\/127\.0\.0\.1:\d+\/portrait-test\/runs\/victim\/images\/secret\/0\.png\?/);

  const rows = ['id,face_url', ...Object.entries(faces).map(([id, url]) => `${id},${url}`), `presigned-image,"${presigned}"`, `own-broken,s3://${bucket}/incoming/teamA/faces/broken.png`];
  const key = 'incoming/teamA/steal.csv';
  await t.ctx.storage.putObject(key, `${rows.join('\n')}\n`, 'text/csv');
  let etag = '';
  for await (const o of t.ctx.storage.list(key)) etag = o.etag;
  runId = dropRunId(bucket, key, etag);
  acceptedBefore = { ...t.local.emulator!.stats().acceptedByRow };
  const drop = startDropFolder(t.pb, { prefix: 'incoming/', pollMs: 1e9, settleMs: 0, claimMs: 60_000, loop: false });
  try {
    const poll = await drop.pollOnce();
    assert.deepEqual(poll.started, [key]);
  } finally {
    await drop.close();
  }
  const run = await t.pb.waitForRun(runId, { timeoutMs: 60_000 });
  assert.equal(run.total, 9);
  const { parse } = await import('csv-parse/sync');
  const text = (await (await t.ctx.storage.getStream(runLayout(t.ctx.cfg.S3_PREFIX, runId).report)).toArray()).join('');
  const parsed = parse(text, { columns: true }) as Record<string, string>[];
  report = new Map(parsed.map((r) => [r.id!, { status: r.status!, error: r.error! }]));
  page = await (await fetch(`${admin.url}/ui/runs/${runId}`, { headers: { authorization: `Bearer ${t.local.env.DASHBOARD_TOKEN}` } })).text();
});

after(async () => {
  await admin?.close();
  await t?.stop();
});

test("a drop-folder upload's faces in its own folder and under FACE_PREFIXES complete", () => {
  assert.equal(report.get('own-folder')?.status, 'completed', report.get('own-folder')?.error);
  assert.equal(report.get('face-prefix')?.status, 'completed', report.get('face-prefix')?.error);
});

test("another team's files, another run's inputs and portraits, failed/ and other drop uploads are rejected rows naming the rule", () => {
  const folder = `s3://${bucket}/incoming/teamA/`;
  const reasons: Record<string, RegExp> = {
    'team-b': new RegExp(
      `^face_url: "s3://${bucket}/teams/teamB/private-face.png" is outside the faces this run may read \\(FACE_PREFIXES .*, or the manifest's folder ${folder}\\)$`,
    ),
    'failed-manifest': new RegExp(`^face_url: "s3://${bucket}/failed/teamB/other.csv" is in s3://${bucket}/failed/, where the service keeps its own files: never a face$`),
    'run-input': new RegExp(`^face_url: "s3://${bucket}/runs/victim/inputs/secret.png" is in s3://${bucket}/runs/, where the service keeps its own files: never a face$`),
    'run-image': /^face_url: ".+\/runs\/victim\/images\/secret\/0.png" is in s3:\/\/portrait-test\/runs\/, where the service keeps its own files/,
    'drop-upload': new RegExp(`^face_url: "s3://${bucket}/incoming/teamB/face.png" is a drop-folder upload \\(s3://${bucket}/incoming/\\) outside this manifest's folder ${folder}: never a face$`),
    'presigned-image': /^face_url: "http:\/\/127\.0\.0\.1:\d+\/portrait-test\/runs\/victim\/images\/secret\/0\.png\?.*" reaches s3:\/\/portrait-test\/runs\/victim\/images\/secret\/0\.png on the service's S3, which is in s3:\/\/portrait-test\/runs\//,
  };
  for (const id of denied) {
    assert.equal(report.get(id)?.status, 'rejected', `${id}: ${report.get(id)?.error}`);
    assert.match(report.get(id)!.error, reasons[id]!, id);
  }
});

test('no rejected face was handed to fal', () => {
  const accepted = t.local.emulator!.stats().acceptedByRow;
  // The emulator counts what it accepted by `<run>/<row>` (from the webhook URL fal was given).
  const n = (stats: Record<string, number>, id: string) => stats[`${runId}/${id}`] ?? 0;
  for (const id of denied) assert.equal(n(accepted, id), n(acceptedBefore, id), `${id} was handed to fal`);
  for (const id of ['own-folder', 'face-prefix']) assert.equal(n(accepted, id) - n(acceptedBefore, id), 1, `${id} submitted once`);
});

test('the dashboard shows no picture, and no presigned URL, of a face the run may not read', async () => {
  assert.doesNotMatch(page, /X-Amz-Signature/i, 'no presigned URL on the page');
  for (const id of denied) {
    const card = new RegExp(`<figure class="card [a-z]+" data-row="${id}">([\\s\\S]*?)</figure>`).exec(page)?.[1];
    assert.ok(card, `the card of ${id}`);
    assert.doesNotMatch(card, /<img class="face"/, `${id} has no face picture`);
  }
  const run = (await t.ctx.rows.getRun(runId))!;
  assert.deepEqual(run.options.faces, {
    prefixes: [`s3://${bucket}/shared-faces/`, `s3://${bucket}/runs/`, `s3://${bucket}/failed/`],
    drop: `s3://${bucket}/incoming/`,
    folder: `s3://${bucket}/incoming/teamA/`,
  });
  for (const id of denied.filter((d) => faces[d])) assert.ok(dashboardFaceRefusal(t.ctx, run, faces[id]!), id);
  assert.equal(dashboardFaceRefusal(t.ctx, run, faces['own-folder']!), undefined);
});

test("a retry reads its faces by the original's rule (its manifest copy under runs/ is no face folder)", async () => {
  assert.equal(report.get('own-broken')?.status, 'failed', report.get('own-broken')?.error);
  const retry = await t.pb.retryFailed(runId);
  const run = await t.pb.waitForRun(retry.runId, { timeoutMs: 60_000 });
  assert.deepEqual([run.total, run.rejected], [1, 0], 'the retried row is not rejected');
  assert.deepEqual((await t.ctx.rows.getRun(retry.runId))!.options.faces, (await t.ctx.rows.getRun(runId))!.options.faces);
  // fal refusing a face stored in its storage gets the row one more upload (falFaceRefusal.ts): once or twice.
  assert.ok((t.local.emulator!.stats().acceptedByRow[`${retry.runId}/own-broken`] ?? 0) >= 1, 'handed to fal again');
});
