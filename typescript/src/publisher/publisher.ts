// The Publisher and its Job handles: the Node twin of the Go package
// publisher. Every call is one run of the protocol's publish script, with
// the same keys and arguments as the Go publisher sends.
import { createHash } from 'node:crypto';

import type { JobStatus } from '../events.js';
import { fingerprint, goJSON, wellFormed, type EventData } from './encode.js';
import {
  IdempotencyKeyReusedError,
  JobExistsError,
  JobFinishedError,
  JobNotFoundError,
  ProtocolError,
  PublishError,
  RedisCommandError,
  ValidationError,
  type ProtocolErrorCode,
  type PublishOperation,
  type ValidationErrorCode,
} from './errors.js';
import { PUBLISH_SCRIPT } from './script.js';

/** The SHA-1 of {@link PUBLISH_SCRIPT}, the name EVALSHA runs it by. */
export const PUBLISH_SCRIPT_SHA1: string = createHash('sha1').update(PUBLISH_SCRIPT, 'utf8').digest('hex');

/** The protocol version the publisher speaks (ARGV[1] of the script). */
export const PROTOCOL_VERSION = 1;

/** The defaults of {@link PublisherOptions}, the same as the Go publisher's. */
export const DEFAULTS = Object.freeze({
  keyPrefix: 'ssegate',
  maxLen: 1000,
  retentionMs: 3_600_000,
  staleTtlMs: 86_400_000,
  reportMaxBytes: 1_048_576,
  idempotencyWindowMs: 3_600_000,
});

/** The keys and arguments of one EVAL or EVALSHA call, as node-redis v5 takes them. */
export interface ScriptCallOptions {
  keys: string[];
  arguments: string[];
}

/**
 * What the publisher needs of a Redis client: node-redis v5's `evalSha` and
 * `eval`. A client of `createClient`, `createCluster` or `createSentinel`
 * (from `redis` or `@redis/client`) has both.
 */
export interface ScriptClient {
  /** EVALSHA: run a cached script by its SHA-1. */
  evalSha(sha1: string, options: ScriptCallOptions): Promise<unknown>;
  /** EVAL: run (and cache) a script. */
  eval(script: string, options: ScriptCallOptions): Promise<unknown>;
}

/** Options of a {@link Publisher}. Every one has the Go publisher's default. */
export interface PublisherOptions {
  /**
   * The key prefix, without braces. Default `ssegate`; an empty string is
   * the default too. Gateways must use the same one.
   */
  keyPrefix?: string | undefined;
  /** The approximate number of events kept in a job's stream (`XADD MAXLEN ~`). Default 1000. */
  maxLen?: number | undefined;
  /** How long a job's keys live after its terminal event, in ms. Default 1 hour. */
  retentionMs?: number | undefined;
  /** How long a running job's keys live after its latest event, in ms. Default 24 hours. */
  staleTtlMs?: number | undefined;
  /** The largest report `complete()` accepts, in UTF-8 bytes of its JSON. Default 1 MiB (1048576). */
  reportMaxBytes?: number | undefined;
  /** How long an idempotent publish ({@link Job.withIdempotencyKey}) is remembered, in ms. Default 1 hour. */
  idempotencyWindowMs?: number | undefined;
  /** The clock of event timestamps. Default `() => new Date()`. */
  now?: (() => Date) | undefined;
  /**
   * Send live messages with `SPUBLISH` (Redis Cluster sharded pub/sub, to
   * the job's master only) instead of `PUBLISH`. Default `'auto'`: on a
   * cluster client (one with node-redis's `masters`, `slots` and
   * `nodeClient`, as `createCluster` makes), as the Go publisher does on a
   * `redis+cluster://` URL; the gateway reads a Cluster's live messages
   * with `SSUBSCRIBE`. `false` keeps `PUBLISH` (for a consumer that reads
   * with `SUBSCRIBE`); `true` forces `SPUBLISH`.
   */
  sharded?: boolean | 'auto' | undefined;
}

