// watchReport in Node (the eventsource package) against the real gateway
// binary and a real redis-server, through a proxy that answers 502 while no
// gateway is up. Events are published with cmd/ssepub, the Go publisher, so
// the client is checked against the other side's own code.
import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { EventSource } from 'eventsource';
import { createClient } from 'redis';
import {
  GatewayError, JobFailedError, WatchClosedError, fetchReport, watchReport,
  type ConnectionState, type JobEvent, type ReportWatch, type WatchOptions,
} from 'ssegate';
import { Proxy, assertOnceInOrder, sleep, ssepubAsync, startGateway, startRedis, waitFor, type Gateway, type RedisServer } from './harness.js';

let redis: RedisServer;
let proxy: Proxy;
let gw: Gateway;
let seq = 0;
const open = new Set<ReportWatch<unknown>>();

const jobId = (name: string) => `ts-${name}-${process.pid}-${++seq}`;
const pub = (job: string, ...args: string[]) => ssepubAsync(redis.url, [job, ...args]);

before(async () => {
  redis = await startRedis();
  gw = await startGateway(redis.url, ['--retry', '200ms']);
  proxy = await new Proxy().listen();
  proxy.upstream = gw.url;
});

after(async () => {
  for (const w of open) w.close(); // a failed test's watch would reconnect for ever
  await proxy?.close();
  await gw?.stop();
  await redis?.stop();
});

function watch<R = unknown>(job: string, opts: WatchOptions = {}): { w: ReportWatch<R>; log: Recorder<R> } {
  const w = watchReport<R>(job, { baseUrl: proxy.url, EventSource, retryInitialMs: 100, retryMaxMs: 1000, ...opts });
  open.add(w as ReportWatch<unknown>);
  return { w, log: new Recorder(w) };
}

/** Everything a watch hands out, in order. */
class Recorder<R> {
  readonly events: { e: JobEvent<R>; id: string | undefined }[] = [];
  readonly states: ConnectionState[] = [];
  readonly failed: unknown[] = [];

  constructor(w: ReportWatch<R>) {
    w.on('event', (e, id) => this.events.push({ e, id }));
    w.on('connection', (s) => this.states.push(s));
    w.on('failed', (e) => this.failed.push(e));
  }

  ids(): string[] {
    return this.events.flatMap((x) => (x.id === undefined ? [] : [x.id]));
  }

  steps(): number[] {
    return this.events.flatMap((x) => (x.e.type === 'progress' ? [x.e.step] : []));
  }

  types(): string[] {
    return this.events.map((x) => x.e.type);
  }
}

