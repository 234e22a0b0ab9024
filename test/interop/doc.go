// Package interop runs SSE clients that this project did not write (the
// eventsource and @microsoft/fetch-event-source npm packages, tmaxmax/go-sse,
// r3labs/sse and headless Chromium's EventSource) against the real gateway
// binary and a real redis-server, scenario by scenario. The README's client
// compatibility table is what these tests measure.
package interop
