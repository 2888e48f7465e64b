// The embedded stack's secrets, generated once into the data dir and reused: WEBHOOK_SECRET, so a rerun
// on the same data dir still verifies the webhook URLs handed to fal before (results fal already
// produced must still be accepted), and DASHBOARD_TOKEN, so a dashboard link keeps working.
import { randomBytes } from 'node:crypto';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

export const WEBHOOK_SECRET_FILE = 'webhook-secret';
export const DASHBOARD_TOKEN_FILE = 'dashboard-token';

export function webhookSecretFor(dataDir: string): Promise<string> {
  return secretFor(dataDir, WEBHOOK_SECRET_FILE, 'webhook secret (webhooks of runs in flight will then be refused)');
}

export function dashboardTokenFor(dataDir: string): Promise<string> {
  return secretFor(dataDir, DASHBOARD_TOKEN_FILE, 'dashboard token (old dashboard links stop working)');
}

async function secretFor(dataDir: string, name: string, what: string): Promise<string> {
  const file = join(dataDir, name);
  await mkdir(dataDir, { recursive: true });
  try {
    // 'wx': of two stacks starting on one data dir, exactly one writes; the other reads its secret.
    const secret = randomBytes(32).toString('hex');
    await writeFile(file, `${secret}\n`, { flag: 'wx', mode: 0o600 });
    return secret;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
  }
  const secret = (await readFile(file, 'utf8')).trim();
  if (!secret) throw new Error(`${file} is empty: delete it to generate a new ${what}`);
  return secret;
}
