// A log destination that keeps every line a stack logs, parsed, so a test can count what was said.
import type { DestinationStream } from 'pino';

export interface LogLine {
  level: number;
  msg: string;
  [field: string]: unknown;
}

export function captureLog(): DestinationStream & { lines: LogLine[] } {
  const lines: LogLine[] = [];
  return {
    lines,
    write(s: string) {
      for (const l of s.split('\n').filter(Boolean)) lines.push(JSON.parse(l) as LogLine);
    },
  };
}
