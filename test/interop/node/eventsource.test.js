// The `eventsource` npm package (a WHATWG EventSource for Node).
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { EventSource } from "eventsource";
import * as h from "./lib.js";

const TYPES = ["status", "progress", "complete", "error", "reset"];

// open connects and records every named event's key; errors (connection
// problems, events without data) go to errs.
function open(url) {
  const es = new EventSource(url);
  const got = [];
  const errs = [];
  for (const type of TYPES) {
    es.addEventListener(type, (e) => {
      if (type === "error" && e.data === undefined) errs.push({ code: e.code, message: e.message, readyState: es.readyState });
      else got.push(h.key(type, e.data));
    });
  }
  es.onmessage = (e) => got.push(h.key("message", e.data));
  return { es, got, errs };
}

describe("eventsource", () => {
  it("full job", async () => {
    const id = await h.newJob();
    const c = open(h.streamURL(id));
    try {
      await h.waitLen(c.got, 1);
      await h.publish(id, "processing", "progress 1", "progress 2", "progress 3", "complete");
      await h.waitLen(c.got, h.WANT_FULL.length);
      await h.sleep(300);
      assert.deepEqual(c.got, h.WANT_FULL);
    } finally {
      c.es.close();
    }
  });

  it("resume across restart", async () => {
    const id = await h.newJob();
    const c = open(h.streamURL(id));
    try {
      await h.waitLen(c.got, 1);
      await h.publish(id, "processing", "progress 1");
      await h.waitLen(c.got, 3);
      await h.restart(id, "progress 2");
      await h.publish(id, "progress 3", "complete");
      await h.waitLen(c.got, h.WANT_FULL.length);
      await h.sleep(300);
      assert.deepEqual(c.got, h.WANT_FULL);
    } finally {
      c.es.close();
    }
  });

  it("failed job vs connection error", async () => {
    const id = await h.newJob();
    const c = open(h.streamURL(id));
    try {
      await h.waitLen(c.got, 1);
      await h.publish(id, "processing", "fail");
      await h.waitLen(c.got, h.WANT_FAILED.length);
      assert.deepEqual(c.got, h.WANT_FAILED); // the job failure: an `error` MessageEvent with data
    } finally {
      c.es.close();
    }
    // A connection problem: an `error` event without data (an ErrorEvent),
    // and the EventSource goes on reconnecting.
    const bad = open(await h.refusedURL());
    try {
      await h.waitFor(() => bad.errs.length > 0, () => "no error event for a refused connection", 5000);
      assert.equal(bad.got.length, 0);
      assert.equal(bad.errs[0].readyState, EventSource.CONNECTING);
    } finally {
      bad.es.close();
    }
  });

  it("after the terminal event", async () => {
    // Not closed by the application: it reconnects once with
    // Last-Event-ID, the gateway answers 204, and it closes for good.
    const id = await h.newJob();
    await h.publish(id, "complete");
    const c = open(h.streamURL(id));
    try {
      await h.waitFor(() => c.es.readyState === EventSource.CLOSED, () => `readyState ${c.es.readyState}, events ${JSON.stringify(c.got)}`, 5000);
      await h.sleep(500);
      assert.deepEqual(c.got, ["complete"]);
      assert.deepEqual(await h.requests(id), [200, 204]);
      assert.equal(c.errs.at(-1).code, 204);
    } finally {
      c.es.close();
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
      c.es.close();
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
      c.es.close();
    }
  });
});
