// Package e2e holds ssegate's browser tests: the demo page of the real
// cmd/gateway binary, against a real redis-server, driven in Debian's
// headless Chromium through chromedp. The page uses the browser's own
// EventSource, so these tests check what a browser user gets: every event
// rendered once, a resume with Last-Event-ID across a gateway restart, a
// job failure told apart from a connection problem, and no request after
// the terminal event.
//
// Chromium is found at /usr/bin/chromium, on PATH as chromium, or at
// CHROMIUM_BIN. Without it the tests are skipped, except with CI=true,
// where they fail. SSEGATE_UPDATE_SCREENSHOTS=1 makes TestDemoScreenshots
// write docs/demo-running.png and docs/demo-complete.png.
package e2e
