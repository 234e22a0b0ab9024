// Package demo is ssegate's live demo: a page that starts simulated report
// jobs and watches them with the browser's own EventSource, and the
// simulated report worker behind it, which publishes through package
// publisher exactly as a real worker would.
//
// cmd/gateway mounts a Demo in demo mode (on by default when it runs on its
// embedded Redis); package gateway knows nothing about it. A Demo serves
//
//	GET  /                  the page
//	GET  /demo/static/...   its stylesheet and script (embedded)
//	POST /demo/jobs         register a job and run a simulated 8-step report
//
// POST /demo/jobs takes an optional JSON body {"failAtStep": N, "steps": 8,
// "stepScale": 1.0} (failAtStep 0 succeeds; steps 1 to 8; stepScale, 0.1 to
// 10, multiplies the server's WithStepScale) and answers 201 {"jobId",
// "streamUrl", "steps", "failAtStep"}. The job is registered before the
// answer, and streamUrl names the register event as its lastEventId: a
// client that opens it gets every later event of the job exactly once,
// however late it connects. Bad input gets 400 (413 for a body over 4 KiB)
// with the gateway's JSON error shape {"error": "...", "code": "..."}. At
// most WithMaxJobs simulated jobs run at once; beyond that, and after
// Close, the answer is 503 with Retry-After, so a public demo cannot be made
// to run unbounded work.
//
// A simulated job publishes processing, then progress step 0 of 8 ("now at
// Fetching data"), then after each step the steps done and the name of the
// step now running, then complete with a small sales report, or, with
// failAtStep N, an error event with code UPSTREAM_TIMEOUT during step N.
// Step durations are uneven (about 12 s in all at scale 1).
//
// A Demo is safe for concurrent use. Every simulated job runs in a goroutine
// the Demo owns: Close cancels them (each running job then fails with code
// WORKER_STOPPED, so its watchers are not left waiting) and waits for them
// to return.
package demo
