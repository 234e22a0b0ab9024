// ssegate/publisher against a real redis-server: what a job leaves in Redis
// (stream, state hash, live messages, expiries), every refusal (and that a
// refused call writes nothing), the NOSCRIPT fallback, idempotent
// publishing with the Go publisher's fingerprints, the key prefix, and the
// example worker.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import { createClient } from 'redis';
import {
  IdempotencyKeyReusedError,
  JobExistsError,
  JobFinishedError,
  JobNotFoundError,
  ProtocolError,
  PublishError,
  Publisher,
  RedisCommandError,
  ValidationError,
  type Job,
  type PublishErrorCode,
  type ScriptClient,
} from 'ssegate/publisher';

import { ReportService, StepError } from '../examples/report-service.js';
import { sleep, startRedis, waitFor, type RedisServer } from './harness.js';

type Client = ReturnType<typeof createClient>;

let redis: RedisServer;
let c: Client; // commands
let sub: Client; // subscriptions
let publisher: Publisher;

before(async () => {
  redis = await startRedis();
  c = await createClient({ url: redis.url }).connect();
  sub = await createClient({ url: redis.url }).connect();
  publisher = new Publisher(c);
});

after(async () => {
  sub.destroy();
  c.destroy();
  await redis.stop();
});

const timestamp = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/;
const streamId = /^\d+-\d+$/;

interface Entry {
  id: string;
  type: string;
  raw: string;
  data: Record<string, unknown>;
}

async function entries(job: string, prefix = 'ssegate'): Promise<Entry[]> {
  const xs = await c.xRange(`${prefix}:{${job}}:events`, '-', '+');
  return xs.map((x) => {
    assert.deepEqual(Object.keys(x.message), ['type', 'data'], 'a stream entry has the fields type and data');
    const raw = String(x.message.data);
    return { id: x.id, type: String(x.message.type), raw, data: JSON.parse(raw) as Record<string, unknown> };
  });
}

/** Collects the live messages of a channel; next() also takes a barrier into account. */
async function listen(channel: string, sharded = false): Promise<{ messages: string[]; close(): Promise<void> }> {
  const messages: string[] = [];
  const onMessage = (m: string): void => void messages.push(m);
  if (sharded) await sub.sSubscribe(channel, onMessage);
  else await sub.subscribe(channel, onMessage);
  return {
    messages,
    close: () => (sharded ? sub.sUnsubscribe(channel) : sub.unsubscribe(channel)),
  };
}

/**
 * Waits until every live message sent so far on channel has arrived: it
 * sends a barrier message on the channel itself (Redis delivers a channel's
 * messages in order) and returns the messages before it.
 */
async function drained(live: { messages: string[] }, channel: string, sharded = false): Promise<string[]> {
  const barrier = `barrier-${Math.random()}`;
  if (sharded) await c.sPublish(channel, barrier);
  else await c.publish(channel, barrier);
  await waitFor('the barrier message', () => live.messages.includes(barrier), 2000);
  const got = live.messages.splice(0, live.messages.length);
  return got.slice(0, got.indexOf(barrier));
}

/** Every key and its contents: proof that a refused call wrote nothing. */
async function snapshot(): Promise<string> {
  const keys = (await c.keys('*')).sort();
  const out: unknown[] = [];
  for (const k of keys) {
    const type = await c.type(k);
    if (type === 'stream') out.push(k, await c.xRange(k, '-', '+'));
    // (Sorted: a hash in hashtable encoding may iterate in another order
    // after a rehash, which reads and the server's cron do too.)
    else if (type === 'hash') out.push(k, Object.entries(await c.hGetAll(k)).sort());
    else out.push(k, type, await c.get(k));
  }
  return JSON.stringify(out);
}

/** How many script calls Redis has seen (EVAL and EVALSHA, refused ones too). */
async function scriptCalls(): Promise<{ eval: number; evalsha: number }> {
  const info = await c.info('commandstats');
  const count = (cmd: string): number => {
    const line = info.split('\r\n').find((l) => l.startsWith(`cmdstat_${cmd}:`));
    if (!line) return 0;
    const n = (name: string): number => Number(new RegExp(`[:,]${name}=(\\d+)`).exec(line)?.[1] ?? 0);
    return n('calls') + n('rejected_calls');
  };
  return { eval: count('eval'), evalsha: count('evalsha') };
}

