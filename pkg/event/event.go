// Package event defines the events ssegate delivers to clients: their types,
// their JSON shapes (the field names are the public API), and their
// Server-Sent Events wire form.
//
// Everything here is a plain value: safe to share between goroutines once
// built, never mutated by this package after construction.
package event

import (
	"encoding/json"
	"fmt"
	"time"
)

// Type is the SSE event name of an event and the "type" member of its JSON.
type Type string

// The event types.
const (
	TypeStatus    Type = "status"
	TypeProgress  Type = "progress"
	TypeError     Type = "error"    // the job failed; carries data, unlike a connection error
	TypeComplete  Type = "complete" // the job finished; may carry its report
	TypeHeartbeat Type = "heartbeat"
	TypeReset     Type = "reset" // the resume point was older than the retained history
)

// Terminal reports whether t ends a job: nothing is published after it.
func (t Type) Terminal() bool { return t == TypeError || t == TypeComplete }

// Status is the lifecycle state of a job.
type Status string

// The job statuses.
const (
	StatusPending    Status = "pending"
	StatusProcessing Status = "processing"
	StatusCompleted  Status = "completed"
	StatusFailed     Status = "failed"
)

// Valid reports whether s is one of the four known statuses.
func (s Status) Valid() bool {
	switch s {
	case StatusPending, StatusProcessing, StatusCompleted, StatusFailed:
		return true
	}
	return false
}

// Terminal reports whether s is a final status (completed or failed).
func (s Status) Terminal() bool { return s == StatusCompleted || s == StatusFailed }

// ResetHistoryTrimmed is the reason of a reset event sent when a client
// resumes from an event that is no longer in the job's retained history.
const ResetHistoryTrimmed = "history_trimmed"

// Timestamp is a point in time that marshals as RFC 3339 in UTC with exactly
// three fractional digits, e.g. "2026-11-27T03:40:30.123Z".
type Timestamp struct{ time.Time }

// TimestampLayout is the layout of every timestamp ssegate writes.
const TimestampLayout = "2006-01-02T15:04:05.000Z"

// At returns t as a Timestamp, truncated to the millisecond.
func At(t time.Time) Timestamp { return Timestamp{t.UTC().Truncate(time.Millisecond)} }

// MarshalJSON implements json.Marshaler.
func (t Timestamp) MarshalJSON() ([]byte, error) {
	b := make([]byte, 0, len(TimestampLayout)+2)
	b = append(b, '"')
	b = t.UTC().AppendFormat(b, TimestampLayout)
	return append(b, '"'), nil
}

// UnmarshalJSON implements json.Unmarshaler. It accepts any RFC 3339 time.
func (t *Timestamp) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("timestamp: %w", err)
	}
	v, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return fmt.Errorf("timestamp: %w", err)
	}
	t.Time = v.UTC()
	return nil
}

// StatusEvent reports a change of a job's status.
type StatusEvent struct {
	Type      Type      `json:"type"`
	JobID     string    `json:"jobId"`
	Status    Status    `json:"status"`
	Timestamp Timestamp `json:"timestamp"`
}

// ProgressEvent reports that a job finished step Step of TotalSteps.
type ProgressEvent struct {
	Type        Type   `json:"type"`
	JobID       string `json:"jobId"`
	Step        int    `json:"step"`
	TotalSteps  int    `json:"totalSteps"`
	CurrentStep string `json:"currentStep"`
	// Percentage is ⌊100 × Step / TotalSteps⌋, so 100 only at the last step.
	Percentage int `json:"percentage"`
	// EstimatedRemainingMs is the time left at the job's own pace so far:
	// time since processing started ÷ Step × (TotalSteps − Step); 0 at the
	// last step; null while it cannot be known yet (at step 0).
	EstimatedRemainingMs *int64    `json:"estimatedRemainingMs"`
	Timestamp            Timestamp `json:"timestamp"`
}

// ErrorEvent reports that a job failed. It is terminal.
type ErrorEvent struct {
	Type      Type      `json:"type"`
	JobID     string    `json:"jobId"`
	Error     string    `json:"error"`
	Code      string    `json:"code"`
	Retryable bool      `json:"retryable"`
	Timestamp Timestamp `json:"timestamp"`
}

