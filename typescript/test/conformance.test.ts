// The same jobs published once through the Go publisher (cmd/ssepub) and
// once through ssegate/publisher leave the same things in Redis: the same
// script calls (seen with MONITOR: keys and arguments equal apart from the
// job ID and the timestamps), the same stream entries and the same state
// hashes. And the Go gateway streams what ssegate/publisher wrote, live.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';

import { createClient } from 'redis';
import { PUBLISH_SCRIPT, Publisher, type Job } from 'ssegate/publisher';

import { goBinary, ssepub, startGateway, startRedis, waitFor, type RedisServer } from './harness.js';

type Client = ReturnType<typeof createClient>;

let redis: RedisServer;
let c: Client;
let monitor: Client;
const calls: string[][] = [];

before(async () => {
  goBinary('ssepub'); // build it before any timing matters
  redis = await startRedis();
  c = await createClient({ url: redis.url }).connect();
  await c.scriptLoad(PUBLISH_SCRIPT); // so that both sides call EVALSHA only
  monitor = await createClient({ url: redis.url }).connect();
  await monitor.monitor((line) => {
    const args = monitorArgs(String(line));
    if (args[0] === 'evalsha' || args[0] === 'eval') calls.push(args);
  });
});

after(async () => {
  monitor.destroy();
  c.destroy();
  await redis.stop();
});

/** The arguments of a MONITOR line (`<time> [<db> <client>] "arg" …`), unescaped as sdscatrepr escapes them. */
function monitorArgs(line: string): string[] {
  const out: string[] = [];
  for (const m of line.matchAll(/"((?:[^"\\]|\\.)*)"/g)) {
    const bytes: number[] = [];
    const s = m[1] ?? '';
    for (let i = 0; i < s.length; i++) {
      const ch = s[i] ?? '';
      if (ch !== '\\') {
        bytes.push(ch.charCodeAt(0));
        continue;
      }
      const e = s[++i] ?? '';
      if (e === 'x') {
        bytes.push(parseInt(s.slice(i + 1, i + 3), 16));
        i += 2;
      } else {
        bytes.push(({ n: 10, r: 13, t: 9, a: 7, b: 8 } as Record<string, number>)[e] ?? e.charCodeAt(0));
      }
    }
    out.push(Buffer.from(bytes).toString('utf8'));
  }
  out[0] = out[0]?.toLowerCase() ?? '';
  return out;
}

const report = { title: 'Q3 <sales> & more', rows: [1, 2.5, -3], ok: true, none: null, text: 'é😀' };

/** One job, as ssepub arguments and as the same calls on a Job. */
const scenarios: Array<{ name: string; steps: Array<{ args: string[]; input?: string; ts: (j: Job) => Promise<string> }> }> = [
  {
    name: 'complete',
    steps: [
      { args: ['register'], ts: (j) => j.register() },
      { args: ['status', 'processing'], ts: (j) => j.status('processing') },
      { args: ['progress', '--step', '0', '--total', '3', '--name', 'Start'], ts: (j) => j.progress({ step: 0, total: 3, name: 'Start' }) },
      { args: ['progress', '--step', '1', '--total', '3', '--name', 'Loading'], ts: (j) => j.progress({ step: 1, total: 3, name: 'Loading' }) },
      {
        args: ['progress', '--step', '2', '--total', '3', '--name', 'Aggregating <a> & "b" é'],
        ts: (j) => j.progress({ step: 2, total: 3, name: 'Aggregating <a> & "b" é' }),
      },
      { args: ['progress', '--step', '3', '--total', '3'], ts: (j) => j.progress({ step: 3, total: 3 }) },
      { args: ['complete', '--report-id', 'r-1', '--report', '-'], input: JSON.stringify(report), ts: (j) => j.complete('r-1', report) },
    ],
  },
  {
    name: 'fail',
    steps: [
      { args: ['register'], ts: (j) => j.register() },
      { args: ['status', 'pending'], ts: (j) => j.status('pending') },
      {
        args: ['fail', '--code', 'UPSTREAM_TIMEOUT', '--message', 'upstream <timed> out', '--retryable'],
        ts: (j) => j.fail('upstream <timed> out', 'UPSTREAM_TIMEOUT', true),
      },
    ],
  },
  {
    name: 'bare',
    steps: [
      { args: ['register'], ts: (j) => j.register() },
      { args: ['fail', '--code', 'X', '--message', 'no retry'], ts: (j) => j.fail('no retry', 'X', false) },
    ],
  },
  {
    name: 'no-report',
    steps: [
      { args: ['register'], ts: (j) => j.register() },
      { args: ['progress', '--step', '1', '--total', '2'], ts: (j) => j.progress({ step: 1, total: 2 }) },
      { args: ['complete', '--report-id', 'r-2'], ts: (j) => j.complete('r-2') },
    ],
  },
];

/** Replaces what legitimately differs: the job ID and the worker's timestamps. */
function normal(s: string, jobId: string): string {
  return s.split(jobId).join('JOB').replace(/"timestamp":"[^"]*"/g, '"timestamp":"T"');
}

type JSONType = 'null' | 'array' | 'object' | 'string' | 'number' | 'boolean';
function jsonType(v: unknown): JSONType {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'array';
  return typeof v as JSONType;
}

