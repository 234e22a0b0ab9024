package event

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// Reasons an event fails Check: the label of the gateway's
// ssegate_invalid_events_total.
const (
	InvalidType      = "type"      // not a published event type, or not the one the data says
	InvalidJSON      = "json"      // the data is not one line holding one JSON object
	InvalidJob       = "job"       // the data's jobId is not the job's
	InvalidShape     = "shape"     // a member of the wrong type, missing, or out of range
	InvalidTimestamp = "timestamp" // the timestamp is missing or not RFC 3339
)

// An InvalidError says why an event as stored (a stream entry or a live
// message) is not an event of the model.
type InvalidError struct {
	Reason string // one of the Invalid… constants
	Detail string
}

func (e *InvalidError) Error() string { return "invalid event (" + e.Reason + "): " + e.Detail }

func invalid(reason, format string, args ...any) error {
	return &InvalidError{Reason: reason, Detail: fmt.Sprintf(format, args...)}
}

// Check reports whether data, stored as an event of type typ of job, is an
// event of the model: a published type (status, progress, error, complete),
// one line of a JSON object of that type's shape whose type and jobId are
// typ and job, with an RFC 3339 timestamp. Members the shape does not name
// are allowed (a later protocol may add some). A complete event is checked
// as stored (CompleteRecord). The error is an *InvalidError.
func Check(job string, typ Type, data []byte) error {
	if bytes.ContainsAny(data, "\r\n") {
		return invalid(InvalidJSON, "the data spans more than one line")
	}
	if t := bytes.TrimLeft(data, " \t"); len(t) == 0 || t[0] != '{' {
		return invalid(InvalidJSON, "the data is not a JSON object")
	}
	// One pass: Unmarshal validates the whole input before it decodes, and
	// every member a shape needs is decoded here. A missing member decodes
	// as its zero value, which each rule below refuses where it matters.
	var m struct {
		Type       Type   `json:"type"`
		JobID      string `json:"jobId"`
		Timestamp  string `json:"timestamp"`
		Status     Status `json:"status"`
		Step       int    `json:"step"`
		TotalSteps int    `json:"totalSteps"`
		Percentage int    `json:"percentage"`
		Remaining  *int64 `json:"estimatedRemainingMs"`
		Error      string `json:"error"`
		Retryable  bool   `json:"retryable"`
		HasReport  bool   `json:"hasReport"`
		Current    string `json:"currentStep"`
		Code       string `json:"code"`
		ReportID   string `json:"reportId"`
	}
	if err := json.Unmarshal(data, &m); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			if te.Field == "timestamp" {
				return invalid(InvalidTimestamp, "the timestamp is not a string")
			}
			if te.Field == "type" {
				return invalid(InvalidType, "the data's type is not a string")
			}
			return invalid(InvalidShape, "member %q is not a %s", te.Field, te.Type)
		}
		return invalid(InvalidJSON, "the data is not a JSON object: %v", err)
	}
	switch typ {
	case TypeStatus, TypeProgress, TypeError, TypeComplete:
	default:
		return invalid(InvalidType, "%q is not a published event type", typ)
	}
	if m.Type != typ {
		return invalid(InvalidType, "the data's type is not %q", typ)
	}
	if m.JobID != job {
		return invalid(InvalidJob, "the data's jobId is not %q", job)
	}
	if _, err := time.Parse(time.RFC3339Nano, m.Timestamp); err != nil {
		return invalid(InvalidTimestamp, "timestamp %q is not RFC 3339", m.Timestamp)
	}
	switch typ {
	case TypeStatus:
		if !m.Status.Valid() {
			return invalid(InvalidShape, "status %q is not one of pending, processing, completed, failed", m.Status)
		}
	case TypeProgress:
		if m.TotalSteps < 1 || m.Step < 0 || m.Step > m.TotalSteps || m.Percentage < 0 || m.Percentage > 100 {
			return invalid(InvalidShape, "step %d of %d at %d%% is out of range", m.Step, m.TotalSteps, m.Percentage)
		}
	case TypeError:
		if m.Error == "" {
			return invalid(InvalidShape, "an error event without its error message")
		}
	}
	return nil
}
