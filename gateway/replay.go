package gateway

import (
	"context"
	"encoding/json"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/ssegate/ssegate/pkg/event"
	"github.com/ssegate/ssegate/pkg/protocol"
)

// openStream is a stream of a running job whose answer is decided: what it
// writes first, and where it stands in the hub. It belongs to the request's
// goroutine.
type openStream struct {
	job     string
	q       streamQuery
	cl      *client
	js      *jobSub
	st      *jobState
	history []historyEntry // the first page after the resume point
	found   bool           // the resume point is in the retained history
	more    bool           // the stream holds more events after history
}

// begin writes the replay or the snapshot and tells the hub where the
// stream stands; live events follow (see stream). A reason means the
// stream is over already (the replay reached the terminal event, or a
// write failed); "" that it goes on.
func (s *Server) begin(ctx context.Context, w *writer, o *openStream) (reason string) {
	switch {
	case o.q.resume && o.found:
		// Exactly the events after the client's, from the stream.
		w.last = o.q.lastID
		if done, reason := s.replay(ctx, w, o.job, o.q, o.history, o.more); done {
			return reason
		}
	default:
		if o.q.resume {
			w.raw(s.resetEvent(o.job), event.TypeReset)
		}
		s.snapshot(w, o.job, o.st)
		// Then what followed the state (see sharedRead).
		if done, reason := s.replay(ctx, w, o.job, o.q, o.history, false); done {
			return reason
		}
	}
	if err := w.flush(); err != nil {
		return w.failed(o.cl, err)
	}
	s.hub.started(o.js, o.cl, w.last)
	o.history, o.st = nil, nil // not needed any more
	return ""
}

// historyEntry is a stream entry turned into a frame (or the error that
// made it unreadable).
type historyEntry struct {
	f   *frame
	err error
}

// history turns stream entries into frames.
func (e *encoder) history(job string, entries []redis.XMessage) []historyEntry {
	out := make([]historyEntry, 0, len(entries))
	for _, m := range entries {
		id, typ, data, err := entryFields(m)
		var f *frame
		if err == nil {
			f, err = e.frame(job, id, typ, data, false)
		}
		out = append(out, historyEntry{f, err})
	}
	return out
}

// replay writes the stream entries after the client's Last-Event-ID: page,
// then, while there are more, the stream's next pages. It reports whether the stream is over (the terminal event was
// written, or writing failed) and why.
func (s *Server) replay(ctx context.Context, w *writer, job string, q streamQuery, page []historyEntry, more bool) (bool, string) {
	for {
		for _, h := range page {
			if h.err != nil {
				s.log.Warn("skipping unreadable stream entry", "job", job, "err", h.err)
				continue
			}
			terminal, err := w.frame(h.f, q.includeReport, true)
			if err != nil {
				return true, w.failed(nil, err)
			}
			if terminal {
				if err := w.flush(); err != nil {
					return true, reasonClientGone
				}
				return true, reasonFinished
			}
		}
		if !more {
			return false, ""
		}
		if err := w.flush(); err != nil {
			return true, reasonClientGone
		}
		entries, err := s.store.page(ctx, job, w.last, replayPage)
		if err != nil {
			s.metrics.redisErrors.WithLabelValues("replay").Inc()
			return true, reasonRedis // the client resumes from what it got
		}
		page, more = s.enc.history(job, entries), len(entries) == replayPage
	}
}

// snapshot writes where a running job stands: its status, then its latest
// progress; the last of them carries the job's last event ID, so a resume
// from it is exact.
func (s *Server) snapshot(w *writer, job string, st *jobState) {
	status, _ := json.Marshal(event.StatusEvent{
		Type: event.TypeStatus, JobID: job, Status: st.status, Timestamp: event.At(st.updatedAt),
	})
	statusID := st.lastID
	if st.progress != "" {
		statusID = protocol.ID{}
	}
	if b, err := encode(statusID, event.TypeStatus, status); err == nil {
		w.raw(b, event.TypeStatus)
	}
	if st.progress != "" {
		if b, err := encode(st.lastID, event.TypeProgress, []byte(st.progress)); err == nil {
			w.raw(b, event.TypeProgress)
		}
	}
	w.last = st.lastID
}

// result writes the terminal event of a finished job, with its ID.
func (s *Server) result(w *writer, job string, q streamQuery, st *jobState) error {
	typ := event.TypeComplete
	if st.status == event.StatusFailed {
		typ = event.TypeError
	}
	f, err := s.enc.frame(job, st.lastID, typ, st.result, false)
	if err != nil {
		// The stored event is unreadable (it was logged and counted as
		// invalid): answer the terminal state as well as it can be told,
		// with the job's last event ID, so that the client stops instead of
		// coming back for ever.
		s.log.Warn("the terminal event of a finished job is unreadable; sending a stand-in", "job", job, "err", err)
		if f, err = s.standInResult(job, st); err != nil {
			return err
		}
	}
	w.last = protocol.ID{}
	_, err = w.frame(f, q.includeReport, false)
	return err
}

// standInResult is the terminal event of a finished job whose stored one
// cannot be read: a complete without its report (and the reportId if that
// much can be read), or an error with code UNREADABLE_EVENT.
func (s *Server) standInResult(job string, st *jobState) (*frame, error) {
	at := event.At(st.updatedAt)
	var e event.Event
	if st.status == event.StatusCompleted {
		var rec struct {
			ReportID string `json:"reportId"`
		}
		_ = json.Unmarshal([]byte(st.result), &rec)
		e = event.CompleteEvent{Type: event.TypeComplete, JobID: job, ReportID: rec.ReportID, Timestamp: at}
	} else {
		e = event.ErrorEvent{Type: event.TypeError, JobID: job, Error: "the job failed; its error event cannot be read",
			Code: CodeUnreadableEvent, Timestamp: at}
	}
	wire, err := encodeJSON(st.lastID, e)
	if err != nil {
		return nil, err
	}
	return &frame{id: st.lastID, typ: e.EventType(), wire: wire}, nil
}

func (s *Server) resetEvent(job string) []byte {
	b, _ := encodeJSON(protocol.ID{}, event.NewReset(job, event.ResetHistoryTrimmed, time.Now()))
	return b
}
