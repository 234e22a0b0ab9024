package event

import (
	"encoding/json"
	"errors"
	"testing"
)

func TestCheck(t *testing.T) {
	t.Parallel()
	const ts = `"timestamp":"2026-11-27T03:40:30.123Z"`
	for _, tc := range []struct {
		name   string
		typ    Type
		data   string
		reason string // "" for valid
	}{
		{"status", TypeStatus, `{"type":"status","jobId":"j","status":"processing",` + ts + `}`, ""},
		{"progress", TypeProgress, `{"type":"progress","jobId":"j","step":2,"totalSteps":8,"currentStep":"x","percentage":25,"estimatedRemainingMs":null,` + ts + `}`, ""},
		{"error", TypeError, `{"type":"error","jobId":"j","error":"boom","code":"X","retryable":false,` + ts + `}`, ""},
		{"complete", TypeComplete, `{"type":"complete","jobId":"j","reportId":"r","hasReport":true,` + ts + `}`, ""},
		{"extra member", TypeStatus, `{"type":"status","jobId":"j","status":"pending","future":1,` + ts + `}`, ""},
		{"heartbeat is not published", TypeHeartbeat, `{"type":"heartbeat",` + ts + `}`, InvalidType},
		{"unknown type", "bogus", `{"type":"bogus","jobId":"j",` + ts + `}`, InvalidType},
		{"type mismatch", TypeStatus, `{"type":"progress","jobId":"j","status":"pending",` + ts + `}`, InvalidType},
		{"no type", TypeStatus, `{"jobId":"j","status":"pending",` + ts + `}`, InvalidType},
		{"array", TypeStatus, `["status"]`, InvalidJSON},
		{"string", TypeStatus, `"status"`, InvalidJSON},
		{"not JSON", TypeStatus, `{"type":"status",`, InvalidJSON},
		{"two lines", TypeStatus, "{\"type\":\"status\",\n\"jobId\":\"j\",\"status\":\"pending\"," + ts + "}", InvalidJSON},
		{"carriage return", TypeStatus, "{\"type\":\"status\",\r\"jobId\":\"j\",\"status\":\"pending\"," + ts + "}", InvalidJSON},
		{"empty", TypeStatus, ``, InvalidJSON},
		{"other job", TypeStatus, `{"type":"status","jobId":"k","status":"pending",` + ts + `}`, InvalidJob},
		{"no job", TypeStatus, `{"type":"status","status":"pending",` + ts + `}`, InvalidJob},
		{"no timestamp", TypeStatus, `{"type":"status","jobId":"j","status":"pending"}`, InvalidTimestamp},
		{"bad timestamp", TypeStatus, `{"type":"status","jobId":"j","status":"pending","timestamp":"yesterday"}`, InvalidTimestamp},
		{"numeric timestamp", TypeStatus, `{"type":"status","jobId":"j","status":"pending","timestamp":1700000000}`, InvalidTimestamp},
		{"bad status", TypeStatus, `{"type":"status","jobId":"j","status":"sleeping",` + ts + `}`, InvalidShape},
		{"step as string", TypeProgress, `{"type":"progress","jobId":"j","step":"2","totalSteps":8,"percentage":25,` + ts + `}`, InvalidShape},
		{"step above total", TypeProgress, `{"type":"progress","jobId":"j","step":9,"totalSteps":8,"percentage":100,` + ts + `}`, InvalidShape},
		{"no total", TypeProgress, `{"type":"progress","jobId":"j","step":0,"percentage":0,` + ts + `}`, InvalidShape},
		{"error without message", TypeError, `{"type":"error","jobId":"j","code":"X",` + ts + `}`, InvalidShape},
		{"hasReport as string", TypeComplete, `{"type":"complete","jobId":"j","reportId":"r","hasReport":"yes",` + ts + `}`, InvalidShape},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := Check("j", tc.typ, []byte(tc.data))
			if tc.reason == "" {
				if err != nil {
					t.Errorf("Check = %v, want valid", err)
				}
				return
			}
			var ie *InvalidError
			if !errors.As(err, &ie) || ie.Reason != tc.reason {
				t.Errorf("Check = %v, want reason %q", err, tc.reason)
			}
		})
	}
}

// The events the package builds pass its own check.
func TestCheckAcceptsBuiltEvents(t *testing.T) {
	t.Parallel()
	now := t0
	for _, e := range []Event{
		NewStatus("j", StatusProcessing, now), NewProgress("j", 1, 4, "a", now),
		NewError("j", "boom", "X", true, now), NewCompleteRecord("j", "r", true, now),
	} {
		data, err := json.Marshal(e)
		if err != nil {
			t.Fatal(err)
		}
		if err := Check("j", e.EventType(), data); err != nil {
			t.Errorf("%s: %v", e.EventType(), err)
		}
	}
}

// BenchmarkCheck checks one progress event as the gateway does, once per
// event whatever the number of clients.
func BenchmarkCheck(b *testing.B) {
	data := []byte(`{"type":"progress","jobId":"bench","step":2,"totalSteps":8,"currentStep":"Aggregating","percentage":25,"estimatedRemainingMs":42000,"timestamp":"2026-11-27T03:40:30.123Z"}`)
	b.ReportAllocs()
	for b.Loop() {
		if err := Check("bench", TypeProgress, data); err != nil {
			b.Fatal(err)
		}
	}
}
