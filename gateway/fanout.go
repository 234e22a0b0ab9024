package gateway

import "sync"

// fanChunk is how many streams one fan-out goroutine drains in turn.
const fanChunk = 256

// A fanOut wakes the streams an event was queued to. Starting a goroutine
// per stream, as wake does, costs more than writing the event (a broadcast
// to 5,000 clients would start 5,000 per event): the fan-out claims their
// drains instead and runs them in chunks of fanChunk on one goroutine each,
// writing without waiting (drainNow). A client that does not take the
// bytes at once gets a goroutine of its own to wait in, so a stalled client
// holds up nobody; so does a stream whose connection cannot be written
// without waiting (TLS, HTTP/2), as before.
//
// Concurrency: a fanOut belongs to the goroutine that fans out; the
// goroutines it starts own their chunks.
type fanOut struct {
	want  int // streams it may wake, to size its chunks
	chunk []*stream
}

// wake makes sure c's stream drains soon.
func (fo *fanOut) wake(c *client) {
	if st := c.st.Load(); st != nil {
		fo.wakeStream(st)
	} // else not started: its start drains
}

// wakeStream makes sure st drains soon.
func (fo *fanOut) wakeStream(st *stream) {
	if !st.claim() {
		return // its drain will look again
	}
	if st.now == nil {
		go st.drain()
		return
	}
	if fo.chunk == nil {
		fo.chunk = make([]*stream, 0, min(max(fo.want, 1), fanChunk))
	}
	fo.chunk = append(fo.chunk, st)
	if len(fo.chunk) == fanChunk {
		fo.run()
	}
}

// run starts the drains of the streams woken since the last run.
func (fo *fanOut) run() {
	if len(fo.chunk) == 0 {
		return
	}
	chunk := fo.chunk
	fo.chunk = nil
	go drainChunk(chunk)
}

var nbWriters = sync.Pool{New: func() any { return newNBWriter() }}

func drainChunk(chunk []*stream) {
	nb := nbWriters.Get().(*nbWriter)
	for _, st := range chunk {
		st.drainNow(nb)
	}
	nbWriters.Put(nb)
}
