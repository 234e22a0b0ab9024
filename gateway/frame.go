package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/ssegate/ssegate/pkg/event"
	"github.com/ssegate/ssegate/pkg/protocol"
)

// A frame is one event of a job encoded for the wire once. The same frame
// (and the same bytes) goes to every client of the job; it is never
// modified after it is built, except for the report variant, built once on
// first use (under its sync.Once), so any number of drains read it at once.
type frame struct {
	id   protocol.ID // of the (last) event
	typ  event.Type  // of the (last) event
	wire []byte      // the event as every client gets it (complete: without the report)
	live bool        // delivered through pub/sub, so its age is a delivery latency

	// withReport is set for complete events of jobs that have a report: the
	// variant for clients that asked for it, fetched from Redis on first use.
	withReport *reportVariant

	// A batch frame carries a run of events in one queue slot (a gap refill
	// can be hundreds of events at once): event i has ID ids[i], type
	// types[i], and starts at wire[at[i]]. A client writes the suffix it
	// does not have yet.
	ids   []protocol.ID
	types []event.Type
	at    []int
}

// batch merges runs of frames into batch frames of up to n events each. A
// complete event with a report stays on its own: its bytes differ per client.
func batch(frames []*frame, n int) []*frame {
	var out []*frame
	var cur *frame
	for _, f := range frames {
		if f.withReport != nil || len(f.ids) > 0 {
			out, cur = append(out, f), nil
			continue
		}
		if cur == nil || len(cur.ids) == n {
			cur = &frame{}
			out = append(out, cur)
		}
		cur.ids = append(cur.ids, f.id)
		cur.types = append(cur.types, f.typ)
		cur.at = append(cur.at, len(cur.wire))
		cur.wire = append(cur.wire, f.wire...)
		cur.id, cur.typ = f.id, f.typ
	}
	return out
}

type reportVariant struct {
	once sync.Once
	load func() ([]byte, error)
	wire []byte
	err  error
}

// wireFor returns the bytes for a client. An error means the report could
// not be read: the client should come back for it rather than miss it.
func (f *frame) wireFor(includeReport bool) ([]byte, error) {
	if !includeReport || f.withReport == nil {
		return f.wire, nil
	}
	v := f.withReport
	v.once.Do(func() { v.wire, v.err = v.load() })
	if v.err != nil {
		return nil, v.err
	}
	return v.wire, nil
}

// encoder builds frames. It reads reports through the store. Safe for
// concurrent use (it holds only its settings).
type encoder struct {
	store     *store
	maxReport int
	metrics   *metrics // counts invalid events; nil in some unit tests
}

// frame builds the frame of one stored event: a stream entry or a live
// message, which carry the same type and data.
//
// Every event is checked against the event model here, once per frame
// (whatever the number of clients it goes to): one that fails is counted
// in ssegate_invalid_events_total{reason} and returned as an
// *event.InvalidError, for the caller to log and skip.
func (e *encoder) frame(job string, id protocol.ID, typ event.Type, data string, live bool) (*frame, error) {
	if err := event.Check(job, typ, []byte(data)); err != nil {
		if ie := (*event.InvalidError)(nil); errors.As(err, &ie) && e.metrics != nil {
			e.metrics.invalidEvents.WithLabelValues(ie.Reason).Inc()
		}
		return nil, fmt.Errorf("event %s of %q: %w", id, job, err)
	}
	f := &frame{id: id, typ: typ, live: live}
	if typ != event.TypeComplete {
		wire, err := encode(id, typ, []byte(data))
		if err != nil {
			return nil, err
		}
		f.wire = wire
		return f, nil
	}
	var rec event.CompleteRecord
	if err := json.Unmarshal([]byte(data), &rec); err != nil {
		return nil, fmt.Errorf("complete event %s of %q: %w", id, job, err)
	}
	base, err := encodeJSON(id, rec.ForClient(nil))
	if err != nil {
		return nil, err
	}
	f.wire = base
	if rec.HasReport {
		f.withReport = &reportVariant{load: func() ([]byte, error) {
			ctx, cancel := context.WithTimeout(context.Background(), e.store.timeout)
			defer cancel()
			report, tooLarge, err := e.store.report(ctx, job, e.maxReport)
			if err != nil {
				return nil, err
			}
			if tooLarge { // announce it without, and say where it is
				ev := rec.ForClient(nil)
				ev.ReportTooLarge, ev.ReportURL = true, reportURL(job)
				return encodeJSON(id, ev)
			}
			if report == nil { // gone meanwhile: announce it without
				return base, nil
			}
			return encodeJSON(id, rec.ForClient(report))
		}}
	}
	return f, nil
}

// encode returns the SSE bytes of an event with an id.
func encode(id protocol.ID, typ event.Type, data []byte) ([]byte, error) {
	m := event.Message{Event: string(typ), Data: data}
	if !id.IsZero() {
		m.ID = id.String()
	}
	return m.Bytes()
}

// encodeJSON marshals v (an event struct) and encodes it.
func encodeJSON(id protocol.ID, v event.Event) ([]byte, error) {
	data, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	return encode(id, v.EventType(), data)
}

// lines returns the field lines of m without the blank line that would end
// it as a block: a client parses them at once (retry:, id:, a comment), and
// the next block completes them. A block without data dispatches nothing in
// a WHATWG parser, but several other clients (@microsoft/fetch-event-source,
// tmaxmax/go-sse, r3labs/sse) hand it to the application as an empty
// message, so the gateway never ends one.
func lines(m event.Message) ([]byte, error) {
	b, err := m.Bytes()
	if err != nil {
		return nil, err
	}
	return b[:len(b)-1], nil
}

// heartbeat returns the SSE bytes of a heartbeat: no id, so it never moves
// the client's Last-Event-ID.
func heartbeat(now time.Time) []byte {
	b := make([]byte, 0, 96)
	b = append(b, "event: heartbeat\ndata: {\"type\":\"heartbeat\",\"timestamp\":\""...)
	b = now.UTC().AppendFormat(b, event.TimestampLayout)
	return append(b, "\"}\n\n"...)
}
