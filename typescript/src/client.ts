// watchReport: one job's events over the platform's native EventSource, with
// what the native one lacks. It comes back after a failure the native one
// gives up on (a 502 from a proxy during a deploy closes it for good), it
// hands each event ID to the application once, in order, and it stops for
// good when the job ends.
import { GatewayError, JobFailedError, WatchClosedError } from './errors.js';
import type {
  CompleteEvent,
  ErrorEvent,
  HeartbeatEvent,
  JobEvent,
  JobSnapshot,
  ProgressEvent,
  ResetEvent,
  SSEConnectionOptions,
  StatusEvent,
} from './events.js';

/** Where a watch's connection stands. */
export type ConnectionState = 'connecting' | 'live' | 'reconnecting' | 'closed';

/** The part of a MessageEvent a watch reads. */
export interface MessageEventLike {
  readonly data?: unknown;
  readonly lastEventId?: string;
}

/** The part of an EventSource a watch uses: the browser's and the `eventsource` package's fit. */
export interface EventSourceLike {
  readonly readyState: number;
  addEventListener(type: string, listener: (event: MessageEventLike) => void): void;
  close(): void;
}

/** An EventSource constructor: the global one, or the `eventsource` package's in Node. */
export type EventSourceConstructor = new (url: string, init?: { withCredentials?: boolean }) => EventSourceLike;

/** A token, or a function that returns one (called again before each new connection). */
export type TokenSource = string | (() => string | Promise<string>);

/** Options of {@link fetchReport}. */
export interface RequestOptions {
  /** The gateway's origin (and path prefix), e.g. `https://progress.example.com`. Default: the page's origin. */
  baseUrl?: string;
  /** An access token, sent as the `access_token` query parameter. */
  token?: TokenSource;
  /** The fetch to use. Default: the global one. */
  fetch?: typeof fetch;
}

/** Options of {@link watchReport}. */
export interface WatchOptions extends SSEConnectionOptions, RequestOptions {
  /** The EventSource constructor. Default: the global one; in Node pass the `eventsource` package's. */
  EventSource?: EventSourceConstructor;
  /** Send cookies cross-origin (for `--jwt-cookie`). Default false. */
  withCredentials?: boolean;
  /** Closes the watch when aborted. */
  signal?: AbortSignal;
  /** The first reconnect delay in ms, doubled on each failure in a row (jittered). Default 500. */
  retryInitialMs?: number;
  /** The longest reconnect delay in ms. Default 30000. */
  retryMaxMs?: number;
}

/** The handler argument of each watch event. */
export interface WatchEventMap<Report = unknown> {
  status: StatusEvent;
  progress: ProgressEvent;
  complete: CompleteEvent<Report>;
  /** The job's `error` event: the job failed. Connection trouble is `connection`, never this. */
  failed: ErrorEvent;
  /** The history the resume needed was trimmed: the status and progress that follow are the job's current view. */
  reset: ResetEvent;
  heartbeat: HeartbeatEvent;
  /** Every job event (not heartbeats), in order. */
  event: JobEvent<Report>;
  connection: ConnectionState;
}

/** A handler of watch event K. `id` is the event's ID, when it has one. */
export type WatchHandler<Report, K extends keyof WatchEventMap<Report>> = (value: WatchEventMap<Report>[K], id: string | undefined) => void;

/** A running watch of one job. */
export interface ReportWatch<Report = unknown> extends AsyncIterable<JobEvent<Report>> {
  /** Adds a handler; returns a function that removes it. */
  on<K extends keyof WatchEventMap<Report>>(type: K, handler: WatchHandler<Report, K>): () => void;
  /** Stops for good: the connection is closed and `done` rejects with a WatchClosedError if the job had not ended. */
  close(): void;
  /**
   * Resolves with the `complete` event; rejects with a JobFailedError when the
   * job fails, a GatewayError when the gateway refuses the watch for good, or a
   * WatchClosedError after `close()`.
   */
  readonly done: Promise<CompleteEvent<Report>>;
  /** Where the connection stands. */
  readonly state: ConnectionState;
  /** The ID of the latest event handed to the application: store it to resume after a page reload. */
  readonly lastEventId: string | undefined;
}

/**
 * Watches job `jobId`: its events, each once and in order, until it ends.
 * Register handlers with `on`, or iterate:
 *
 * ```ts
 * const watch = watchReport(jobId, { includeReport: true, token: () => getToken() });
 * watch.on('progress', (e) => bar.set(e.percentage));
 * const done = await watch.done; // the complete event, with its report
 * ```
 */
export function watchReport<Report = unknown>(jobId: string, options: WatchOptions = {}): ReportWatch<Report> {
  return new Watch<Report>(jobId, options);
}

