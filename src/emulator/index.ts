export { startEmulator, type EmulatorOptions, type RunningEmulator } from './server.ts';
export type { EmulatorFaults, MsRange } from './faults.ts';
export { falCalls, type EmulatorStats } from './stats.ts';
export type { WebhookRetry } from './webhooks.ts';