/** An event's data, comparable between the two jobs: members, their JSON types, and their values where they must agree. */
function shape(raw: string, jobId: string): Array<[string, JSONType, unknown]> {
  const data = JSON.parse(raw) as Record<string, unknown>;
  assert.equal(data.jobId, jobId);
  assert.match(String(data.timestamp), /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
  return Object.entries(data).map(([k, v]) => [k, jsonType(v), k === 'jobId' || k === 'timestamp' || k === 'estimatedRemainingMs' ? '·' : v]);
}

for (const sc of scenarios) {
  test(`${sc.name}: ssepub and ssegate/publisher write the same`, async () => {
    const goJob = `conf-go-${sc.name}`;
    const tsJob = `conf-ts-${sc.name}`;
    const publisher = new Publisher(c);

    calls.length = 0;
    const goIds = sc.steps.map((s) => ssepub(redis.url, [goJob, ...s.args], s.input));
    await waitFor('MONITOR lines of ssepub', () => calls.length === sc.steps.length, 5000);
    const goCalls = calls.splice(0);
    const tsIds: string[] = [];
    for (const s of sc.steps) tsIds.push(await s.ts(publisher.job(tsJob)));
    await waitFor('MONITOR lines of ssegate/publisher', () => calls.length === sc.steps.length, 5000);
    const tsCalls = calls.splice(0);

    // The script calls: EVALSHA <sha> 3 <keys> <12 args>, equal but for the job and the times.
    assert.deepEqual(tsCalls.map((a) => a.map((x) => normal(x, tsJob))), goCalls.map((a) => a.map((x) => normal(x, goJob))));
    for (const a of tsCalls) assert.equal(a.length, 3 + 3 + 12);

    const goEntries = await c.xRange(`ssegate:{${goJob}}:events`, '-', '+');
    const tsEntries = await c.xRange(`ssegate:{${tsJob}}:events`, '-', '+');
    assert.deepEqual(goEntries.map((e) => e.id), goIds);
    assert.deepEqual(tsEntries.map((e) => e.id), tsIds);
    assert.deepEqual(tsEntries.map((e) => Object.keys(e.message)), goEntries.map((e) => Object.keys(e.message)));
    assert.deepEqual(tsEntries.map((e) => e.message.type), goEntries.map((e) => e.message.type));
    assert.deepEqual(
      tsEntries.map((e) => shape(String(e.message.data), tsJob)),
      goEntries.map((e) => shape(String(e.message.data), goJob)),
    );

    const goState = await c.hGetAll(`ssegate:{${goJob}}:state`);
    const tsState = await c.hGetAll(`ssegate:{${tsJob}}:state`);
    assert.deepEqual(Object.keys(tsState).sort(), Object.keys(goState).sort());
    for (const field of Object.keys(goState)) {
      const g = goState[field] ?? '';
      const t = tsState[field] ?? '';
      if (field === 'progress' || field === 'result') {
        assert.deepEqual(shape(t, tsJob), shape(g, goJob), field);
      } else if (['created_at', 'started_at', 'updated_at'].includes(field)) {
        assert.match(t, /^\d+$/, field);
        assert.match(g, /^\d+$/, field);
      } else if (field === 'last_id') {
        assert.equal(g, goIds.at(-1));
        assert.equal(t, tsIds.at(-1));
      } else {
        assert.equal(t, g, field); // status, report
      }
    }
    const goTtl = await c.pTTL(`ssegate:{${goJob}}:state`);
    const tsTtl = await c.pTTL(`ssegate:{${tsJob}}:state`);
    assert.ok(Math.abs(goTtl - tsTtl) < 60_000, `expiries ${goTtl} and ${tsTtl}`);
  });
}

test('the gateway streams a job published by ssegate/publisher, live, with its report', async () => {
  const gw = await startGateway(redis.url);
  const publisher = new Publisher(c);
  const job = publisher.job('conf-live-1');
  const ids = [await job.register()];
  const res = await fetch(`${gw.url}/api/reports/${job.id}/stream?includeReport=true`, {
    headers: { accept: 'text/event-stream' },
    signal: AbortSignal.timeout(8000),
  });
  try {
    assert.equal(res.status, 200);
    assert.ok(res.body);
    const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
    const events: Array<{ id: string; event: string; data: Record<string, unknown> }> = [];
    let buffer = '';
    const read = async (n: number): Promise<void> => {
      while (events.length < n) {
        const { value, done } = await reader.read();
        assert.ok(!done, `the stream ended after ${events.length} events`);
        buffer += value;
        let end: number;
        while ((end = buffer.indexOf('\n\n')) >= 0) {
          const block = buffer.slice(0, end).split('\n');
          buffer = buffer.slice(end + 2);
          const field = (name: string): string => block.filter((l) => l.startsWith(`${name}: `)).map((l) => l.slice(name.length + 2)).join('\n');
          if (field('event') && field('event') !== 'heartbeat') {
            events.push({ id: field('id'), event: field('event'), data: JSON.parse(field('data')) as Record<string, unknown> });
          }
        }
      }
    };
    await read(1); // the snapshot: the pending status
    ids.push(await job.status('processing'));
    await read(2); // live, so PUBLISH reached the gateway's SUBSCRIBE
    ids.push(await job.progress({ step: 1, total: 2, name: 'Half <way>' }));
    ids.push(await job.complete('r-live', report));
    await read(4);
    assert.deepEqual(events.map((e) => e.id), ids);
    assert.deepEqual(events.map((e) => e.event), ['status', 'status', 'progress', 'complete']);
    assert.equal(events[2]?.data.currentStep, 'Half <way>');
    assert.deepEqual(events[3]?.data, {
      type: 'complete', jobId: job.id, reportId: 'r-live', includeReport: true, report, timestamp: events[3]?.data.timestamp,
    });
    await reader.cancel();
  } finally {
    await gw.stop();
  }
});
