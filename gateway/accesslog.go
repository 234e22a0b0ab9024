package gateway

import (
	"context"
	"log/slog"
	"net/http"
	"time"
)

// accessLog writes one info line per request once its handler returns:
// method, path (never the query, where access tokens travel), status,
// duration in milliseconds, bytes of body sent (none for HEAD), the
// remote address, and whether the connection was taken over (a stream's
// line is then written at the hand-off; the stream's own end is logged at
// debug as "stream closed").
func (s *Server) accessLog(next http.Handler) http.Handler {
	if s.cfg.NoAccessLog {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rec := &accessRecord{ResponseWriter: w}
		next.ServeHTTP(rec, r.WithContext(context.WithValue(r.Context(), accessKey{}, rec)))
		status := rec.status
		if status == 0 {
			status = http.StatusOK
		}
		if r.Method == http.MethodHead {
			rec.bytes = 0 // net/http dropped what the handler wrote
		}
		s.log.LogAttrs(r.Context(), slog.LevelInfo, "request",
			slog.String("method", r.Method),
			slog.String("path", r.URL.Path),
			slog.Int("status", status),
			slog.Float64("duration_ms", float64(time.Since(start).Microseconds())/1000),
			slog.Int64("bytes", rec.bytes),
			slog.String("remote", s.clientIP(r)),
			slog.Bool("taken_over", rec.takenOver),
		)
	})
}

type accessKey struct{}

// accessRecord is the ResponseWriter of a logged request. It unwraps to the
// one it wraps, so a stream can still take the connection over (and then
// says so with tookOver).
type accessRecord struct {
	http.ResponseWriter
	status    int
	bytes     int64
	takenOver bool
}

func (a *accessRecord) WriteHeader(code int) {
	if a.status == 0 {
		a.status = code
	}
	a.ResponseWriter.WriteHeader(code)
}

func (a *accessRecord) Write(b []byte) (int, error) {
	if a.status == 0 {
		a.status = http.StatusOK
	}
	n, err := a.ResponseWriter.Write(b)
	a.bytes += int64(n)
	return n, err
}

func (a *accessRecord) Unwrap() http.ResponseWriter { return a.ResponseWriter }

// tookOver records, for the access log of r, that its connection was taken
// over and answered with status.
func tookOver(r *http.Request, status int) {
	if a, ok := r.Context().Value(accessKey{}).(*accessRecord); ok {
		a.status, a.takenOver = status, true
	}
}
