import { pino, type Logger } from 'pino';

export type { Logger };

/**
 * One JSON logger for every process; LOG_LEVEL picks the level (default info, silent under tests).
 * Logs go to stderr: stdout carries a command's result (one JSON object with --json).
 */
export function createLogger(name: string, level = process.env.LOG_LEVEL ?? (process.env.NODE_TEST_CONTEXT ? 'silent' : 'info')): Logger {
  return pino({ name, level }, pino.destination(2));
}
