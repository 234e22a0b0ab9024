package gateway

import (
	"encoding/json"
	"errors"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/labstack/echo/v4"
)

// Machine-readable error codes of the JSON error body
// {"error": "human message", "code": "MACHINE_CODE"}.
const (
	CodeInvalidJobID         = "INVALID_JOB_ID"
	CodeInvalidTimeout       = "INVALID_TIMEOUT"
	CodeInvalidIncludeReport = "INVALID_INCLUDE_REPORT"
	CodeInvalidLastEventID   = "INVALID_LAST_EVENT_ID"
	CodeInvalidQuery         = "INVALID_QUERY"
	CodeJobNotFound          = "JOB_NOT_FOUND"
	CodeNotFound             = "NOT_FOUND"
	CodeMethodNotAllowed     = "METHOD_NOT_ALLOWED"
	CodeRedisUnavailable     = "REDIS_UNAVAILABLE"
	CodeDraining             = "DRAINING"
	CodeTooManyConnections   = "TOO_MANY_CONNECTIONS"
	CodeTooManyJobClients    = "TOO_MANY_JOB_CONNECTIONS"
	CodeNotReady             = "NOT_READY"
	CodeHeadersTooLarge      = "HEADERS_TOO_LARGE"
	CodeInternal             = "INTERNAL"
	CodeJobRunning           = "JOB_RUNNING"
	CodeReportNotFound       = "REPORT_NOT_FOUND"
	// CodeUnreadableEvent is the code of the error event sent in place of
	// a failed job's stored error event when that cannot be read.
	CodeUnreadableEvent = "UNREADABLE_EVENT"
)

// apiError is an error answered as JSON with its status.
type apiError struct {
	Status  int    `json:"-"`
	Message string `json:"error"`
	Code    string `json:"code"`
	// challenge, when set, is the WWW-Authenticate header of the answer.
	challenge string
}

func (e *apiError) Error() string { return e.Message }

func badRequest(code, msg string) *apiError {
	return &apiError{Status: http.StatusBadRequest, Message: msg, Code: code}
}

// writeError answers err as the documented JSON error. Echo's own errors
// (unknown route, wrong method, oversized request) get the same shape.
func writeError(w http.ResponseWriter, r *http.Request, err error) {
	var ae *apiError
	if !errors.As(err, &ae) {
		ae = &apiError{Status: http.StatusInternalServerError, Message: "internal error", Code: CodeInternal}
		var he *echo.HTTPError
		if errors.As(err, &he) {
			ae = fromEchoError(he)
		}
	}
	h := w.Header()
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	if ae.challenge != "" {
		h.Set("WWW-Authenticate", ae.challenge)
	}
	h.Set("Content-Type", "application/json")
	w.WriteHeader(ae.Status)
	if r.Method == http.MethodHead {
		return // the headers GET would have
	}
	_ = json.NewEncoder(w).Encode(ae)
}

func fromEchoError(he *echo.HTTPError) *apiError {
	ae := &apiError{Status: he.Code, Message: strings.ToLower(http.StatusText(he.Code))}
	switch he.Code {
	case http.StatusNotFound:
		ae.Code, ae.Message = CodeNotFound, "no such route"
	case http.StatusMethodNotAllowed:
		ae.Code, ae.Message = CodeMethodNotAllowed, "method not allowed"
	default:
		ae.Code = strings.ToUpper(strings.ReplaceAll(ae.Message, " ", "_"))
		if ae.Code == "" {
			ae.Code, ae.Message = CodeInternal, "internal error"
		}
	}
	return ae
}

// jitter returns a duration in [d, 2d): spread reconnects so that many
// clients told to come back do not all come back at once.
func jitter(d time.Duration) time.Duration {
	if d <= 0 {
		return d
	}
	return d + rand.N(d)
}

// retryAfterSeconds is d rounded up to whole seconds, at least 1.
func retryAfterSeconds(d time.Duration) string {
	s := int64((d + time.Second - 1) / time.Second)
	if s < 1 {
		s = 1
	}
	return strconv.FormatInt(s, 10)
}
