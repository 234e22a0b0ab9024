package gateway

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"slices"
	"strconv"
	"strings"

	"github.com/labstack/echo/v4"

	"github.com/ssegate/ssegate/pkg/event"
	"github.com/ssegate/ssegate/pkg/protocol"
	"github.com/ssegate/ssegate/publisher"
)

// Error codes of the publish endpoint.
const (
	CodeInvalidBody           = "INVALID_BODY"            // 400: not a JSON object of the event's fields
	CodeInvalidEvent          = "INVALID_EVENT"           // 400: fields that make no valid event
	CodeJobIDMismatch         = "JOB_ID_MISMATCH"         // 400: the body names another job than the URL
	CodeInvalidIdempotencyKey = "INVALID_IDEMPOTENCY_KEY" // 400
	CodeJobExists             = "JOB_EXISTS"              // 409: register of a job that exists
	CodeJobFinished           = "JOB_FINISHED"            // 409: publish after the terminal event
	CodeBodyTooLarge          = "BODY_TOO_LARGE"          // 413
	CodeUnsupportedMediaType  = "UNSUPPORTED_MEDIA_TYPE"  // 415: not application/json
	CodeIdempotencyKeyReused  = "IDEMPOTENCY_KEY_REUSED"  // 422: the key was used for another event
)

// publishFields are the members a publish body may have, by type: the
// event's own fields. The timestamp, the percentage, the estimate and
// hasReport are the server's.
var publishFields = map[string][]string{
	"register": {"type", "jobId"},
	"status":   {"type", "jobId", "status"},
	"progress": {"type", "jobId", "step", "totalSteps", "currentStep"},
	"complete": {"type", "jobId", "reportId", "report"},
	"error":    {"type", "jobId", "message", "code", "retryable"},
}

// publishBody is the body of POST /api/reports/:jobId/events.
type publishBody struct {
	Type        string          `json:"type"`
	JobID       *string         `json:"jobId"`
	Status      event.Status    `json:"status"`
	Step        *int            `json:"step"`
	TotalSteps  *int            `json:"totalSteps"`
	CurrentStep string          `json:"currentStep"`
	ReportID    string          `json:"reportId"`
	Report      json.RawMessage `json:"report"`
	Message     string          `json:"message"`
	Code        string          `json:"code"`
	Retryable   bool            `json:"retryable"`
}

// handlePublish serves POST /api/reports/:jobId/events: one event, published
// with the publisher library (the same checks, the same atomic script) for
// workers that have no Redis access. Registered only with PublishAuth.
func (s *Server) handlePublish(c echo.Context) error {
	r := c.Request()
	job := c.Param("jobId")
	if _, err := s.checkJob(r, job, grantPublish); err != nil {
		return err
	}
	if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != "application/json" {
		return &apiError{Status: http.StatusUnsupportedMediaType, Message: "the body must be application/json", Code: CodeUnsupportedMediaType}
	}
	key := r.Header.Get("Idempotency-Key")
	if _, given := r.Header["Idempotency-Key"]; given && !protocol.ValidIdempotencyKey(key) {
		return badRequest(CodeInvalidIdempotencyKey, "Idempotency-Key must be 1-255 printable ASCII characters")
	}
	body, err := io.ReadAll(http.MaxBytesReader(c.Response(), r.Body, int64(s.cfg.PublishMaxBytes)))
	if err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			return &apiError{Status: http.StatusRequestEntityTooLarge, Message: fmt.Sprintf("the body is over %d bytes", s.cfg.PublishMaxBytes), Code: CodeBodyTooLarge}
		}
		return badRequest(CodeInvalidBody, "the body could not be read")
	}
	b, aerr := parsePublishBody(body, job)
	if aerr != nil {
		return aerr
	}
	j := s.publisher.Job(job)
	if key != "" {
		j = j.WithIdempotencyKey(key)
	}
	ctx := r.Context()
	var id string
	switch b.Type {
	case "register":
		id, err = j.Register(ctx)
	case "status":
		id, err = j.Status(ctx, b.Status)
	case "progress":
		id, err = j.Progress(ctx, publisher.Step{Step: *b.Step, Total: *b.TotalSteps, Name: b.CurrentStep})
	case "complete":
		id, err = j.Complete(ctx, b.ReportID, b.Report)
	case "error":
		id, err = j.Fail(ctx, b.Message, b.Code, b.Retryable)
	}
	if err != nil {
		return s.publishFailed(c, err)
	}
	s.log.Debug("published", "job", job, "type", b.Type, "id", id)
	return c.JSON(http.StatusCreated, map[string]string{"id": id})
}