/** Reads the job's snapshot (`GET /api/reports/{jobId}`), for polling clients. */
export async function fetchReport<Report = unknown>(
  jobId: string,
  options: RequestOptions & { includeReport?: boolean } = {},
): Promise<JobSnapshot<Report>> {
  const f = options.fetch ?? globalThis.fetch;
  const url = reportUrl(jobId, '', options.baseUrl);
  if (options.includeReport) url.searchParams.set('includeReport', 'true');
  await setToken(url, options.token);
  const res = await f(url, { headers: { accept: 'application/json' } });
  if (!res.ok) throw (await gatewayError(res)) ?? new GatewayError(res.status, `HTTP_${res.status}`, `${res.status} ${res.statusText}`);
  return (await res.json()) as JobSnapshot<Report>;
}

// The SSE event names a watch listens to; `error` also carries the
// native EventSource's connection errors.
const named = ['status', 'progress', 'complete', 'reset', 'heartbeat'] as const;

const CONNECTING = 0;
const CLOSED = 2;

type Handlers = { [K in keyof WatchEventMap]?: Set<(value: never, id: string | undefined) => void> };

class Watch<Report> implements ReportWatch<Report> {
  readonly done: Promise<CompleteEvent<Report>>;
  private readonly jobId: string;
  private readonly opts: WatchOptions;
  private readonly ES: EventSourceConstructor;
  private readonly handlers: Handlers = {};
  private readonly iterators = new Set<Queue<JobEvent<Report>>>();
  private resolve!: (e: CompleteEvent<Report>) => void;
  private reject!: (err: Error) => void;
  private es: EventSourceLike | undefined;
  private esLastId = ''; // the native EventSource's last event ID buffer
  private last: string | undefined;
  private current: ConnectionState = 'connecting';
  private finished = false;
  private failures = 0; // connections in a row that ended without opening
  private authRetried = false;
  private timer: ReturnType<typeof setTimeout> | undefined;
  private readonly onAbort = () => this.close();

  constructor(jobId: string, opts: WatchOptions) {
    const ES = opts.EventSource ?? (globalThis as { EventSource?: EventSourceConstructor }).EventSource;
    if (!ES) throw new TypeError('watchReport: no EventSource here; pass one as options.EventSource (in Node: the eventsource package)');
    reportUrl(jobId, '/stream', opts.baseUrl); // throws now for a missing base URL
    this.jobId = jobId;
    this.opts = opts;
    this.ES = ES;
    this.last = opts.lastEventId || undefined;
    this.done = new Promise((resolve, reject) => {
      this.resolve = resolve;
      this.reject = reject;
    });
    this.done.catch(() => {}); // settled for those who never await it
    if (opts.signal?.aborted) {
      queueMicrotask(() => this.close());
      return;
    }
    opts.signal?.addEventListener('abort', this.onAbort, { once: true });
    // Start after the caller has added its handlers.
    queueMicrotask(() => {
      this.emit('connection', 'connecting', undefined);
      void this.connect();
    });
  }

  get state(): ConnectionState {
    return this.current;
  }

  get lastEventId(): string | undefined {
    return this.last;
  }

  on<K extends keyof WatchEventMap<Report>>(type: K, handler: WatchHandler<Report, K>): () => void {
    const set = (this.handlers[type] ??= new Set()) as Set<WatchHandler<Report, K>>;
    set.add(handler);
    return () => set.delete(handler);
  }

  close(): void {
    this.finish(() => this.reject(new WatchClosedError(this.jobId)));
  }

  [Symbol.asyncIterator](): AsyncIterator<JobEvent<Report>> {
    const q = new Queue<JobEvent<Report>>(() => this.iterators.delete(q));
    if (this.finished) q.end();
    else this.iterators.add(q);
    return q;
  }

  private async connect(): Promise<void> {
    if (this.finished) return;
    const url = reportUrl(this.jobId, '/stream', this.opts.baseUrl);
    if (this.opts.includeReport) url.searchParams.set('includeReport', 'true');
    if (this.opts.timeoutMs !== undefined) url.searchParams.set('timeout', String(this.opts.timeoutMs));
    if (this.last) url.searchParams.set('lastEventId', this.last);
    try {
      await setToken(url, this.opts.token);
    } catch (err) {
      this.fail(err instanceof Error ? err : new Error(String(err)));
      return;
    }
    if (this.finished) return;
    const es = new this.ES(url.href, this.opts.withCredentials ? { withCredentials: true } : undefined);
    this.es = es;
    this.esLastId = '';
    es.addEventListener('open', () => {
      if (this.es !== es) return;
      this.failures = 0;
      this.authRetried = false;
      this.setState('live');
    });
    for (const type of named) es.addEventListener(type, (ev) => this.message(es, type, ev));
    es.addEventListener('error', (ev) => {
      if (typeof ev.data === 'string') this.message(es, 'error', ev); // the job failed
      else this.connectionError(es);
    });
  }