/** A status a worker may publish: a job ends with `complete()` or `fail()` instead. */
export type PublishableStatus = Extract<JobStatus, 'pending' | 'processing'>;

/** One progress report: `step` of `total` steps done, now at `name`. */
export interface ProgressStep {
  /** Steps done: an integer, 0 ≤ step ≤ total. */
  step: number;
  /** All steps: an integer > 0. */
  total: number;
  /** The name of the current step (`currentStep`). Default `""`. */
  name?: string | undefined;
}

/**
 * The publishing handle of one job, from {@link Publisher.job}. Every call is
 * one atomic Redis script: when its promise resolves, the event is in the
 * job's stream and state hash and has been sent on its live channel, and
 * the value is its event ID (the stream entry ID). Nothing is buffered.
 * Calls reject with a {@link PublishError}, never throw synchronously.
 */
export interface Job {
  /** The job ID. */
  readonly id: string;
  /** The idempotency key of this handle's publishes, if it has one. */
  readonly idempotencyKey: string | undefined;
  /**
   * Creates the job with status `pending` and appends that status event, so
   * the job exists for gateways. Register it before handing its ID to a
   * client. Rejects with {@link JobExistsError} if the job exists.
   */
  register(): Promise<string>;
  /**
   * Publishes a status change: `pending` or `processing`. The first
   * `processing` starts the clock of the progress estimate.
   */
  status(status: PublishableStatus): Promise<string>;
  /**
   * Publishes progress. The percentage is computed here; the estimated time
   * left is computed in Redis from the job's pace, so it is right whichever
   * worker publishes each step. The job becomes `processing`.
   */
  progress(step: ProgressStep): Promise<string>;
  /**
   * Finishes the job. `report` is any JSON-serialisable value (serialised
   * with JSON.stringify), or `undefined`/`null` for none; it is stored in the
   * job's state hash only, and gateways send it to the clients that ask.
   */
  complete(reportId: string, report?: unknown): Promise<string>;
  /**
   * Finishes the job as failed, with a human message and a machine code;
   * `retryable` (default false) tells the client whether running the job
   * again may help.
   */
  fail(message: string, code: string, retryable?: boolean): Promise<string>;
  /**
   * A handle of the same job whose publishes are idempotent under `key`
   * (1–255 printable ASCII characters, no space): a call retried with the
   * same key (after a timeout, say) resolves to the first call's event ID
   * and publishes nothing, for the publisher's idempotency window. The same
   * key with another event rejects with {@link IdempotencyKeyReusedError}.
   * Give each event its own key, such as `step-3`.
   */
  withIdempotencyKey(key: string): Job;
}

const jobIdPattern = /^[A-Za-z0-9._:-]{1,128}$/;
const idempotencyKeyPattern = /^[\x21-\x7e]{1,255}$/;
/** The script's `whole`: at most 15 decimal digits. */
const maxWhole = 999_999_999_999_999;

/** Whether id is a valid job ID: 1–128 characters of `[A-Za-z0-9._:-]`. */
export function isValidJobId(id: string): boolean {
  return typeof id === 'string' && jobIdPattern.test(id);
}

function isClusterClient(client: object): boolean {
  return 'masters' in client && 'slots' in client && 'nodeClient' in client;
}

function positive(name: string, value: number | undefined, fallback: number): number {
  if (value === undefined) return fallback;
  if (!Number.isSafeInteger(value) || value <= 0 || value > maxWhole) {
    throw new RangeError(`ssegate/publisher: ${name} must be a positive integer of at most 15 digits, got ${String(value)}`);
  }
  return value;
}

interface Settings {
  client: ScriptClient;
  prefix: string;
  maxLen: string;
  retention: string;
  staleTtl: string;
  reportMaxBytes: number;
  idempotencyWindow: string;
  now: () => Date;
  pub: 'PUBLISH' | 'SPUBLISH';
}

