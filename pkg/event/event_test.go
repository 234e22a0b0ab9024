package event

import (
	"encoding/json"
	"testing"
	"time"
)

var t0 = time.Date(2026, 11, 27, 3, 40, 30, 123456789, time.FixedZone("CET", 3600))

func TestJSONShapes(t *testing.T) {
	t.Parallel()
	eta := int64(42000)
	tests := []struct {
		name string
		v    any
		want string
	}{
		{"status", NewStatus("abc", StatusProcessing, t0),
			`{"type":"status","jobId":"abc","status":"processing","timestamp":"2026-11-27T02:40:30.123Z"}`},
		{"progress", func() ProgressEvent {
			p := NewProgress("abc", 2, 8, "Aggregating", t0)
			p.EstimatedRemainingMs = &eta
			return p
		}(),
			`{"type":"progress","jobId":"abc","step":2,"totalSteps":8,"currentStep":"Aggregating","percentage":25,"estimatedRemainingMs":42000,"timestamp":"2026-11-27T02:40:30.123Z"}`},
		{"progress unknown estimate", NewProgress("abc", 0, 3, "", t0),
			`{"type":"progress","jobId":"abc","step":0,"totalSteps":3,"currentStep":"","percentage":0,"estimatedRemainingMs":null,"timestamp":"2026-11-27T02:40:30.123Z"}`},
		{"error", NewError("abc", "upstream timed out", "UPSTREAM_TIMEOUT", true, t0),
			`{"type":"error","jobId":"abc","error":"upstream timed out","code":"UPSTREAM_TIMEOUT","retryable":true,"timestamp":"2026-11-27T02:40:30.123Z"}`},
		{"complete with report", NewCompleteRecord("abc", "r-1", true, t0).ForClient(json.RawMessage(`{"rows":3}`)),
			`{"type":"complete","jobId":"abc","reportId":"r-1","includeReport":true,"report":{"rows":3},"timestamp":"2026-11-27T02:40:30.123Z"}`},
		{"complete without report", NewCompleteRecord("abc", "r-1", true, t0).ForClient(nil),
			`{"type":"complete","jobId":"abc","reportId":"r-1","includeReport":false,"timestamp":"2026-11-27T02:40:30.123Z"}`},
		{"complete record", NewCompleteRecord("abc", "r-1", true, t0),
			`{"type":"complete","jobId":"abc","reportId":"r-1","hasReport":true,"timestamp":"2026-11-27T02:40:30.123Z"}`},
		{"heartbeat", NewHeartbeat(t0),
			`{"type":"heartbeat","timestamp":"2026-11-27T02:40:30.123Z"}`},
		{"reset", NewReset("abc", ResetHistoryTrimmed, t0),
			`{"type":"reset","jobId":"abc","reason":"history_trimmed","timestamp":"2026-11-27T02:40:30.123Z"}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := json.Marshal(tt.v)
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != tt.want {
				t.Errorf("got  %s\nwant %s", got, tt.want)
			}
		})
	}
}

func TestTimestampAlwaysThreeDigits(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		in   time.Time
		want string
	}{
		{time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC), `"2026-01-02T03:04:05.000Z"`},
		{time.Date(2026, 1, 2, 3, 4, 5, 100_000_000, time.UTC), `"2026-01-02T03:04:05.100Z"`},
		{time.Date(2026, 1, 2, 3, 4, 5, 999_999_999, time.UTC), `"2026-01-02T03:04:05.999Z"`},
	} {
		b, _ := json.Marshal(At(tc.in))
		if string(b) != tc.want {
			t.Errorf("At(%v) = %s, want %s", tc.in, b, tc.want)
		}
		var back Timestamp
		if err := json.Unmarshal(b, &back); err != nil || !back.Equal(At(tc.in).Time) {
			t.Errorf("round trip of %s = %v, %v", b, back, err)
		}
	}
	var bad Timestamp
	if err := json.Unmarshal([]byte(`"yesterday"`), &bad); err == nil {
		t.Error("unmarshal of a non-RFC 3339 time succeeded")
	}
}

func TestStatus(t *testing.T) {
	t.Parallel()
	for _, s := range []Status{StatusPending, StatusProcessing, StatusCompleted, StatusFailed} {
		if !s.Valid() {
			t.Errorf("%q not valid", s)
		}
	}
	for _, s := range []Status{"", "done", "PENDING"} {
		if s.Valid() {
			t.Errorf("%q valid", s)
		}
	}
	if StatusPending.Terminal() || StatusProcessing.Terminal() || !StatusCompleted.Terminal() || !StatusFailed.Terminal() {
		t.Error("Terminal is wrong")
	}
	if TypeProgress.Terminal() || TypeStatus.Terminal() || !TypeError.Terminal() || !TypeComplete.Terminal() {
		t.Error("Type.Terminal is wrong")
	}
}

func TestPercentageFloors(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ step, total, want int }{
		{0, 8, 0}, {1, 3, 33}, {2, 3, 66}, {3, 3, 100}, {199, 200, 99}, {5, 0, 0},
	} {
		if got := NewProgress("j", tc.step, tc.total, "", t0).Percentage; got != tc.want {
			t.Errorf("%d/%d = %d%%, want %d%%", tc.step, tc.total, got, tc.want)
		}
	}
}
