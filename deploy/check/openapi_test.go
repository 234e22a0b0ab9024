package check

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"go/ast"
	"go/parser"
	gotoken "go/token"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/gorillamux"
	"github.com/golang-jwt/jwt/v5"
	"github.com/redis/go-redis/v9"

	gw "github.com/ssegate/ssegate/gateway"
	"github.com/ssegate/ssegate/pkg/event"
	"github.com/ssegate/ssegate/pkg/token"
	"github.com/ssegate/ssegate/publisher"
	"github.com/ssegate/ssegate/test/redistest"
)

// openAPIFile is the API description these tests hold the gateway to.
const openAPIFile = repoRoot + "/docs/openapi.yaml"

// publishRoute is the route that publishes over HTTP: in the spec always,
// served only when a publisher key is configured.
const publishRoute = "POST /api/reports/{jobId}/events"

// streamPath is the stream route's path in the spec.
const streamPath = "/api/reports/{jobId}/stream"

func init() {
	// openapi3filter decodes a response body before it checks it against
	// the schema, and knows no decoder for event streams: the stream is
	// text to it (its frames are checked apart, see checkFrames).
	openapi3filter.RegisterBodyDecoder("text/event-stream", openapi3filter.PlainBodyDecoder)
	// The gateways on a Redis that is down would log every failed dial.
	redis.SetLogger(quietRedis{})
}

type quietRedis struct{}

func (quietRedis) Printf(context.Context, string, ...any) {}

// loadOpenAPI loads a fresh copy of the spec, so a test may change it.
func loadOpenAPI(t *testing.T) *openapi3.T {
	t.Helper()
	doc, err := openapi3.NewLoader().LoadFromFile(openAPIFile)
	if err != nil {
		t.Fatalf("load %s: %v", openAPIFile, err)
	}
	return doc
}

func TestOpenAPIValid(t *testing.T) {
	doc := loadOpenAPI(t)
	if doc.OpenAPI != "3.0.3" {
		t.Errorf("openapi: %q, want 3.0.3", doc.OpenAPI)
	}
	// Examples are validated too (the loader's default), so every example
	// in the file is a value of its schema.
	if err := doc.Validate(context.Background(), openapi3.EnableMultiError()); err != nil {
		t.Fatalf("%s does not validate:\n%v", openAPIFile, err)
	}
	if err := checkSSEEvents(doc); err != nil {
		t.Error(err)
	}
	// And the validation can fail: a broken copy of the spec is refused.
	doc.Components.Schemas["ProgressEvent"].Value.Required = append(doc.Components.Schemas["ProgressEvent"].Value.Required, "eta")
	if err := doc.Validate(context.Background()); err == nil {
		t.Error("a ProgressEvent that requires a member its example lacks still validates")
	}
}

// checkSSEEvents checks the stream response's x-sse-events: every event
// type the gateway sends maps to a component schema, and the union
// StreamEvent names the same schemas.
func checkSSEEvents(doc *openapi3.T) error {
	events, err := sseEvents(doc)
	if err != nil {
		return err
	}
	want := []string{"complete", "error", "heartbeat", "progress", "reset", "status"}
	var got []string
	for name, schema := range events {
		got = append(got, name)
		if doc.Components.Schemas[schema] == nil {
			return fmt.Errorf("x-sse-events: %s names schema %q, which components.schemas lacks", name, schema)
		}
	}
	slices.Sort(got)
	if !slices.Equal(got, want) {
		return fmt.Errorf("x-sse-events names %v, want the gateway's event types %v", got, want)
	}
	union := doc.Components.Schemas["StreamEvent"]
	if union == nil || union.Value.Discriminator == nil {
		return errors.New("components.schemas.StreamEvent: missing, or without a discriminator")
	}
	for name, schema := range events {
		if ref := union.Value.Discriminator.Mapping[name].Ref; ref != "#/components/schemas/"+schema {
			return fmt.Errorf("StreamEvent maps %s to %q, x-sse-events to %q", name, ref, schema)
		}
	}
	return nil
}

// sseEvents returns the stream response's map from event name to schema.
func sseEvents(doc *openapi3.T) (map[string]string, error) {
	op := operation(doc, http.MethodGet, streamPath)
	if op == nil {
		return nil, fmt.Errorf("no GET %s", streamPath)
	}
	resp := op.Responses.Status(http.StatusOK)
	if resp == nil || resp.Value == nil {
		return nil, fmt.Errorf("GET %s: no 200 response", streamPath)
	}
	raw, ok := resp.Value.Extensions["x-sse-events"].(map[string]any)
	if !ok {
		return nil, fmt.Errorf("GET %s 200: no x-sse-events map", streamPath)
	}
	m := map[string]string{}
	for k, v := range raw {
		s, ok := v.(string)
		if !ok {
			return nil, fmt.Errorf("x-sse-events.%s: %v is not a schema name", k, v)
		}
		m[k] = s
	}
	return m, nil
}

func operation(doc *openapi3.T, method, path string) *openapi3.Operation {
	item := doc.Paths.Value(path)
	if item == nil {
		return nil
	}
	return item.GetOperation(method)
}

// TestOpenAPIErrorCodes: every error code the gateway defines is listed
// in the Error schema (the event-only code where error events are).
func TestOpenAPIErrorCodes(t *testing.T) {
	doc := loadOpenAPI(t)
	codes, err := gatewayCodes(filepath.Join(repoRoot, "gateway"))
	if err != nil {
		t.Fatal(err)
	}
	if len(codes) < 10 {
		t.Fatalf("found only %d Code constants in gateway/: %v", len(codes), codes)
	}
	// Codes that are no HTTP answer's, and the schema that lists them.
	eventCodes := map[string]string{"UNREADABLE_EVENT": "ErrorEvent"}
	if missing := undocumentedCodes(doc, codes, eventCodes); len(missing) > 0 {
		t.Errorf("error codes of gateway/ missing from %s: %v", openAPIFile, missing)
	}
	// The check can fail: a code the spec never mentions is reported.
	if missing := undocumentedCodes(doc, append(codes, "NO_SUCH_CODE_ANYWHERE"), eventCodes); !slices.Equal(missing, []string{"NO_SUCH_CODE_ANYWHERE"}) {
		t.Errorf("an undocumented code was not caught: %v", missing)
	}
}