/**
 * Publishes the events of jobs to one Redis deployment, through a node-redis
 * v5 client (`createClient`, `createSentinel` or `createCluster`), exactly as
 * the Go publisher does: the same keys, script and arguments. The client
 * must be connected; the publisher never connects or closes it.
 *
 * ```ts
 * const publisher = new Publisher(await createClient({ url }).connect());
 * const job = publisher.job('abc');
 * await job.register();            // before handing 'abc' to a client
 * await job.status('processing');
 * await job.progress({ step: 2, total: 8, name: 'Aggregating' });
 * await job.complete('r-1', { rows: 2 });
 * ```
 */
export class Publisher {
  /** The key prefix in use. */
  readonly keyPrefix: string;
  /** Whether live messages go out with SPUBLISH (else PUBLISH). */
  readonly sharded: boolean;
  readonly #s: Settings;

  /**
   * @param client - a connected node-redis v5 client
   * @param options - see {@link PublisherOptions}
   * @throws RangeError for an option out of range (a non-positive or
   *   fractional size or duration, a key prefix with a brace)
   */
  constructor(client: ScriptClient, options: PublisherOptions = {}) {
    const prefix = options.keyPrefix || DEFAULTS.keyPrefix;
    if (/[{}]/.test(prefix)) {
      throw new RangeError(`ssegate/publisher: keyPrefix must not contain braces, got ${JSON.stringify(prefix)}`);
    }
    const sharded = (options.sharded ?? 'auto') === 'auto' ? isClusterClient(client) : options.sharded === true;
    this.keyPrefix = prefix;
    this.sharded = sharded;
    this.#s = {
      client,
      prefix,
      maxLen: String(positive('maxLen', options.maxLen, DEFAULTS.maxLen)),
      retention: String(positive('retentionMs', options.retentionMs, DEFAULTS.retentionMs)),
      staleTtl: String(positive('staleTtlMs', options.staleTtlMs, DEFAULTS.staleTtlMs)),
      reportMaxBytes: positive('reportMaxBytes', options.reportMaxBytes, DEFAULTS.reportMaxBytes),
      idempotencyWindow: String(positive('idempotencyWindowMs', options.idempotencyWindowMs, DEFAULTS.idempotencyWindowMs)),
      now: options.now ?? (() => new Date()),
      pub: sharded ? 'SPUBLISH' : 'PUBLISH',
    };
  }

  /**
   * The handle of one job. It does no I/O; an invalid ID is reported by
   * each call on the handle ({@link ValidationError} `INVALID_JOB_ID`).
   */
  job(id: string): Job {
    return new JobHandle(this.#s, id, undefined);
  }
}

/** The arguments of one publish, before the common ones are added. */
interface Call {
  op: 'register' | 'publish';
  type: 'status' | 'progress' | 'error' | 'complete';
  data: EventData;
  status?: PublishableStatus;
  report?: string;
  step?: number;
  total?: number;
}

const scriptErrors: Readonly<Record<string, ProtocolErrorCode | 'exists' | 'notFound' | 'finished' | 'idempotency'>> = {
  SSEGATE_EXISTS: 'exists',
  SSEGATE_NOT_FOUND: 'notFound',
  SSEGATE_FINISHED: 'finished',
  SSEGATE_KEYS: 'BAD_KEYS',
  SSEGATE_VERSION: 'BAD_ARGS',
  SSEGATE_BAD_ARGS: 'BAD_ARGS',
  SSEGATE_BAD_DATA: 'BAD_DATA',
  SSEGATE_BAD_REPORT: 'BAD_REPORT',
  SSEGATE_IDEMPOTENCY: 'idempotency',
};

class JobHandle implements Job {
  readonly id: string;
  readonly idempotencyKey: string | undefined;
  readonly #s: Settings;