describe('watchReport (Node, eventsource)', () => {
  it('follows a whole job and resolves done with the report', async () => {
    const job = jobId('whole');
    await pub(job, 'register');
    const { w, log } = watch<{ rows: number }>(job, { includeReport: true });
    await waitFor('live', () => w.state === 'live');
    await pub(job, 'status', 'processing');
    for (let i = 1; i <= 5; i++) await pub(job, 'progress', '--step', String(i), '--total', '5', '--name', `step ${i}`);
    await ssepubAsync(redis.url, [job, 'complete', '--report-id', 'r-1', '--report', '-'], '{"rows":42}');
    const done = await w.done;
    assert.equal(done.type, 'complete');
    assert.equal(done.reportId, 'r-1');
    assert.equal(done.includeReport, true);
    assert.deepEqual(done.report, { rows: 42 });
    assert.deepEqual(log.types(), ['status', 'status', 'progress', 'progress', 'progress', 'progress', 'progress', 'complete']);
    assert.deepEqual(log.steps(), [1, 2, 3, 4, 5]);
    const [first, second] = log.events;
    assert.equal(first?.e.type === 'status' && first.e.status, 'pending');
    assert.equal(second?.e.type === 'status' && second.e.status, 'processing');
    assert.equal(log.ids().length, 8, 'every event carried its ID');
    assertOnceInOrder(log.ids());
    assert.equal(w.lastEventId, log.ids().at(-1));
    assert.deepEqual(log.states, ['connecting', 'live', 'closed']);
    assert.equal(w.state, 'closed');
  });

  it('iterates a job to its end', async () => {
    const job = jobId('iter');
    await pub(job, 'register');
    await pub(job, 'status', 'processing');
    const { w } = watch(job);
    const seen: string[] = [];
    const publishing = (async () => {
      await waitFor('live', () => w.state === 'live');
      await pub(job, 'progress', '--step', '1', '--total', '2');
      await pub(job, 'progress', '--step', '2', '--total', '2');
      await pub(job, 'complete', '--report-id', 'r-2');
    })();
    for await (const e of w) seen.push(e.type === 'progress' ? `progress ${e.step}` : e.type);
    await publishing;
    assert.deepEqual(seen, ['status', 'progress 1', 'progress 2', 'complete']);
    const done = await w.done;
    assert.equal(done.includeReport, false);
    assert.equal(done.report, undefined);
  });

  it('survives a gateway restart behind a proxy answering 502: every event once', async () => {
    const rounds = Number(process.env.SSEGATE_RESTART_ROUNDS ?? 1);
    for (let round = 0; round < rounds; round++) await restartRound(round);
  });

  it('reports a failed job as failed and rejects done, with no reconnecting', async () => {
    const job = jobId('fail');
    await pub(job, 'register');
    await pub(job, 'status', 'processing');
    const { w, log } = watch(job);
    await waitFor('live', () => w.state === 'live');
    await pub(job, 'progress', '--step', '1', '--total', '3');
    const before = proxy.count(`/api/reports/${job}`);
    await pub(job, 'fail', '--code', 'UPSTREAM_TIMEOUT', '--message', 'upstream timed out', '--retryable');
    const err = await w.done.then(() => assert.fail('done resolved'), (e: unknown) => e);
    assert.ok(err instanceof JobFailedError);
    assert.equal(err.code, 'UPSTREAM_TIMEOUT');
    assert.equal(err.retryable, true);
    assert.equal(err.event.error, 'upstream timed out');
    assert.equal(log.failed.length, 1);
    assert.deepEqual(log.types(), ['status', 'progress', 'error']);
    assert.deepEqual(log.states, ['connecting', 'live', 'closed']);
    await sleep(800); // the gateway's retry hint is 200 ms: a reconnect would show by now
    assert.equal(proxy.count(`/api/reports/${job}`), before, 'a request after the job failed');
  });

  it('makes no request after complete', async () => {
    const job = jobId('quiet');
    await pub(job, 'register');
    const { w } = watch(job);
    await waitFor('live', () => w.state === 'live');
    await pub(job, 'complete', '--report-id', 'r-3');
    await w.done;
    const n = proxy.count(`/api/reports/${job}`);
    assert.equal(n, 1, 'one stream request');
    await sleep(800);
    assert.equal(proxy.count(`/api/reports/${job}`), n);
  });

  it('passes on a reset and then the snapshot when the history it resumes from was trimmed', async () => {
    const job = jobId('reset');
    const r = await pub(job, 'register');
    await pub(job, 'status', 'processing');
    await pub(job, 'progress', '--step', '1', '--total', '4');
    await pub(job, 'progress', '--step', '2', '--total', '4');
    const rdb = createClient({ url: redis.url });
    await rdb.connect();
    try {
      await rdb.xDel(`ssegate:{${job}}:events`, r); // the resume point is gone
    } finally {
      await rdb.close();
    }
    const { w, log } = watch(job, { lastEventId: r });
    let resetSeen = false;
    w.on('reset', (e) => {
      resetSeen = true;
      assert.equal(e.reason, 'history_trimmed');
      assert.equal(log.events.length, 0, 'reset comes first');
    });
    await waitFor('snapshot', () => log.steps().length === 1);
    assert.ok(resetSeen);
    assert.deepEqual(log.types(), ['reset', 'status', 'progress']);
    assert.deepEqual(log.steps(), [2], 'the snapshot: the latest progress');
    await pub(job, 'progress', '--step', '3', '--total', '4');
    await pub(job, 'complete', '--report-id', 'r-4');
    await w.done;
    assert.deepEqual(log.steps(), [2, 3]);
    assertOnceInOrder(log.ids());
  });

  it('stops for good on an unknown job with the gateway error', async () => {
    const job = jobId('unknown');
    const { w, log } = watch(job);
    const err = await w.done.then(() => assert.fail('done resolved'), (e: unknown) => e);
    assert.ok(err instanceof GatewayError);
    assert.equal(err.status, 404);
    assert.equal(err.code, 'JOB_NOT_FOUND');
    assert.equal(log.states.at(-1), 'closed');
    const n = proxy.count(`/api/reports/${job}`);
    await sleep(500);
    assert.equal(proxy.count(`/api/reports/${job}`), n, 'no retry after a permanent refusal');
  });

  it('stops when resumed from the terminal event (204), settling done from the snapshot', async () => {
    const job = jobId('204');
    await pub(job, 'register');
    const last = await pub(job, 'complete', '--report-id', 'r-5');
    const { w, log } = watch(job, { lastEventId: last });
    const done = await w.done;
    assert.equal(done.reportId, 'r-5');
    assert.equal(log.events.length, 0, 'nothing handed out twice');
    assert.equal(w.state, 'closed');
  });

  it('closes on close() and on its abort signal, rejecting done', async () => {
    const job = jobId('close');
    await pub(job, 'register');
    const { w } = watch(job);
    await waitFor('live', () => w.state === 'live');
    w.close();
    await assert.rejects(w.done, WatchClosedError);
    const ac = new AbortController();
    const { w: w2 } = watch(job, { signal: ac.signal });
    await waitFor('live', () => w2.state === 'live');
    ac.abort();
    await assert.rejects(w2.done, WatchClosedError);
    assert.equal(w2.state, 'closed');
  });

  it('fetchReport reads the snapshot and names refusals', async () => {
    const job = jobId('poll');
    await pub(job, 'register');
    await pub(job, 'progress', '--step', '1', '--total', '2', '--name', 'half');
    const snap = await fetchReport(job, { baseUrl: proxy.url });
    assert.equal(snap.jobId, job);
    assert.equal(snap.status, 'processing');
    assert.equal(snap.progress?.currentStep, 'half');
    assert.equal(snap.reportId, null);
    await assert.rejects(fetchReport('no such job', { baseUrl: proxy.url }), (e: unknown) => e instanceof GatewayError && e.code === 'INVALID_JOB_ID');
  });
});

