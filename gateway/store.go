package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/ssegate/ssegate/pkg/event"
	"github.com/ssegate/ssegate/pkg/protocol"
)

// replayPage is how many stream entries one replay read returns.
const replayPage = 500

// store reads jobs from Redis. Every read is bounded by the request's
// context and the configured Redis timeout. It holds no state but the
// start reads waiting to be sent together: safe for concurrent use.
type store struct {
	rdb     redis.UniversalClient
	keys    protocol.Keys
	timeout time.Duration
	starts  startQueue
}

// jobState is what a gateway needs of a job's state hash. The report is
// never read with it: it can be large, and only some clients want it.
type jobState struct {
	status    event.Status
	progress  string // latest progress event JSON, or ""
	result    string // terminal event JSON (complete record or error), or ""
	lastID    protocol.ID
	updatedAt time.Time
}

var errCorruptState = errors.New("gateway: job state hash is not protocol v1")

// stateFields are the fields of a job's state hash that jobState holds,
// in the order parseState reads them.
var stateFields = []string{protocol.FieldStatus, protocol.FieldProgress, protocol.FieldResult, protocol.FieldLastID, protocol.FieldUpdatedAt}

// state returns the job's state, or nil if the job does not exist. It is
// sent with the other jobs' start reads that wait at the same time (see
// startQueue): the first streams of many jobs read their state before
// admission.
func (s *store) state(ctx context.Context, job string) (*jobState, error) {
	r, err := s.read(ctx, &startReq{what: "state", job: job})
	return r.st, err
}

// parseState turns the values of stateFields into a jobState; nil if the
// job does not exist.
func parseState(job string, vals []any) (*jobState, error) {
	str := func(i int) string { v, _ := vals[i].(string); return v }
	if str(0) == "" {
		return nil, nil
	}
	st := &jobState{status: event.Status(str(0)), progress: str(1), result: str(2)}
	var err error
	if st.lastID, err = protocol.ParseID(str(3)); err != nil || !st.status.Valid() {
		return nil, fmt.Errorf("state of %q: %w", job, errCorruptState)
	}
	if ms, err := strconv.ParseInt(str(4), 10, 64); err == nil {
		st.updatedAt = time.UnixMilli(ms)
	}
	return st, nil
}

// A startRead is what the start of a stream of a running job reads: the
// job's state and, for a resume, the history from the resume point.
type startRead struct {
	st      *jobState        // nil: no such job
	entries []redis.XMessage // up to replayPage entries after from
	found   bool             // from itself is still in the stream
	more    bool             // the stream holds more entries after these
}

// after returns up to replayPage stream entries after id, and whether id
// itself is still in the stream. An id that is not there any more (trimmed,
// or never an event of this job) means the entries cannot be trusted to
// follow on from it.
//
// It is sent with the other jobs' reads that wait at the same time (see
// startQueue): when a Redis master fails over, every job on it is refilled
// at once.
func (s *store) after(ctx context.Context, job string, id protocol.ID) (entries []redis.XMessage, found bool, err error) {
	// One read from the ID itself: it comes first if it is still there.
	r, err := s.read(ctx, &startReq{what: "history", job: job, noState: true, resume: true, from: id})
	return r.entries, r.found, err
}

// cutAfter takes the answer to XRANGE id + COUNT replayPage+1 and returns
// up to replayPage entries after id, whether id itself is still in the
// stream, and whether the stream holds more entries after those returned.
func cutAfter(entries []redis.XMessage, id protocol.ID) (after []redis.XMessage, found, more bool) {
	if len(entries) > 0 && entries[0].ID == id.String() {
		return entries[1:], true, len(entries) > replayPage
	}
	if id.IsZero() {
		// 0-0 comes before every event: the history after it is whole
		// unless trimming took the job's first event, its registration
		// (Register starts a fresh stream with it).
		found = len(entries) == 0 || isRegistration(entries[0])
	}
	if len(entries) > replayPage {
		return entries[:replayPage], found, true
	}
	return entries, found, false
}

