package protocol_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/ssegate/ssegate/pkg/event"
	"github.com/ssegate/ssegate/pkg/protocol"
	"github.com/ssegate/ssegate/test/redistest"
)

// The data a buggy worker might send, built the way docs/protocol.md says,
// then broken one piece at a time.
const (
	refuseJob      = "j"
	refuseNewJob   = "k"
	refuseProgress = `{"type":"progress","jobId":"j","step":1,"totalSteps":4,"currentStep":"Loading","percentage":25,"estimatedRemainingMs":null,"timestamp":"2026-11-27T03:55:26.227Z"}`
	refuseStatus   = `{"type":"status","jobId":"j","status":"processing","timestamp":"2026-11-27T03:55:26.227Z"}`
	refuseComplete = `{"type":"complete","jobId":"j","reportId":"r-1","hasReport":true,"timestamp":"2026-11-27T03:55:26.227Z"}`
	refuseError    = `{"type":"error","jobId":"j","error":"boom","code":"BOOM","retryable":false,"timestamp":"2026-11-27T03:55:26.227Z"}`
	refuseRegister = `{"type":"status","jobId":"k","status":"pending","timestamp":"2026-11-27T03:55:26.227Z"}`
)

// progressArgv is a valid progress publish of job j: ARGV[1..12].
func progressArgv() []any {
	return []any{"1", "publish", "progress", refuseProgress, "", "", "1", "4", "1000", "86400000", "3600000", "PUBLISH"}
}

// with returns the progress ARGV with ARGV[i] (1-based) set to v, in pairs.
func with(kv ...any) []any {
	a := progressArgv()
	for i := 0; i < len(kv); i += 2 {
		a[kv[i].(int)-1] = kv[i+1]
	}
	return a
}

func jobKeys(job string) []string {
	return []string{keys.Events(job), keys.State(job), keys.Live(job)}
}

type refusalCase struct {
	name string
	keys []string // nil: the three keys of job j
	argv []any
	code string // the reply's first word
}