describe('watchReport with access tokens (gateway --jwt-secret)', () => {
  const secret = 'a-test-secret-of-at-least-32-bytes-long';
  let authGw: Gateway;
  let authProxy: Proxy;

  before(async () => {
    authGw = await startGateway(redis.url, ['--retry', '200ms', '--jwt-secret', secret]);
    authProxy = await new Proxy().listen();
    authProxy.upstream = authGw.url;
  });

  after(async () => {
    await authProxy?.close();
    await authGw?.stop();
  });

  it('calls the token function again when the stream ends at the token\'s exp, losing nothing', async () => {
    const job = jobId('token');
    await pub(job, 'register');
    await pub(job, 'status', 'processing');
    const issued: number[] = [];
    // The first token expires in 2 s (exp has whole seconds); later ones in an hour.
    const token = () => {
      issued.push(Date.now());
      return mint(secret, [job], issued.length === 1 ? 2 : 3600);
    };
    const w = watchReport(job, { baseUrl: authProxy.url, EventSource, token, retryInitialMs: 100, retryMaxMs: 500 });
    open.add(w as ReportWatch<unknown>);
    const log = new Recorder(w);
    await waitFor('live', () => w.state === 'live');
    await pub(job, 'progress', '--step', '1', '--total', '3');
    await waitFor('the stream refused with the expired token', () => authProxy.requests.some((r) => r.url.startsWith(`/api/reports/${job}/stream`) && r.status === 401), 10_000);
    await pub(job, 'progress', '--step', '2', '--total', '3');
    await pub(job, 'progress', '--step', '3', '--total', '3');
    await pub(job, 'complete', '--report-id', 'r-token');
    const done = await w.done;
    assert.equal(done.reportId, 'r-token');
    assert.deepEqual(log.steps(), [1, 2, 3], 'every progress event exactly once');
    assertOnceInOrder(log.ids());
    assert.ok(issued.length >= 2, `the token function was called ${issued.length} time(s)`);
    assert.ok(log.states.includes('reconnecting'));
  });

  it('stops for good with the gateway error when the token does not cover the job', async () => {
    const job = jobId('forbidden');
    await pub(job, 'register');
    const w = watchReport(job, { baseUrl: authProxy.url, EventSource, token: () => mint(secret, ['some-other-job'], 3600), retryInitialMs: 100 });
    open.add(w as ReportWatch<unknown>);
    const err = await w.done.then(() => assert.fail('done resolved'), (e: unknown) => e);
    assert.ok(err instanceof GatewayError, String(err));
    assert.equal(err.status, 403);
    const n = authProxy.count(`/api/reports/${job}`);
    await sleep(500);
    assert.equal(authProxy.count(`/api/reports/${job}`), n, 'no retry after a refusal');
  });
});