  constructor(s: Settings, id: string, key: string | undefined) {
    this.#s = s;
    this.id = id;
    this.idempotencyKey = key;
  }

  withIdempotencyKey(key: string): Job {
    return new JobHandle(this.#s, this.id, key);
  }

  async register(): Promise<string> {
    this.#checkId('register');
    return this.#publish('register', {
      op: 'register', type: 'status', status: 'pending',
      data: { type: 'status', jobId: this.id, status: 'pending', timestamp: this.#now() },
    });
  }

  async status(status: PublishableStatus): Promise<string> {
    this.#checkId('status');
    if (status !== 'pending' && status !== 'processing') {
      throw this.#invalid('status', 'INVALID_STATUS',
        `status must be pending or processing (finish a job with complete or fail): got ${describe(status)}`);
    }
    return this.#publish('status', {
      op: 'publish', type: 'status', status,
      data: { type: 'status', jobId: this.id, status, timestamp: this.#now() },
    });
  }

  async progress(p: ProgressStep): Promise<string> {
    this.#checkId('progress');
    const { step, total } = p ?? {};
    const name = p?.name ?? '';
    if (!Number.isSafeInteger(step) || !Number.isSafeInteger(total) || total <= 0 || step < 0 || step > total) {
      throw this.#invalid('progress', 'INVALID_STEP',
        `progress needs integers total > 0 and 0 <= step <= total: got step ${describe(step)} of ${describe(total)}`);
    }
    if (typeof name !== 'string') {
      throw this.#invalid('progress', 'INVALID_STEP', `the step name must be a string, got ${describe(name)}`);
    }
    return this.#publish('progress', {
      op: 'publish', type: 'progress', step, total,
      data: {
        type: 'progress', jobId: this.id, step, totalSteps: total, currentStep: wellFormed(name),
        percentage: Number((BigInt(step) * 100n) / BigInt(total)),
        estimatedRemainingMs: null, // the script fills it in
        timestamp: this.#now(),
      },
    });
  }

  async complete(reportId: string, report?: unknown): Promise<string> {
    this.#checkId('complete');
    if (typeof reportId !== 'string' || reportId === '') {
      throw this.#invalid('complete', 'INVALID_REPORT_ID', 'report ID must be a non-empty string');
    }
    let json = '';
    if (report !== undefined && report !== null) {
      let text: string | undefined;
      try {
        text = JSON.stringify(report) as string | undefined;
      } catch (err) {
        throw this.#invalid('complete', 'INVALID_REPORT',
          `report is not JSON-serialisable: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
      }
      if (text === undefined) {
        throw this.#invalid('complete', 'INVALID_REPORT', `report is not JSON-serialisable (a ${typeof report})`);
      }
      if (text !== 'null') json = text; // a report that serialises to null is no report, as in Go
    }
    const bytes = Buffer.byteLength(json, 'utf8');
    if (bytes > this.#s.reportMaxBytes) {
      throw this.#invalid('complete', 'REPORT_TOO_LARGE',
        `report larger than the limit: ${bytes} bytes, limit ${this.#s.reportMaxBytes}`);
    }
    return this.#publish('complete', {
      op: 'publish', type: 'complete', report: json,
      data: { type: 'complete', jobId: this.id, reportId: wellFormed(reportId), hasReport: json !== '', timestamp: this.#now() },
    });
  }

  async fail(message: string, code: string, retryable = false): Promise<string> {
    this.#checkId('fail');
    if (typeof message !== 'string' || message === '' || typeof code !== 'string' || code === '') {
      throw this.#invalid('fail', 'INVALID_FAILURE', 'a failure needs a non-empty message and code');
    }
    if (typeof retryable !== 'boolean') {
      throw this.#invalid('fail', 'INVALID_FAILURE', `retryable must be a boolean, got ${describe(retryable)}`);
    }
    return this.#publish('fail', {
      op: 'publish', type: 'error',
      data: { type: 'error', jobId: this.id, error: wellFormed(message), code: wellFormed(code), retryable, timestamp: this.#now() },
    });
  }

  #now(): string {
    return this.#s.now().toISOString();
  }

  #checkId(op: PublishOperation): void {
    if (!isValidJobId(this.id)) {
      throw this.#invalid(op, 'INVALID_JOB_ID', 'invalid job ID: want 1-128 characters of [A-Za-z0-9._:-]');
    }
  }

  #invalid(op: PublishOperation, code: ValidationErrorCode, detail: string, options?: ErrorOptions): ValidationError {
    return new ValidationError(code, String(this.id), op, detail, options);
  }

  async #publish(op: PublishOperation, c: Call): Promise<string> {
    const s = this.#s;
    const data = goJSON(c.data);
    const base = `${s.prefix}:{${this.id}}:`;
    const keys = [`${base}events`, `${base}state`, `${base}live`];
    const args = [
      String(PROTOCOL_VERSION), c.op, c.type, data, c.status ?? '', c.report ?? '',
      String(c.step ?? 0), String(c.total ?? 0), s.maxLen, s.staleTtl, s.retention, s.pub,
    ];
    const key = this.idempotencyKey;
    if (key !== undefined) {
      if (typeof key !== 'string' || !idempotencyKeyPattern.test(key)) {
        throw this.#invalid(op, 'INVALID_IDEMPOTENCY_KEY', 'idempotency key must be 1-255 printable ASCII characters');
      }
      keys.push(`${base}idem:${key}`);
      args.push(s.idempotencyWindow, fingerprint(c.op, c.data, c.report ?? ''));
    }
    let reply: unknown;
    try {
      reply = await runScript(s.client, { keys, arguments: args });
    } catch (err) {
      throw this.#scriptError(op, err);
    }
    if (typeof reply === 'string') return reply;
    if (reply instanceof Uint8Array) return Buffer.from(reply).toString('utf8'); // a Buffer type mapping
    throw new RedisCommandError(this.id, op, new TypeError(`publish script replied ${describe(reply)}, not an event ID`));
  }

  #scriptError(op: PublishOperation, err: unknown): PublishError {
    const message = err instanceof Error ? err.message : '';
    const space = message.indexOf(' ');
    const word = space < 0 ? message : message.slice(0, space);
    const kind = Object.hasOwn(scriptErrors, word) ? scriptErrors[word] : undefined;
    const cause = { cause: err };
    switch (kind) {
      case undefined:
        return new RedisCommandError(this.id, op, err);
      case 'exists':
        return new JobExistsError(this.id, op, cause);
      case 'notFound':
        return new JobNotFoundError(this.id, op, cause);
      case 'finished':
        return new JobFinishedError(this.id, op, cause);
      case 'idempotency':
        return new IdempotencyKeyReusedError(this.id, op, this.idempotencyKey ?? '', cause);
      default:
        return new ProtocolError(kind, word, this.id, op, space < 0 ? '' : message.slice(space + 1), cause);
    }
  }
}

/**
 * EVALSHA, and on NOSCRIPT (a restarted or failed-over server, a SCRIPT
 * FLUSH) EVAL, which caches the script again.
 */
async function runScript(client: ScriptClient, call: ScriptCallOptions): Promise<unknown> {
  try {
    return await client.evalSha(PUBLISH_SCRIPT_SHA1, call);
  } catch (err) {
    if (!(err instanceof Error && err.message.startsWith('NOSCRIPT'))) throw err;
    return await client.eval(PUBLISH_SCRIPT, call);
  }
}

function describe(v: unknown): string {
  if (typeof v === 'string') return JSON.stringify(v);
  if (typeof v === 'number' || typeof v === 'boolean' || typeof v === 'bigint' || v === null || v === undefined) return String(v);
  return `a ${typeof v}`;
}