func refusalCases() []refusalCase {
	j := jobKeys(refuseJob)
	reg := func(data string) []any {
		return []any{"1", "register", "status", data, "pending", "", "0", "0", "1000", "86400000", "3600000", "PUBLISH"}
	}
	complete := func(data, report string) []any {
		return with(3, "complete", 4, data, 6, report, 7, "0", 8, "0")
	}
	return []refusalCase{
		// Keys.
		{"no keys", []string{}, progressArgv(), "SSEGATE_KEYS"},
		{"two keys (no live channel)", j[:2], progressArgv(), "SSEGATE_KEYS"},
		{"four keys", append(slices.Clone(j), "ssegate:{j}:extra"), progressArgv(), "SSEGATE_KEYS"},
		{"keys out of order", []string{j[1], j[0], j[2]}, progressArgv(), "SSEGATE_KEYS"},
		{"keys of two jobs", []string{j[0], j[1], keys.Live("other")}, progressArgv(), "SSEGATE_KEYS"},

		// Arguments.
		{"11 arguments", nil, progressArgv()[:11], "SSEGATE_BAD_ARGS"},
		{"13 arguments", nil, append(progressArgv(), "extra"), "SSEGATE_BAD_ARGS"},
		{"version 2", nil, with(1, "2"), "SSEGATE_VERSION"},
		{"version empty", nil, with(1, ""), "SSEGATE_VERSION"},
		{"unknown op", nil, with(2, "delete"), "SSEGATE_BAD_ARGS"},
		{"unknown type", nil, with(3, "heartbeat", 4, strings.Replace(refuseProgress, `"progress"`, `"heartbeat"`, 1)), "SSEGATE_BAD_ARGS"},
		{"status completed", nil, with(3, "status", 4, strings.Replace(refuseStatus, "processing", "completed", 1), 5, "completed"), "SSEGATE_BAD_ARGS"},
		{"status unknown", nil, with(3, "status", 4, refuseStatus, 5, "bogus"), "SSEGATE_BAD_ARGS"},
		{"step not a number", nil, with(7, "one"), "SSEGATE_BAD_ARGS"},
		{"step a fraction", nil, with(7, "1.5"), "SSEGATE_BAD_ARGS"},
		{"step negative", nil, with(7, "-1"), "SSEGATE_BAD_ARGS"},
		{"total zero", nil, with(7, "0", 8, "0"), "SSEGATE_BAD_ARGS"},
		{"step above total", nil, with(7, "5"), "SSEGATE_BAD_ARGS"},
		{"maxlen with exponent", nil, with(9, "1e3"), "SSEGATE_BAD_ARGS"},
		{"maxlen zero", nil, with(9, "0"), "SSEGATE_BAD_ARGS"},
		{"maxlen beyond 64 bits", nil, with(9, "100000000000000000000"), "SSEGATE_BAD_ARGS"},
		{"stale TTL a fraction", nil, with(10, "1.5"), "SSEGATE_BAD_ARGS"},
		{"stale TTL empty", nil, with(10, ""), "SSEGATE_BAD_ARGS"},
		{"stale TTL beyond any expiry", nil, with(10, "99999999999999999999"), "SSEGATE_BAD_ARGS"},
		{"retention hex", nil, with(11, "0x10"), "SSEGATE_BAD_ARGS"},
		{"retention beyond any expiry", nil, with(3, "complete", 4, refuseComplete, 6, `{"rows":1}`, 7, "0", 8, "0", 11, "99999999999999999999"), "SSEGATE_BAD_ARGS"},
		{"publish command XADD", nil, with(12, "XADD"), "SSEGATE_BAD_ARGS"},
		{"publish command lower case", nil, with(12, "publish"), "SSEGATE_BAD_ARGS"},

		// Data.
		{"data not JSON", nil, with(4, "not json"), "SSEGATE_BAD_DATA"},
		{"data a truncated object", nil, with(4, refuseProgress[:40]), "SSEGATE_BAD_DATA"},
		{"data an object and more", nil, with(4, refuseProgress+`{}`), "SSEGATE_BAD_DATA"},
		{"data an object with a trailing comma", nil, with(4, `{"type":"progress",}`), "SSEGATE_BAD_DATA"},
		{"data a JSON array", nil, with(4, "["+refuseProgress+"]"), "SSEGATE_BAD_DATA"},
		{"data an empty array", nil, with(4, "[]"), "SSEGATE_BAD_DATA"},
		{"data a JSON string", nil, with(4, `"`+strings.ReplaceAll(refuseProgress, `"`, `\"`)+`"`), "SSEGATE_BAD_DATA"},
		{"data a JSON number", nil, with(4, "42"), "SSEGATE_BAD_DATA"},
		{"data JSON null", nil, with(4, "null"), "SSEGATE_BAD_DATA"},
		{"data empty", nil, with(4, ""), "SSEGATE_BAD_DATA"},
		{"data with a leading space", nil, with(4, " "+refuseProgress), "SSEGATE_BAD_DATA"},
		{"data on two lines", nil, with(4, strings.Replace(refuseProgress, `,"step"`, ",\n\"step\"", 1)), "SSEGATE_BAD_DATA"},
		{"data with NaN", nil, with(4, strings.Replace(refuseProgress, `"percentage":25`, `"percentage":NaN`, 1)), "SSEGATE_BAD_DATA"},
		{"data with Infinity", nil, with(4, strings.Replace(refuseProgress, `"percentage":25`, `"percentage":-Infinity`, 1)), "SSEGATE_BAD_DATA"},
		{"data with a hex number", nil, with(4, strings.Replace(refuseProgress, `"percentage":25`, `"percentage":0x19`, 1)), "SSEGATE_BAD_DATA"},
		{"data with a leading zero", nil, with(4, strings.Replace(refuseProgress, `"percentage":25`, `"percentage":025`, 1)), "SSEGATE_BAD_DATA"},
		{"data with a plus sign", nil, with(4, strings.Replace(refuseProgress, `"percentage":25`, `"percentage":+25`, 1)), "SSEGATE_BAD_DATA"},
		{"data with a bare point", nil, with(4, strings.Replace(refuseProgress, `"percentage":25`, `"percentage":25.`, 1)), "SSEGATE_BAD_DATA"},
		{"data of another job", nil, with(4, strings.Replace(refuseProgress, `"jobId":"j"`, `"jobId":"other"`, 1)), "SSEGATE_BAD_DATA"},
		{"data without a jobId", nil, with(4, strings.Replace(refuseProgress, `"jobId":"j",`, ``, 1)), "SSEGATE_BAD_DATA"},
		{"data with a numeric jobId", nil, with(4, strings.Replace(refuseProgress, `"jobId":"j"`, `"jobId":7`, 1)), "SSEGATE_BAD_DATA"},
		{"data of another type", nil, with(4, refuseError), "SSEGATE_BAD_DATA"},
		{"data without a type", nil, with(4, strings.Replace(refuseProgress, `"type":"progress",`, ``, 1)), "SSEGATE_BAD_DATA"},
		{"data with another status", nil, with(3, "status", 4, refuseStatus, 5, "pending"), "SSEGATE_BAD_DATA"},
		{"data with another step", nil, with(7, "2"), "SSEGATE_BAD_DATA"},
		{"data with another total", nil, with(8, "5"), "SSEGATE_BAD_DATA"},
		{"complete without hasReport, with a report", nil, complete(strings.Replace(refuseComplete, "true", "false", 1), `{"rows":1}`), "SSEGATE_BAD_DATA"},
		{"complete with hasReport, without a report", nil, complete(refuseComplete, ""), "SSEGATE_BAD_DATA"},
		{"register of another job's data", jobKeys(refuseNewJob), reg(strings.Replace(refuseRegister, `"jobId":"k"`, `"jobId":"j"`, 1)), "SSEGATE_BAD_DATA"},
		{"register with data not JSON", jobKeys(refuseNewJob), reg(`{"type":"status"`), "SSEGATE_BAD_DATA"},

		// Report.
		{"report not JSON", nil, complete(refuseComplete, `{"rows":`), "SSEGATE_BAD_REPORT"},
		{"report two values", nil, complete(refuseComplete, `{} {}`), "SSEGATE_BAD_REPORT"},
		{"report with NaN", nil, complete(refuseComplete, `{"total":NaN}`), "SSEGATE_BAD_REPORT"},
		{"report with a hex number", nil, complete(refuseComplete, `[0x10]`), "SSEGATE_BAD_REPORT"},
		{"report on a progress event", nil, with(6, `{"rows":1}`), "SSEGATE_BAD_REPORT"},
	}
}

