import type { ErrorEvent } from './events.js';

/**
 * The gateway refused a request for good: a bad job ID or option (400), a
 * missing or refused token (401, 403), an unknown job (404). `code` is the
 * gateway's machine code, such as `JOB_NOT_FOUND`.
 */
export class GatewayError extends Error {
  override readonly name = 'GatewayError';
  /** The HTTP status of the answer. */
  readonly status: number;
  /** The gateway's error code (the `code` member of its JSON error). */
  readonly code: string;

  constructor(status: number, code: string, message: string) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

/** The job failed: `event` is its `error` event. */
export class JobFailedError extends Error {
  override readonly name = 'JobFailedError';
  readonly event: ErrorEvent;

  constructor(event: ErrorEvent) {
    super(`job ${event.jobId} failed: ${event.error} (${event.code})`);
    this.event = event;
  }

  /** The job's error code, such as `UPSTREAM_TIMEOUT`. */
  get code(): string {
    return this.event.code;
  }

  /** Whether running the job again may help. */
  get retryable(): boolean {
    return this.event.retryable;
  }
}

/** The watch was closed (`close()` or its abort signal) before the job ended. */
export class WatchClosedError extends Error {
  override readonly name = 'WatchClosedError';

  constructor(jobId: string) {
    super(`watch of job ${jobId} closed before the job ended`);
  }
}

