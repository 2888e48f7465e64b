// The embedded stack's WEBHOOK_SECRET: generated once into the data dir and reused, so a rerun on the
// same data dir still verifies the webhook URLs handed to fal before (results fal already produced
// must still be accepted).
import { randomBytes } from 'node:crypto';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

export const WEBHOOK_SECRET_FILE = 'webhook-secret';

export async function webhookSecretFor(dataDir: string): Promise<string> {
  const file = join(dataDir, WEBHOOK_SECRET_FILE);
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
  if (!secret) throw new Error(`${file} is empty: delete it to generate a new webhook secret (webhooks of runs in flight will then be refused)`);
  return secret;
}