// dbSnapshot is everything in the database: each key's serialized value
// and expiry. A refusal must leave it exactly as it was.
type dbSnapshot map[string]string

func snapshot(t *testing.T, ctx context.Context, rdb *redis.Client) dbSnapshot {
	t.Helper()
	ks, err := rdb.Keys(ctx, "*").Result()
	if err != nil {
		t.Fatal(err)
	}
	s := dbSnapshot{}
	for _, k := range ks {
		dump, err := rdb.Dump(ctx, k).Result()
		if err != nil {
			t.Fatal(err)
		}
		s[k] = fmt.Sprintf("pttl=%d dump=%q", rdb.PTTL(ctx, k).Val().Milliseconds(), dump)
	}
	return s
}

// describe is a readable view of job j for failure messages.
func describe(ctx context.Context, rdb *redis.Client) string {
	return fmt.Sprintf("XLEN %d, HGETALL %v, PTTL %v/%v, keys %v",
		rdb.XLen(ctx, keys.Events(refuseJob)).Val(), rdb.HGetAll(ctx, keys.State(refuseJob)).Val(),
		rdb.PTTL(ctx, keys.Events(refuseJob)).Val(), rdb.PTTL(ctx, keys.State(refuseJob)).Val(),
		rdb.Keys(ctx, "*").Val())
}

