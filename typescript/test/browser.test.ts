// watchReport in headless Chromium: the page (test/browser/page.ts) loads the
// built package as an ES module and watches a job over the browser's own
// EventSource, so reconnects, 502s and HTTP behaviour are Chromium's, not a
// polyfill's. The same real gateway, redis-server and proxy as in Node.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { createClient } from 'redis';
import type { CompleteEvent, JobEvent } from 'ssegate';
import type { PageMessage } from './browser/page.js';
import {
  Proxy, assertOnceInOrder, pkgRoot, sleep, ssepubAsync, startBrowser, startGateway, startRedis, waitFor,
  type Browser, type Gateway, type RedisServer,
} from './harness.js';

let redis: RedisServer;
let gw: Gateway;
let proxy: Proxy;
let seq = 0;
const pages = new Map<string, Page>();
const browsers = new Set<Browser>();

const jobId = (name: string) => `web-${name}-${process.pid}-${++seq}`;
const pub = (job: string, ...args: string[]) => ssepubAsync(redis.url, [job, ...args]);

// Without Chromium the suite is skipped, except in CI (CI=true), where it fails.
const chromium = process.env.CHROMIUM_BIN ?? 'chromium';
const haveChromium = (() => {
  try {
    execFileSync(chromium, ['--version'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
})();
const skip = !haveChromium && process.env.CI !== 'true' ? `no ${chromium} (CI=true fails instead)` : false;

/** A proxy that serves the built package and the test page, and hears the page. */
async function testProxy(upstream: string | null): Promise<Proxy> {
  const p = await new Proxy().listen();
  p.upstream = upstream;
  p.serveDir('dist', path.join(pkgRoot, 'dist'));
  p.serveDir('test', path.join(pkgRoot, 'build', 'test', 'browser'));
  p.serve('page.html', path.join(pkgRoot, 'test', 'browser', 'page.html'), 'text/html; charset=utf-8');
  p.onPageMessage = (m) => {
    const msg = m as PageMessage & { job: string };
    pages.get(msg.job)?.take(msg);
  };
  return p;
}

before(async () => {
  if (skip) return;
  assert.ok(existsSync(path.join(pkgRoot, 'dist', 'index.js')), 'dist/ is built (npm test builds it)');
  redis = await startRedis();
  gw = await startGateway(redis.url, ['--retry', '200ms']);
  proxy = await testProxy(gw.url);
});

after(async () => {
  for (const b of browsers) await b.stop();
  await proxy?.close();
  await gw?.stop();
  await redis?.stop();
});

/** What one page's watch handed out, as the page reported it. */
class Page {
  readonly events: { e: JobEvent; id: string | null }[] = [];
  readonly states: string[] = [];
  readonly failed: unknown[] = [];
  result: Extract<PageMessage, { kind: 'done' }> | undefined;
  crash: string | undefined;

  take(m: PageMessage): void {
    switch (m.kind) {
      case 'event': this.events.push({ e: m.event as JobEvent, id: m.id }); break;
      case 'connection': this.states.push(m.state); break;
      case 'failed': this.failed.push(m.event); break;
      case 'done': this.result = m; break;
      case 'crash': this.crash = m.message; break;
    }
  }

  get state(): string | undefined {
    return this.states.at(-1);
  }

  ids(): string[] {
    return this.events.flatMap((x) => (x.id === null ? [] : [x.id]));
  }

  steps(): number[] {
    return this.events.flatMap((x) => (x.e.type === 'progress' ? [x.e.step] : []));
  }

  types(): string[] {
    return this.events.map((x) => x.e.type);
  }

  async live(): Promise<void> {
    await waitFor('the page live', () => {
      if (this.crash !== undefined) throw new Error(`page: ${this.crash}`);
      return this.state === 'live';
    }, 30_000);
  }

  async done(): Promise<Extract<PageMessage, { kind: 'done' }>> {
    await waitFor('the page done', () => this.result !== undefined, 30_000);
    return this.result as Extract<PageMessage, { kind: 'done' }>;
  }
}

/** Opens the test page in a new headless Chromium watching job through via. */
async function openPage(job: string, via: Proxy, params: Record<string, string> = {}): Promise<Page> {
  const page = new Page();
  pages.set(job, page);
  const q = new URLSearchParams({ job, ...params });
  const b = await startBrowser(`${via.url}/static/page.html?${q.toString()}`);
  browsers.add(b);
  return page;
}

describe('watchReport (headless Chromium, native EventSource)', { skip }, () => {
  it('follows a whole job and resolves done with the report', async () => {
    const job = jobId('whole');
    await pub(job, 'register');
    const page = await openPage(job, proxy, { includeReport: 'true' });
    await page.live();
    await pub(job, 'status', 'processing');
    for (let i = 1; i <= 5; i++) await pub(job, 'progress', '--step', String(i), '--total', '5', '--name', `step ${i}`);
    await ssepubAsync(redis.url, [job, 'complete', '--report-id', 'r-1', '--report', '-'], '{"rows":42}');
    const done = await page.done();
    assert.ok(done.ok, `done rejected: ${JSON.stringify(done)}`);
    const c = done.value as CompleteEvent<{ rows: number }>;
    assert.equal(c.reportId, 'r-1');
    assert.deepEqual(c.report, { rows: 42 });
    assert.deepEqual(page.types(), ['status', 'status', 'progress', 'progress', 'progress', 'progress', 'progress', 'complete']);
    assert.deepEqual(page.steps(), [1, 2, 3, 4, 5]);
    assert.equal(page.ids().length, 8, 'every event carried its ID');
    assertOnceInOrder(page.ids());
    assert.deepEqual(page.states, ['connecting', 'live', 'closed']);
  });

  // Gateway A serves the page; A dies and the proxy answers 502 while no
  // gateway is up, which closes Chromium's EventSource for good; then
  // gateway B comes up. Progress goes on being published all the while.
  it('survives a gateway restart behind a proxy answering 502: every event once', async () => {
    const a = await startGateway(redis.url, ['--retry', '200ms']);
    const b = await startGateway(redis.url, ['--retry', '200ms']);
    const local = await testProxy(a.url);
    try {
      const job = jobId('restart');
      const total = 30;
      await pub(job, 'register');
      await pub(job, 'status', 'processing');
      const page = await openPage(job, local, { retryMaxMs: '400' });
      await page.live();
      const stream502 = () => local.requests.some((r) => r.url.startsWith(`/api/reports/${job}`) && r.status === 502);
      for (let i = 1; i <= total; i++) {
        await pub(job, 'progress', '--step', String(i), '--total', String(total));
        if (i === 10) {
          await waitFor('step 10 delivered', () => page.steps().length === 10);
          local.upstream = null;
          await a.stop('SIGKILL');
          await waitFor('a 502 to the browser', stream502);
        }
        if (i === 20) local.upstream = b.url;
      }
      await pub(job, 'complete', '--report-id', 'r-restart');
      const done = await page.done();
      assert.ok(done.ok, `done rejected: ${JSON.stringify(done)}`);
      assert.deepEqual(page.steps(), Array.from({ length: total }, (_, i) => i + 1), 'every progress event exactly once');
      assertOnceInOrder(page.ids());
      assert.ok(page.states.includes('reconnecting'), 'it went through a reconnect');
      assert.equal(page.state, 'closed');
    } finally {
      await local.close();
      await a.stop('SIGKILL');
      await b.stop();
    }
  });

  it('reports a failed job as failed and rejects done, with no reconnecting', async () => {
    const job = jobId('fail');
    await pub(job, 'register');
    await pub(job, 'status', 'processing');
    const page = await openPage(job, proxy);
    await page.live();
    await pub(job, 'progress', '--step', '1', '--total', '3');
    await pub(job, 'fail', '--code', 'UPSTREAM_TIMEOUT', '--message', 'upstream timed out', '--retryable');
    const done = await page.done();
    assert.ok(!done.ok, 'done resolved');
    assert.equal(done.error.name, 'JobFailedError');
    assert.equal(done.error.code, 'UPSTREAM_TIMEOUT');
    assert.equal(done.error.retryable, true);
    assert.equal(page.failed.length, 1);
    assert.deepEqual(page.types(), ['status', 'progress', 'error']);
    assert.deepEqual(page.states, ['connecting', 'live', 'closed']);
    const n = proxy.count(`/api/reports/${job}`);
    await sleep(800); // the gateway's retry hint is 200 ms: a reconnect would show by now
    assert.equal(proxy.count(`/api/reports/${job}`), n, 'a request after the job failed');
  });

  it('makes no request after complete', async () => {
    const job = jobId('quiet');
    await pub(job, 'register');
    const page = await openPage(job, proxy);
    await page.live();
    await pub(job, 'complete', '--report-id', 'r-3');
    assert.ok((await page.done()).ok);
    assert.equal(proxy.count(`/api/reports/${job}`), 1, 'one stream request');
    await sleep(800);
    assert.equal(proxy.count(`/api/reports/${job}`), 1, 'a request after complete');
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
    const page = await openPage(job, proxy, { lastEventId: r });
    await waitFor('the snapshot', () => page.steps().length === 1, 30_000);
    assert.deepEqual(page.types(), ['reset', 'status', 'progress']);
    const [reset] = page.events;
    assert.equal(reset?.e.type === 'reset' && reset.e.reason, 'history_trimmed');
    assert.deepEqual(page.steps(), [2], 'the snapshot: the latest progress');
    await pub(job, 'progress', '--step', '3', '--total', '4');
    await pub(job, 'complete', '--report-id', 'r-4');
    assert.ok((await page.done()).ok);
    assert.deepEqual(page.steps(), [2, 3]);
    assertOnceInOrder(page.ids());
  });
});
