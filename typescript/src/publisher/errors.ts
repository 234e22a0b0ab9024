// The errors of ssegate/publisher. Every one is a PublishError; the Go
// publisher's sentinels (publisher/publisher.go, pkg/protocol) map to them
// as the table in each class's comment says.

/** What a {@link Job} call was doing when it failed. */
export type PublishOperation = 'register' | 'status' | 'progress' | 'complete' | 'fail';

/** The codes of a {@link ValidationError} that the publisher finds before it touches Redis. */
export type ValidationErrorCode =
  | 'INVALID_JOB_ID'
  | 'INVALID_STATUS'
  | 'INVALID_STEP'
  | 'INVALID_REPORT'
  | 'REPORT_TOO_LARGE'
  | 'INVALID_REPORT_ID'
  | 'INVALID_FAILURE'
  | 'INVALID_IDEMPOTENCY_KEY';

/** The codes of a {@link ProtocolError}: the publish script refused the call's arguments. */
export type ProtocolErrorCode = 'BAD_ARGS' | 'BAD_KEYS' | 'BAD_DATA' | 'BAD_REPORT';

/** The `code` of every {@link PublishError}. */
export type PublishErrorCode =
  | 'JOB_NOT_FOUND'
  | 'JOB_FINISHED'
  | 'JOB_EXISTS'
  | 'IDEMPOTENCY_KEY_REUSED'
  | 'REDIS_ERROR'
  | ValidationErrorCode
  | ProtocolErrorCode;

/**
 * A publish failed. Every error a {@link Job} call rejects with is one of
 * the subclasses of this class; match on the class (`instanceof`) or on
 * {@link PublishError.code}.
 *
 * All but {@link RedisCommandError} are final for that event: the call wrote
 * nothing, and the same call would fail again.
 */
export class PublishError extends Error {
  override readonly name: string = 'PublishError';
  /** A machine code, such as `JOB_NOT_FOUND`. */
  readonly code: PublishErrorCode;
  /** The job of the call. */
  readonly jobId: string;
  /** The call that failed. */
  readonly operation: PublishOperation;

  /**
   * @param code - the machine code
   * @param jobId - the job of the call
   * @param operation - the call that failed
   * @param detail - what went wrong, in words
   * @param options - `cause`: the underlying error, if any
   */
  constructor(code: PublishErrorCode, jobId: string, operation: PublishOperation, detail: string, options?: ErrorOptions) {
    super(`publisher: ${operation} job ${JSON.stringify(jobId)}: ${detail}`, options);
    this.code = code;
    this.jobId = jobId;
    this.operation = operation;
  }
}

/**
 * The job is not registered, or its keys have expired (Go:
 * `publisher.ErrJobNotFound`; script reply `SSEGATE_NOT_FOUND`). Register a
 * job before publishing to it.
 */
export class JobNotFoundError extends PublishError {
  override readonly name = 'JobNotFoundError';
  declare readonly code: 'JOB_NOT_FOUND';

  /**
   * @param jobId - the job of the call
   * @param operation - the call that failed
   * @param options - `cause`: the script's error reply
   */
  constructor(jobId: string, operation: PublishOperation, options?: ErrorOptions) {
    super('JOB_NOT_FOUND', jobId, operation, 'job not registered', options);
  }
}

/**
 * The job has completed or failed already; nothing can be published to it
 * until its keys expire (Go: `publisher.ErrJobFinished`; `SSEGATE_FINISHED`).
 */
export class JobFinishedError extends PublishError {
  override readonly name = 'JobFinishedError';
  declare readonly code: 'JOB_FINISHED';

  /**
   * @param jobId - the job of the call
   * @param operation - the call that failed
   * @param options - `cause`: the script's error reply
   */
  constructor(jobId: string, operation: PublishOperation, options?: ErrorOptions) {
    super('JOB_FINISHED', jobId, operation, 'job already finished', options);
  }
}

/**
 * `register()` of a job that exists, running or finished and not yet
 * expired (Go: `publisher.ErrJobExists`; `SSEGATE_EXISTS`).
 */
export class JobExistsError extends PublishError {
  override readonly name = 'JobExistsError';
  declare readonly code: 'JOB_EXISTS';