// TestPublishScriptRefusesBadInputAndWritesNothing sends what a buggy worker
// would (raw EVAL and EVALSHA, no Go library in between) and checks that each
// call is refused with its SSEGATE_ code and writes nothing: no stream entry,
// the state hash and every other key unchanged, no expiry refreshed, no live
// message. It needs a real redis-server: its Lua has cjson, as the script
// needs, and it is what workers run against.
func TestPublishScriptRefusesBadInputAndWritesNothing(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t) // fails in CI without redis-server
	if !srv.Real() {
		t.Skip("the script's refusals are checked against a real redis-server")
	}
	rdb := srv.Client(t)
	ctx := context.Background()

	register(t, rdb, refuseJob)
	if _, err := protocol.Publish(ctx, rdb, keys, refuseJob, protocol.PublishArgs{
		Op: protocol.OpPublish, Type: event.TypeStatus, Status: event.StatusProcessing, Data: refuseStatus,
	}); err != nil {
		t.Fatal(err)
	}
	// Without an expiry, any refresh of it shows (PTTL -1 becomes positive).
	for _, k := range []string{keys.Events(refuseJob), keys.State(refuseJob)} {
		if !rdb.Persist(ctx, k).Val() {
			t.Fatalf("PERSIST %s", k)
		}
	}
	sha, err := rdb.ScriptLoad(ctx, protocol.PublishSource()).Result()
	if err != nil {
		t.Fatal(err)
	}

	// Every message on every channel; a marker published after each call
	// bounds the wait: a live message of the call would come before it.
	sub := srv.Client(t).PSubscribe(ctx, "*")
	defer sub.Close()
	if _, err := sub.Receive(ctx); err != nil {
		t.Fatal(err)
	}
	live := sub.Channel()
	marker := 0
	liveMessages := func() []string {
		t.Helper()
		marker++
		name := fmt.Sprintf("marker-%d", marker)
		if err := rdb.Publish(ctx, "refusal-test-marker", name).Err(); err != nil {
			t.Fatal(err)
		}
		var got []string
		timeout := time.After(5 * time.Second)
		for {
			select {
			case m := <-live:
				if m.Channel == "refusal-test-marker" && m.Payload == name {
					return got
				}
				got = append(got, m.Channel+": "+m.Payload)
			case <-timeout:
				t.Fatalf("marker %s not received", name)
			}
		}
	}

	for _, c := range refusalCases() {
		ks := c.keys
		if ks == nil {
			ks = jobKeys(refuseJob)
		}
		for _, via := range []string{"EVAL", "EVALSHA"} {
			t.Run(c.name+"/"+via, func(t *testing.T) {
				before, beforeDesc := snapshot(t, ctx, rdb), describe(ctx, rdb)
				args := []any{via, protocol.PublishSource(), len(ks)}
				if via == "EVALSHA" {
					args[1] = sha
				}
				for _, k := range ks {
					args = append(args, k)
				}
				args = append(args, c.argv...)
				res, err := rdb.Do(ctx, args...).Result()
				switch {
				case err == nil:
					t.Errorf("reply %v, want an error %s", res, c.code)
				case !strings.HasPrefix(err.Error(), c.code+" "):
					t.Errorf("reply error %q, want one starting with %s", err, c.code)
				}
				if msgs := liveMessages(); len(msgs) > 0 {
					t.Errorf("live messages sent: %q", msgs)
				}
				if after := snapshot(t, ctx, rdb); !equalSnapshots(before, after) {
					t.Errorf("the call wrote to Redis:\n before: %s\n after:  %s", beforeDesc, describe(ctx, rdb))
					restore(t, ctx, rdb, before)
				}
			})
		}
	}

	// The same base call, unbroken, is accepted: the checks above would
	// have seen its writes.
	t.Run("valid call writes", func(t *testing.T) {
		before := snapshot(t, ctx, rdb)
		args := append([]any{"EVAL", protocol.PublishSource(), 3}, toAny(jobKeys(refuseJob))...)
		if _, err := rdb.Do(ctx, append(args, progressArgv()...)...).Result(); err != nil {
			t.Fatal(err)
		}
		if msgs := liveMessages(); len(msgs) != 1 {
			t.Errorf("live messages %q, want one", msgs)
		}
		if equalSnapshots(before, snapshot(t, ctx, rdb)) {
			t.Error("a valid publish changed nothing")
		}
	})
}

