package gateway_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/ssegate/ssegate/gateway"
	"github.com/ssegate/ssegate/pkg/token"
)

// keyPair is a signing key and the PEM of its public half.
type keyPair struct {
	priv   token.Key
	pubPEM []byte
}

func rsaPair(t *testing.T, kid string) keyPair {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	return pairOf(t, k, &k.PublicKey, kid)
}

func ecPair(t *testing.T, kid string) keyPair {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return pairOf(t, k, &k.PublicKey, kid)
}

func pairOf(t *testing.T, priv, pub any, kid string) keyPair {
	t.Helper()
	var headers map[string]string
	if kid != "" {
		headers = map[string]string{"kid": kid}
	}
	privDER, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	pubDER, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	k, err := token.PrivateKey(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Headers: headers, Bytes: privDER}))
	if err != nil {
		t.Fatal(err)
	}
	return keyPair{priv: k, pubPEM: pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Headers: headers, Bytes: pubDER})}
}

func secretKey(t *testing.T, s string) token.Key {
	t.Helper()
	k, err := token.Secret([]byte(s))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func verifier(t *testing.T, o token.VerifierOptions, keys ...token.Key) *token.Verifier {
	t.Helper()
	v, err := token.NewVerifier(keys, o)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// claimsFor are valid claims for an hour, with iss and aud as the test
// gateways want them.
func claimsFor(jobs ...string) token.Claims {
	return token.Claims{
		RegisteredClaims: jwt.RegisteredClaims{
			Issuer:    "https://app.example",
			Audience:  jwt.ClaimStrings{"ssegate"},
			ExpiresAt: jwt.NewNumericDate(time.Now().Add(time.Hour)),
		},
		Jobs: jobs,
	}
}

func mint(t *testing.T, k token.Key, c token.Claims) string {
	t.Helper()
	s, err := token.Mint(k, c)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

const (
	pubSecret  = "publisher-secret-0123456789abcdef"
	subSecret  = "subscriber-secret-0123456789abcdef"
	subSecret2 = "subscriber-secret-previous-0123456789"
)

// authFixture is two gateways with auth on, on one Redis that holds a
// completed job report-1 (with a report), a running job report-2, and
// job reportx.
//
//   - rsa: subscribers RS256 ("new") or ES256 ("old", a rotation in
//     progress), iss and aud required; publishers HS256 pubSecret;
//     cookie "ssegate_token".
//   - hs: subscribers HS256 subSecret or subSecret2; publishers subSecret
//     too (one secret for both: scopes then tell them apart).
type authFixture struct {
	e        *env
	rsa, hs  *gw
	newKey   keyPair
	oldKey   keyPair
	strayRSA keyPair
}

func newAuthFixture(t *testing.T) *authFixture {
	t.Helper()
	f := &authFixture{e: newEnv(t), newKey: rsaPair(t, "new"), oldKey: ecPair(t, ""), strayRSA: rsaPair(t, "")}
	pubKeys, err := token.PublicKeys(append(append([]byte{}, f.newKey.pubPEM...), f.oldKey.pubPEM...))
	if err != nil {
		t.Fatal(err)
	}
	opts := token.VerifierOptions{Issuer: "https://app.example", Audience: "ssegate"}
	cfg := testConfig()
	cfg.Auth = verifier(t, opts, pubKeys...)
	cfg.PublishAuth = verifier(t, opts, secretKey(t, pubSecret))
	cfg.AuthCookie = "ssegate_token"
	cfg.PublishMaxBytes = 4 << 10
	f.rsa = f.e.gateway(cfg)

	cfg = testConfig()
	cfg.Auth = verifier(t, opts, secretKey(t, subSecret), secretKey(t, subSecret2))
	cfg.PublishAuth = verifier(t, opts, secretKey(t, subSecret))
	f.hs = f.e.gateway(cfg)

	ctx := context.Background()
	ok := must(t)
	done := f.e.pub.Job("report-1")
	ok(done.Register(ctx))
	ok(done.Complete(ctx, "r-1", json.RawMessage(`{"rows":1}`)))
	ok(f.e.pub.Job("report-2").Register(ctx))
	ok(f.e.pub.Job("reportx").Register(ctx))
	return f
}

// req is one request of the attack table.
type req struct {
	method, path string
	header       []string // name, value pairs
	body         string
}

func do(t *testing.T, g *gw, r req) (int, http.Header, map[string]string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	var body io.Reader
	if r.body != "" {
		body = strings.NewReader(r.body)
	}
	hr, err := http.NewRequestWithContext(ctx, r.method, g.URL+r.path, body)
	if err != nil {
		t.Fatal(err)
	}
	if r.body != "" {
		hr.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(r.header); i += 2 {
		hr.Header.Set(r.header[i], r.header[i+1])
	}
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr}).Do(hr)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var parsed map[string]string
	if strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
		_ = json.Unmarshal(raw, &parsed)
	}
	return resp.StatusCode, resp.Header, parsed
}

func bearer(tok string) []string { return []string{"Authorization", "Bearer " + tok} }

// unsigned is a token with alg "none".
func unsigned(t *testing.T, c token.Claims) string {
	t.Helper()
	b64 := base64.RawURLEncoding.EncodeToString
	claims, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	return b64([]byte(`{"alg":"none","typ":"JWT"}`)) + "." + b64(claims) + "."
}

// TestAuthAttacks is the table of attacks on the stream, snapshot, report
// and publish endpoints with auth on: each asserts the status and the
// error code (and the challenge of a 401).
func TestAuthAttacks(t *testing.T) {
	t.Parallel()
	f := newAuthFixture(t)
	rs := f.newKey.priv
	es := f.oldKey.priv
	pub := secretKey(t, pubSecret)
	sub := secretKey(t, subSecret)

	good := mint(t, rs, claimsFor("report-1"))
	with := func(mod func(*token.Claims)) token.Claims {
		c := claimsFor("report-1")
		mod(&c)
		return c
	}
	publishClaims := func(jobs ...string) token.Claims {
		c := claimsFor()
		c.Publish = jobs
		return c
	}
	// Key confusion: HS256 with the RSA public key's PEM as the secret.
	confused, err := jwt.NewWithClaims(jwt.SigningMethodHS256, claimsFor("report-1")).SignedString(f.newKey.pubPEM)
	if err != nil {
		t.Fatal(err)
	}
	stream1 := "/api/reports/report-1/stream"
	snap1 := "/api/reports/report-1"
	events := func(job string) string { return "/api/reports/" + job + "/events" }
	progress := `{"type":"progress","step":1,"totalSteps":4,"currentStep":"Loading"}`
	big := `{"type":"complete","reportId":"r-9","report":"` + strings.Repeat("x", 5<<10) + `"}`

	cases := []struct {
		name   string
		g      *gw
		r      req
		status int
		code   string
	}{
		{"no token, stream", f.rsa, req{method: "GET", path: stream1}, 401, gateway.CodeAuthRequired},
		{"no token, snapshot", f.rsa, req{method: "GET", path: snap1}, 401, gateway.CodeAuthRequired},
		{"no token, report", f.rsa, req{method: "GET", path: snap1 + "/report"}, 401, gateway.CodeAuthRequired},
		{"no token, publish", f.rsa, req{method: "POST", path: events("report-2"), body: progress}, 401, gateway.CodeAuthRequired},
		{"Basic credentials are no token", f.rsa, req{method: "GET", path: snap1, header: []string{"Authorization", "Basic dXNlcjpwYXNz"}}, 401, gateway.CodeAuthRequired},
		{"empty bearer", f.rsa, req{method: "GET", path: snap1, header: []string{"Authorization", "Bearer "}}, 401, gateway.CodeAuthRequired},
		{"malformed token", f.rsa, req{method: "GET", path: snap1, header: bearer("not-a-jwt")}, 401, gateway.CodeInvalidToken},
		{"three garbage segments", f.rsa, req{method: "GET", path: snap1, header: bearer("a.b.c")}, 401, gateway.CodeInvalidToken},
		{"alg none", f.rsa, req{method: "GET", path: snap1, header: bearer(unsigned(t, claimsFor("report-1")))}, 401, gateway.CodeInvalidToken},
		{"alg none on HS256", f.hs, req{method: "GET", path: snap1, header: bearer(unsigned(t, claimsFor("report-1")))}, 401, gateway.CodeInvalidToken},
		{"HS256 signed with the RSA public key (key confusion)", f.rsa, req{method: "GET", path: snap1, header: bearer(confused)}, 401, gateway.CodeInvalidToken},
		{"RS256 from a key not configured", f.rsa, req{method: "GET", path: snap1, header: bearer(mint(t, f.strayRSA.priv, claimsFor("report-1")))}, 401, gateway.CodeInvalidToken},
		{"HS256 with a wrong secret", f.hs, req{method: "GET", path: snap1, header: bearer(mint(t, secretKey(t, "wrong-secret-0123456789abcdef0123"), claimsFor("report-1")))}, 401, gateway.CodeInvalidToken},
		{"tampered payload", f.rsa, req{method: "GET", path: snap1, header: bearer(tamper(t, good, "report-1", "report-2"))}, 401, gateway.CodeInvalidToken},
		{"expired", f.rsa, req{method: "GET", path: stream1, header: bearer(mint(t, rs, with(func(c *token.Claims) { c.ExpiresAt = jwt.NewNumericDate(time.Now().Add(-time.Minute)) })))}, 401, gateway.CodeTokenExpired},
		{"no exp", f.rsa, req{method: "GET", path: snap1, header: bearer(mint(t, rs, with(func(c *token.Claims) { c.ExpiresAt = nil })))}, 401, gateway.CodeInvalidToken},
		{"not yet valid", f.rsa, req{method: "GET", path: snap1, header: bearer(mint(t, rs, with(func(c *token.Claims) { c.NotBefore = jwt.NewNumericDate(time.Now().Add(time.Minute)) })))}, 401, gateway.CodeInvalidToken},
		{"wrong issuer", f.rsa, req{method: "GET", path: snap1, header: bearer(mint(t, rs, with(func(c *token.Claims) { c.Issuer = "https://evil.example" })))}, 401, gateway.CodeInvalidToken},
		{"wrong audience", f.rsa, req{method: "GET", path: snap1, header: bearer(mint(t, rs, with(func(c *token.Claims) { c.Audience = jwt.ClaimStrings{"other"} })))}, 401, gateway.CodeInvalidToken},
		{"no audience", f.rsa, req{method: "GET", path: snap1, header: bearer(mint(t, rs, with(func(c *token.Claims) { c.Audience = nil })))}, 401, gateway.CodeInvalidToken},
		{"bad pattern in jobs", f.rsa, req{method: "GET", path: snap1, header: bearer(mint(t, rs, claimsFor("re*port")))}, 401, gateway.CodeInvalidToken},
		{"token for another job, stream", f.rsa, req{method: "GET", path: "/api/reports/report-2/stream", header: bearer(good)}, 403, gateway.CodeForbidden},
		{"token for another job, report", f.rsa, req{method: "GET", path: "/api/reports/report-2/report", header: bearer(good)}, 403, gateway.CodeForbidden},
		{"token for another job that does not exist: 403, not 404", f.rsa, req{method: "GET", path: "/api/reports/nope/stream", header: bearer(good)}, 403, gateway.CodeForbidden},
		{"token with no jobs", f.rsa, req{method: "GET", path: snap1, header: bearer(mint(t, rs, claimsFor()))}, 403, gateway.CodeForbidden},
		{"report-* grants report-1", f.rsa, req{method: "GET", path: stream1, header: bearer(mint(t, rs, claimsFor("report-*")))}, 200, ""},
		{"report-* does not grant reportx", f.rsa, req{method: "GET", path: "/api/reports/reportx", header: bearer(mint(t, rs, claimsFor("report-*")))}, 403, gateway.CodeForbidden},
		{"report-1 does not grant report-10", f.rsa, req{method: "GET", path: "/api/reports/report-10", header: bearer(good)}, 403, gateway.CodeForbidden},
		{"* grants every job", f.rsa, req{method: "GET", path: "/api/reports/reportx", header: bearer(mint(t, rs, claimsFor("*")))}, 200, ""},
		{"invalid job ID with a valid token", f.rsa, req{method: "GET", path: "/api/reports/bad%20id/stream", header: bearer(good)}, 400, gateway.CodeInvalidJobID},
		{"token in the header", f.rsa, req{method: "GET", path: snap1, header: bearer(good)}, 200, ""},
		{"lower-case bearer scheme", f.rsa, req{method: "GET", path: snap1, header: []string{"Authorization", "bearer " + good}}, 200, ""},
		{"token in the query", f.rsa, req{method: "GET", path: stream1 + "?access_token=" + good}, 200, ""},
		{"token in the query, snapshot", f.rsa, req{method: "GET", path: snap1 + "?access_token=" + good}, 200, ""},
		{"token in the cookie", f.rsa, req{method: "GET", path: snap1 + "/report", header: []string{"Cookie", "ssegate_token=" + good}}, 200, ""},
		{"token in another cookie", f.rsa, req{method: "GET", path: snap1, header: []string{"Cookie", "session=" + good}}, 401, gateway.CodeAuthRequired},
		{"header wins over a bad query token", f.rsa, req{method: "GET", path: snap1 + "?access_token=garbage", header: bearer(good)}, 200, ""},
		{"previous key (ES256, no kid) during rotation", f.rsa, req{method: "GET", path: snap1, header: bearer(mint(t, es, claimsFor("report-1")))}, 200, ""},
		{"previous secret during rotation", f.hs, req{method: "GET", path: snap1, header: bearer(mint(t, secretKey(t, subSecret2), claimsFor("report-1")))}, 200, ""},
		{"kid naming the RSA key on an ES256 token", f.rsa, req{method: "GET", path: snap1, header: bearer(mint(t, withKid(es, "new"), claimsFor("report-1")))}, 401, gateway.CodeInvalidToken},
		{"publish with a subscriber token (another key)", f.rsa, req{method: "POST", path: events("report-2"), header: bearer(mint(t, rs, claimsFor("report-2"))), body: progress}, 401, gateway.CodeInvalidToken},
		{"publish with a subscribe-only token (same secret)", f.hs, req{method: "POST", path: events("report-2"), header: bearer(mint(t, sub, claimsFor("report-2"))), body: progress}, 403, gateway.CodeForbidden},
		{"subscribe with a publish-only token (same secret)", f.hs, req{method: "GET", path: "/api/reports/report-2", header: bearer(mint(t, sub, publishClaims("report-2")))}, 403, gateway.CodeForbidden},
		{"publish token for another job", f.rsa, req{method: "POST", path: events("report-2"), header: bearer(mint(t, pub, publishClaims("report-3"))), body: progress}, 403, gateway.CodeForbidden},
		{"publish: body over the limit", f.rsa, req{method: "POST", path: events("report-2"), header: bearer(mint(t, pub, publishClaims("report-*"))), body: big}, 413, gateway.CodeBodyTooLarge},
		{"publish: CR/LF in the report ID", f.rsa, req{method: "POST", path: events("report-2"), header: bearer(mint(t, pub, publishClaims("report-*"))), body: `{"type":"complete","reportId":"r-1\r\nevent: x"}`}, 400, gateway.CodeInvalidEvent},
		{"publish: CR/LF in the error code", f.rsa, req{method: "POST", path: events("report-2"), header: bearer(mint(t, pub, publishClaims("report-*"))), body: `{"type":"error","message":"m","code":"E\n\ndata: x"}`}, 400, gateway.CodeInvalidEvent},
		{"publish: job ID in the body not the URL's", f.rsa, req{method: "POST", path: events("report-2"), header: bearer(mint(t, pub, publishClaims("report-*"))), body: `{"type":"status","status":"processing","jobId":"report-1"}`}, 400, gateway.CodeJobIDMismatch},
		{"publish: the server's timestamp in the body", f.rsa, req{method: "POST", path: events("report-2"), header: bearer(mint(t, pub, publishClaims("report-*"))), body: `{"type":"status","status":"processing","timestamp":"2020-01-01T00:00:00Z"}`}, 400, gateway.CodeInvalidBody},
		{"publish: a member of another type", f.rsa, req{method: "POST", path: events("report-2"), header: bearer(mint(t, pub, publishClaims("report-*"))), body: `{"type":"status","status":"processing","step":1}`}, 400, gateway.CodeInvalidBody},
		{"publish: unknown type", f.rsa, req{method: "POST", path: events("report-2"), header: bearer(mint(t, pub, publishClaims("report-*"))), body: `{"type":"heartbeat"}`}, 400, gateway.CodeInvalidEvent},
		{"publish: step over total", f.rsa, req{method: "POST", path: events("report-2"), header: bearer(mint(t, pub, publishClaims("report-*"))), body: `{"type":"progress","step":5,"totalSteps":4}`}, 400, gateway.CodeInvalidEvent},
		{"publish: step not a whole number", f.rsa, req{method: "POST", path: events("report-2"), header: bearer(mint(t, pub, publishClaims("report-*"))), body: `{"type":"progress","step":1.5,"totalSteps":4}`}, 400, gateway.CodeInvalidBody},
		{"publish: not JSON", f.rsa, req{method: "POST", path: events("report-2"), header: bearer(mint(t, pub, publishClaims("report-*"))), body: `{"type":`}, 400, gateway.CodeInvalidBody},
		{"publish: text/plain", f.rsa, req{method: "POST", path: events("report-2"), header: append(bearer(mint(t, pub, publishClaims("report-*"))), "Content-Type", "text/plain"), body: progress}, 415, gateway.CodeUnsupportedMediaType},
		{"publish: bad Idempotency-Key", f.rsa, req{method: "POST", path: events("report-2"), header: append(bearer(mint(t, pub, publishClaims("report-*"))), "Idempotency-Key", "a key"), body: progress}, 400, gateway.CodeInvalidIdempotencyKey},
		{"publish to a job never registered", f.rsa, req{method: "POST", path: events("report-9"), header: bearer(mint(t, pub, publishClaims("report-*"))), body: progress}, 404, gateway.CodeJobNotFound},
		{"publish after the terminal event", f.rsa, req{method: "POST", path: events("report-1"), header: bearer(mint(t, pub, publishClaims("report-*"))), body: progress}, 409, gateway.CodeJobFinished},
		{"register of a job that exists", f.rsa, req{method: "POST", path: events("report-2"), header: bearer(mint(t, pub, publishClaims("report-*"))), body: `{"type":"register"}`}, 409, gateway.CodeJobExists},
		{"publish: invalid job ID", f.rsa, req{method: "POST", path: events("a*b"), header: bearer(mint(t, pub, publishClaims("*"))), body: progress}, 400, gateway.CodeInvalidJobID},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			status, h, body := do(t, tc.g, tc.r)
			if status != tc.status || body["code"] != tc.code {
				t.Fatalf("%s %s: %d %q (%v), want %d %q", tc.r.method, tc.r.path, status, body["code"], body, tc.status, tc.code)
			}
			if status == 401 {
				ch := h.Get("WWW-Authenticate")
				if !strings.HasPrefix(ch, `Bearer realm="ssegate"`) {
					t.Errorf("WWW-Authenticate = %q", ch)
				}
				if (tc.code == gateway.CodeAuthRequired) == strings.Contains(ch, "invalid_token") {
					t.Errorf("WWW-Authenticate = %q for %s", ch, tc.code)
				}
			}
			if status == 403 && !strings.Contains(h.Get("WWW-Authenticate"), "insufficient_scope") {
				t.Errorf("WWW-Authenticate = %q, want insufficient_scope", h.Get("WWW-Authenticate"))
			}
		})
	}
	if n := len(f.e.history("report-2")); n != 1 {
		t.Errorf("report-2 has %d events after the refused publishes, want its register alone", n)
	}
}

func withKid(k token.Key, kid string) token.Key {
	k.ID = kid
	return k
}

// tamper swaps from for to in the token's payload, keeping its signature.
func tamper(t *testing.T, tok, from, to string) string {
	t.Helper()
	parts := strings.Split(tok, ".")
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	parts[1] = base64.RawURLEncoding.EncodeToString([]byte(strings.Replace(string(payload), from, to, 1)))
	return strings.Join(parts, ".")
}
