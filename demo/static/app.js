// ssegate live demo: start simulated report jobs and watch each with the
// browser's own EventSource. No framework, no build step.
//
// window.__ssegate exposes the page's state for the end-to-end tests: per
// job, every event it rendered with its ID, the connection states it showed
// and whether it closed its EventSource.
"use strict";

(() => {
  // Over HTTP/1.1 a browser opens at most 6 connections to one server, and
  // each EventSource holds one: beyond 5 open streams the next one (and the
  // page's own requests) would stall. HTTP/2 lifts this limit.
  const MAX_OPEN_STREAMS = 5;

  const jobs = {};            // jobId -> plain state (what the tests read)
  const sources = new Map();  // jobId -> EventSource
  const cards = new Map();    // jobId -> card element
  let started = 0;            // jobs started or watched, to number the cards

  const $ = (sel, root = document) => root.querySelector(sel);
  const els = {};

  const CONN_TEXT = {
    connecting: "Connecting…",
    live: "Live",
    reconnecting: "Reconnecting…",
    resumed: "Resumed",
    closed: "Stream closed",
    lost: "Disconnected",
  };
  const STATUS_TEXT = {
    pending: "Pending",
    processing: "Processing",
    completed: "Completed",
    failed: "Failed",
  };

  // ---- starting and watching jobs ----

  async function start(opts = {}) {
    setNotice("");
    let resp, body;
    try {
      resp = await fetch("demo/jobs", {
        method: "POST",
        headers: { "Content-Type": "application/json", Accept: "application/json" },
        body: JSON.stringify(opts),
      });
      body = await resp.json();
    } catch (err) {
      setNotice("Could not reach the server: " + err.message, true);
      return null;
    }
    if (resp.status !== 201) {
      setNotice(`Could not start a job: ${body.error || resp.statusText} (${body.code || resp.status})`, true);
      return null;
    }
    watch(body.jobId, body.streamUrl, { totalSteps: body.steps });
    return body.jobId;
  }

  // watch opens an EventSource on a job's stream and renders a card for it.
  function watch(jobId, url, info = {}) {
    if (jobs[jobId]) return jobs[jobId];
    url = url || `/api/reports/${encodeURIComponent(jobId)}/stream?includeReport=true`;
    const job = {
      jobId,
      title: info.title || `Sales report #${++started}`,
      status: "pending",
      step: 0,
      totalSteps: info.totalSteps || 0,
      percentage: 0,
      currentStep: "",
      etaMs: null,
      etaAt: 0,
      events: [],        // every event rendered: {type, id, jobId}
      progressIds: [],   // the IDs of the progress events rendered, in order
      conn: "connecting",
      connHistory: ["connecting"],
      connErrors: 0,     // connection problems (error Events without data)
      opens: 0,
      resets: 0,
      heartbeats: 0,
      resumedFrom: "",
      refusal: "",       // why the gateway refused the stream, when it did
      report: null,
      reportId: "",
      failure: null,
      closeCalled: false,
      done: false,
    };
    jobs[jobId] = job;
    cards.set(jobId, newCard(job));
    connect(job, url);
    render(job);
    return job;
  }

  function connect(job, url) {
    const es = new EventSource(url);
    sources.set(job.jobId, es);
    let lastId = "";

    es.addEventListener("open", () => {
      job.opens++;
      if (job.connErrors > 0) {
        job.resumedFrom = lastId;
        setConn(job, "resumed");
      } else {
        setConn(job, "live");
      }
    });
    for (const type of ["status", "progress", "complete", "reset", "heartbeat"]) {
      es.addEventListener(type, (e) => {
        if (e.lastEventId) lastId = e.lastEventId;
        onEvent(job, type, e);
      });
    }
    // Two different things arrive as "error". The job's failure is the
    // error event the server sent: a MessageEvent that carries data. A
    // connection problem is a plain Event without data; the browser then
    // reconnects by itself (readyState CONNECTING) with Last-Event-ID, or
    // gives up for good (readyState CLOSED) after a non-200 answer.
    es.addEventListener("error", (e) => {
      if (e instanceof MessageEvent && typeof e.data === "string" && e.data !== "") {
        if (e.lastEventId) lastId = e.lastEventId;
        onEvent(job, "error", e);
        return;
      }
      if (job.done) return;
      job.connErrors++;
      if (es.readyState !== EventSource.CLOSED) {
        setConn(job, "reconnecting");
        return;
      }
      // The browser gave up: the gateway answered with an error status,
      // which an EventSource does not show. Ask the snapshot endpoint why.
      setConn(job, "lost");
      updateControls();
      explainRefusal(job);
    });
  }

  async function explainRefusal(job) {
    let why = "the gateway refused the stream";
    try {
      const resp = await fetch(`/api/reports/${encodeURIComponent(job.jobId)}`, { headers: { Accept: "application/json" } });
      if (!resp.ok) {
        const body = await resp.json();
        why = `${body.error} (${body.code})`;
      }
    } catch {
      // keep the generic reason
    }
    job.refusal = why;
    render(job);
  }

  function onEvent(job, type, e) {
    let data;
    try {
      data = JSON.parse(e.data);
    } catch {
      return;
    }
    if (type === "heartbeat") {
      job.heartbeats++;
      return;
    }
    job.events.push({ type, id: e.lastEventId, jobId: data.jobId || "" });
    switch (type) {
      case "status":
        job.status = data.status;
        break;
      case "progress":
        job.progressIds.push(e.lastEventId);
        job.status = "processing";
        job.step = data.step;
        job.totalSteps = data.totalSteps;
        job.percentage = data.percentage;
        job.currentStep = data.currentStep || "";
        job.etaMs = data.estimatedRemainingMs;
        job.etaAt = Date.now();
        break;
      case "reset":
        // The resume point was older than the retained history: what
        // follows is a snapshot, not every step.
        job.resets++;
        break;
      case "complete":
        job.status = "completed";
        job.percentage = 100;
        job.step = job.totalSteps;
        job.reportId = data.reportId || "";
        job.report = data.includeReport ? data.report : null;
        finish(job);
        break;
      case "error":
        job.status = "failed";
        job.failure = { error: data.error || "", code: data.code || "", retryable: !!data.retryable };
        finish(job);
        break;
    }
    render(job);
  }

  // finish closes the stream after the terminal event: otherwise the
  // browser would reconnect (and the gateway answer 204).
  function finish(job) {
    const es = sources.get(job.jobId);
    if (es) es.close();
    job.closeCalled = true;
    job.done = true;
    setConn(job, "closed");
    updateControls();
  }

  function setConn(job, conn) {
    job.conn = conn;
    if (job.connHistory[job.connHistory.length - 1] !== conn) job.connHistory.push(conn);
    render(job);
  }

  // ---- rendering ----

  function newCard(job) {
    const card = els.template.content.firstElementChild.cloneNode(true);
    card.dataset.job = job.jobId;
    $(".card-title", card).textContent = job.title;
    $(".job-id", card).textContent = job.jobId;
    els.jobs.prepend(card);
    els.empty.hidden = true;
    updateControls();
    return card;
  }

  function render(job) {
    const card = cards.get(job.jobId);
    if (!card) return;
    card.dataset.status = job.status;
    card.dataset.conn = job.conn;
    card.dataset.percent = String(job.percentage);
    card.dataset.progressEvents = String(job.progressIds.length);

    $(".status-badge", card).textContent = STATUS_TEXT[job.status] || job.status;
    const bar = $(".progress", card);
    bar.setAttribute("aria-valuenow", String(job.percentage));
    $(".bar", bar).style.width = job.percentage + "%";
    $(".pct", card).textContent = job.percentage + "%";
    $(".step", card).textContent = stepText(job);
    $(".steps-done", card).textContent = stepsDoneText(job);
    $(".eta", card).textContent = etaText(job);

    const connText = $(".conn-text", card);
    connText.textContent = CONN_TEXT[job.conn] || job.conn;
    $(".conn", card).title = job.conn === "resumed" && job.resumedFrom
      ? `Resumed after event ${job.resumedFrom} (Last-Event-ID)` : "EventSource connection";
    const n = job.events.length;
    const reconnects = Math.max(0, job.opens - 1);
    $(".counter", card).textContent = `${n} event${n === 1 ? "" : "s"}` +
      (reconnects ? ` · ${reconnects} reconnect${reconnects === 1 ? "" : "s"}` : "");

    const result = $(".result", card);
    if (job.status === "completed" && !result.dataset.rendered) {
      result.dataset.rendered = "1";
      result.replaceChildren(renderReport(job));
      result.hidden = false;
    } else if (job.status === "failed" && !result.dataset.rendered) {
      result.dataset.rendered = "1";
      result.replaceChildren(renderFailure(job));
      result.hidden = false;
    }
  }

  // stepText is the headline of a card: what the job is doing now.
  function stepText(job) {
    if (job.conn === "lost") return job.refusal ? `Cannot watch this job: ${job.refusal}` : "Cannot watch this job";
    switch (job.status) {
      case "completed":
        return "Report ready";
      case "failed":
        return job.currentStep ? `Stopped at ${job.currentStep}` : "Stopped";
      case "pending":
        return "Waiting for the worker…";
    }
    return job.currentStep ? job.currentStep + "…" : "Starting…";
  }

  function stepsDoneText(job) {
    const total = job.totalSteps;
    if (!total || job.status === "pending") return "\u00a0";
    if (job.status === "completed") return `All ${total} steps done`;
    return `${job.step} of ${total} steps done`;
  }

  // etaText is the estimated time left, counted down between events.
  function etaText(job) {
    if (job.done || job.status !== "processing") return "";
    if (job.etaMs === null || job.etaMs === undefined) return "estimating time left…";
    const left = Math.max(0, job.etaMs - (Date.now() - job.etaAt));
    if (left < 1000) return "almost done";
    const s = Math.round(left / 1000);
    return s < 60 ? `about ${s} s left` : `about ${Math.floor(s / 60)} min ${s % 60} s left`;
  }

  function el(tag, className, text) {
    const e = document.createElement(tag);
    if (className) e.className = className;
    if (text !== undefined) e.textContent = text;
    return e;
  }

  function renderReport(job) {
    const r = job.report;
    const box = el("div", "report");
    if (!r) {
      box.append(el("p", "muted", `Report ${job.reportId || ""} is ready (not included in the stream).`));
      return box;
    }
    if (!Array.isArray(r.rows)) {
      // Not the demo's shape (a job published with ssepub, say): show it raw.
      box.append(el("h3", "report-title", r.title || "Report"), el("pre", "raw", JSON.stringify(r, null, 2)));
      return box;
    }
    const money = new Intl.NumberFormat(undefined, { style: "currency", currency: r.currency || "EUR", maximumFractionDigits: 0 });
    const count = new Intl.NumberFormat();
    const head = el("div", "report-head");
    head.append(el("h3", "report-title", r.title || "Report"), el("span", "report-period", r.period || ""));
    box.append(head);

    const table = el("table", "report-table");
    const thead = el("thead");
    const hr = el("tr");
    for (const [label, cls] of [["Region", ""], ["Orders", "num"], ["Revenue", "num"], ["Change", "num"]]) hr.append(el("th", cls, label));
    thead.append(hr);
    const tbody = el("tbody");
    const row = (x, cls) => {
      const tr = el("tr", cls);
      const change = el("td", "num " + (x.change >= 0 ? "up" : "down"), `${x.change >= 0 ? "+" : "−"}${Math.abs(x.change).toFixed(1)} %`);
      tr.append(el("td", "", x.region), el("td", "num", count.format(x.orders)), el("td", "num", money.format(x.revenue)), change);
      return tr;
    };
    for (const x of r.rows) tbody.append(row(x));
    const tfoot = el("tfoot");
    if (r.totals) tfoot.append(row(r.totals, "total"));
    table.append(thead, tbody, tfoot);
    const scroll = el("div", "table-scroll");
    scroll.append(table);
    box.append(scroll);

    if (Array.isArray(r.highlights) && r.highlights.length) {
      const ul = el("ul", "highlights");
      for (const h of r.highlights) ul.append(el("li", "", h));
      box.append(ul);
    }
    const when = r.generatedAt ? new Date(r.generatedAt).toLocaleTimeString() : "";
    box.append(el("p", "report-foot", `Report ${job.reportId}${when ? " · generated " + when : ""}`));
    return box;
  }

  function renderFailure(job) {
    const f = job.failure || {};
    const box = el("div", "failure");
    box.setAttribute("role", "alert");
    const title = el("p", "failure-title", "The job failed");
    const code = el("code", "failure-code", f.code || "ERROR");
    title.append(" ", code);
    box.append(title, el("p", "failure-msg", f.error || ""));
    if (f.retryable) {
      const retry = el("button", "btn small", "Try again");
      retry.type = "button";
      retry.addEventListener("click", () => start({}));
      box.append(retry);
    }
    return box;
  }

  // ---- controls ----

  function openStreams() {
    let n = 0;
    for (const [id, es] of sources) if (!jobs[id].done && es.readyState !== EventSource.CLOSED) n++;
    return n;
  }

  function updateControls() {
    if (!els.generate) return;
    const full = openStreams() >= MAX_OPEN_STREAMS;
    els.generate.disabled = full;
    els.generate.title = full ? `At most ${MAX_OPEN_STREAMS} jobs at a time: a browser opens only 6 connections to one server over HTTP/1.1` : "";
    els.clear.hidden = !Object.values(jobs).some((j) => j.done);
  }

  function clearFinished() {
    for (const [id, job] of Object.entries(jobs)) {
      if (!job.done) continue;
      cards.get(id)?.remove();
      cards.delete(id);
      sources.delete(id);
      delete jobs[id];
    }
    els.empty.hidden = cards.size > 0;
    updateControls();
  }

  function setNotice(text, isError) {
    els.notice.textContent = text;
    els.notice.classList.toggle("error", !!isError);
  }

  function init() {
    els.generate = $("#generate");
    els.outcome = $("#outcome");
    els.clear = $("#clear");
    els.notice = $("#notice");
    els.jobs = $("#jobs");
    els.empty = $("#empty");
    els.template = $("#card-template");
    els.generate.addEventListener("click", () => {
      const failAtStep = Number(els.outcome.value) || 0;
      start(failAtStep ? { failAtStep } : {});
    });
    els.clear.addEventListener("click", clearFinished);
    for (const v of new URLSearchParams(location.search).getAll("watch")) {
      for (const id of v.split(",")) if (id.trim()) watch(id.trim(), "", { title: "Watched job" });
    }
    // Count the time left down between progress events.
    setInterval(() => {
      for (const job of Object.values(jobs)) {
        if (!job.done && job.status === "processing") $(".eta", cards.get(job.jobId)).textContent = etaText(job);
      }
    }, 1000);
    document.body.dataset.ready = "1";
  }

  window.__ssegate = {
    jobs,
    start,
    watch,
    // snapshot returns a plain copy of every job's state, with the
    // readyState of its EventSource (2: CLOSED).
    snapshot() {
      const out = {};
      for (const [id, job] of Object.entries(jobs)) {
        const es = sources.get(id);
        out[id] = { ...structuredClone(job), readyState: es ? es.readyState : -1 };
      }
      return out;
    },
  };

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();