func toAny(ss []string) []any {
	a := make([]any, len(ss))
	for i, s := range ss {
		a[i] = s
	}
	return a
}

func equalSnapshots(a, b dbSnapshot) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

// restore puts the database back as before, so that one case that wrote
// does not make every later case fail too.
func restore(t *testing.T, ctx context.Context, rdb *redis.Client, s dbSnapshot) {
	t.Helper()
	if err := rdb.FlushDB(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	for k, v := range s {
		var pttl int64
		var dump string
		if _, err := fmt.Sscanf(v, "pttl=%d dump=%q", &pttl, &dump); err != nil {
			t.Fatal(err)
		}
		if pttl < 0 {
			pttl = 0
		}
		if err := rdb.Restore(ctx, k, time.Duration(pttl)*time.Millisecond, dump).Err(); err != nil {
			t.Fatalf("RESTORE %s: %v", k, err)
		}
	}
}

// TestPublishRefusalSentinels checks the Go errors of the new refusals: each
// has its sentinel, and each is also ErrBadArgs, as before.
func TestPublishRefusalSentinels(t *testing.T) {
	t.Parallel()
	forEachBackend(t, func(t *testing.T, srv *redistest.Server, rdb *redis.Client) {
		ctx := context.Background()
		register(t, rdb, refuseJob)
		for _, c := range []struct {
			a    protocol.PublishArgs
			want error
		}{
			{protocol.PublishArgs{Op: protocol.OpPublish, Type: event.TypeError, Data: strings.Replace(refuseError, `"jobId":"j"`, `"jobId":"other"`, 1)}, protocol.ErrBadData},
			{protocol.PublishArgs{Op: protocol.OpPublish, Type: event.TypeComplete, Data: refuseComplete, Report: `{"rows":`}, protocol.ErrBadReport},
			{protocol.PublishArgs{Op: protocol.OpPublish, Type: event.TypeError, Data: refuseError, Report: `{}`}, protocol.ErrBadReport},
		} {
			_, err := protocol.Publish(ctx, rdb, keys, refuseJob, c.a)
			if !errors.Is(err, c.want) || !errors.Is(err, protocol.ErrBadArgs) {
				t.Errorf("%+v: err = %v, want %v (and ErrBadArgs)", c.a, err, c.want)
			}
		}
		if errors.Is(protocol.ErrBadData, protocol.ErrBadReport) || errors.Is(protocol.ErrBadArgs, protocol.ErrBadData) {
			t.Error("the sentinels are not distinct")
		}
	})
}

// TestPublishScriptReportIsJSONAsGoReadsIt checks that the script takes a
// report exactly when encoding/json does (cjson alone takes NaN, hex, 01 and
// raw control characters, and refuses lone surrogates), over tricky cases and
// random mutations of valid JSON.
func TestPublishScriptReportIsJSONAsGoReadsIt(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	if !srv.Real() {
		t.Skip("the script's refusals are checked against a real redis-server")
	}
	rdb := srv.Client(t)
	ctx := context.Background()
	reports := []string{
		`0`, `-0`, `1e+05`, `1E-5`, `-0.5e3`, `10.05`, `1.`, `.5`, `01`, `-01`, `+1`, `1e`, `1e+`, `-`, `0x10`,
		`NaN`, `Infinity`, `-Infinity`, `nan`, `inf`, `true`, `false`, `null`, `nul`, `"x"`, `""`, `"\u00e9"`,
		`"\ud800"`, `"\udc00x"`, `"\ud83d\ude00"`, `"\\ud800"`, `"\\"`, `"\"`, "\"a\tb\"", "\"a\x01b\"", "\"a\x7fb\"",
		"{\n\t\"a\": [true, false, null]\r\n}", `{"a":1,}`, `[1,]`, `{} {}`, `{}x`, `[`, `]`, `{"a"}`, `{"a":}`,
		`{"e":1e5,"E":[1E5,-1e-5,0e0,0.0e+0]}`, `-.5`, `1.e5`, `0x1p3`, `-nan`, `nan(1)`, `infinity`, `-0.0E-0`, `[-0]`, `{"a":"NaN","b":"0x10","c":"01"}`, `["\"", "\\", "\/"]`,
	}
	seeds := []string{
		`{"a":[1,-2.5e+3,true,null,"x\"\\u00e9"],"b":{"c":0.5,"d":[]}}`,
		`[0,10,-0.0,1E9,"e",{"f":false}]`,
		`-10.5e-3`,
		`"a\tb\u00e9c"`,
	}
	const alphabet = "{}[]:,\"\\ 0123456789.eE+-tfnualsxXNIiAyu\t\n\x01"
	rnd := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < 5000; i++ {
		b := []byte(seeds[i%len(seeds)])
		for n := 1 + rnd.IntN(3); n > 0; n-- {
			at := rnd.IntN(len(b))
			switch c := alphabet[rnd.IntN(len(alphabet))]; rnd.IntN(3) {
			case 0:
				b = append(b[:at], b[at+1:]...)
			case 1:
				b = append(b[:at], append([]byte{c}, b[at:]...)...)
			default:
				b[at] = c
			}
		}
		reports = append(reports, string(b))
	}
	valid := 0
	for i, r := range reports {
		if r == "" {
			continue
		}
		job := fmt.Sprintf("report-%d", i)
		register(t, rdb, job)
		data := strings.Replace(refuseComplete, `"jobId":"j"`, `"jobId":"`+job+`"`, 1)
		args := append([]any{"EVAL", protocol.PublishSource(), 3}, toAny(jobKeys(job))...)
		args = append(args, "1", "publish", "complete", data, "", r, "0", "0", "1000", "86400000", "3600000", "PUBLISH")
		_, err := rdb.Do(ctx, args...).Result()
		want := json.Valid([]byte(r))
		if want {
			valid++
		}
		switch {
		case want && err != nil:
			t.Errorf("report %q is JSON, refused: %v", r, err)
		case !want && (err == nil || !strings.HasPrefix(err.Error(), "SSEGATE_BAD_REPORT ")):
			t.Errorf("report %q is not JSON, reply %v", r, err)
		}
	}
	t.Logf("%d reports, %d of them JSON", len(reports), valid)
}

// TestPublishScriptTakesEveryValidEdgeCase: what JSON allows is taken, on
// both backends (miniredis's Lua is the embedded demo Redis's).
func TestPublishScriptTakesEveryValidEdgeCase(t *testing.T) {
	t.Parallel()
	forEachBackend(t, func(t *testing.T, srv *redistest.Server, rdb *redis.Client) {
		ctx := context.Background()
		for i, report := range []string{
			`null`, `0`, `"\ud800"`, `"\\"`, "{\n\t\"a\": [1e5, -0.5, 1E-7, -0, true, false, null, \"x\\\"y\"]\r\n}",
			`{"title":"Ünïcode \u00e9 \ud83d\ude00","rows":[[1,2.25],[3,-4]],"empty":{},"none":[]}`,
		} {
			job := fmt.Sprintf("edge-%d", i)
			register(t, rdb, job)
			step := `{"type":"progress","jobId":"` + job + `","step":1,"totalSteps":2,"currentStep":"\u00e9t\u00e9 \"quoted\" \\ \ud800","percentage":50,"estimatedRemainingMs":null,"timestamp":"2026-11-27T03:55:26.227Z"}`
			if _, err := protocol.Publish(ctx, rdb, keys, job, protocol.PublishArgs{
				Op: protocol.OpPublish, Type: event.TypeProgress, Step: 1, Total: 2, Data: step,
			}); err != nil {
				t.Errorf("progress %s: %v", step, err)
			}
			done := strings.Replace(refuseComplete, `"jobId":"j"`, `"jobId":"`+job+`"`, 1)
			if _, err := protocol.Publish(ctx, rdb, keys, job, protocol.PublishArgs{
				Op: protocol.OpPublish, Type: event.TypeComplete, Data: done, Report: report,
			}); err != nil {
				t.Errorf("report %q: %v", report, err)
			}
			if got := rdb.HGet(ctx, keys.State(job), "report").Val(); got != report {
				t.Errorf("stored report %q, want %q", got, report)
			}
		}
	})
}