  private message(es: EventSourceLike, type: (typeof named)[number] | 'error', ev: MessageEventLike): void {
    if (this.es !== es || this.finished) return;
    // An event without an id field leaves the EventSource's last event ID
    // as it was (browsers), or has none ('', the eventsource package): a
    // change is the mark of an id.
    const evId = ev.lastEventId ?? '';
    const hasId = evId !== '' && evId !== this.esLastId;
    if (evId !== '') this.esLastId = evId;
    if (type === 'reset') {
      // A reset carries the resume point it could not resume from (or no
      // id): it is news, never a repeat.
    } else if (hasId) {
      if (this.last !== undefined && compareIds(evId, this.last) <= 0) return; // seen already
    } else if (type !== 'status' && type !== 'heartbeat') {
      return; // progress, complete and error always carry a new id: a repeat
    }
    let data: unknown;
    try {
      data = JSON.parse(String(ev.data));
    } catch {
      return; // the gateway checks every event; not one of them
    }
    if (typeof data !== 'object' || data === null || (data as { type?: unknown }).type !== type) return;
    const id = hasId && (type as string) !== 'reset' ? evId : undefined;
    if (id !== undefined) this.last = id;
    switch (type) {
      case 'heartbeat':
        this.emit('heartbeat', data as HeartbeatEvent, undefined);
        return;
      case 'complete': {
        const e = data as CompleteEvent<Report>;
        this.finish(() => this.resolve(e), e, id);
        return;
      }
      case 'error': {
        const e = data as ErrorEvent;
        this.finish(() => this.reject(new JobFailedError(e)), e, id);
        return;
      }
      default:
        this.deliver(data as JobEvent<Report>, id);
    }
  }

  private deliver(e: JobEvent<Report>, id: string | undefined): void {
    switch (e.type) {
      case 'status': this.emit('status', e, id); break;
      case 'progress': this.emit('progress', e, id); break;
      case 'reset': this.emit('reset', e, id); break;
      case 'complete': this.emit('complete', e, id); break;
      case 'error': this.emit('failed', e, id); break;
    }
    this.emit('event', e, id);
    for (const q of this.iterators) q.push(e);
  }

  private connectionError(es: EventSourceLike): void {
    if (this.es !== es || this.finished) return;
    this.setState('reconnecting');
    if (es.readyState === CONNECTING) return; // the native EventSource comes back by itself
    if (es.readyState !== CLOSED) return;
    // The native EventSource gave up: a non-200 answer (a proxy's 502, or
    // the gateway's 204, 401, 404…) or a network failure. Ask the
    // snapshot endpoint which, then come back or stop.
    es.close();
    this.es = undefined;
    this.failures++;
    void this.diagnose();
  }

