import { pino, type DestinationStream, type Logger } from 'pino';
import { REDACT_PATHS, REDACTED, redactText, redactValue } from './redact.ts';

export type { Logger };

/**
 * One JSON logger for every process; LOG_LEVEL picks the level (default info, silent under tests).
 * Logs go to stderr: stdout carries a command's result (one JSON object with --json).
 * Secrets are censored by field name and scrubbed from every logged string (see redact.ts).
 */
export function createLogger(
  name: string,
  level = process.env.LOG_LEVEL ?? (process.env.NODE_TEST_CONTEXT ? 'silent' : 'info'),
  destination: DestinationStream = pino.destination(2),
): Logger {
  return pino(
    {
      name,
      level,
      redact: { paths: REDACT_PATHS, censor: REDACTED },
      serializers: { err: (e: unknown) => redactValue(e) },
      formatters: { log: (obj) => redactValue(obj) as Record<string, unknown> },
      hooks: {
        logMethod(args, method) {
          method.apply(this, args.map((a) => (typeof a === 'string' ? redactText(a) : a)) as Parameters<typeof method>);
        },
      },
    },
    destination,
  );
}
