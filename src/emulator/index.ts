export { startEmulator, type EmulatorOptions, type RunningEmulator } from './server.ts';
export type { EmulatorFaults } from './faults.ts';
export type { QueueStats } from './queue.ts';
