// The events ssegate delivers, as docs/protocol.md and the Go package
// pkg/event define them. Field names and optionality are the API; the test
// test/shapes.test.ts fails when these and the Go shapes drift apart.

/** The SSE event name of an event, and the `type` member of its data. */
export type SSEEventType = 'status' | 'progress' | 'error' | 'complete' | 'heartbeat' | 'reset';

/** The lifecycle state of a job. */
export type JobStatus = 'pending' | 'processing' | 'completed' | 'failed';

/** An RFC 3339 UTC time with milliseconds, e.g. `2026-11-27T03:40:30.123Z`. */
export type Timestamp = string;

/** A change of a job's status. */
export interface StatusEvent {
  type: 'status';
  jobId: string;
  status: JobStatus;
  timestamp: Timestamp;
}

/** Step `step` of `totalSteps` is done; `currentStep` names it. */
export interface ProgressEvent {
  type: 'progress';
  jobId: string;
  step: number;
  totalSteps: number;
  currentStep: string;
  /** ⌊100 × step / totalSteps⌋: 100 only at the last step. */
  percentage: number;
  /** Time left at the job's own pace so far; 0 at the last step; null while unknown (step 0). */
  estimatedRemainingMs: number | null;
  timestamp: Timestamp;
}

/** The job failed. Terminal: nothing follows it. */
export interface ErrorEvent {
  type: 'error';
  jobId: string;
  /** A human message. */
  error: string;
  /** A machine code, such as `UPSTREAM_TIMEOUT`. */
  code: string;
  /** Whether running the job again may help. */
  retryable: boolean;
  timestamp: Timestamp;
}

/**
 * The job finished. Terminal: nothing follows it. `report` is there only when
 * the stream asked for it (`includeReport`) and it was within the gateway's
 * inline limit; over the limit, `reportTooLarge` and `reportUrl` say where to
 * fetch it.
 */
export interface CompleteEvent<Report = unknown> {
  type: 'complete';
  jobId: string;
  reportId: string;
  includeReport: boolean;
  report?: Report;
  reportTooLarge?: boolean;
  reportUrl?: string;
  timestamp: Timestamp;
}

/** Keeps an idle stream open through proxies. It has no event ID. */
export interface HeartbeatEvent {
  type: 'heartbeat';
  timestamp: Timestamp;
}

/**
 * The resume point was older than the job's retained history: the events in
 * between are gone, and the job's current snapshot follows this event.
 */
export interface ResetEvent {
  type: 'reset';
  jobId: string;
  /** `history_trimmed` today; a later gateway may add reasons. */
  reason: 'history_trimmed' | (string & {});
  timestamp: Timestamp;
}

/** Every event a stream carries; narrow it on `type`. */
export type SSEEvent<Report = unknown> =
  | StatusEvent
  | ProgressEvent
  | ErrorEvent
  | CompleteEvent<Report>
  | HeartbeatEvent
  | ResetEvent;

/** The events of a job (every event but the heartbeat). */
export type JobEvent<Report = unknown> = Exclude<SSEEvent<Report>, HeartbeatEvent>;

/** The query options of `GET /api/reports/{jobId}/stream`. */
export interface SSEConnectionOptions {
  /** Ask for the report inline in the `complete` event. Default false. */
  includeReport?: boolean;
  /**
   * How long the gateway keeps one connection open, in milliseconds (it
   * clamps this to its maximum, 10 min by default). The client resumes
   * after it, losing nothing. Default: the gateway's, 5 min.
   */
  timeoutMs?: number;
  /** Resume after this event ID (the stream's `lastEventId` parameter). */
  lastEventId?: string;
}

/** The answer of `GET /api/reports/{jobId}`, for polling clients. */
export interface JobSnapshot<Report = unknown> {
  jobId: string;
  status: JobStatus;
  /** The latest progress event, or null before the first. */
  progress: ProgressEvent | null;
  /** The report ID once the job completed, else null. */
  reportId: string | null;
  /** The error event once the job failed, else null. */
  error: ErrorEvent | null;
  updatedAt: Timestamp;
  /** The ID of the job's latest event: a stream opened with it resumes exactly. */
  lastEventId: string;
  /** With `?includeReport=true` on a completed job within the inline limit. */
  report?: Report;
  reportTooLarge?: boolean;
  reportUrl?: string;
}

/** The JSON body of every error answer of the gateway. */
export interface ErrorBody {
  error: string;
  code: string;
}

/** Whether an event ends its job: nothing is published after it. */
export function isTerminal(e: SSEEvent): e is ErrorEvent | CompleteEvent {
  return e.type === 'complete' || e.type === 'error';
}
