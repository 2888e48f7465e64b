import { pino, type DestinationStream, type Logger } from 'pino';
import type PinoPretty from 'pino-pretty';
import { lazyPackage } from './lazyPackage.ts';
import { REDACT_PATHS, REDACTED, redactText, redactValue } from './redact.ts';

export type { Logger };

export type LogFormat = 'json' | 'pretty';

/** pino-pretty, loaded only for LOG_FORMAT=pretty (see lazyPackage.ts). */
const pinoPretty = lazyPackage<typeof PinoPretty>('pino-pretty');

/**
 * Where log lines go, always stderr (stdout carries a command's result: one JSON object with --json).
 * `pretty` (LOG_FORMAT) is pino-pretty's coloured one-line form for a terminal, written synchronously
 * so nothing is lost when a process exits right after a line.
 */
export function logDestination(format: LogFormat = 'json'): DestinationStream {
  if (format === 'pretty') {
    return pinoPretty()({ destination: 2, sync: true, colorize: Boolean(process.stderr.isTTY), translateTime: 'SYS:HH:MM:ss.l', ignore: 'pid,hostname' });
  }
  return pino.destination(2);
}

/**
 * One logger for every process; LOG_LEVEL picks the level (default info, silent under tests), and
 * LOG_FORMAT its form (see logDestination). Callers bind what a line is about with child loggers (run
 * id, row key, request id). Secrets are censored by field name and scrubbed from every logged string
 * (see redact.ts).
 */
export function createLogger(
  name: string,
  level = process.env.LOG_LEVEL ?? (process.env.NODE_TEST_CONTEXT ? 'silent' : 'info'),
  destination: DestinationStream = logDestination(process.env.LOG_FORMAT === 'pretty' ? 'pretty' : 'json'),
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
