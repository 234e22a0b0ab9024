package event

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
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
	if t := bytes.TrimLeft(data, " \t"); len(t) == 0 || t[0] != '{' || !json.Valid(data) {
		return invalid(InvalidJSON, "the data is not a JSON object")
	}
	var head struct {
		Type      *Type           `json:"type"`
		JobID     *string         `json:"jobId"`
		Timestamp json.RawMessage `json:"timestamp"`
	}
	if err := json.Unmarshal(data, &head); err != nil {
		return invalid(InvalidShape, "%v", err)
	}
	switch typ {
	case TypeStatus, TypeProgress, TypeError, TypeComplete:
	default:
		return invalid(InvalidType, "%q is not a published event type", typ)
	}
	if head.Type == nil || *head.Type != typ {
		return invalid(InvalidType, "the data's type is not %q", typ)
	}
	if head.JobID == nil || *head.JobID != job {
		return invalid(InvalidJob, "the data's jobId is not %q", job)
	}
	var ts Timestamp
	if len(head.Timestamp) == 0 || ts.UnmarshalJSON(head.Timestamp) != nil {
		return invalid(InvalidTimestamp, "no RFC 3339 timestamp")
	}
	return checkShape(typ, data)
}

// checkShape decodes data into its type's struct and checks the members
// that must be there.
func checkShape(typ Type, data []byte) error {
	shape := func(err error) error {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			return invalid(InvalidShape, "member %q is not a %s", te.Field, te.Type)
		}
		return invalid(InvalidShape, "%v", err)
	}
	switch typ {
	case TypeStatus:
		var e StatusEvent
		if err := json.Unmarshal(data, &e); err != nil {
			return shape(err)
		}
		if !e.Status.Valid() {
			return invalid(InvalidShape, "status %q is not one of pending, processing, completed, failed", e.Status)
		}
	case TypeProgress:
		var e ProgressEvent
		if err := json.Unmarshal(data, &e); err != nil {
			return shape(err)
		}
		if e.TotalSteps < 1 || e.Step < 0 || e.Step > e.TotalSteps || e.Percentage < 0 || e.Percentage > 100 {
			return invalid(InvalidShape, "step %d of %d at %d%% is out of range", e.Step, e.TotalSteps, e.Percentage)
		}
	case TypeError:
		var e ErrorEvent
		if err := json.Unmarshal(data, &e); err != nil {
			return shape(err)
		}
		if e.Error == "" {
			return invalid(InvalidShape, "an error event without its error message")
		}
	case TypeComplete:
		var e CompleteRecord
		if err := json.Unmarshal(data, &e); err != nil {
			return shape(err)
		}
	}
	return nil
}
