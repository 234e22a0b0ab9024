// ssegate/publisher on a real 3-master Redis Cluster through createCluster:
// jobs on every shard are stored on their slot's master; by default the
// live message goes out with SPUBLISH, which only an SSUBSCRIBE on the
// slot's master sees (as the gateway reads a Cluster), and with
// `sharded: false` with PUBLISH, which every node's SUBSCRIBE sees.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';

import { createClient, createCluster } from 'redis';
import { EventSource } from 'eventsource';
import { watchReport } from 'ssegate';
import { Publisher } from 'ssegate/publisher';

import { inCI, redisCli, startCluster, type TestCluster } from './cluster-harness.js';
import { startGateway, waitFor } from './harness.js';

type Client = ReturnType<typeof createClient>;

const cli = redisCli();
const skip = cli === null && !inCI() ? 'redis-cli not found (required when CI is set)' : undefined;

let cluster: TestCluster | undefined;
let rc: ReturnType<typeof createCluster> | undefined;
const clients: Client[] = [];

before(async () => {
  if (skip) return;
  if (!cli) throw new Error('redis-cli not found: the cluster test cannot run in CI without it');
  cluster = await startCluster(3);
  rc = await createCluster({ rootNodes: cluster.nodes.map((n) => ({ url: n.url })) }).connect();
});

after(async () => {
  for (const c of clients) c.destroy();
  rc?.destroy();
  await cluster?.stop();
});

async function nodeClient(url: string): Promise<Client> {
  const c = await createClient({ url }).connect();
  clients.push(c);
  return c;
}

/** Messages of one subscription, with a barrier to know that all sent so far have arrived. */
async function listen(url: string, channel: string, sharded: boolean): Promise<{ drained(atLeast?: number): Promise<string[]> }> {
  const sub = await nodeClient(url);
  const pub = await nodeClient(url);
  const messages: string[] = [];
  const on = (m: string): void => void messages.push(m);
  if (sharded) await sub.sSubscribe(channel, on);
  else await sub.subscribe(channel, on);
  return {
    // The barrier goes through the same node, after what it must follow.
    // (A PUBLISH on another node reaches this one over the cluster bus,
    // later: wait for atLeast messages first. Every node's barriers reach
    // every plain subscriber: they are left out.)
    async drained(atLeast = 0) {
      const isBarrier = (m: string): boolean => m.startsWith('barrier-');
      await waitFor(`${atLeast} messages on ${channel}`, () => messages.filter((m) => !isBarrier(m)).length >= atLeast, 3000);
      const barrier = `barrier-${Math.random()}`;
      if (sharded) await pub.sPublish(channel, barrier);
      else await pub.publish(channel, barrier);
      await waitFor(`barrier on ${channel}`, () => messages.includes(barrier), 3000);
      const got = messages.splice(0);
      return got.slice(0, got.indexOf(barrier)).filter((m) => !isBarrier(m));
    },
  };
}