async function rejects(p: Promise<unknown>, cls: new (...args: never[]) => PublishError, code: PublishErrorCode, jobId: string): Promise<PublishError> {
  const err = await p.then(
    (v) => assert.fail(`resolved with ${String(v)}, want ${cls.name} ${code}`),
    (e: unknown) => e,
  );
  assert.ok(err instanceof cls, `want ${cls.name}, got ${String(err)}`);
  assert.ok(err instanceof PublishError);
  assert.ok(err instanceof Error);
  assert.equal(err.code, code);
  assert.equal(err.jobId, jobId);
  assert.equal(err.name, cls.name);
  assert.match(err.message, new RegExp(`^publisher: \\w+ job ${JSON.stringify(jobId).replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}: `));
  return err;
}

describe('a whole job', () => {
  test('register, processing, progress 1..3 of 3, complete with a report', async () => {
    const jobId = 'whole-1';
    const channel = `ssegate:{${jobId}}:live`;
    const live = await listen(channel);
    const job = publisher.job(jobId);
    assert.equal(job.id, jobId);
    const report = { title: 'Q3 <sales> & more', rows: [1, 2.5, -3], nested: { ok: true, none: null }, text: 'é😀' };

    const before = Date.now();
    const ids: string[] = [];
    ids.push(await job.register());
    ids.push(await job.status('processing'));
    for (const [step, name] of [[1, 'Loading'], [2, 'Aggregating'], [3, 'Rendering']] as const) {
      await sleep(15); // a pace for the estimate
      ids.push(await job.progress({ step, total: 3, name }));
    }
    ids.push(await job.complete('r-1', report));
    const afterMs = Date.now();

    for (const id of ids) assert.match(id, streamId);
    const got = await entries(jobId);
    assert.deepEqual(got.map((e) => e.id), ids, 'each call returns its stream entry ID');
    assert.deepEqual(got.map((e) => e.type), ['status', 'status', 'progress', 'progress', 'progress', 'complete']);
    for (const e of got) {
      assert.equal(e.data.type, e.type);
      assert.equal(e.data.jobId, jobId);
      assert.match(String(e.data.timestamp), timestamp);
      const t = Date.parse(String(e.data.timestamp));
      assert.ok(t >= before - 1 && t <= afterMs + 1, 'timestamps are from the worker clock');
    }
    const [pending, processing, p1, p2, p3, complete] = got as [Entry, Entry, Entry, Entry, Entry, Entry];
    // Members in the Go struct order.
    assert.deepEqual(Object.keys(pending.data), ['type', 'jobId', 'status', 'timestamp']);
    assert.equal(pending.data.status, 'pending');
    assert.equal(processing.data.status, 'processing');
    for (const p of [p1, p2, p3]) {
      assert.deepEqual(Object.keys(p.data), ['type', 'jobId', 'step', 'totalSteps', 'currentStep', 'percentage', 'estimatedRemainingMs', 'timestamp']);
    }
    assert.deepEqual([p1, p2, p3].map((p) => [p.data.step, p.data.totalSteps, p.data.currentStep, p.data.percentage]),
      [[1, 3, 'Loading', 33], [2, 3, 'Aggregating', 66], [3, 3, 'Rendering', 100]]);
    // The script filled in the estimate from the pace on the Redis clock.
    for (const p of [p1, p2]) assert.ok(Number.isInteger(p.data.estimatedRemainingMs) && Number(p.data.estimatedRemainingMs) > 0, p.raw);
    assert.equal(p3.data.estimatedRemainingMs, 0, 'nothing is left at the last step');
    assert.deepEqual(complete.data, { type: 'complete', jobId, reportId: 'r-1', hasReport: true, timestamp: complete.data.timestamp });
    assert.deepEqual(Object.keys(complete.data), ['type', 'jobId', 'reportId', 'hasReport', 'timestamp']);
    assert.ok(!complete.raw.includes('Q3'), 'the report is never in the stream');

    const state = await c.hGetAll(`ssegate:{${jobId}}:state`);
    assert.deepEqual(Object.keys(state).sort(),
      ['created_at', 'last_id', 'progress', 'report', 'result', 'started_at', 'status', 'updated_at']);
    assert.equal(state.status, 'completed');
    assert.equal(state.progress, p3.raw, 'progress is the latest progress data, estimate filled in');
    assert.equal(state.result, complete.raw);
    assert.equal(state.report, JSON.stringify(report));
    assert.deepEqual(JSON.parse(state.report ?? ''), report);
    assert.equal(state.last_id, ids.at(-1));
    // The script reads TIME before its XADD, whose ID may be a little later.
    const ms = (id: string): number => Number(id.split('-')[0]);
    const at = (field: string, id: string, what: string): void => {
      const lag = ms(id) - Number(state[field]);
      assert.ok(lag >= 0 && lag < 1000, `${field} (${state[field]}): the Redis time of ${what}, ${id}`);
    };
    at('created_at', pending.id, 'registration');
    at('started_at', processing.id, 'the first processing status');
    at('updated_at', complete.id, 'the latest event');
    assert.ok(Number(state.created_at) <= Number(state.started_at) && Number(state.started_at) <= Number(state.updated_at));

    // Expiry: the retention (1 h) after the terminal event.
    for (const key of [`ssegate:{${jobId}}:state`, `ssegate:{${jobId}}:events`]) {
      const ttl = await c.pTTL(key);
      assert.ok(ttl > 3_600_000 - 60_000 && ttl <= 3_600_000, `${key} PTTL ${ttl}`);
    }

    // One live message per event: 1\n<id>\n<type>\n<data>, as stored.
    const messages = await drained(live, channel);
    await live.close();
    assert.deepEqual(messages, got.map((e) => `1\n${e.id}\n${e.type}\n${e.raw}`));
  });

  test('progress without a processing status, step 0, pending again, and the stale TTL', async () => {
    const p = new Publisher(c, { staleTtlMs: 50_000, retentionMs: 20_000 });
    const job = p.job('pace-1');
    await job.register();
    assert.ok((await c.pTTL('ssegate:{pace-1}:state')) > 40_000 && (await c.pTTL('ssegate:{pace-1}:state')) <= 50_000);
    await job.progress({ step: 0, total: 5 });
    await job.progress({ step: 0, total: 5, name: 'lone \ud800 surrogate' });
    await job.status('pending');
    await job.status('processing');
    const state = await c.hGetAll('ssegate:{pace-1}:state');
    assert.equal(state.status, 'processing');
    assert.equal(state.started_at, state.created_at, 'progress first: started_at is created_at, and later statuses do not move it');
    const [, p0, lone] = await entries('pace-1');
    assert.equal(lone?.data.currentStep, 'lone \ufffd surrogate', 'as a Go string holds it');
    assert.deepEqual(p0?.data, {
      type: 'progress', jobId: 'pace-1', step: 0, totalSteps: 5, currentStep: '', percentage: 0,
      estimatedRemainingMs: null, timestamp: p0?.data.timestamp,
    });
    await job.fail('upstream timed out', 'UPSTREAM_TIMEOUT', true);
    const failed = await c.hGetAll('ssegate:{pace-1}:state');
    assert.equal(failed.status, 'failed');
    assert.deepEqual(Object.keys(JSON.parse(failed.result ?? '{}') as object), ['type', 'jobId', 'error', 'code', 'retryable', 'timestamp']);
    assert.deepEqual({ ...JSON.parse(failed.result ?? '{}') as object, timestamp: 0 },
      { type: 'error', jobId: 'pace-1', error: 'upstream timed out', code: 'UPSTREAM_TIMEOUT', retryable: true, timestamp: 0 });
    assert.equal(failed.report, undefined);
    assert.ok((await c.pTTL('ssegate:{pace-1}:events')) <= 20_000, 'the retention after the terminal event');
  });

  test('complete without a report, or with null, stores no report', async () => {
    for (const [jobId, report] of [['norep-1', undefined], ['norep-2', null]] as const) {
      const job = publisher.job(jobId);
      await job.register();
      await job.complete('r', report);
      const state = await c.hGetAll(`ssegate:{${jobId}}:state`);
      assert.equal(state.report, undefined);
      assert.equal((JSON.parse(state.result ?? '') as { hasReport: boolean }).hasReport, false);
    }
    // Falsy reports are reports.
    const job = publisher.job('norep-3');
    await job.register();
    await job.complete('r', 0);
    assert.equal(await c.hGet('ssegate:{norep-3}:state', 'report'), '0');
  });
});

