// Helpers shared by the Node clients' tests. The Go test (../node_test.go)
// starts the gateway and a control server, and passes their URLs.
import assert from "node:assert/strict";
import net from "node:net";

export const GATEWAY = process.env.GATEWAY_URL; // --report-max-bytes 65536
const GATEWAY_DEFAULT_LIMIT = process.env.GATEWAY_DEFAULT_LIMIT_URL; // the default 1 MiB
const CONTROL = process.env.CONTROL_URL;
if (!GATEWAY || !CONTROL) throw new Error("run through go test (GATEWAY_URL and CONTROL_URL unset)");

export const REPORT_SIZE = 60 << 10;
export const BIG_REPORT_SIZE = 100 << 10;

export const WANT_FULL = ["status:pending", "status:processing", "progress:1", "progress:2", "progress:3", "complete"];
export const WANT_FAILED = ["status:pending", "status:processing", "error:UPSTREAM_TIMEOUT"];
export const WANT_REPORT = ["status:pending", `complete:report=${REPORT_SIZE}`];
export const WANT_BIG = ["status:pending", `complete:report=${BIG_REPORT_SIZE}`];

async function ctl(method, path) {
  const res = await fetch(CONTROL + path, { method, signal: AbortSignal.timeout(20000) });
  const text = await res.text();
  if (!res.ok) throw new Error(`control ${path}: ${res.status} ${text}`);
  return text;
}

export const newJob = () => ctl("POST", "/jobs");
export const publish = (id, ...actions) => ctl("POST", `/jobs/${id}?do=${encodeURIComponent(actions.join(","))}`);
export const restart = (id, ...whileDown) => ctl("POST", `/jobs/${id}/restart?down=${encodeURIComponent(whileDown.join(","))}`);
export const requests = async (id) => JSON.parse(await ctl("GET", `/jobs/${id}/requests`));

export const streamURL = (id, query = "") => `${GATEWAY}/api/reports/${id}/stream${query ? "?" + query : ""}`;
// defaultLimitURL is the stream on the gateway with the default report limit.
export const defaultLimitURL = (id, query = "") => `${GATEWAY_DEFAULT_LIMIT}/api/reports/${id}/stream${query ? "?" + query : ""}`;

// key names a received event as the Go tests do (harness_test.go).
export function key(type, data) {
  let ev;
  try {
    ev = JSON.parse(data);
  } catch {
    return `BAD(event ${JSON.stringify(type)}, data ${JSON.stringify(String(data).slice(0, 60))})`;
  }
  if (ev === null || ev.type !== type) return `BAD(event ${JSON.stringify(type)}, data ${JSON.stringify(String(data).slice(0, 60))})`;
  switch (type) {
    case "status": return `status:${ev.status}`;
    case "progress": return `progress:${ev.step}`;
    case "error": return `error:${ev.code}`;
    case "complete": return ev.includeReport ? `complete:report=${JSON.stringify(ev.report).length}` : "complete";
    default: return type;
  }
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// waitFor polls cond every 20 ms for up to ms, and fails with what() if it
// never holds.
export async function waitFor(cond, what, ms = 10000) {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) assert.fail(`after ${ms} ms: ${what()}`);
    await sleep(20);
  }
}

// waitLen waits until the list has at least n entries.
export const waitLen = (list, n) => waitFor(() => list.length >= n, () => `got ${list.length} events, want ${n}: ${JSON.stringify(list)}`);

// refusedURL is a stream URL on a loopback port nothing listens on.
export async function refusedURL() {
  const srv = net.createServer();
  await new Promise((r) => srv.listen(0, "127.0.0.1", r));
  const { port } = srv.address();
  await new Promise((r) => srv.close(r));
  return `http://127.0.0.1:${port}/api/reports/none/stream`;
}
