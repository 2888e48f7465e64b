// The embedded stack comes back the same way for the same data dir: the ports it listened on are
// kept in <dataDir>/stack.json. Results fal already produced name the emulator's address, and
// RESULT_HOSTS and the webhook URLs in flight name ours, so a rerun must use the same ports.
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { UnreachableError } from '../core/reachability.ts';
import { freePort, isPortFree } from './ports.ts';

export const STACK_FILE = 'stack.json';

export type StackPart = 'redis' | 's3' | 'emulator' | 'webhook';

const PART_NAMES: Record<StackPart, string> = { redis: 'the embedded Redis', s3: 'the embedded S3', emulator: 'the fal emulator', webhook: 'the webhook receiver' };

export class StackPorts {
  private constructor(
    private readonly file: string,
    private readonly ports: Partial<Record<StackPart, number>>,
  ) {}

  static async load(dataDir: string): Promise<StackPorts> {
    const file = join(dataDir, STACK_FILE);
    let ports: Partial<Record<StackPart, number>> = {};
    try {
      ports = (JSON.parse(await readFile(file, 'utf8')) as { ports?: typeof ports }).ports ?? {};
    } catch {
      /* first start on this dir (or an unreadable file: start afresh) */
    }
    return new StackPorts(file, ports);
  }

  /** The kept port of a part (checked free: one sentence when another program holds it), or a new one. */
  async take(part: StackPart): Promise<number> {
    const kept = this.ports[part];
    if (kept === undefined) return (this.ports[part] = await freePort());
    if (!(await isPortFree(kept))) {
      throw new UnreachableError(
        `port ${kept} of ${PART_NAMES[part]}, kept in ${this.file} so reruns resume, is in use by another program; stop it, or delete ${this.file} to start the embedded stack afresh.`,
      );
    }
    return kept;
  }

  set(part: StackPart, port: number): void {
    this.ports[part] = port;
  }

  save(): Promise<void> {
    return writeFile(this.file, `${JSON.stringify({ ports: this.ports }, null, 2)}\n`);
  }
}