describe('refusals', () => {
  test('register twice: JobExistsError, and nothing written', async () => {
    const job = publisher.job('twice-1');
    await job.register();
    const live = await listen('ssegate:{twice-1}:live');
    const was = await snapshot();
    const err = await rejects(job.register(), JobExistsError, 'JOB_EXISTS', 'twice-1');
    assert.equal(err.operation, 'register');
    assert.ok(err.cause instanceof Error && err.cause.message.startsWith('SSEGATE_EXISTS'), 'the reply is the cause');
    assert.equal(await snapshot(), was);
    assert.deepEqual(await drained(live, 'ssegate:{twice-1}:live'), [], 'no live message');
    await live.close();
  });

  test('publish to an unknown job: JobNotFoundError, and nothing written', async () => {
    const job = publisher.job('ghost-1');
    const was = await snapshot();
    const calls: Array<[string, () => Promise<string>]> = [
      ['status', () => job.status('processing')],
      ['progress', () => job.progress({ step: 1, total: 2 })],
      ['complete', () => job.complete('r', { a: 1 })],
      ['fail', () => job.fail('m', 'C', false)],
    ];
    for (const [op, call] of calls) {
      const err = await rejects(call(), JobNotFoundError, 'JOB_NOT_FOUND', 'ghost-1');
      assert.equal(err.operation, op);
    }
    assert.equal(await snapshot(), was);
    assert.equal(await c.exists(['ssegate:{ghost-1}:state', 'ssegate:{ghost-1}:events']), 0);
  });

  test('publish after complete or fail: JobFinishedError, and nothing written', async () => {
    const done = publisher.job('done-1');
    await done.register();
    await done.complete('r', { x: 1 });
    const failed = publisher.job('done-2');
    await failed.register();
    await failed.fail('broke', 'BROKE');
    const was = await snapshot();
    for (const job of [done, failed]) {
      const live = await listen(`ssegate:{${job.id}}:live`);
      await rejects(job.status('processing'), JobFinishedError, 'JOB_FINISHED', job.id);
      await rejects(job.progress({ step: 1, total: 1 }), JobFinishedError, 'JOB_FINISHED', job.id);
      await rejects(job.complete('r2'), JobFinishedError, 'JOB_FINISHED', job.id);
      await rejects(job.fail('late', 'LATE', true), JobFinishedError, 'JOB_FINISHED', job.id);
      await rejects(job.register(), JobExistsError, 'JOB_EXISTS', job.id);
      assert.deepEqual(await drained(live, `ssegate:{${job.id}}:live`), []);
      await live.close();
    }
    assert.equal(await snapshot(), was);
  });

  test('invalid input: ValidationError before Redis is touched', async () => {
    const small = new Publisher(c, { reportMaxBytes: 10 });
    const ok = publisher.job('valid-1');
    await ok.register();
    const cyclic: Record<string, unknown> = {};
    cyclic.self = cyclic;
    const cases: Array<[string, () => Promise<string>, PublishErrorCode, string]> = [];
    for (const bad of ['', 'a/b', 'a b', 'x'.repeat(129), 'a{b}', 'ünï', 'a\nb']) {
      const j = publisher.job(bad);
      cases.push(
        [`register ${JSON.stringify(bad)}`, () => j.register(), 'INVALID_JOB_ID', bad],
        [`status ${JSON.stringify(bad)}`, () => j.status('processing'), 'INVALID_JOB_ID', bad],
        [`progress ${JSON.stringify(bad)}`, () => j.progress({ step: 0, total: 1 }), 'INVALID_JOB_ID', bad],
        [`complete ${JSON.stringify(bad)}`, () => j.complete('r'), 'INVALID_JOB_ID', bad],
        [`fail ${JSON.stringify(bad)}`, () => j.fail('m', 'c'), 'INVALID_JOB_ID', bad],
      );
    }
    const loose = ok as unknown as { status(s: unknown): Promise<string>; progress(p: unknown): Promise<string>; fail(...a: unknown[]): Promise<string>; complete(...a: unknown[]): Promise<string> };
    for (const s of ['completed', 'failed', 'bogus', '', undefined, 1]) {
      cases.push([`status ${String(s)}`, () => loose.status(s), 'INVALID_STATUS', 'valid-1']);
    }
    for (const [step, total] of [[-1, 3], [4, 3], [0, 0], [1, -1], [1.5, 3], [1, 2.5], [NaN, 3], [1, Infinity], ['1', 3], [1, undefined], [2 ** 53, 2 ** 53 + 2]]) {
      cases.push([`progress ${String(step)}/${String(total)}`, () => loose.progress({ step, total }), 'INVALID_STEP', 'valid-1']);
    }
    cases.push(['progress without a step', () => loose.progress(undefined), 'INVALID_STEP', 'valid-1']);
    cases.push(['progress name not a string', () => loose.progress({ step: 1, total: 2, name: 7 }), 'INVALID_STEP', 'valid-1']);
    cases.push(
      ['complete without a report ID', () => ok.complete(''), 'INVALID_REPORT_ID', 'valid-1'],
      ['complete report ID not a string', () => loose.complete(5), 'INVALID_REPORT_ID', 'valid-1'],
      ['complete BigInt report', () => ok.complete('r', { n: 1n }), 'INVALID_REPORT', 'valid-1'],
      ['complete cyclic report', () => ok.complete('r', cyclic), 'INVALID_REPORT', 'valid-1'],
      ['complete function report', () => ok.complete('r', () => 1), 'INVALID_REPORT', 'valid-1'],
      ['complete symbol report', () => ok.complete('r', Symbol('s')), 'INVALID_REPORT', 'valid-1'],
      // 7 characters, 12 bytes of UTF-8 with the quotes: over a 10-byte limit.
      ['complete report over the limit', () => small.job('valid-1').complete('r', 'ééééé'), 'REPORT_TOO_LARGE', 'valid-1'],
      ['fail without a message', () => ok.fail('', 'CODE'), 'INVALID_FAILURE', 'valid-1'],
      ['fail without a code', () => ok.fail('message', ''), 'INVALID_FAILURE', 'valid-1'],
      ['fail retryable not a boolean', () => loose.fail('m', 'C', 'yes'), 'INVALID_FAILURE', 'valid-1'],
    );
    for (const key of ['', 'has space', 'x'.repeat(256), 'é', 'a\nb', '\x7f']) {
      cases.push([`idempotency key ${JSON.stringify(key)}`, () => ok.withIdempotencyKey(key).status('processing'), 'INVALID_IDEMPOTENCY_KEY', 'valid-1']);
    }

    const was = await snapshot();
    const calls = await scriptCalls();
    for (const [name, call, code, jobId] of cases) {
      const err = await rejects(call(), ValidationError, code, jobId).catch((e: unknown) => {
        throw new Error(`${name}: ${String(e)}`);
      });
      assert.ok(!(err instanceof ProtocolError), name);
    }
    assert.deepEqual(await scriptCalls(), calls, 'no script call reached Redis');
    assert.equal(await snapshot(), was);

    // The limits themselves are fine.
    const edge = small.job('valid-1').withIdempotencyKey('k'.repeat(255));
    await edge.progress({ step: 0, total: 1 });
    await edge.withIdempotencyKey('~!').complete('r', 'éééé'); // 10 bytes
    assert.equal(await c.hGet('ssegate:{valid-1}:state', 'report'), '"éééé"');
    assert.equal(await c.exists(`ssegate:{valid-1}:idem:${'k'.repeat(255)}`), 1);
  });

  test('what gets past the checks and the script refuses: ProtocolError, a ValidationError', async () => {
    const job = publisher.job('proto-1');
    await job.register();
    const was = await snapshot();
    // 16 digits: a safe integer, but more than the script's 15.
    const err = await rejects(job.progress({ step: 1, total: 1e15 }), ProtocolError, 'BAD_ARGS', 'proto-1');
    assert.ok(err instanceof ValidationError);
    assert.equal((err as ProtocolError).reply, 'SSEGATE_BAD_ARGS');
    assert.match(err.message, /SSEGATE_BAD_ARGS progress needs/);
    assert.equal(await snapshot(), was);
    // 15 digits are fine, and the percentage is exact.
    await job.progress({ step: 999_999_999_999_998, total: 999_999_999_999_999 });
    const last = (await entries('proto-1')).at(-1);
    assert.equal(last?.data.percentage, 99);
  });

  test('other Redis errors: RedisCommandError with the client error as its cause', async () => {
    await c.set('ssegate:{wrong-1}:state', 'not a hash');
    const err = await rejects(publisher.job('wrong-1').register(), RedisCommandError, 'REDIS_ERROR', 'wrong-1');
    assert.ok(err.cause instanceof Error && err.cause.message.startsWith('WRONGTYPE'), String(err.cause));

    // Replies map by their first word, exactly as pkg/protocol's scriptErrors.
    const replies: Array<[string, new (...a: never[]) => PublishError, PublishErrorCode]> = [
      ['SSEGATE_EXISTS job already registered', JobExistsError, 'JOB_EXISTS'],
      ['SSEGATE_NOT_FOUND job not registered', JobNotFoundError, 'JOB_NOT_FOUND'],
      ['SSEGATE_FINISHED job already finished', JobFinishedError, 'JOB_FINISHED'],
      ['SSEGATE_IDEMPOTENCY idempotency key already used', IdempotencyKeyReusedError, 'IDEMPOTENCY_KEY_REUSED'],
      ['SSEGATE_KEYS keys must be', ProtocolError, 'BAD_KEYS'],
      ['SSEGATE_VERSION unsupported protocol version 2', ProtocolError, 'BAD_ARGS'],
      ['SSEGATE_BAD_ARGS want 12 arguments', ProtocolError, 'BAD_ARGS'],
      ['SSEGATE_BAD_DATA data must be', ProtocolError, 'BAD_DATA'],
      ['SSEGATE_BAD_REPORT report must be JSON', ProtocolError, 'BAD_REPORT'],
      ['SSEGATE_EXISTSX look-alike', RedisCommandError, 'REDIS_ERROR'],
      ['ERR something else', RedisCommandError, 'REDIS_ERROR'],
      ['Socket closed unexpectedly', RedisCommandError, 'REDIS_ERROR'],
    ];
    for (const [reply, cls, code] of replies) {
      const failing: ScriptClient = {
        evalSha: () => Promise.reject(new Error(reply)),
        eval: () => Promise.reject(new Error('not reached')),
      };
      const e = await rejects(new Publisher(failing).job('map-1').withIdempotencyKey('k').register(), cls, code, 'map-1');
      assert.equal((e.cause as Error).message, reply);
    }
    const odd: ScriptClient = { evalSha: () => Promise.resolve(42), eval: () => Promise.resolve(42) };
    await rejects(new Publisher(odd).job('map-1').register(), RedisCommandError, 'REDIS_ERROR', 'map-1');
    const buffers: ScriptClient = { evalSha: () => Promise.resolve(Buffer.from('1-2')), eval: () => Promise.resolve('') };
    assert.equal(await new Publisher(buffers).job('map-1').register(), '1-2');
  });
});

