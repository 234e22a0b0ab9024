package gateway

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"errors"
	"net/http"
	"strings"

	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/ssegate/ssegate/pkg/event"
)

// api is the JSON API on Echo: everything but the stream route, which
// serveStream serves before Echo sees the request.
func (s *Server) api() *echo.Echo {
	e := echo.New()
	e.HideBanner, e.HidePort = true, true
	e.HTTPErrorHandler = func(err error, c echo.Context) {
		if !c.Response().Committed {
			writeError(c.Response(), c.Request(), err)
		}
	}
	// Never reached for GET (see routes); it makes Echo answer other
	// methods on the stream path with 405.
	e.GET(streamPrefix+":jobId"+streamSuffix, func(c echo.Context) error {
		s.serveStream(c.Response(), c.Request(), c.Param("jobId"))
		return nil
	})
	// HEAD is GET without the body (net/http drops what the handler
	// writes), so health checks and curl -I get GET's status and headers.
	// The stream has none: what it would answer is decided by opening it.
	getOrHead := []string{http.MethodGet, http.MethodHead}
	e.Match(getOrHead, "/api/reports/:jobId", s.handleSnapshot)
	e.Match(getOrHead, "/api/reports/:jobId/report", s.handleReport)
	if s.cfg.PublishAuth != nil {
		e.POST("/api/reports/:jobId/events", s.handlePublish)
	}
	e.Match(getOrHead, "/healthz", s.handleHealth)
	e.Match(getOrHead, "/readyz", s.handleReady)
	e.Match(getOrHead, "/metrics", echo.WrapHandler(promhttp.HandlerFor(s.registry, promhttp.HandlerOpts{})))
	return e
}

// snapshotResponse is the JSON of GET /api/reports/:jobId.
type snapshotResponse struct {
	JobID       string          `json:"jobId"`
	Status      event.Status    `json:"status"`
	Progress    json.RawMessage `json:"progress"`
	ReportID    *string         `json:"reportId"`
	Error       json.RawMessage `json:"error"`
	UpdatedAt   event.Timestamp `json:"updatedAt"`
	LastEventID string          `json:"lastEventId"`
	Report      json.RawMessage `json:"report,omitempty"`
	// ReportTooLarge and ReportURL: the report was asked for and is over
	// the inline limit; it is at ReportURL.
	ReportTooLarge bool   `json:"reportTooLarge,omitempty"`
	ReportURL      string `json:"reportUrl,omitempty"`
}

// handleSnapshot serves GET /api/reports/:jobId: where a job stands, for
// clients that poll.
func (s *Server) handleSnapshot(c echo.Context) error {
	job := c.Param("jobId")
	if _, err := s.checkJob(c.Request(), job, grantWatch); err != nil {
		return err
	}
	includeReport := false
	if vs, ok := c.QueryParams()["includeReport"]; ok {
		b, err := parseBool(vs[0])
		if err != nil || len(vs) > 1 {
			return badRequest(CodeInvalidIncludeReport, "includeReport must be true or false")
		}
		includeReport = b
	}
	ctx := c.Request().Context()
	st, err := s.store.state(ctx, job)
	if err != nil {
		return s.snapshotFailed(c, err)
	}
	if st == nil {
		return &apiError{Status: http.StatusNotFound, Message: "no such job", Code: CodeJobNotFound}
	}
	resp := snapshotResponse{
		JobID: job, Status: st.status, UpdatedAt: event.At(st.updatedAt), LastEventID: st.lastID.String(),
		Progress: rawOrNull(st.progress), Error: json.RawMessage("null"),
	}
	switch st.status {
	case event.StatusFailed:
		resp.Error = rawOrNull(st.result)
	case event.StatusCompleted:
		var rec event.CompleteRecord
		if err := json.Unmarshal([]byte(st.result), &rec); err == nil {
			resp.ReportID = &rec.ReportID
			if includeReport && rec.HasReport {
				report, tooLarge, err := s.store.report(ctx, job, s.cfg.ReportMaxBytes)
				if err != nil {
					return s.snapshotFailed(c, err)
				}
				resp.Report = report
				if tooLarge {
					resp.ReportTooLarge, resp.ReportURL = true, reportURL(job)
				}
			}
		}
	}
	c.Response().Header().Set("Cache-Control", "no-store")
	return c.JSON(http.StatusOK, resp)
}

// maxServedReport bounds the report GET /api/reports/:jobId/report reads
// into memory; publishers refuse larger ones long before (1 MiB by default).
const maxServedReport = 64 << 20

// reportURL is where a job's report is served.
func reportURL(job string) string { return "/api/reports/" + job + "/report" }