// parsePublishBody decodes and checks a publish body for job.
func parsePublishBody(body []byte, job string) (*publishBody, *apiError) {
	var members map[string]json.RawMessage
	if err := json.Unmarshal(body, &members); err != nil || members == nil {
		return nil, badRequest(CodeInvalidBody, "the body must be a JSON object of the event's fields")
	}
	var typ string
	if err := json.Unmarshal(members["type"], &typ); err != nil || publishFields[typ] == nil {
		return nil, badRequest(CodeInvalidEvent, `"type" must be one of register, status, progress, complete, error`)
	}
	for name := range members {
		if !slices.Contains(publishFields[typ], name) {
			return nil, badRequest(CodeInvalidBody, fmt.Sprintf("a %s event has no member %q (allowed: %s; the timestamp and computed fields are the server's)",
				typ, name, strings.Join(publishFields[typ], ", ")))
		}
	}
	var b publishBody
	dec := json.NewDecoder(bytes.NewReader(body))
	if err := dec.Decode(&b); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			return nil, badRequest(CodeInvalidBody, fmt.Sprintf("member %q must be a %s", te.Field, jsonKind(te.Type.Kind().String())))
		}
		return nil, badRequest(CodeInvalidBody, "the body must be a JSON object of the event's fields")
	}
	if b.JobID != nil && *b.JobID != job {
		return nil, badRequest(CodeJobIDMismatch, `"jobId" in the body must be the job of the URL, `+strconv.Quote(job))
	}
	switch typ {
	case "progress":
		if b.Step == nil || b.TotalSteps == nil {
			return nil, badRequest(CodeInvalidEvent, `a progress event needs "step" and "totalSteps"`)
		}
	case "complete":
		if err := plainText("reportId", b.ReportID); err != nil {
			return nil, err
		}
	case "error":
		if err := plainText("code", b.Code); err != nil {
			return nil, err
		}
	}
	return &b, nil
}

// plainText refuses control characters in a field that names something
// (a report ID goes into URLs, a code into switch statements); free text
// such as a message may hold line breaks, which JSON escapes.
func plainText(name, v string) *apiError {
	if strings.ContainsFunc(v, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
		return badRequest(CodeInvalidEvent, fmt.Sprintf("%q must not contain control characters", name))
	}
	return nil
}

func jsonKind(goKind string) string {
	switch goKind {
	case "int", "int64":
		return "whole number"
	case "bool":
		return "boolean"
	}
	return goKind
}

// publishFailed answers a refused or failed publish.
func (s *Server) publishFailed(c echo.Context, err error) error {
	switch {
	case errors.Is(err, publisher.ErrJobNotFound):
		return &apiError{Status: http.StatusNotFound, Message: "no such job; register it first", Code: CodeJobNotFound}
	case errors.Is(err, publisher.ErrJobExists):
		return &apiError{Status: http.StatusConflict, Message: "the job is registered already", Code: CodeJobExists}
	case errors.Is(err, publisher.ErrJobFinished):
		return &apiError{Status: http.StatusConflict, Message: "the job has finished; it takes no more events", Code: CodeJobFinished}
	case errors.Is(err, publisher.ErrIdempotencyKeyReused):
		return &apiError{Status: http.StatusUnprocessableEntity, Message: "the Idempotency-Key was used for another event", Code: CodeIdempotencyKeyReused}
	case errors.Is(err, publisher.ErrReportTooLarge):
		return &apiError{Status: http.StatusRequestEntityTooLarge, Message: "the report is over the limit", Code: CodeBodyTooLarge}
	case errors.Is(err, publisher.ErrInvalidStatus), errors.Is(err, publisher.ErrInvalidStep),
		errors.Is(err, publisher.ErrInvalidReport), errors.Is(err, publisher.ErrInvalidFailure),
		errors.Is(err, publisher.ErrInvalidReportID), errors.Is(err, protocol.ErrBadArgs):
		return badRequest(CodeInvalidEvent, publisherMessage(err))
	}
	if c.Request().Context().Err() != nil {
		return nil // the client left; Redis was not asked to finish
	}
	s.metrics.redisErrors.WithLabelValues("publish").Inc()
	s.log.Warn("publish failed", "err", err)
	c.Response().Header().Set("Retry-After", retryAfterSeconds(jitter(s.cfg.Retry)))
	r := refusals[refuseRedis]
	return &apiError{Status: http.StatusServiceUnavailable, Message: r.msg, Code: r.code}
}

// publisherMessage is the publisher's error without its "publisher: op job
// "id": " prefix.
func publisherMessage(err error) string {
	msg := err.Error()
	if i := strings.LastIndex(msg, `": `); i >= 0 {
		return msg[i+3:]
	}
	return msg
}