  /**
   * @param jobId - the job of the call
   * @param operation - the call that failed
   * @param options - `cause`: the script's error reply
   */
  constructor(jobId: string, operation: PublishOperation, options?: ErrorOptions) {
    super('JOB_EXISTS', jobId, operation, 'job already registered', options);
  }
}

/**
 * The idempotency key was used, within the idempotency window, for another
 * event of the job (Go: `publisher.ErrIdempotencyKeyReused`;
 * `SSEGATE_IDEMPOTENCY`). Give each event its own key.
 */
export class IdempotencyKeyReusedError extends PublishError {
  override readonly name = 'IdempotencyKeyReusedError';
  declare readonly code: 'IDEMPOTENCY_KEY_REUSED';
  /** The key of the call. */
  readonly idempotencyKey: string;

  /**
   * @param jobId - the job of the call
   * @param operation - the call that failed
   * @param key - the idempotency key of the call
   * @param options - `cause`: the script's error reply
   */
  constructor(jobId: string, operation: PublishOperation, key: string, options?: ErrorOptions) {
    super('IDEMPOTENCY_KEY_REUSED', jobId, operation, `idempotency key ${JSON.stringify(key)} already used for another event`, options);
    this.idempotencyKey = key;
  }
}

/**
 * The call's input is invalid. The publisher checks job IDs, statuses,
 * steps, reports, report IDs, failures and idempotency keys before it
 * touches Redis, so this error means nothing was sent (Go: the publisher's
 * `ErrInvalid…` and `ErrReportTooLarge`). Its subclass {@link ProtocolError}
 * is the script's refusal of what got past these checks.
 */
export class ValidationError extends PublishError {
  override readonly name: string = 'ValidationError';
  declare readonly code: ValidationErrorCode | ProtocolErrorCode;

  /**
   * @param code - which input is invalid
   * @param jobId - the job of the call
   * @param operation - the call that failed
   * @param detail - what is wrong with it
   * @param options - `cause`, if any
   */
  constructor(
    code: ValidationErrorCode | ProtocolErrorCode,
    jobId: string,
    operation: PublishOperation,
    detail: string,
    options?: ErrorOptions,
  ) {
    super(code, jobId, operation, detail, options);
  }
}

/**
 * The publish script refused the call's keys or arguments (script replies
 * `SSEGATE_KEYS`, `SSEGATE_VERSION`, `SSEGATE_BAD_ARGS`, `SSEGATE_BAD_DATA`,
 * `SSEGATE_BAD_REPORT`; Go: `protocol.ErrBadArgs` and the errors that are
 * also it). It is a {@link ValidationError}: the call wrote nothing and is
 * final. The publisher's own checks make it rare: a step or total of more
 * than 15 digits, for one.
 */
export class ProtocolError extends ValidationError {
  override readonly name = 'ProtocolError';
  declare readonly code: ProtocolErrorCode;
  /** The first word of the script's reply, such as `SSEGATE_BAD_ARGS`. */
  readonly reply: string;

  /**
   * @param code - the kind of refusal
   * @param reply - the first word of the script's reply
   * @param jobId - the job of the call
   * @param operation - the call that failed
   * @param detail - the script's message
   * @param options - `cause`: the script's error reply
   */
  constructor(code: ProtocolErrorCode, reply: string, jobId: string, operation: PublishOperation, detail: string, options?: ErrorOptions) {
    super(code, jobId, operation, `publish script refused the call: ${reply} ${detail}`, options);
    this.reply = reply;
  }
}

/**
 * Redis, or the connection to it, failed: the error is its `cause`, as the
 * Redis client threw it. After a timeout or a lost connection the event
 * may or may not have been stored; retry through
 * {@link Job.withIdempotencyKey} to publish it exactly once.
 */
export class RedisCommandError extends PublishError {
  override readonly name = 'RedisCommandError';
  declare readonly code: 'REDIS_ERROR';

  /**
   * @param jobId - the job of the call
   * @param operation - the call that failed
   * @param cause - the error of the Redis client
   */
  constructor(jobId: string, operation: PublishOperation, cause: unknown) {
    super('REDIS_ERROR', jobId, operation, cause instanceof Error ? cause.message : String(cause), { cause });
  }
}