func undocumentedCodes(doc *openapi3.T, codes []string, eventCodes map[string]string) []string {
	var missing []string
	for _, c := range codes {
		schema := "Error"
		if s, ok := eventCodes[c]; ok {
			schema = s
		}
		if !strings.Contains(doc.Components.Schemas[schema].Value.Description, "`"+c+"`") {
			missing = append(missing, c)
		}
	}
	return missing
}

// gatewayCodes reads the string values of the exported Code* constants of
// the gateway package's source in dir.
func gatewayCodes(dir string) ([]string, error) {
	fset := gotoken.NewFileSet()
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var codes []string
	for _, e := range entries {
		if !strings.HasSuffix(e.Name(), ".go") || strings.HasSuffix(e.Name(), "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, filepath.Join(dir, e.Name()), nil, 0)
		if err != nil {
			return nil, err
		}
		for _, d := range f.Decls {
			gd, ok := d.(*ast.GenDecl)
			if !ok || gd.Tok != gotoken.CONST {
				continue
			}
			for _, spec := range gd.Specs {
				vs := spec.(*ast.ValueSpec)
				for i, name := range vs.Names {
					if !strings.HasPrefix(name.Name, "Code") || !name.IsExported() || i >= len(vs.Values) {
						continue
					}
					if lit, ok := vs.Values[i].(*ast.BasicLit); ok && lit.Kind == gotoken.STRING {
						s, err := strconv.Unquote(lit.Value)
						if err != nil {
							return nil, err
						}
						codes = append(codes, s)
					}
				}
			}
		}
	}
	slices.Sort(codes)
	return slices.Compact(codes), nil
}

// TestOpenAPIRoutes: the spec's operations are exactly the routes the
// gateway serves: with publishing off, all of them but the publish route
// (which the spec must have); with it on, all of them.
func TestOpenAPIRoutes(t *testing.T) {
	doc := loadOpenAPI(t)
	spec := specRoutes(doc)
	if !slices.Contains(spec, publishRoute) {
		t.Errorf("the spec lacks %s", publishRoute)
	}
	plain := serverRoutes(t, gw.Config{})
	if slices.Contains(plain, publishRoute) {
		t.Errorf("%s is served with no publisher key configured", publishRoute)
	}
	if onlySpec, onlyServer := diffRoutes(spec, append(slices.Clone(plain), publishRoute)); len(onlySpec)+len(onlyServer) > 0 {
		t.Errorf("spec and server (publishing off) differ:\n  in the spec, not served: %v\n  served, not in the spec: %v", onlySpec, onlyServer)
	}

	t.Run("checks fail", func(t *testing.T) {
		d := loadOpenAPI(t)
		d.Paths.Delete("/healthz")
		onlySpec, onlyServer := diffRoutes(specRoutes(d), plain)
		if !slices.Contains(onlyServer, "GET /healthz") {
			t.Errorf("a route missing from the spec was not caught: only served %v", onlyServer)
		}
		if !slices.Contains(onlySpec, publishRoute) {
			t.Errorf("a route the server lacks was not caught: only in the spec %v", onlySpec)
		}
		d.Paths.Set("/api/reports/{jobId}/cancel", &openapi3.PathItem{Post: &openapi3.Operation{}})
		if onlySpec, _ := diffRoutes(specRoutes(d), plain); !slices.Contains(onlySpec, "POST /api/reports/{jobId}/cancel") {
			t.Errorf("an operation nobody serves was not caught: %v", onlySpec)
		}
	})

	t.Run("publishing on", func(t *testing.T) {
		// The route exists only with publisher keys (Config.PublishAuth).
		cfg := gw.Config{PublishAuth: verifier(t, publisherSecret)}
		served := serverRoutes(t, cfg)
		if !slices.Contains(served, publishRoute) {
			t.Fatalf("%s is not served even with Config.PublishAuth set: %v", publishRoute, served)
		}
		if onlySpec, onlyServer := diffRoutes(spec, served); len(onlySpec)+len(onlyServer) > 0 {
			t.Errorf("spec and server (publishing on) differ:\n  in the spec, not served: %v\n  served, not in the spec: %v", onlySpec, onlyServer)
		}
		// Access control for readers adds no route.
		cfg.Auth, cfg.AuthCookie = verifier(t, subscriberSecret), "ssegate_token"
		if again := serverRoutes(t, cfg); !slices.Equal(again, served) {
			t.Errorf("with Config.Auth too the routes change: %v, want %v", again, served)
		}
	})
}

// HS256 secrets of the tests' subscriber and publisher tokens.
const (
	subscriberSecret = "openapi-check-subscriber-secret-0123456789"
	publisherSecret  = "openapi-check-publisher-secret-0123456789"
)

func secretKey(t *testing.T, secret string) token.Key {
	t.Helper()
	k, err := token.Secret([]byte(secret))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func verifier(t *testing.T, secret string) *token.Verifier {
	t.Helper()
	v, err := token.NewVerifier([]token.Key{secretKey(t, secret)}, token.VerifierOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// mint signs a token with secret that expires after ttl (negative: has
// expired), granting jobs to watch and publish to publish.
func mint(t *testing.T, secret string, ttl time.Duration, jobs, publish []string) string {
	t.Helper()
	tok, err := token.Mint(secretKey(t, secret), token.Claims{
		RegisteredClaims: jwt.RegisteredClaims{ExpiresAt: jwt.NewNumericDate(time.Now().Add(ttl))},
		Jobs:             jobs, Publish: publish,
	})
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// specRoutes lists the spec's operations as "METHOD /path", sorted.
func specRoutes(doc *openapi3.T) []string {
	var rs []string
	for path, item := range doc.Paths.Map() {
		for method := range item.Operations() {
			rs = append(rs, method+" "+path)
		}
	}
	slices.Sort(rs)
	return rs
}

// serverRoutes lists the routes a gateway built with cfg serves.
func serverRoutes(t *testing.T, cfg gw.Config) []string {
	t.Helper()
	srv, err := gw.New(cfg, deadRedis(t))
	if err != nil {
		t.Fatal(err)
	}
	return echoRoutes(srv.Routes())
}

// echoRoutes turns the gateway's routes (Echo syntax, ":jobId") into
// "METHOD /path" in the spec's syntax ("{jobId}"), sorted.
func echoRoutes(routes []gw.Route) []string {
	var rs []string
	for _, r := range routes {
		segs := strings.Split(r.Path, "/")
		for i, s := range segs {
			if strings.HasPrefix(s, ":") {
				segs[i] = "{" + s[1:] + "}"
			}
		}
		rs = append(rs, r.Method+" "+strings.Join(segs, "/"))
	}
	slices.Sort(rs)
	return slices.Compact(rs)
}

func diffRoutes(spec, server []string) (onlySpec, onlyServer []string) {
	for _, r := range spec {
		if !slices.Contains(server, r) {
			onlySpec = append(onlySpec, r)
		}
	}
	for _, r := range server {
		if !slices.Contains(spec, r) {
			onlyServer = append(onlyServer, r)
		}
	}
	return onlySpec, onlyServer
}

// deadRedis is a client of a port where no Redis listens: enough to build
// a gateway (New calls no Redis), and a Redis that is down for one that
// serves.
func deadRedis(t *testing.T) *redis.Client {
	t.Helper()
	port, err := redistest.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	c := redis.NewClient(&redis.Options{
		Addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), MaxRetries: -1,
		DialTimeout: 200 * time.Millisecond, ReadTimeout: 200 * time.Millisecond,
		WriteTimeout: 200 * time.Millisecond, ContextTimeoutEnabled: true,
	})
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// An exchange is one request to a real gateway and its answer, kept to be
// checked against any version of the spec.
type exchange struct {
	name    string
	method  string
	url     string // absolute
	header  http.Header
	reqBody []byte
	// request says whether the spec must accept the request: some that
	// the gateway refuses are already outside the spec (a bad job ID),
	// others it cannot express (a query parameter given twice).
	request  requestWant
	status   int
	respHead http.Header
	body     []byte // decoded when it came gzipped
}

type requestWant int

const (
	requestValid requestWant = iota
	requestInvalid
	requestAny
)

// TestOpenAPIResponses runs gateways on a real Redis (with access control
// and publishing off and on, at connection limits, on a Redis that is
// down), sends them requests of every operation, and checks each request
// and answer against the spec: whether the spec accepts the request,
// status documented, headers, bodies, error codes named in the response's
// description, and every SSE frame's data against its event schema. Then
// it breaks copies of the spec and shows that the same answers fail them.
func TestOpenAPIResponses(t *testing.T) {
	xs := recordExchanges(t)
	doc := loadOpenAPI(t)
	router := newRouter(t, doc)
	seen := map[string]bool{}
	for _, x := range xs {
		t.Run(x.name, func(t *testing.T) {
			if err := checkExchange(doc, router, x, seen); err != nil {
				t.Error(err)
			}
		})
	}
	// Every documented answer of every operation was produced.
	answered := map[string]bool{}
	for _, x := range xs {
		route, _, err := router.FindRoute(mustRequest(t, x))
		if err == nil {
			answered[route.Method+" "+route.Path] = true
			answered[fmt.Sprintf("%s %s %d", route.Method, route.Path, x.status)] = true
		}
	}
	var untried []string
	for _, r := range specRoutes(doc) {
		if !answered[r] {
			t.Errorf("no exchange exercised %s", r)
		}
		method, path, _ := strings.Cut(r, " ")
		for code := range operation(doc, method, path).Responses.Map() {
			if !answered[r+" "+code] {
				untried = append(untried, r+" "+code)
			}
		}
	}
	if slices.Sort(untried); len(untried) > 0 {
		t.Errorf("documented answers no exchange produced: %v", untried)
	}

	// Every event schema met a real event.
	events, err := sseEvents(doc)
	if err != nil {
		t.Fatal(err)
	}
	for name := range events {
		if !seen[name] {
			t.Errorf("no %s event was seen in the streams checked; its schema went untested", name)
		}
	}

	// Each broken copy must fail the exchange named.
	breaks := []struct {
		name     string
		exchange string
		brk      func(*openapi3.T)
	}{
		{"progress event requires a member never sent", "stream running job", func(d *openapi3.T) {
			s := d.Components.Schemas["ProgressEvent"].Value
			s.Required = append(s.Required, "eta")
		}},
		{"complete event's reportId an integer", "stream completed job", func(d *openapi3.T) {
			d.Components.Schemas["CompleteEvent"].Value.Properties["reportId"].Value.Type = &openapi3.Types{"integer"}
		}},
		{"reset event unmapped", "stream resume from trimmed id", func(d *openapi3.T) {
			delete(operation(d, http.MethodGet, streamPath).Responses.Status(200).Value.Extensions["x-sse-events"].(map[string]any), "reset")
		}},
		{"snapshot requires report", "snapshot running job", func(d *openapi3.T) {
			s := d.Components.Schemas["Snapshot"].Value
			s.Required = append(s.Required, "report")
		}},
		{"snapshot progress not nullable", "snapshot pending job", func(d *openapi3.T) {
			d.Components.Schemas["Snapshot"].Value.Properties["progress"].Value.Nullable = false
		}},
		{"error code lower case", "snapshot unknown job", func(d *openapi3.T) {
			d.Components.Schemas["Error"].Value.Properties["code"].Value.Pattern = "^[a-z_]+$"
		}},
		{"stream 404 undocumented", "stream unknown job", func(d *openapi3.T) {
			operation(d, http.MethodGet, streamPath).Responses.Delete("404")
		}},
		{"stream 204 undocumented", "stream resume from terminal event", func(d *openapi3.T) {
			operation(d, http.MethodGet, streamPath).Responses.Delete("204")
		}},
		{"report 409 code not named", "report running job", func(d *openapi3.T) {
			r := operation(d, http.MethodGet, "/api/reports/{jobId}/report").Responses.Status(409).Value
			r.Description = openapi3.Ptr(strings.ReplaceAll(*r.Description, "JOB_RUNNING", "STILL_RUNNING"))
		}},
		{"report ETag unquoted", "report completed job", func(d *openapi3.T) {
			d.Components.Headers["ETag"].Value.Schema.Value.Pattern = "^[0-9]+-[0-9]+$"
		}},
		{"304 without ETag", "report not modified", func(d *openapi3.T) {
			d.Components.Headers["ETag"].Value.Schema.Value.Pattern = "^W/"
		}},
		{"job ID allows anything", "snapshot bad job id", func(d *openapi3.T) {
			d.Components.Schemas["JobId"].Value.Pattern = ""
		}},
		{"Retry-After required but a date", "snapshot redis down", func(d *openapi3.T) {
			d.Components.Headers["RetryAfter"].Value.Schema.Value.Type = &openapi3.Types{"string"}
			d.Components.Headers["RetryAfter"].Value.Schema.Value.Format = "date-time"
			d.Components.Headers["RetryAfter"].Value.Schema.Value.Min = nil
		}},
		{"healthz status enum", "healthz", func(d *openapi3.T) {
			operation(d, http.MethodGet, "/healthz").Responses.Status(200).Value.Content["application/json"].Schema.Value.Properties["status"].Value.Enum = []any{"healthy"}
		}},
		{"metrics as JSON", "metrics", func(d *openapi3.T) {
			r := operation(d, http.MethodGet, "/metrics").Responses.Status(200).Value
			r.Content = openapi3.NewContentWithJSONSchema(openapi3.NewObjectSchema())
		}},
		{"stream without X-Accel-Buffering", "stream completed job", func(d *openapi3.T) {
			operation(d, http.MethodGet, streamPath).Responses.Status(200).Value.Headers["X-Accel-Buffering"].Value.Schema.Value.Enum = []any{"yes"}
		}},
		{"401 challenge of another scheme", "snapshot without token", func(d *openapi3.T) {
			d.Components.Headers["WWWAuthenticate"].Value.Schema.Value.Pattern = "^Basic "
		}},
		{"403 undocumented for publishing", "publish to a job not granted", func(d *openapi3.T) {
			operation(d, http.MethodPost, "/api/reports/{jobId}/events").Responses.Delete("403")
		}},
		{"401 code not named", "snapshot with an expired token", func(d *openapi3.T) {
			r := d.Components.Responses["Unauthorized"].Value
			r.Description = openapi3.Ptr(strings.ReplaceAll(*r.Description, "`TOKEN_EXPIRED`", "expired"))
		}},
		{"publish progress takes any member", "publish unknown member", func(d *openapi3.T) {
			d.Components.Schemas["PublishProgress"].Value.AdditionalProperties = openapi3.AdditionalProperties{}
		}},
		{"publish status takes any status", "publish bad status", func(d *openapi3.T) {
			d.Components.Schemas["PublishStatus"].Value.Properties["status"].Value.Enum = nil
		}},
		{"Idempotency-Key takes spaces", "publish bad key", func(d *openapi3.T) {
			op := operation(d, http.MethodPost, "/api/reports/{jobId}/events")
			op.Parameters.GetByInAndName("header", "Idempotency-Key").Schema.Value.Pattern = "^[ -~]+$"
		}},
		{"publish answers 200", "publish register", func(d *openapi3.T) {
			rs := operation(d, http.MethodPost, "/api/reports/{jobId}/events").Responses
			rs.Set("200", rs.Status(201))
			rs.Delete("201")
		}},
		{"published event ID a number", "publish progress", func(d *openapi3.T) {
			d.Components.Schemas["EventId"].Value.Pattern = "^[0-9]+$"
		}},
		{"address limit reason unnamed", "stream refused at the address limit (EventSource)", func(d *openapi3.T) {
			r := operation(d, http.MethodGet, streamPath).Responses.Status(200).Value
			r.Description = openapi3.Ptr(strings.ReplaceAll(*r.Description, "`ip_connection_limit`", "`per_ip`"))
		}},
		{"429 without Retry-After", "stream refused at the address limit", func(d *openapi3.T) {
			d.Components.Responses["TooManyIPConnections"].Value.Headers["Retry-After"].Value.Schema.Value.Max = openapi3.Ptr(0.5)
		}},
		{"retry-only stream reason unnamed", "stream refused at the limit (EventSource)", func(d *openapi3.T) {
			r := operation(d, http.MethodGet, streamPath).Responses.Status(200).Value
			r.Description = openapi3.Ptr(strings.ReplaceAll(*r.Description, "`connection_limit`", "`full`"))
		}},
	}
	for _, b := range breaks {
		t.Run("broken spec/"+b.name, func(t *testing.T) {
			i := slices.IndexFunc(xs, func(x exchange) bool { return x.name == b.exchange })
			if i < 0 {
				t.Fatalf("no exchange %q", b.exchange)
			}
			d := loadOpenAPI(t)
			b.brk(d)
			if err := checkExchange(d, newRouter(t, d), xs[i], map[string]bool{}); err == nil {
				t.Errorf("%q still passes against the broken spec", b.exchange)
			} else {
				t.Logf("caught: %v", firstLine(err.Error()))
			}
		})
	}
}

func mustRequest(t *testing.T, x exchange) *http.Request {
	t.Helper()
	req, err := http.NewRequest(x.method, x.url, nil)
	if err != nil {
		t.Fatal(err)
	}
	return req
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}

func newRouter(t *testing.T, doc *openapi3.T) routers.Router {
	t.Helper()
	r, err := gorillamux.NewRouter(doc)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// checkExchange checks one exchange against doc; seen collects the event
// types of the SSE frames met.
func checkExchange(doc *openapi3.T, router routers.Router, x exchange, seen map[string]bool) error {
	ctx := context.Background()
	req, err := http.NewRequest(x.method, x.url, bytes.NewReader(x.reqBody))
	if err != nil {
		return err
	}
	req.Header = x.header.Clone()
	route, params, err := router.FindRoute(req)
	if err != nil {
		return fmt.Errorf("%s %s: no operation in the spec: %v", x.method, req.URL.Path, err)
	}
	opts := &openapi3filter.Options{AuthenticationFunc: openapi3filter.NoopAuthenticationFunc, MultiError: true}
	in := &openapi3filter.RequestValidationInput{Request: req, PathParams: params, Route: route, Options: opts}
	err = openapi3filter.ValidateRequest(ctx, in)
	switch {
	case x.request == requestValid && err != nil:
		return fmt.Errorf("the spec refuses the request: %v", err)
	case x.request == requestInvalid && err == nil:
		return errors.New("the spec accepts a request the gateway refuses as bad")
	}

	respRef := route.Operation.Responses.Status(x.status)
	if respRef == nil || respRef.Value == nil {
		return fmt.Errorf("status %d is not documented for %s %s", x.status, x.method, route.Path)
	}
	resp := respRef.Value
	// openapi3filter skips some statuses (304) altogether: required
	// headers are checked here for all.
	for name, h := range resp.Headers {
		v := x.respHead.Get(name)
		if h.Value.Required && v == "" {
			return fmt.Errorf("%d: required header %s missing", x.status, name)
		}
		if x.status == http.StatusNotModified && v != "" && h.Value.Schema != nil && h.Value.Schema.Value.Type.Is("string") {
			if err := h.Value.Schema.Value.VisitJSON(v); err != nil {
				return fmt.Errorf("%d: header %s: %v", x.status, name, err)
			}
		}
	}
	out := &openapi3filter.ResponseValidationInput{
		RequestValidationInput: in, Status: x.status, Header: x.respHead,
		Options: &openapi3filter.Options{IncludeResponseStatus: true, MultiError: true},
	}
	out.SetBodyBytes(x.body)
	if err := openapi3filter.ValidateResponse(ctx, out); err != nil {
		return fmt.Errorf("the answer does not match the spec: %v", err)
	}

	desc := ""
	if resp.Description != nil {
		desc = *resp.Description
	}
	if strings.HasPrefix(x.respHead.Get("Content-Type"), "application/json") && x.status >= 400 && x.method != http.MethodHead {
		var e struct{ Code string }
		if err := json.Unmarshal(x.body, &e); err != nil {
			return fmt.Errorf("error body: %v", err)
		}
		if !strings.Contains(desc, "`"+e.Code+"`") {
			return fmt.Errorf("%d answered code %s, which the response's description does not name: %q", x.status, e.Code, desc)
		}
	}
	if strings.HasPrefix(x.respHead.Get("Content-Type"), "text/event-stream") {
		return checkFrames(doc, x, desc, seen)
	}
	return nil
}

// checkFrames decodes an event stream and checks each frame's data against
// the schema that x-sse-events names for its event, and the union
// StreamEvent. A stream with no event at all is a retry-only refusal: its
// comment must name a reason the description lists.
func checkFrames(doc *openapi3.T, x exchange, desc string, seen map[string]bool) error {
	events, err := sseEvents(doc)
	if err != nil {
		return err
	}
	union := doc.Components.Schemas["StreamEvent"].Value
	dec := event.NewDecoder(bytes.NewReader(x.body))
	n := 0
	for {
		m, err := dec.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return fmt.Errorf("decode the stream: %v", err)
		}
		n++
		name, ok := events[m.Event]
		if !ok {
			return fmt.Errorf("frame %d: event %q has no schema in x-sse-events", n, m.Event)
		}
		var v any
		if err := json.Unmarshal(m.Data, &v); err != nil {
			return fmt.Errorf("frame %d (%s): data is not JSON: %v", n, m.Event, err)
		}
		if err := doc.Components.Schemas[name].Value.VisitJSON(v); err != nil {
			return fmt.Errorf("frame %d (%s) does not match %s: %v\ndata: %s", n, m.Event, name, err, m.Data)
		}
		if err := union.VisitJSON(v); err != nil {
			return fmt.Errorf("frame %d (%s) does not match StreamEvent: %v", n, m.Event, err)
		}
		if typ, _ := v.(map[string]any)["type"].(string); typ != m.Event {
			return fmt.Errorf("frame %d: event %q carries type %q", n, m.Event, typ)
		}
		seen[m.Event] = true
	}
	if n > 0 {
		if !bytes.HasPrefix(x.body, []byte("retry: ")) {
			return fmt.Errorf("the stream does not start with a retry line: %.40q", x.body)
		}
		return nil
	}
	// A retry-only stream: ": <reason>: <message>" and "retry: <ms>".
	comment, _, _ := strings.Cut(string(x.body), "\n")
	reason, _, ok := strings.Cut(strings.TrimPrefix(comment, ": "), ":")
	if !ok || !strings.HasPrefix(comment, ": ") || !strings.Contains(string(x.body), "\nretry: ") {
		return fmt.Errorf("a stream without events is not a retry-only refusal: %q", x.body)
	}
	if !strings.Contains(desc, "`"+reason+"`") {
		return fmt.Errorf("retry-only stream with reason %q, which the 200 description does not name", reason)
	}
	return nil
}

// recordExchanges starts gateways on a real Redis (miniredis where there
// is no redis-server, outside CI), publishes jobs in every state and
// records the answers to requests of every operation.
func recordExchanges(t *testing.T) []exchange {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	rs := redistest.Start(t)
	rdb := rs.Client(t)
	pub := publisher.New(rdb)
	must := func(_ string, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	run := pub.Job("oa-running")
	must(run.Register(ctx))
	must(run.Status(ctx, event.StatusProcessing))
	must(run.Progress(ctx, publisher.Step{Step: 1, Total: 3, Name: "Fetching data"}))
	must(pub.Job("oa-pending").Register(ctx))
	done := pub.Job("oa-done")
	must(done.Register(ctx))
	must(done.Progress(ctx, publisher.Step{Step: 1, Total: 1, Name: "Rendering"}))
	doneID, err := done.Complete(ctx, "r-1", json.RawMessage(`{"title":"Q3 sales","total":1234,"rows":[1,2,3]}`))
	must(doneID, err)
	bare := pub.Job("oa-bare")
	must(bare.Register(ctx))
	must(bare.Complete(ctx, "r-2", nil))
	failed := pub.Job("oa-failed")
	must(failed.Register(ctx))
	must(failed.Fail(ctx, "upstream timed out", "UPSTREAM_TIMEOUT", true))

	cfg := gw.Config{
		Retry: 50 * time.Millisecond, CanaryInterval: 100 * time.Millisecond, Heartbeat: 100 * time.Millisecond,
		ShutdownGrace: 200 * time.Millisecond, NoAccessLog: true,
	}
	base := serve(t, cfg, rdb, true)
	limited := cfg
	limited.MaxConnections = 1
	full := serve(t, limited, rdb, true)
	down := cfg
	down.RedisTimeout = 300 * time.Millisecond
	down.PublishAuth = verifier(t, publisherSecret)
	broken := serve(t, down, deadRedis(t), false)
	secured := cfg
	secured.Auth, secured.PublishAuth = verifier(t, subscriberSecret), verifier(t, publisherSecret)
	secured.AuthCookie, secured.PublishMaxBytes, secured.MaxConnectionsPerIP = "ssegate_token", publishMax, 1
	auth := serve(t, secured, rdb, true)

	es := http.Header{"Accept": {"text/event-stream"}}
	var xs []exchange
	add := func(name, method, u string, h http.Header, body []byte, want requestWant, status int) {
		t.Helper()
		x := do(t, ctx, name, method, u, h, body)
		x.request = want
		if x.status != status {
			t.Fatalf("%s: %s %s answered %d, want %d: %.300s", name, method, u, x.status, status, x.body)
		}
		xs = append(xs, x)
	}
	get := func(name, u string, h http.Header, want requestWant, status int) {
		t.Helper()
		add(name, http.MethodGet, u, h, nil, want, status)
	}
	long := strings.Repeat("x", 129)

	get("snapshot running job", base+"/api/reports/oa-running", nil, requestValid, 200)
	get("snapshot pending job", base+"/api/reports/oa-pending", nil, requestValid, 200)
	get("snapshot completed job with report", base+"/api/reports/oa-done?includeReport=true", nil, requestValid, 200)
	get("snapshot failed job", base+"/api/reports/oa-failed", nil, requestValid, 200)
	get("snapshot unknown job", base+"/api/reports/oa-nobody", nil, requestValid, 404)
	get("snapshot bad job id", base+"/api/reports/bad!id", nil, requestInvalid, 400)
	get("snapshot job id too long", base+"/api/reports/"+long, nil, requestInvalid, 400)
	get("snapshot bad includeReport", base+"/api/reports/oa-done?includeReport=maybe", nil, requestInvalid, 400)
	get("snapshot redis down", broken+"/api/reports/oa-done", nil, requestValid, 503)

	get("report completed job", base+"/api/reports/oa-done/report", nil, requestValid, 200)
	get("report completed job gzipped", base+"/api/reports/oa-done/report", http.Header{"Accept-Encoding": {"gzip"}}, requestValid, 200)
	var etag string
	if x := xs[len(xs)-1]; x.respHead.Get("Content-Encoding") != "gzip" {
		t.Fatalf("the report was not gzipped: %v", x.respHead)
	} else {
		etag = x.respHead.Get("ETag")
	}
	get("report not modified", base+"/api/reports/oa-done/report", http.Header{"If-None-Match": {etag}}, requestValid, 304)
	get("report running job", base+"/api/reports/oa-running/report", nil, requestValid, 409)
	get("report unknown job", base+"/api/reports/oa-nobody/report", nil, requestValid, 404)
	get("report of a job without one", base+"/api/reports/oa-bare/report", nil, requestValid, 404)
	get("report failed job", base+"/api/reports/oa-failed/report", nil, requestValid, 404)
	get("report bad job id", base+"/api/reports/bad!id/report", nil, requestInvalid, 400)
	get("report redis down", broken+"/api/reports/oa-done/report", nil, requestValid, 503)

	get("healthz", base+"/healthz", nil, requestValid, 200)
	get("readyz", base+"/readyz", nil, requestValid, 200)
	get("readyz redis down", broken+"/readyz", nil, requestValid, 503)
	get("metrics", base+"/metrics", nil, requestValid, 200)

	head := func(name, u string, h http.Header, want requestWant, status int) {
		t.Helper()
		add(name, http.MethodHead, u, h, nil, want, status)
		if x := xs[len(xs)-1]; len(x.body) > 0 {
			t.Fatalf("%s: HEAD %s answered a body: %.100s", name, u, x.body)
		}
	}
	head("HEAD snapshot", base+"/api/reports/oa-done?includeReport=true", nil, requestValid, 200)
	head("HEAD snapshot unknown job", base+"/api/reports/oa-nobody", nil, requestValid, 404)
	head("HEAD snapshot bad job id", base+"/api/reports/bad!id", nil, requestInvalid, 400)
	head("HEAD snapshot redis down", broken+"/api/reports/oa-done", nil, requestValid, 503)
	head("HEAD report", base+"/api/reports/oa-done/report", nil, requestValid, 200)
	head("HEAD report gzipped", base+"/api/reports/oa-done/report", http.Header{"Accept-Encoding": {"gzip"}}, requestValid, 200)
	if x := xs[len(xs)-1]; x.respHead.Get("Content-Encoding") != "gzip" || x.respHead.Get("ETag") != etag {
		t.Fatalf("HEAD of the report with gzip: %v; want GET's Content-Encoding and ETag %s", x.respHead, etag)
	}
	head("HEAD report not modified", base+"/api/reports/oa-done/report", http.Header{"If-None-Match": {etag}}, requestValid, 304)
	head("HEAD report of a job without one", base+"/api/reports/oa-bare/report", nil, requestValid, 404)
	head("HEAD report running job", base+"/api/reports/oa-running/report", nil, requestValid, 409)
	head("HEAD report bad job id", base+"/api/reports/bad!id/report", nil, requestInvalid, 400)
	head("HEAD report redis down", broken+"/api/reports/oa-done/report", nil, requestValid, 503)
	head("HEAD healthz", base+"/healthz", nil, requestValid, 200)
	head("HEAD readyz", base+"/readyz", nil, requestValid, 200)
	head("HEAD readyz redis down", broken+"/readyz", nil, requestValid, 503)
	head("HEAD metrics", base+"/metrics", nil, requestValid, 200)

	s := func(job, query string) string { return base + "/api/reports/" + job + "/stream" + query }
	get("stream bad job id", s("bad!id", ""), es, requestInvalid, 400)
	get("stream bad timeout", s("oa-running", "?timeout=-5s"), es, requestInvalid, 400)
	get("stream bad includeReport", s("oa-running", "?includeReport=maybe"), es, requestInvalid, 400)
	get("stream bad Last-Event-ID", s("oa-running", ""), http.Header{"Accept": {"text/event-stream"}, "Last-Event-Id": {"yesterday"}}, requestInvalid, 400)
	get("stream bad lastEventId", s("oa-running", "?lastEventId=1.5"), es, requestInvalid, 400)
	get("stream query parameter twice", s("oa-running", "?timeout=1s&timeout=2s"), es, requestAny, 400)
	get("stream unknown job", s("oa-nobody", ""), es, requestValid, 404)
	get("stream resume from terminal event", s("oa-done", ""), http.Header{"Accept": {"text/event-stream"}, "Last-Event-Id": {doneID}}, requestValid, 204)
	get("stream completed job", s("oa-done", "?includeReport=true"), es, requestValid, 200)
	get("stream failed job", s("oa-failed", ""), es, requestValid, 200)
	get("stream replay whole history", s("oa-done", "?lastEventId=0-0"), es, requestValid, 200)
	get("stream resume from trimmed id", s("oa-done", ""), http.Header{"Accept": {"text/event-stream"}, "Last-Event-Id": {"1-0"}}, requestValid, 200)
	get("stream running job", s("oa-running", "?timeout=450ms"), es, requestValid, 200)
	get("stream redis down", broken+"/api/reports/oa-running/stream", nil, requestValid, 503)
	get("stream redis down (EventSource)", broken+"/api/reports/oa-running/stream", es, requestValid, 200)

	// At a connection limit of 1, with one stream open.
	release := holdStream(t, ctx, full+"/api/reports/oa-running/stream?timeout=30s", nil)
	get("stream refused at the limit", full+"/api/reports/oa-running/stream", nil, requestValid, 503)
	get("stream refused at the limit (EventSource)", full+"/api/reports/oa-running/stream", es, requestValid, 200)
	release()

	// Access control on: subscriber tokens for the oa-* jobs, publisher
	// tokens for oa-pub*.
	watch := mint(t, subscriberSecret, time.Hour, []string{"oa-*"}, nil)
	other := mint(t, subscriberSecret, time.Hour, []string{"someone-else"}, nil)
	expired := mint(t, subscriberSecret, -time.Minute, []string{"oa-*"}, nil)
	bearer := func(tok string, h ...string) http.Header {
		hd := http.Header{"Authorization": {"Bearer " + tok}}
		for i := 0; i+1 < len(h); i += 2 {
			hd.Set(h[i], h[i+1])
		}
		return hd
	}
	get("snapshot without token", auth+"/api/reports/oa-running", nil, requestValid, 401)
	get("snapshot with a bad token", auth+"/api/reports/oa-running", bearer("not.a.token"), requestValid, 401)
	get("snapshot with an expired token", auth+"/api/reports/oa-running", bearer(expired), requestValid, 401)
	get("snapshot with a token for another job", auth+"/api/reports/oa-running", bearer(other), requestValid, 403)
	get("snapshot with a bearer token", auth+"/api/reports/oa-running", bearer(watch), requestValid, 200)
	get("snapshot with access_token", auth+"/api/reports/oa-running?access_token="+watch, nil, requestValid, 200)
	get("snapshot with the cookie", auth+"/api/reports/oa-running", http.Header{"Cookie": {"ssegate_token=" + watch}}, requestValid, 200)
	get("report without token", auth+"/api/reports/oa-done/report", nil, requestValid, 401)
	get("report with a token", auth+"/api/reports/oa-done/report", bearer(watch), requestValid, 200)
	get("report with a token for another job", auth+"/api/reports/oa-done/report", bearer(other), requestValid, 403)
	get("stream without token", auth+"/api/reports/oa-done/stream", es, requestValid, 401)
	get("stream with a token for another job", auth+"/api/reports/oa-done/stream", bearer(other, "Accept", "text/event-stream"), requestValid, 403)
	get("stream with access_token", auth+"/api/reports/oa-done/stream?access_token="+watch, es, requestValid, 200)
	head("HEAD snapshot without token", auth+"/api/reports/oa-running", nil, requestValid, 401)
	head("HEAD snapshot with a token for another job", auth+"/api/reports/oa-running", bearer(other), requestValid, 403)
	head("HEAD report without token", auth+"/api/reports/oa-done/report", nil, requestValid, 401)
	head("HEAD report with a token for another job", auth+"/api/reports/oa-done/report", bearer(other), requestValid, 403)

	// Publishing over HTTP.
	pubTok := mint(t, publisherSecret, time.Hour, nil, []string{"oa-pub*"})
	post := func(name, job, body string, h http.Header, want requestWant, status int) exchange {
		t.Helper()
		hd := http.Header{"Content-Type": {"application/json"}}
		for k, v := range h {
			hd[k] = v
		}
		add(name, http.MethodPost, auth+"/api/reports/"+job+"/events", hd, []byte(body), want, status)
		return xs[len(xs)-1]
	}
	pub1 := http.Header{"Authorization": {"Bearer " + pubTok}}
	withKey := func(key string) http.Header {
		return http.Header{"Authorization": {"Bearer " + pubTok}, "Idempotency-Key": {key}}
	}
	post("publish without token", "oa-pub", `{"type":"register"}`, nil, requestValid, 401)
	post("publish with a subscriber token", "oa-pub", `{"type":"register"}`, http.Header{"Authorization": {"Bearer " + watch}}, requestValid, 401)
	post("publish to a job not granted", "oa-other", `{"type":"register"}`, pub1, requestValid, 403)
	post("publish register", "oa-pub", `{"type":"register"}`, pub1, requestValid, 201)
	post("publish register again", "oa-pub", `{"type":"register","jobId":"oa-pub"}`, pub1, requestValid, 409)
	first := post("publish status with a key", "oa-pub", `{"type":"status","status":"processing"}`, withKey("oa-pub-status"), requestValid, 201)
	retry := post("publish status retried", "oa-pub", `{"type":"status","status":"processing"}`, withKey("oa-pub-status"), requestValid, 201)
	if !bytes.Equal(first.body, retry.body) {
		t.Fatalf("an idempotent retry answered %s, the first %s", retry.body, first.body)
	}
	post("publish key reused", "oa-pub", `{"type":"status","status":"pending"}`, withKey("oa-pub-status"), requestValid, 422)
	post("publish bad key", "oa-pub", `{"type":"status","status":"pending"}`, withKey("two words"), requestInvalid, 400)
	post("publish progress", "oa-pub", `{"type":"progress","step":1,"totalSteps":2,"currentStep":"Loading"}`, pub1, requestValid, 201)
	post("publish job id mismatch", "oa-pub", `{"type":"progress","jobId":"oa-pub2","step":1,"totalSteps":2}`, pub1, requestValid, 400)
	post("publish not JSON", "oa-pub", `{"type":`, pub1, requestInvalid, 400)
	post("publish not an object", "oa-pub", `[1]`, pub1, requestInvalid, 400)
	post("publish unknown member", "oa-pub", `{"type":"progress","step":1,"totalSteps":2,"percentage":50}`, pub1, requestInvalid, 400)
	post("publish member of the wrong type", "oa-pub", `{"type":"progress","step":"one","totalSteps":2}`, pub1, requestInvalid, 400)
	post("publish unknown type", "oa-pub", `{"type":"cancel"}`, pub1, requestInvalid, 400)
	post("publish bad status", "oa-pub", `{"type":"status","status":"done"}`, pub1, requestInvalid, 400)
	post("publish step past total", "oa-pub", `{"type":"progress","step":3,"totalSteps":2}`, pub1, requestAny, 400)
	post("publish text/plain", "oa-pub", `{"type":"status","status":"pending"}`, http.Header{"Authorization": {"Bearer " + pubTok}, "Content-Type": {"text/plain"}}, requestInvalid, 415)
	post("publish body too large", "oa-pub", `{"type":"complete","reportId":"r-9","report":"`+strings.Repeat("x", publishMax)+`"}`, pub1, requestValid, 413)
	post("publish to an unknown job", "oa-pub-nobody", `{"type":"status","status":"processing"}`, pub1, requestValid, 404)
	post("publish complete", "oa-pub", `{"type":"complete","reportId":"r-3","report":{"rows":[1,2]}}`, pub1, requestValid, 201)
	post("publish after the end", "oa-pub", `{"type":"error","message":"late","code":"LATE"}`, pub1, requestValid, 409)
	add("publish redis down", http.MethodPost, broken+"/api/reports/oa-pub9/events", http.Header{"Content-Type": {"application/json"}, "Authorization": {"Bearer " + pubTok}}, []byte(`{"type":"register"}`), requestValid, 503)
	get("stream of a job published over HTTP", auth+"/api/reports/oa-pub/stream?lastEventId=0-0&includeReport=true", bearer(watch, "Accept", "text/event-stream"), requestValid, 200)

	// At the per-address limit of 1, with one stream open.
	release = holdStream(t, ctx, auth+"/api/reports/oa-running/stream?timeout=30s", bearer(watch))
	get("stream refused at the address limit", auth+"/api/reports/oa-running/stream", bearer(watch), requestValid, 429)
	get("stream refused at the address limit (EventSource)", auth+"/api/reports/oa-running/stream", bearer(watch, "Accept", "text/event-stream"), requestValid, 200)
	release()
	return xs
}

// holdStream opens a stream and reads its first byte; release ends it.
func holdStream(t *testing.T, ctx context.Context, u string, h http.Header) (release func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(ctx)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		t.Fatal(err)
	}
	if h != nil {
		req.Header = h.Clone()
	}
	resp, err := client.Do(req)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	if _, err := resp.Body.Read(make([]byte, 1)); err != nil || resp.StatusCode != http.StatusOK {
		cancel()
		resp.Body.Close()
		t.Fatalf("the held stream %s: %d, %v", u, resp.StatusCode, err)
	}
	return func() {
		cancel()
		resp.Body.Close()
	}
}

// serve runs a gateway on a loopback port until the test ends and returns
// its base URL; with ready, once /readyz says so.
func serve(t *testing.T, cfg gw.Config, rdb redis.UniversalClient, ready bool) string {
	t.Helper()
	srv, err := gw.New(cfg, rdb)
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, l) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Serve: %v", err)
			}
		case <-time.After(15 * time.Second):
			t.Error("the gateway did not shut down")
		}
	})
	base := "http://" + l.Addr().String()
	if !ready {
		return base
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		resp, err := http.Get(base + "/readyz")
		if err == nil {
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return base
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("the gateway at %s is not ready: %v", base, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// publishMax is the publish body limit of the gateway with auth on.
const publishMax = 4096

// client leaves Accept-Encoding alone: the report's gzip is asked for, and
// read, by hand.
var client = &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{DisableCompression: true}}

func do(t *testing.T, ctx context.Context, name, method, u string, h http.Header, body []byte) exchange {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, method, u, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if h != nil {
		req.Header = h.Clone()
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s: read: %v", name, err)
	}
	if resp.Header.Get("Content-Encoding") == "gzip" && method != http.MethodHead {
		zr, err := gzip.NewReader(bytes.NewReader(b))
		if err != nil {
			t.Fatalf("%s: gzip: %v", name, err)
		}
		if b, err = io.ReadAll(zr); err != nil {
			t.Fatalf("%s: gunzip: %v", name, err)
		}
	}
	return exchange{name: name, method: method, url: u, header: req.Header, reqBody: body, status: resp.StatusCode, respHead: resp.Header, body: b}
}