// page returns up to n stream entries after id.
func (s *store) page(ctx context.Context, job string, id protocol.ID, n int64) ([]redis.XMessage, error) {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	entries, err := s.rdb.XRangeN(ctx, s.keys.Events(job), nextID(id).String(), "+", n).Result()
	if err != nil {
		return nil, fmt.Errorf("read history of %q: %w", job, err)
	}
	return entries, nil
}

// report returns the job's report if there is one of at most max bytes;
// a larger one comes back as nil with tooLarge set.
func (s *store) report(ctx context.Context, job string, max int) (report json.RawMessage, tooLarge bool, err error) {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	key := s.keys.State(job)
	n, err := s.rdb.HStrLen(ctx, key, protocol.FieldReport).Result()
	if err != nil {
		return nil, false, fmt.Errorf("read report size of %q: %w", job, err)
	}
	if n == 0 {
		return nil, false, nil
	}
	if n > int64(max) {
		return nil, true, nil
	}
	v, err := s.rdb.HGet(ctx, key, protocol.FieldReport).Result()
	if errors.Is(err, redis.Nil) {
		return nil, false, nil // expired between the two reads
	}
	if err != nil {
		return nil, false, fmt.Errorf("read report of %q: %w", job, err)
	}
	if !json.Valid([]byte(v)) {
		return nil, false, fmt.Errorf("report of %q: %w", job, errCorruptState)
	}
	return json.RawMessage(v), false, nil
}

// check reports, for each job, whether its state hash exists and its
// stream's newest ID: one pipelined EXISTS and XREVRANGE … COUNT 1 per job
// (each job its own slot on a Cluster).
func (s *store) check(ctx context.Context, jobs []string) ([]jobCheck, error) {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	pipe := s.rdb.Pipeline()
	exists := make([]*redis.IntCmd, len(jobs))
	tips := make([]*redis.XMessageSliceCmd, len(jobs))
	for i, job := range jobs {
		exists[i] = pipe.Exists(ctx, s.keys.State(job))
		tips[i] = pipe.XRevRangeN(ctx, s.keys.Events(job), "+", "-", 1)
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return nil, fmt.Errorf("check jobs: %w", err)
	}
	out := make([]jobCheck, len(jobs))
	for i := range jobs {
		out[i].exists = exists[i].Val() > 0
		if e := tips[i].Val(); len(e) > 0 {
			out[i].tip, _ = protocol.ParseID(e[0].ID)
		}
	}
	return out, nil
}

// isRegistration reports whether a stream entry is a job's first event:
// the pending status that Register writes.
func isRegistration(e redis.XMessage) bool {
	if typ, _ := e.Values["type"].(string); typ != string(event.TypeStatus) {
		return false
	}
	data, _ := e.Values["data"].(string)
	var st struct {
		Status event.Status `json:"status"`
	}
	return json.Unmarshal([]byte(data), &st) == nil && st.Status == event.StatusPending
}

// nextID is the smallest ID after id: XRANGE from it excludes id itself on
// every Redis version (the "(" form needs 6.2).
func nextID(id protocol.ID) protocol.ID {
	if id.Seq == ^uint64(0) {
		return protocol.ID{Ms: id.Ms + 1}
	}
	return protocol.ID{Ms: id.Ms, Seq: id.Seq + 1}
}

// entryID parses a stream entry's ID and fields.
func entryFields(e redis.XMessage) (protocol.ID, event.Type, string, error) {
	id, err := protocol.ParseID(e.ID)
	if err != nil {
		return id, "", "", err
	}
	typ, _ := e.Values["type"].(string)
	data, _ := e.Values["data"].(string)
	if typ == "" || data == "" {
		return id, "", "", fmt.Errorf("stream entry %s: %w", e.ID, errCorruptState)
	}
	return id, event.Type(typ), data, nil
}