// handleReport serves GET /api/reports/:jobId/report: the report of a
// completed job, for reports over the inline limit and for clients that
// fetch it apart. A report never changes once its job completed, so the
// job's last event ID is its ETag.
func (s *Server) handleReport(c echo.Context) error {
	job := c.Param("jobId")
	if _, err := s.checkJob(c.Request(), job, grantWatch); err != nil {
		return err
	}
	ctx := c.Request().Context()
	st, err := s.store.state(ctx, job)
	switch {
	case err != nil:
		return s.snapshotFailed(c, err)
	case st == nil:
		return &apiError{Status: http.StatusNotFound, Message: "no such job", Code: CodeJobNotFound}
	case !st.status.Terminal():
		return &apiError{Status: http.StatusConflict, Message: "the job is still running; its report comes with its complete event", Code: CodeJobRunning}
	}
	var report json.RawMessage
	if st.status == event.StatusCompleted {
		if report, _, err = s.store.report(ctx, job, maxServedReport); err != nil {
			return s.snapshotFailed(c, err)
		}
	}
	if report == nil {
		return &apiError{Status: http.StatusNotFound, Message: "the job has no report", Code: CodeReportNotFound}
	}
	h := c.Response().Header()
	etag := `"` + st.lastID.String() + `"`
	h.Set("ETag", etag)
	h.Set("Cache-Control", "private, no-cache")
	h.Set("Vary", "Accept-Encoding")
	if inm := c.Request().Header.Get("If-None-Match"); inm != "" && (inm == "*" || strings.Contains(inm, etag)) {
		return c.NoContent(http.StatusNotModified)
	}
	if c.Request().Method == http.MethodHead {
		// GET's headers, without compressing a body nobody reads.
		if acceptsGzip(c.Request()) {
			h.Set("Content-Encoding", "gzip")
		}
		h.Set("Content-Type", "application/json")
		return c.NoContent(http.StatusOK)
	}
	if acceptsGzip(c.Request()) {
		var b bytes.Buffer
		zw := gzip.NewWriter(&b)
		_, _ = zw.Write(report)
		if err := zw.Close(); err == nil {
			h.Set("Content-Encoding", "gzip")
			return c.Blob(http.StatusOK, "application/json", b.Bytes())
		}
	}
	return c.Blob(http.StatusOK, "application/json", report)
}

// acceptsGzip reports whether the request's Accept-Encoding names gzip
// (with a q other than 0).
func acceptsGzip(r *http.Request) bool {
	for _, v := range r.Header.Values("Accept-Encoding") {
		for part := range strings.SplitSeq(v, ",") {
			name, params, _ := strings.Cut(strings.TrimSpace(part), ";")
			if strings.EqualFold(strings.TrimSpace(name), "gzip") && strings.ReplaceAll(params, " ", "") != "q=0" {
				return true
			}
		}
	}
	return false
}

func (s *Server) snapshotFailed(c echo.Context, err error) error {
	s.metrics.redisErrors.WithLabelValues("snapshot").Inc()
	s.log.Warn("redis read failed", "op", "snapshot", "err", err)
	c.Response().Header().Set("Retry-After", retryAfterSeconds(jitter(s.cfg.Retry)))
	r := refusals[refuseRedis]
	return &apiError{Status: http.StatusServiceUnavailable, Message: r.msg, Code: r.code}
}

func rawOrNull(s string) json.RawMessage {
	if s == "" || !json.Valid([]byte(s)) {
		return json.RawMessage("null")
	}
	return json.RawMessage(s)
}

// handleHealth serves GET /healthz: the process is alive.
func (s *Server) handleHealth(c echo.Context) error {
	return c.JSON(http.StatusOK, map[string]string{"status": "ok"})
}

// handleReady serves GET /readyz: the instance is not draining, Redis
// answered the last check, and every pub/sub connection has delivered its
// canary lately. It answers from state kept by the broker's background
// checks, never waiting on Redis, so it takes microseconds, up or down.
func (s *Server) handleReady(c echo.Context) error {
	c.Response().Header().Set("Cache-Control", "no-store")
	if s.hub.draining.Load() {
		return &apiError{Status: http.StatusServiceUnavailable, Message: "draining", Code: CodeDraining}
	}
	if err := s.hub.healthy(); err != nil {
		code := CodeNotReady
		if errors.Is(err, errRedisDown) {
			code = CodeRedisUnavailable
		}
		return &apiError{Status: http.StatusServiceUnavailable, Message: err.Error(), Code: code}
	}
	return c.JSON(http.StatusOK, map[string]string{"status": "ready"})
}