  private async diagnose(): Promise<void> {
    const f = this.opts.fetch ?? globalThis.fetch;
    if (f) {
      try {
        const url = reportUrl(this.jobId, '', this.opts.baseUrl);
        await setToken(url, this.opts.token);
        const res = await f(url, { headers: { accept: 'application/json' }, cache: 'no-store' });
        if (this.finished) return;
        if (res.ok) {
          const snap = (await res.json()) as JobSnapshot<Report>;
          if (this.endedAt(snap)) return;
        } else if (res.status === 401 && typeof this.opts.token === 'function' && !this.authRetried) {
          this.authRetried = true; // a refreshed token may do
          this.failures = 0;
        } else if (res.status >= 400 && res.status < 500 && res.status !== 408 && res.status !== 429) {
          // The gateway's own refusal is for good; a proxy's page is not.
          const err = await gatewayError(res);
          if (err) {
            this.fail(err);
            return;
          }
        }
      } catch {
        // the gateway or the network is down: come back later
      }
    }
    if (this.finished) return;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      void this.connect();
    }, this.delay());
  }

  // endedAt settles the watch from a snapshot whose terminal event is the
  // last one handed out (the stream answered 204): nothing to hand out.
  private endedAt(snap: JobSnapshot<Report>): boolean {
    if (this.last === undefined || snap.lastEventId !== this.last) return false;
    if (snap.status === 'failed' && snap.error) {
      const e = snap.error;
      this.finish(() => this.reject(new JobFailedError(e)));
      return true;
    }
    if (snap.status === 'completed' && snap.reportId !== null) {
      const e: CompleteEvent<Report> = {
        type: 'complete', jobId: snap.jobId, reportId: snap.reportId,
        includeReport: snap.report !== undefined, timestamp: snap.updatedAt,
      };
      if (snap.report !== undefined) e.report = snap.report;
      this.finish(() => this.resolve(e));
      return true;
    }
    return false;
  }

  private delay(): number {
    const initial = this.opts.retryInitialMs ?? 500;
    const max = this.opts.retryMaxMs ?? 30_000;
    const d = Math.min(max, initial * 2 ** Math.max(0, this.failures - 1));
    return d / 2 + Math.random() * (d / 2);
  }

  private fail(err: Error): void {
    this.finish(() => this.reject(err));
  }

  // finish stops for good: the connection first, so that no request
  // follows the job's end; then the application hears of it.
  private finish(settle: () => void, last?: JobEvent<Report>, id?: string): void {
    if (this.finished) return;
    this.finished = true;
    this.es?.close();
    this.es = undefined;
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.opts.signal?.removeEventListener('abort', this.onAbort);
    if (last) this.deliver(last, id);
    settle();
    this.setState('closed');
    for (const q of this.iterators) q.end();
    this.iterators.clear();
  }

  private setState(s: ConnectionState): void {
    if (s === this.current) return;
    this.current = s;
    this.emit('connection', s, undefined);
  }

  private emit<K extends keyof WatchEventMap<Report>>(type: K, value: WatchEventMap<Report>[K], id: string | undefined): void {
    const set = this.handlers[type] as Set<WatchHandler<Report, K>> | undefined;
    if (!set) return;
    for (const h of [...set]) {
      try {
        h(value, id);
      } catch (err) {
        report(err);
      }
    }
  }
}

// A handler's exception is reported as the platform reports an event
// listener's, without stopping the watch.
function report(err: unknown): void {
  const r = (globalThis as { reportError?: (e: unknown) => void }).reportError;
  if (r) r(err);
  else setTimeout(() => { throw err; });
}

/** Compares two stream IDs (`<ms>-<seq>`) as numbers. */
export function compareIds(a: string, b: string): number {
  const [am = '', as = ''] = a.split('-');
  const [bm = '', bs = ''] = b.split('-');
  return compareDigits(am, bm) || compareDigits(as, bs);
}

function compareDigits(a: string, b: string): number {
  if (a.length !== b.length) return a.length < b.length ? -1 : 1;
  return a < b ? -1 : a > b ? 1 : 0;
}

function reportUrl(jobId: string, suffix: string, baseUrl: string | undefined): URL {
  const page = (globalThis as { location?: { href: string } }).location?.href;
  const path = `api/reports/${encodeURIComponent(jobId)}${suffix}`;
  if (baseUrl === undefined) {
    if (page === undefined) throw new TypeError('ssegate: no baseUrl, and no page location to resolve against');
    return new URL(`/${path}`, page);
  }
  return new URL(path, new URL(baseUrl.endsWith('/') ? baseUrl : `${baseUrl}/`, page));
}

async function setToken(url: URL, token: TokenSource | undefined): Promise<void> {
  if (token === undefined) return;
  const t = typeof token === 'function' ? await token() : token;
  if (t) url.searchParams.set('access_token', t);
}

// gatewayError reads an error answer. It is the gateway's own when it has
// the gateway's JSON error body; a proxy's page is not.
async function gatewayError(res: Response): Promise<GatewayError | undefined> {
  try {
    const body = (await res.json()) as { error?: unknown; code?: unknown };
    if (typeof body.code === 'string' && typeof body.error === 'string') {
      return new GatewayError(res.status, body.code, body.error);
    }
  } catch {
    // not JSON
  }
  return undefined;
}

// Queue is an async iterator fed by a watch.
class Queue<T> implements AsyncIterator<T> {
  private readonly items: T[] = [];
  private readonly waiting: ((r: IteratorResult<T>) => void)[] = [];
  private ended = false;

  constructor(private readonly detach: () => void) {}

  push(v: T): void {
    const w = this.waiting.shift();
    if (w) w({ value: v, done: false });
    else this.items.push(v);
  }

  end(): void {
    this.ended = true;
    for (const w of this.waiting.splice(0)) w({ value: undefined, done: true });
  }

  next(): Promise<IteratorResult<T>> {
    if (this.items.length > 0) return Promise.resolve({ value: this.items.shift() as T, done: false });
    if (this.ended) return Promise.resolve({ value: undefined, done: true });
    return new Promise((resolve) => this.waiting.push(resolve));
  }

  return(): Promise<IteratorResult<T>> {
    this.detach();
    this.items.length = 0;
    this.end();
    return Promise.resolve({ value: undefined, done: true });
  }
}