test('NOSCRIPT: EVALSHA, then EVAL once after SCRIPT FLUSH, then EVALSHA again', async () => {
  const job = publisher.job('flush-1');
  await job.register();
  await c.scriptFlush();
  const was = await scriptCalls();
  const id = await job.status('processing');
  const mid = await scriptCalls();
  assert.deepEqual(mid, { eval: was.eval + 1, evalsha: was.evalsha + 1 }, 'one EVALSHA refused, one EVAL');
  await job.progress({ step: 1, total: 2 });
  assert.deepEqual(await scriptCalls(), { eval: mid.eval, evalsha: mid.evalsha + 1 }, 'the EVAL cached the script');
  const got = await entries('flush-1');
  assert.deepEqual(got.map((e) => e.type), ['status', 'status', 'progress']);
  assert.equal(got[1]?.id, id);
});

describe('idempotency', () => {
  test('a retry returns the first ID and writes nothing; another event under the key is refused', async () => {
    let now = Date.parse('2026-11-27T03:55:24.216Z');
    const p = new Publisher(c, { now: () => new Date(now), idempotencyWindowMs: 30_000 });
    const job = p.job('idem-1');
    const reg = await job.withIdempotencyKey('register').register();
    now += 1000;
    assert.equal(await job.withIdempotencyKey('register').register(), reg, 'a retried register is not JobExistsError');

    const live = await listen('ssegate:{idem-1}:live');
    const step1 = job.withIdempotencyKey('step-1');
    assert.equal(step1.idempotencyKey, 'step-1');
    assert.equal(step1.id, 'idem-1');
    const id = await step1.progress({ step: 1, total: 3, name: 'Loading' });
    now += 5000; // the retry has another timestamp: the fingerprint ignores it
    const was = await snapshot();
    assert.equal(await step1.progress({ step: 1, total: 3, name: 'Loading' }), id);
    assert.equal(await snapshot(), was);
    const record = await c.get('ssegate:{idem-1}:idem:step-1');
    assert.match(record ?? '', new RegExp(`^${id}\\n[0-9a-f]{32}$`));
    const ttl = await c.pTTL('ssegate:{idem-1}:idem:step-1');
    assert.ok(ttl > 20_000 && ttl <= 30_000, `the record lives for the window: ${ttl}`);

    const err = await rejects(step1.progress({ step: 2, total: 3, name: 'Loading' }), IdempotencyKeyReusedError, 'IDEMPOTENCY_KEY_REUSED', 'idem-1');
    assert.equal((err as IdempotencyKeyReusedError).idempotencyKey, 'step-1');
    await rejects(step1.status('processing'), IdempotencyKeyReusedError, 'IDEMPOTENCY_KEY_REUSED', 'idem-1');
    assert.equal(await snapshot(), was);

    const done = await job.withIdempotencyKey('done').complete('r-1', { rows: 1 });
    assert.equal(await job.withIdempotencyKey('done').complete('r-1', { rows: 1 }), done, 'a retried complete is not JobFinishedError');
    await rejects(job.withIdempotencyKey('done').complete('r-1', { rows: 2 }), IdempotencyKeyReusedError, 'IDEMPOTENCY_KEY_REUSED', 'idem-1');
    await rejects(job.withIdempotencyKey('late').fail('m', 'C'), JobFinishedError, 'JOB_FINISHED', 'idem-1');

    assert.deepEqual((await entries('idem-1')).map((e) => e.type), ['status', 'progress', 'complete'], 'one entry per event');
    const messages = await drained(live, 'ssegate:{idem-1}:live');
    await live.close();
    assert.equal(messages.length, 2, 'one live message per event');
  });

  // Computed once with `go run` of a throwaway program in /tmp that
  // marshals these events with pkg/event (event.NewStatus, NewProgress,
  // NewError, NewCompleteRecord at the fixed time) and hashes them with a
  // copy of publisher.fingerprint (publisher/publisher.go). The data is
  // json.Marshal's bytes: <, >, & and U+2028/U+2029 escaped, DEL raw.
  test("data and fingerprints are the Go publisher's, byte for byte", async () => {
    const p = new Publisher(c, { now: () => new Date('2026-11-27T03:55:24.216Z') });
    const name = 'Load <"x"> & y\u2028z\u2029 é \x01\x7f\t\b\f\\ 😀';
    const ts = '"timestamp":"2026-11-27T03:55:24.216Z"}';
    const vectors: Array<[string, (j: Job) => Promise<string>, string, string]> = [
      ['register', (j) => j.register(),
        `{"type":"status","jobId":"fp-1","status":"pending",${ts}`, '1e662956282da981bf8eff00ccc27f47'],
      ['processing', (j) => j.status('processing'),
        `{"type":"status","jobId":"fp-1","status":"processing",${ts}`, '626cb61e6ffc89836df9e46c9ca7f190'],
      ['progress-0', (j) => j.progress({ step: 0, total: 3, name }),
        `{"type":"progress","jobId":"fp-1","step":0,"totalSteps":3,"currentStep":"Load \\u003c\\"x\\"\\u003e \\u0026 y\\u2028z\\u2029 é \\u0001\x7f\\t\\b\\f\\\\ 😀","percentage":0,"estimatedRemainingMs":null,${ts}`,
        'c0514edde795c9b26cd24cb15d5b5772'],
      ['progress-2', (j) => j.progress({ step: 2, total: 3, name: 'Aggregating' }),
        `{"type":"progress","jobId":"fp-1","step":2,"totalSteps":3,"currentStep":"Aggregating","percentage":66,"estimatedRemainingMs":null,${ts}`,
        'f31405b405512dee822f7f4cb6aa1e32'],
      ['complete', (j) => j.complete('r-<1>', { rows: [1, 2], note: 'a<b & c' }),
        `{"type":"complete","jobId":"fp-1","reportId":"r-\\u003c1\\u003e","hasReport":true,${ts}`, 'dd2b05ba04fdfbe54cf5722c9341fea1'],
    ];
    for (const [key, call, data, fp] of vectors) {
      const id = await call(p.job('fp-1').withIdempotencyKey(key));
      const entry = (await entries('fp-1')).at(-1);
      assert.equal(entry?.id, id);
      // The script fills in the estimate of a progress past step 0.
      assert.equal(entry?.raw.replace(/"estimatedRemainingMs":\d+/, '"estimatedRemainingMs":null'), data, key);
      assert.equal(await c.get(`ssegate:{fp-1}:idem:${key}`), `${id}\n${fp}`, `fingerprint of ${key}`);
    }
    assert.equal(await c.hGet('ssegate:{fp-1}:state', 'report'), '{"rows":[1,2],"note":"a<b & c"}', 'the report is stored as given');

    // The other terminal events, on jobs of their own.
    const fail = p.job('fp-1');
    await c.del(['ssegate:{fp-1}:state']);
    await fail.register();
    await fail.withIdempotencyKey('fail').fail('upstream <timed> out & "gone"\n', 'UP&<>', true);
    assert.equal((await entries('fp-1')).at(-1)?.raw,
      `{"type":"error","jobId":"fp-1","error":"upstream \\u003ctimed\\u003e out \\u0026 \\"gone\\"\\n","code":"UP\\u0026\\u003c\\u003e","retryable":true,${ts}`);
    assert.match(await c.get('ssegate:{fp-1}:idem:fail') ?? '', /\n2f56fead1448a75edd05be4448b31c1b$/);
    await c.del(['ssegate:{fp-1}:state']);
    await fail.register();
    await fail.withIdempotencyKey('bare').complete('r-2');
    assert.equal((await entries('fp-1')).at(-1)?.raw, `{"type":"complete","jobId":"fp-1","reportId":"r-2","hasReport":false,${ts}`);
    assert.match(await c.get('ssegate:{fp-1}:idem:bare') ?? '', /\n35d86f751429033412263b1cb72ae885$/);
  });
});

