package gateway

import (
	"fmt"
	"net/http"
	"runtime/debug"
	"slices"
	"strings"

	"github.com/rs/cors"
)

// cors answers CORS preflights and adds the CORS headers of
// Config.CORSOrigins to every answer, streams included (rs/cors).
//
// With "*" among the origins, any origin may read, never with credentials
// (Access-Control-Allow-Origin: *, which browsers refuse together with
// credentials). Otherwise exactly the origins listed may, each with
// Access-Control-Allow-Credentials: true, so that cookies go along
// (EventSource withCredentials, fetch with credentials "include"): the
// scheme, host and port must all match (origins have no path, so
// "https://app.example/" matches nothing); rs/cors compares them ignoring
// ASCII case, as browsers send them in lower case anyway. rs/cors also takes
// one "*" inside an origin as any run of characters: "https://*.example.com"
// allows every subdomain of example.com at any depth (never example.com
// itself), and a careless pattern ("https://app*") allows more than meant.
//
// Preflights (OPTIONS with Access-Control-Request-Method) are answered 204
// here and go no further: for an allowed origin, method (GET, HEAD, POST)
// and request headers, with the Access-Control-Allow-* headers and a max
// age of 10 minutes; otherwise with none of them, which the browser takes
// as a refusal. Every answer says Vary: Origin (a preflight: Origin,
// Access-Control-Request-Method, Access-Control-Request-Headers), also when
// the origin is not allowed and when a handler sets a Vary of its own.
func (s *Server) cors(next http.Handler) http.Handler {
	anyOrigin := slices.Contains(s.cfg.CORSOrigins, "*")
	c := cors.New(cors.Options{
		AllowedOrigins:   s.cfg.CORSOrigins,
		AllowCredentials: !anyOrigin,
		AllowedMethods:   []string{http.MethodGet, http.MethodHead, http.MethodPost},
		AllowedHeaders: []string{
			"Last-Event-ID", "Cache-Control", "Accept", // EventSource, fetch-event-source
			"Authorization", "Content-Type", "Idempotency-Key", // tokens, publishing
		},
		ExposedHeaders: []string{"Retry-After", "WWW-Authenticate"},
		MaxAge:         600,
	})
	return c.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		next.ServeHTTP(&varyOrigin{ResponseWriter: w}, r)
	}))
}

// varyOrigin keeps Origin in the Vary header that rs/cors set, whatever the
// handler does to Vary before it answers (h.Set("Vary", "Accept-Encoding")
// would drop it, and a cache would then serve one origin's answer to
// another). It unwraps, so streams can still be taken over; their response
// head is written from Header, where Origin still is.
type varyOrigin struct {
	http.ResponseWriter
	done bool
}

func (w *varyOrigin) keep() {
	if w.done {
		return
	}
	w.done = true
	h := w.ResponseWriter.Header()
	for _, v := range h["Vary"] {
		for f := range strings.SplitSeq(v, ",") {
			if f = strings.TrimSpace(f); f == "*" || strings.EqualFold(f, "Origin") {
				return
			}
		}
	}
	h.Add("Vary", "Origin")
}

func (w *varyOrigin) WriteHeader(code int) {
	if code >= 200 { // a 1xx answer is not the last word on the headers
		w.keep()
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *varyOrigin) Write(b []byte) (int, error) {
	w.keep()
	return w.ResponseWriter.Write(b)
}

// FlushError is what http.ResponseController calls to flush: a flush before
// any write sends the headers.
func (w *varyOrigin) FlushError() error {
	w.keep()
	return http.NewResponseController(w.ResponseWriter).Flush()
}

// Flush is for handlers that flush through http.Flusher.
func (w *varyOrigin) Flush() { _ = w.FlushError() }

func (w *varyOrigin) Unwrap() http.ResponseWriter { return w.ResponseWriter }

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
