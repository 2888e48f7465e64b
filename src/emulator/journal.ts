// The emulator's books on disk, for the embedded stack: every accepted request and how it ended,
// one JSON line each. An emulator restarted on the same directory answers status and result for
// the requests fal would still have after our process was interrupted, finishes the ones it was
// running, and counts acceptances (what fal charges for) across processes.
import { appendFileSync, mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseJsonExactSeeds, stringifyJson } from '../core/exactJson.ts';
import type { EmulatedRequest } from './queue.ts';

export type AcceptEntry = { t: 'accept' } & Pick<EmulatedRequest, 'id' | 'endpoint' | 'app' | 'input' | 'rawInput' | 'webhookUrl' | 'createdAt' | 'lost'>;

export type FinishEntry = { t: 'finish' } & Pick<EmulatedRequest, 'id' | 'startedAt' | 'completedAt' | 'output' | 'failure' | 'canceled'>;

export type JournalEntry = AcceptEntry | FinishEntry;

export const JOURNAL_FILE = 'requests.jsonl';

export class RequestJournal {
  private readonly file: string;

  constructor(readonly dir: string) {
    mkdirSync(dir, { recursive: true });
    this.file = join(dir, JOURNAL_FILE);
  }

  /** Every entry written so far; a torn last line (a crash mid-write) is skipped. */
  read(): JournalEntry[] {
    let text = '';
    try {
      text = readFileSync(this.file, 'utf8');
    } catch {
      return [];
    }
    const out: JournalEntry[] = [];
    for (const line of text.split('\n')) {
      if (!line) continue;
      try {
        out.push(withBigIntSeeds(parseJsonExactSeeds(line) as JournalEntry));
      } catch {
        /* torn write */
      }
    }
    return out;
  }

  // Synchronous on purpose: an acceptance is on disk before the submit is answered.
  accepted(r: EmulatedRequest): void {
    const e: AcceptEntry = { t: 'accept', id: r.id, endpoint: r.endpoint, app: r.app, input: r.input, rawInput: r.rawInput, webhookUrl: r.webhookUrl, createdAt: r.createdAt, lost: r.lost };
    appendFileSync(this.file, `${stringifyJson(e)}\n`);
  }

  finished(r: EmulatedRequest): void {
    const e: FinishEntry = { t: 'finish', id: r.id, startedAt: r.startedAt, completedAt: r.completedAt, output: r.output, failure: r.failure, canceled: r.canceled };
    appendFileSync(this.file, `${stringifyJson(e)}\n`);
  }
}

/** 64-bit seeds are written exactly and read back as strings; the queue holds them as BigInt. */
function withBigIntSeeds(e: JournalEntry): JournalEntry {
  const seeded = (o: { seed?: unknown } | undefined) => {
    if (o && typeof o.seed === 'string') o.seed = BigInt(o.seed);
  };
  seeded(e.t === 'accept' ? e.input : e.output);
  return e;
}