describe('options', () => {
  test('keyPrefix names every key and channel', async () => {
    const p = new Publisher(c, { keyPrefix: 'acme' });
    assert.equal(p.keyPrefix, 'acme');
    const live = await listen('acme:{kp-1}:live');
    const job = p.job('kp-1');
    await job.register();
    await job.withIdempotencyKey('k').progress({ step: 1, total: 2 });
    assert.deepEqual((await c.keys('*{kp-1}*')).sort(), ['acme:{kp-1}:events', 'acme:{kp-1}:idem:k', 'acme:{kp-1}:state']);
    assert.deepEqual((await entries('kp-1', 'acme')).map((e) => e.type), ['status', 'progress']);
    assert.equal((await drained(live, 'acme:{kp-1}:live')).length, 2);
    await live.close();
    // The default prefix knows nothing of it.
    await rejects(publisher.job('kp-1').status('processing'), JobNotFoundError, 'JOB_NOT_FOUND', 'kp-1');
    assert.equal(new Publisher(c, { keyPrefix: '' }).keyPrefix, 'ssegate');
  });

  test('out-of-range options are a RangeError at construction', () => {
    for (const bad of [{ maxLen: 0 }, { maxLen: 1.5 }, { retentionMs: -1 }, { staleTtlMs: NaN }, { reportMaxBytes: 0 },
      { idempotencyWindowMs: 1e16 }, { keyPrefix: 'a{b' }, { keyPrefix: 'b}' }]) {
      assert.throws(() => new Publisher(c, bad), RangeError, JSON.stringify(bad));
    }
  });

  test('sharded: SPUBLISH reaches SSUBSCRIBE, not SUBSCRIBE; the default on a single server is PUBLISH', async () => {
    assert.equal(publisher.sharded, false);
    assert.equal(new Publisher(c, { sharded: 'auto' }).sharded, false, 'auto: no cluster client here');
    const p = new Publisher(c, { sharded: true });
    assert.equal(p.sharded, true);
    const channel = 'ssegate:{shard-1}:live';
    const plain = await listen(channel);
    const sharded = await listen(channel, true);
    const id = await p.job('shard-1').register();
    assert.deepEqual((await drained(sharded, channel, true)).map((m) => m.split('\n')[1]), [id]);
    assert.deepEqual(await drained(plain, channel), []);
    const id2 = await publisher.job('shard-1').status('processing');
    assert.deepEqual((await drained(plain, channel)).map((m) => m.split('\n')[1]), [id2]);
    assert.deepEqual(await drained(sharded, channel, true), []);
    await plain.close();
    await sharded.close();
  });
});