// CompleteEvent reports that a job finished, as a client receives it. It is
// terminal. Report is present only when the client asked for it and the
// report was within the gateway's size limit; IncludeReport says which.
type CompleteEvent struct {
	Type          Type            `json:"type"`
	JobID         string          `json:"jobId"`
	ReportID      string          `json:"reportId"`
	IncludeReport bool            `json:"includeReport"`
	Report        json.RawMessage `json:"report,omitempty"`
	// ReportTooLarge is true, with ReportURL, when the client asked for
	// the report and it was over the gateway's inline limit: fetch it from
	// ReportURL (GET /api/reports/{jobId}/report) instead.
	ReportTooLarge bool      `json:"reportTooLarge,omitempty"`
	ReportURL      string    `json:"reportUrl,omitempty"`
	Timestamp      Timestamp `json:"timestamp"`
}

// CompleteRecord is the complete event as stored in Redis (stream, state hash
// and live message). Reports live only in the state hash, so the record says
// whether there is one; the gateway builds each client's CompleteEvent.
type CompleteRecord struct {
	Type      Type      `json:"type"`
	JobID     string    `json:"jobId"`
	ReportID  string    `json:"reportId"`
	HasReport bool      `json:"hasReport"`
	Timestamp Timestamp `json:"timestamp"`
}

// HeartbeatEvent keeps an idle stream open through proxies. It is sent
// without an id, so it never moves a client's Last-Event-ID.
type HeartbeatEvent struct {
	Type      Type      `json:"type"`
	Timestamp Timestamp `json:"timestamp"`
}

// ResetEvent tells a resuming client that events it missed are no longer
// retained; the job's current snapshot follows it.
type ResetEvent struct {
	Type      Type      `json:"type"`
	JobID     string    `json:"jobId"`
	Reason    string    `json:"reason"`
	Timestamp Timestamp `json:"timestamp"`
}

// NewStatus returns a status event.
func NewStatus(jobID string, s Status, now time.Time) StatusEvent {
	return StatusEvent{Type: TypeStatus, JobID: jobID, Status: s, Timestamp: At(now)}
}

// NewProgress returns a progress event for step of total with the
// percentage filled in. The estimate is left unknown (null); the publish
// script fills it from the job's pace (see package protocol).
func NewProgress(jobID string, step, total int, name string, now time.Time) ProgressEvent {
	pct := 0
	if total > 0 {
		pct = step * 100 / total
	}
	return ProgressEvent{
		Type: TypeProgress, JobID: jobID, Step: step, TotalSteps: total,
		CurrentStep: name, Percentage: pct, Timestamp: At(now),
	}
}

// NewError returns an error (job failed) event.
func NewError(jobID, message, code string, retryable bool, now time.Time) ErrorEvent {
	return ErrorEvent{Type: TypeError, JobID: jobID, Error: message, Code: code, Retryable: retryable, Timestamp: At(now)}
}

// NewCompleteRecord returns the stored form of a complete event.
func NewCompleteRecord(jobID, reportID string, hasReport bool, now time.Time) CompleteRecord {
	return CompleteRecord{Type: TypeComplete, JobID: jobID, ReportID: reportID, HasReport: hasReport, Timestamp: At(now)}
}

// ForClient turns the stored record into what a client receives. A nil
// report means the client gets includeReport:false and no report.
func (r CompleteRecord) ForClient(report json.RawMessage) CompleteEvent {
	return CompleteEvent{
		Type: TypeComplete, JobID: r.JobID, ReportID: r.ReportID,
		IncludeReport: report != nil, Report: report, Timestamp: r.Timestamp,
	}
}

// NewHeartbeat returns a heartbeat event.
func NewHeartbeat(now time.Time) HeartbeatEvent {
	return HeartbeatEvent{Type: TypeHeartbeat, Timestamp: At(now)}
}

// NewReset returns a reset event with the given reason.
func NewReset(jobID, reason string, now time.Time) ResetEvent {
	return ResetEvent{Type: TypeReset, JobID: jobID, Reason: reason, Timestamp: At(now)}
}

// Event is implemented by every event struct: its SSE event name.
type Event interface {
	EventType() Type
}

// EventType implements Event.
func (StatusEvent) EventType() Type { return TypeStatus }

// EventType implements Event.
func (ProgressEvent) EventType() Type { return TypeProgress }

// EventType implements Event.
func (ErrorEvent) EventType() Type { return TypeError }

// EventType implements Event.
func (CompleteEvent) EventType() Type { return TypeComplete }

// EventType implements Event.
func (CompleteRecord) EventType() Type { return TypeComplete }

// EventType implements Event.
func (HeartbeatEvent) EventType() Type { return TypeHeartbeat }

// EventType implements Event.
func (ResetEvent) EventType() Type { return TypeReset }