test('jobs on all three shards: stored on their master; SPUBLISH by default, PUBLISH when not sharded', async (t) => {
  if (skip) {
    t.skip(skip);
    return;
  }
  assert.ok(cluster && rc);
  const nodes = cluster.nodes;
  const any = await nodeClient(nodes[0]?.url ?? '');
  // Slot ranges -> master port.
  const ranges = (await any.sendCommand<Array<[number, number, [string, number, ...unknown[]]]>>(['CLUSTER', 'SLOTS']))
    .map(([from, to, [, port]]) => ({ from, to, port: Number(port) }));
  const owner = async (key: string): Promise<number> => {
    const slot = await any.sendCommand<number>(['CLUSTER', 'KEYSLOT', key]);
    const r = ranges.find((x) => x.from <= slot && slot <= x.to);
    assert.ok(r, `slot ${slot} is served`);
    return r.port;
  };
  const jobs = new Map<number, string>(); // master port -> a job on it
  for (let i = 0; jobs.size < nodes.length && i < 1000; i++) {
    const port = await owner(`ssegate:{cl-${i}}:events`);
    if (!jobs.has(port)) jobs.set(port, `cl-${i}`);
  }
  assert.equal(jobs.size, 3, 'a job for every master');

  const plain = new Publisher(rc, { sharded: false });
  const auto = new Publisher(rc);
  assert.equal(plain.sharded, false, 'PUBLISH when asked');
  assert.equal(auto.sharded, true, 'by default, the cluster client is recognised');
  assert.equal(new Publisher(rc, { sharded: 'auto' }).sharded, true);

  for (const [port, jobId] of jobs) {
    const url = `redis://127.0.0.1:${port}`;
    const other = nodes.find((n) => n.port !== port)?.url ?? '';
    const channel = `ssegate:{${jobId}}:live`;
    const subOwner = await listen(url, channel, false);
    const subOther = await listen(other, channel, false);
    const ssubOwner = await listen(url, channel, true);

    const reg = await plain.job(jobId).register();
    for (const sub of [subOwner, subOther]) {
      assert.deepEqual((await sub.drained(1)).map((m) => m.split('\n').slice(0, 3)), [['1', reg, 'status']],
        'PUBLISH reaches a SUBSCRIBE on any node');
    }
    assert.deepEqual(await ssubOwner.drained(), [], 'PUBLISH does not reach SSUBSCRIBE');

    const job = auto.job(jobId);
    const ids = [reg, await job.status('processing'), await job.progress({ step: 1, total: 2, name: 'Half' }), await job.complete('r', { port })];
    const stream = await rc.xRange(`ssegate:{${jobId}}:events`, '-', '+');
    assert.deepEqual(stream.map((e) => e.id), ids);
    assert.deepEqual(stream.map((e) => e.message.type), ['status', 'status', 'progress', 'complete']);
    assert.deepEqual(await ssubOwner.drained(), stream.slice(1).map((e) => `1\n${e.id}\n${e.message.type}\n${e.message.data}`),
      'SPUBLISH reaches SSUBSCRIBE on the master of the slot');
    assert.deepEqual(await subOwner.drained(), [], 'SPUBLISH does not reach SUBSCRIBE');
    assert.deepEqual(await subOther.drained(), []);

    // The keys live on the slot's master, and the script was cached there by EVAL after NOSCRIPT.
    const master = await nodeClient(url);
    const state = await master.hGetAll(`ssegate:{${jobId}}:state`);
    assert.equal(state.status, 'completed');
    assert.equal(state.report, JSON.stringify({ port }));
    assert.equal(state.last_id, ids.at(-1));
    assert.equal(await master.xLen(`ssegate:{${jobId}}:events`), 4);
    assert.match(await master.info('commandstats'), /cmdstat_eval:calls=1,/);
  }
});

test('a job published on the cluster reaches watchReport through a gateway on the cluster, live', async (t) => {
  if (skip) {
    t.skip(skip);
    return;
  }
  assert.ok(cluster && rc);
  const [first, ...rest] = cluster.nodes.map((n) => `127.0.0.1:${n.port}`);
  const gw = await startGateway(`redis+cluster://${first}?${rest.map((a) => `addr=${a}`).join('&')}`);
  try {
    const pub = new Publisher(rc);
    assert.equal(pub.sharded, true);
    // Jobs on several masters: each live message goes to its own master.
    for (const jobId of ['web-cl-1', 'web-cl-2', 'web-cl-3', 'web-cl-4']) {
      const job = pub.job(jobId);
      await job.register();
      const w = watchReport(jobId, { baseUrl: gw.url, EventSource, includeReport: true });
      const steps: number[] = [];
      w.on('progress', (e) => steps.push(e.step));
      await waitFor('live', () => w.state === 'live');
      await job.status('processing');
      for (let i = 1; i <= 3; i++) {
        await job.progress({ step: i, total: 3 });
        await waitFor(`step ${i} live`, () => steps.length === i); // live, not at the end
      }
      await job.complete('r', { jobId });
      const done = await w.done;
      assert.deepEqual(done.report, { jobId });
      assert.deepEqual(steps, [1, 2, 3]);
    }
  } finally {
    await gw.stop();
  }
});