// restartRound: gateway A serves the stream; A dies; the proxy answers 502
// while no gateway is up (the native EventSource gives up for good); then
// gateway B comes up. Progress goes on being published all the while.
async function restartRound(round: number): Promise<void> {
  const a = await startGateway(redis.url, ['--retry', '200ms']);
  const b = await startGateway(redis.url, ['--retry', '200ms']);
  const local = await new Proxy().listen();
  local.upstream = a.url;
  try {
    const job = jobId(`restart${round}`);
    const total = 30;
    await pub(job, 'register');
    await pub(job, 'status', 'processing');
    const w = watchReport(job, { baseUrl: local.url, EventSource, retryInitialMs: 100, retryMaxMs: 400 });
    const log = new Recorder(w);
    await waitFor('live', () => w.state === 'live');
    for (let i = 1; i <= total; i++) {
      await pub(job, 'progress', '--step', String(i), '--total', String(total));
      if (i === 10) {
        await waitFor('step 10 delivered', () => log.steps().length === 10);
        local.upstream = null; // the deploy: no gateway behind the proxy
        await a.stop('SIGKILL');
        // The native EventSource comes back by itself, gets a 502 and
        // gives up for good; the watch carries on.
        await waitFor('a 502', () => local.requests.some((r) => r.status === 502));
      }
      if (i === 20) local.upstream = b.url;
    }
    await pub(job, 'complete', '--report-id', `r-${round}`);
    await w.done;
    assert.deepEqual(log.steps(), Array.from({ length: total }, (_, i) => i + 1), 'every progress event exactly once');
    assertOnceInOrder(log.ids());
    assert.ok(log.states.includes('reconnecting'), 'it went through a reconnect');
    assert.ok(local.requests.some((r) => r.status === 502), 'the proxy answered 502');
    assert.equal(log.states.at(-1), 'closed');
  } finally {
    await local.close();
    await a.stop('SIGKILL');
    await b.stop();
  }
}

// mint returns an HS256 access token granting jobs, expiring in ttl seconds.
function mint(secret: string, jobs: string[], ttlSeconds: number): string {
  const b64 = (v: unknown) => Buffer.from(JSON.stringify(v)).toString('base64url');
  const now = Math.floor(Date.now() / 1000);
  const body = `${b64({ alg: 'HS256', typ: 'JWT' })}.${b64({ sub: 'test', iat: now, exp: now + ttlSeconds, jobs })}`;
  return `${body}.${createHmac('sha256', secret).update(body).digest('base64url')}`;
}
