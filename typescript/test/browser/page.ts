// The page test/browser.test.ts opens in headless Chromium: it watches one
// job with the built package over Chromium's own EventSource and reports
// everything the watch hands out to the test, in order, by POSTing to the
// proxy that serves it (/__test/log).
import { watchReport, type WatchOptions } from 'ssegate';

/** What the page tells the test; browser.test.ts reads the same shape. */
export type PageMessage =
  | { kind: 'event'; event: unknown; id: string | null }
  | { kind: 'connection'; state: string }
  | { kind: 'failed'; event: unknown }
  | { kind: 'done'; ok: true; value: unknown }
  | { kind: 'done'; ok: false; error: { name: string; message: string; code?: unknown; status?: unknown; retryable?: unknown } }
  | { kind: 'crash'; message: string };

const q = new URLSearchParams(location.search);
const job = q.get('job') ?? '';

// One POST at a time, so the test sees messages in the order they happened.
let chain = Promise.resolve();
function send(msg: PageMessage): void {
  const body = JSON.stringify({ job, ...msg });
  chain = chain.then(async () => {
    await fetch('/__test/log', { method: 'POST', body, headers: { 'content-type': 'application/json' } });
  }).catch(() => undefined);
}

try {
  const opts: WatchOptions = {
    baseUrl: location.origin,
    retryInitialMs: Number(q.get('retryInitialMs') ?? 100),
    retryMaxMs: Number(q.get('retryMaxMs') ?? 1000),
  };
  if (q.get('includeReport') === 'true') opts.includeReport = true;
  const resume = q.get('lastEventId');
  if (resume !== null) opts.lastEventId = resume;

  const w = watchReport(job, opts);
  w.on('event', (event, id) => send({ kind: 'event', event, id: id ?? null }));
  w.on('connection', (state) => send({ kind: 'connection', state }));
  w.on('failed', (event) => send({ kind: 'failed', event }));
  w.done.then(
    (value) => send({ kind: 'done', ok: true, value }),
    (err: unknown) => {
      const e = err as Error & Record<string, unknown>;
      send({ kind: 'done', ok: false, error: { name: e.name, message: e.message, code: e.code, status: e.status, retryable: e.retryable } });
    },
  );
} catch (err) {
  send({ kind: 'crash', message: String(err) });
}