describe('examples/report-service', () => {
  test('a job that completes', async () => {
    const service = new ReportService(publisher);
    const jobId = await service.createJob(); // registered before the ID is handed out
    assert.equal(await c.hGet(`ssegate:{${jobId}}:state`, 'status'), 'pending');
    const report = await service.processJob(jobId, [
      { name: 'Loading', run: () => Promise.resolve(3) },
      { name: 'Summing', run: (done) => Promise.resolve(done.reduce((a: number, b) => a + Number(b), 0) + 1) },
    ]);
    assert.deepEqual(report, { reportId: `report-${jobId}`, results: [3, 4] });
    const got = await entries(jobId);
    assert.deepEqual(got.map((e) => e.type), ['status', 'status', 'progress', 'progress', 'complete']);
    assert.deepEqual(got.slice(2, 4).map((e) => [e.data.step, e.data.currentStep]), [[1, 'Loading'], [2, 'Summing']]);
    assert.equal(await c.hGet(`ssegate:{${jobId}}:state`, 'report'), JSON.stringify(report));
  });

  test('a job whose step throws fails with its code and retryable', async () => {
    const service = new ReportService(publisher);
    for (const [thrown, code, retryable] of [
      [new StepError('upstream timed out', 'UPSTREAM_TIMEOUT', true), 'UPSTREAM_TIMEOUT', true],
      [new Error('bug'), 'INTERNAL', false],
    ] as const) {
      const jobId = await service.createJob();
      await assert.rejects(service.processJob(jobId, [
        { name: 'Loading', run: () => Promise.resolve(1) },
        { name: 'Calling upstream', run: () => Promise.reject(thrown) },
      ]), (e) => e === thrown);
      const result = JSON.parse(await c.hGet(`ssegate:{${jobId}}:state`, 'result') ?? '{}') as Record<string, unknown>;
      assert.deepEqual([result.type, result.error, result.code, result.retryable], ['error', thrown.message, code, retryable]);
      assert.deepEqual((await entries(jobId)).map((e) => e.type), ['status', 'status', 'progress', 'error']);
    }
  });
});
