// The dashboard in a real browser (Debian's chromium driven by playwright-core): a finished emulator
// run with one failed row, seen as a person sees it — the portraits and faces loaded, the failed row's
// reason shown, its group in "failures by reason" — and a screenshot kept as a test artifact.
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { chromium, type Browser } from 'playwright-core';
import { freePort } from '../src/local/ports.ts';
import { faceDataUri } from './helpers/faces.ts';
import { startTestStack } from './helpers/stack.ts';

const CHROMIUM = '/usr/bin/chromium';
const ARTIFACTS = new URL('../test-artifacts/', import.meta.url);

async function launch(profile: string): Promise<Browser | string> {
  try {
    return await chromium.launch({
      executablePath: CHROMIUM,
      // Flags are ours alone: a fresh profile, no network but loopback from the browser itself.
      ignoreDefaultArgs: true,
      args: [
        '--headless',
        '--no-sandbox',
        '--disable-gpu',
        '--disable-quic',
        '--no-first-run',
        '--disable-background-networking',
        '--disable-component-update',
        '--disable-sync',
        `--user-data-dir=${profile}`,
        '--remote-debugging-pipe',
        'about:blank',
      ],
    });
  } catch (err) {
    return err instanceof Error ? err.message.split('\n')[0]! : String(err);
  }
}

test('a person sees the run: thumbnails loaded, the failed row and its reason, failures grouped', { timeout: 180_000 }, async (t) => {
  const profile = await mkdtemp(join(tmpdir(), 'pb-chromium-'));
  const browser = await launch(profile);
  if (typeof browser === 'string') {
    await rm(profile, { recursive: true, force: true });
    t.skip(`chromium could not be launched from ${CHROMIUM} (${browser}); run scripts/setup.sh to install it`);
    return;
  }
  // PREFLIGHT off: the dead face is for fal to fail, so the page shows a failed row (preflight would reject it).
  const stack = await startTestStack({ env: { PREFLIGHT: 'off' } });
  try {
    const admin = await stack.pb.startAdmin();
    const dead = `http://127.0.0.1:${await freePort()}/missing-face.png`;
    const lines = ['id,face_url,num_images'];
    for (let i = 0; i < 5; i++) lines.push(`person-${i},"${await faceDataUri(i)}",${i === 2 ? 2 : 1}`);
    lines.push(`unreachable,${dead},1`);
    const { runId } = await stack.pb.startRun(await stack.manifest('people.csv', `${lines.join('\n')}\n`));
    const run = await stack.pb.waitForRun(runId, { timeoutMs: 60_000 });
    assert.deepEqual([run.state, run.completed, run.failed], ['finished', 5, 1]);

    const page = await browser.newPage({ viewport: { width: 1280, height: 1100 } });
    // The link the demo prints: it signs in and drops the token from the address.
    await page.goto(`${admin.url}/ui/runs/${runId}?token=${stack.local.env.DASHBOARD_TOKEN}`);
    assert.doesNotMatch(page.url(), /token=/, 'the token left the address bar');
    // (The tests compile without the DOM's types; the page's CSP forbids evaluating strings.)
    type Doc = { document: { images: Iterable<{ complete: boolean }> } };
    await page.waitForFunction(() => [...(globalThis as unknown as Doc).document.images].every((img) => img.complete), undefined, { timeout: 20_000 });

    const portraits = await page.$$eval('img.portrait', (imgs) => imgs.map((i) => (i as unknown as { naturalWidth: number }).naturalWidth));
    assert.equal(portraits.length, 6, 'five completed rows, one of them with two portraits');
    assert.ok(portraits.every((w) => w > 0), `every portrait loaded: ${portraits.join(',')}`);
    const faces = await page.$$eval('figure.card.completed img.face', (imgs) => imgs.map((i) => (i as unknown as { naturalWidth: number }).naturalWidth));
    assert.ok(faces.length === 5 && faces.every((w) => w > 0), 'the faces are shown beside them');
    // Under the dashboard's CSP (img-src 'self') every picture comes from the dashboard itself.
    const sources = await page.$$eval('img', (imgs) => imgs.map((i) => (i as unknown as { src: string }).src));
    assert.ok(sources.every((src) => src.startsWith(`${admin.url}/ui/`)), `pictures served by the dashboard: ${sources.join(' ')}`);

    const failed = page.locator('figure.card.failed');
    assert.equal(await failed.count(), 1);
    const failedText = await failed.innerText();
    assert.match(failedText, /unreachable/);
    assert.match(failedText, /download|missing-face\.png/i, `the reason is shown: ${failedText}`);
    const group = await page.locator('.failures .group').innerText();
    assert.match(group, /^1\s+failed/m);
    assert.match(group, /unreachable/);

    assert.equal(await page.locator('[data-field="completed"]').first().innerText(), '5');
    assert.match(await page.locator('.badge.finished').first().innerText(), /finished/);

    await mkdir(ARTIFACTS, { recursive: true });
    await page.screenshot({ path: new URL('dashboard.png', ARTIFACTS).pathname, fullPage: true });

    // The status filter shows just the failed row; the runs page lists the run with its counts.
    await page.click('nav.tabs a:has-text("failed")');
    assert.equal(await page.locator('figure.card').count(), 1);
    await page.goto(`${admin.url}/ui`);
    assert.match(await page.locator('table.runs').innerText(), new RegExp(runId));
    assert.match(await page.locator('table.queues').innerText(), /pb-submit/);
    await page.screenshot({ path: new URL('dashboard-runs.png', ARTIFACTS).pathname, fullPage: true });
  } finally {
    await browser.close();
    await stack.stop();
    await rm(profile, { recursive: true, force: true });
  }
});
