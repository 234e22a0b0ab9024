// @microsoft/fetch-event-source in Node 20: it is written for browsers and
// uses `window.setTimeout` and `document` (visibility), so those are shimmed
// here; Node's own fetch does the requests.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import * as h from "./lib.js";

globalThis.window ??= globalThis;
globalThis.document ??= { hidden: false, addEventListener() {}, removeEventListener() {} };
const { fetchEventSource } = await import("@microsoft/fetch-event-source");

class Closed extends Error {}

// open starts fetchEventSource on url. With reconnectOnClose, onclose
// throws so that the library retries a response that ended (its documented
// way to reconnect after a server restart); otherwise a clean end resolves
// the promise. Connection errors go to errs and are retried, unless
// fatalErrors, when onerror rethrows and the promise rejects.
function open(url, { reconnectOnClose = false, fatalErrors = false, abortOnTerminal = true } = {}) {
  const ctrl = new AbortController();
  const got = [];
  const errs = [];
  const done = fetchEventSource(url, {
    signal: ctrl.signal,
    openWhenHidden: true,
    onmessage(ev) {
      got.push(h.key(ev.event, ev.data));
      if (abortOnTerminal && (ev.event === "complete" || ev.event === "error")) ctrl.abort();
    },
    onclose() {
      if (reconnectOnClose) throw new Closed("response ended");
    },
    onerror(err) {
      errs.push(err);
      if (fatalErrors) throw err;
    },
  }).then(() => "resolved", (err) => err);
  return { ctrl, got, errs, done };
}

// settled is what p settled to within ms, or "pending".
async function settled(p, ms) {
  let timer;
  const late = new Promise((r) => { timer = setTimeout(() => r("pending"), ms); });
  try {
    return await Promise.race([p, late]);
  } finally {
    clearTimeout(timer);
  }
}

describe("fetch-event-source", () => {
  it("full job", async () => {
    const id = await h.newJob();
    const c = open(h.streamURL(id), { abortOnTerminal: false });
    try {
      await h.waitLen(c.got, 1);
      await h.publish(id, "processing", "progress 1", "progress 2", "progress 3", "complete");
      assert.equal(await settled(c.done, 5000), "resolved"); // the clean end after complete
      assert.deepEqual(c.got, h.WANT_FULL);
    } finally {
      c.ctrl.abort();
    }
  });

  it("resume across restart", async () => {
    // Only with onclose throwing: by default a clean end (the gateway's
    // graceful stop) resolves the promise and the client is gone.
    const id = await h.newJob();
    const c = open(h.streamURL(id), { reconnectOnClose: true });
    const plain = open(h.streamURL(id)); // the default options
    try {
      await h.waitLen(c.got, 1);
      await h.waitLen(plain.got, 1);
      await h.publish(id, "processing", "progress 1");
      await h.waitLen(c.got, 3);
      await h.waitLen(plain.got, 3);
      await h.restart(id, "progress 2");
      assert.equal(await settled(plain.done, 1000), "resolved");
      await h.publish(id, "progress 3", "complete");
      await h.waitLen(c.got, h.WANT_FULL.length);
      await h.sleep(300);
      assert.deepEqual(c.got, h.WANT_FULL);
      assert.ok(c.errs.every((e) => e instanceof Closed || e instanceof TypeError), String(c.errs));
      assert.deepEqual(plain.got, h.WANT_FULL.slice(0, 3)); // gone at the restart
    } finally {
      c.ctrl.abort();
      plain.ctrl.abort();
    }
  });

  it("failed job vs connection error", async () => {
    const id = await h.newJob();
    const c = open(h.streamURL(id), { fatalErrors: true });
    try {
      await h.waitLen(c.got, 1);
      await h.publish(id, "processing", "fail");
      await h.waitLen(c.got, h.WANT_FAILED.length);
      assert.deepEqual(c.got, h.WANT_FAILED); // onmessage with ev.event "error" and the JSON data
      assert.equal(c.errs.length, 0);
    } finally {
      c.ctrl.abort();
    }
    // A connection problem goes to onerror (a fetch TypeError), never to onmessage.
    const bad = open(await h.refusedURL(), { fatalErrors: true });
    const err = await settled(bad.done, 5000);
    assert.ok(err instanceof TypeError, `refused connection: ${err}`);
    assert.equal(bad.got.length, 0);
  });

  it("after the terminal event", async () => {
    // By default the clean end after complete resolves the promise: no
    // more requests. With onclose throwing (needed to survive a restart)
    // it reconnects; the 204 fails its default onopen check (not
    // text/event-stream), onerror is called, and it retries for ever at
    // the retry: interval: the application must abort() on the terminal
    // event.
    const id = await h.newJob();
    await h.publish(id, "complete");
    const plain = open(h.streamURL(id), { abortOnTerminal: false });
    assert.equal(await settled(plain.done, 5000), "resolved");
    assert.deepEqual(plain.got, ["complete"]);
    await h.sleep(300);
    assert.deepEqual(await h.requests(id), [200]);

    const looping = open(h.streamURL(id), { reconnectOnClose: true, abortOnTerminal: false });
    try {
      await h.sleep(1000);
      assert.equal(await settled(looping.done, 0), "pending");
      const reqs = await h.requests(id);
      assert.deepEqual(reqs.slice(0, 2), [200, 200]);
      assert.ok(reqs.length >= 5 && reqs.slice(2).every((s) => s === 204), `requests ${reqs}`);
      assert.deepEqual(looping.got, ["complete"]);
      console.log(`# with onclose throwing and no abort(): ${reqs.length - 2} requests answered 204 in 1 s`);
    } finally {
      looping.ctrl.abort();
    }
  });

  it("report near the inline limit", async () => {
    const id = await h.newJob();
    const c = open(h.streamURL(id, "includeReport=true"));
    try {
      await h.waitLen(c.got, 1);
      await h.publish(id, "report");
      await h.waitLen(c.got, h.WANT_REPORT.length);
      assert.deepEqual(c.got, h.WANT_REPORT);
    } finally {
      c.ctrl.abort();
    }
  });

  it("report over 64 KiB", async () => {
    const id = await h.newJob();
    const c = open(h.defaultLimitURL(id, "includeReport=true"));
    try {
      await h.waitLen(c.got, 1);
      await h.publish(id, "bigreport");
      await h.waitLen(c.got, h.WANT_BIG.length);
      assert.deepEqual(c.got, h.WANT_BIG);
    } finally {
      c.ctrl.abort();
    }
  });
});
