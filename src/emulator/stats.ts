// Counters of everything the emulator did, for tests and the chaos audit (GET /_emulator/stats).

export interface EmulatorStats {
  /** Every submit POST, whatever became of it. */
  submits: number;
  accepted: number;
  rejectedByFault: number;
  /** Accepted submits whose answer was lost on purpose (ambiguousSubmitRate). */
  answersLost: number;
  validationErrors: number;
  /** Submit/status/result/cancel calls refused 401/403. */
  unauthorized: number;
  completed: number;
  failed: number;
  /** Requests the runner refused (422 after queueing: the strict, fal-like validation). */
  failedValidation: number;
  lost: number;
  /** Cancel calls that stopped a request (queued ones, and running ones whose runner stopped). */
  canceled: number;
  /** Cancel calls on running requests that completed anyway (billed, webhook sent). */
  cancelIgnored: number;
  /** Requests that ran to an output: what fal bills. */
  billed: number;
  /**
   * Output megapixels of those requests, as fal bills them: each image's requested size (image_size),
   * or the face's own size when the request gave none, rounded up to whole megapixels of 1024×1024.
   */
  billedMegapixels: number;
  /** Webhooks sent as payload null + payload_error (payload over the size limit). */
  webhookPayloadErrors: number;
  /** Webhooks handed to delivery (a duplicate counts twice). */
  webhooksSent: number;
  /** Webhooks the receiver acknowledged with a 2xx (eventually). */
  webhooksDelivered: number;
  webhooksDropped: number;
  webhooksDuplicated: number;
  /** Every webhook POST, re-deliveries included. */
  webhookAttempts: number;
  fileGets: number;
  fileFailures: number;
  /** Status calls answered for a known request (polls). */
  statusCalls: number;
  /** Result calls answered for a known request. */
  resultCalls: number;
  /** Cancel calls answered for a known request, whatever the answer. */
  cancelCalls: number;
  /** fal.storage: initiate calls and uploaded (PUT) files. */
  storageInitiates: number;
  storageUploads: number;
  /** Requests ended by their start timeout (X-Fal-Request-Timeout) while still queued: 504, not billed. */
  startTimeouts: number;
  /** Failures injected by faults.errorRates, by error type. */
  errorsByType: Record<string, number>;
  /** Result calls on a completed request whose result was no longer kept (404). */
  resultsExpired: number;
  /** Most requests ever waiting IN_QUEUE at once (every slot taken). */
  maxQueued: number;
  /** Accepted submissions per `${run}/${row}` named by the fal_webhook URL's query. */
  acceptedByRow: Record<string, number>;
}

/** fal calls a client made: submits, status, result and cancel calls (file downloads not included). */
export function falCalls(s: EmulatorStats): number {
  return s.submits + s.statusCalls + s.resultCalls + s.cancelCalls;
}

export function createStats(): EmulatorStats {
  return {
    submits: 0,
    accepted: 0,
    rejectedByFault: 0,
    answersLost: 0,
    validationErrors: 0,
    unauthorized: 0,
    completed: 0,
    failed: 0,
    failedValidation: 0,
    lost: 0,
    canceled: 0,
    cancelIgnored: 0,
    billed: 0,
    billedMegapixels: 0,
    webhookPayloadErrors: 0,
    webhooksSent: 0,
    webhooksDelivered: 0,
    webhooksDropped: 0,
    webhooksDuplicated: 0,
    webhookAttempts: 0,
    fileGets: 0,
    fileFailures: 0,
    statusCalls: 0,
    resultCalls: 0,
    cancelCalls: 0,
    storageInitiates: 0,
    storageUploads: 0,
    startTimeouts: 0,
    errorsByType: {},
    resultsExpired: 0,
    maxQueued: 0,
    acceptedByRow: {},
  };
}

/** `${run}/${row}` from a webhook URL's query, when it names both. */
export function rowKeyOf(webhookUrl: string | undefined): string | undefined {
  if (!webhookUrl) return undefined;
  try {
    const q = new URL(webhookUrl).searchParams;
    const run = q.get('run');
    const row = q.get('row');
    return run && row ? `${run}/${row}` : undefined;
  } catch {
    return undefined;
  }
}
