package gateway

import (
	"fmt"
	"net/http"
	"runtime/debug"

	"github.com/rs/cors"
)

// cors answers CORS preflights and adds the CORS headers of
// Config.CORSOrigins to every answer, streams included.
func (s *Server) cors(next http.Handler) http.Handler {
	return cors.New(cors.Options{
		AllowedOrigins: s.cfg.CORSOrigins,
		AllowedMethods: []string{http.MethodGet, http.MethodHead},
		AllowedHeaders: []string{"Last-Event-ID", "Cache-Control", "Accept"},
		ExposedHeaders: []string{"Retry-After"},
		MaxAge:         600,
	}).Handler(next)
}

// maxHeaderBytes bounds the request line and headers. Beyond it a request
// gets 431 with the JSON error (net/http's own limit, higher, answers in
// plain text).
const maxHeaderBytes = 32 << 10

// limitHeaders refuses requests whose URL and headers exceed maxHeaderBytes.
func limitHeaders(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := len(r.RequestURI)
		for k, vs := range r.Header {
			for _, v := range vs {
				n += len(k) + len(v) + 4
			}
		}
		if n > maxHeaderBytes {
			writeError(w, r, &apiError{Status: http.StatusRequestHeaderFieldsTooLarge, Message: "request headers too large", Code: CodeHeadersTooLarge})
			return
		}
		next.ServeHTTP(w, r)
	})
}

// recoverPanics turns a handler panic into a JSON 500 and a metric. A
// stream that panics after its connection was taken over has no response
// left to answer on: it was ended by its own deferred clean-up, and this
// only counts and logs it.
func (s *Server) recoverPanics(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			p := recover()
			if p == nil {
				return
			}
			if p == http.ErrAbortHandler {
				panic(p)
			}
			s.metrics.panics.Inc()
			s.log.Error("handler panic", "panic", fmt.Sprint(p), "method", r.Method, "path", r.URL.Path, "stack", string(debug.Stack()))
			writeError(w, r, &apiError{Status: http.StatusInternalServerError, Message: "internal error", Code: CodeInternal})
		}()
		next.ServeHTTP(w, r)
	})
}
