package gateway_test

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ssegate/ssegate/gateway"
	"github.com/ssegate/ssegate/pkg/sseclient"
	"github.com/ssegate/ssegate/publisher"
	"github.com/ssegate/ssegate/test/streamtest"
)

// testPair is a self-signed ECDSA P-256 certificate for 127.0.0.1, and its
// key, in PEM.
type testPair struct {
	serial    int64
	cert, key []byte
}

func newTestPair(t *testing.T, serial int64) testPair {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(serial),
		Subject:               pkix.Name{CommonName: fmt.Sprintf("ssegate test %d", serial)},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true, // its own root: the clients trust it directly
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kd, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return testPair{
		serial: serial,
		cert:   pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		key:    pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kd}),
	}
}

// certDir is a directory laid out as a Kubernetes Secret volume: tls.crt
// and tls.key are symlinks into ..data, a symlink to the current version's
// directory, swapped at once by an update.
type certDir struct {
	t        *testing.T
	dir      string
	versions int
}

func newCertDir(t *testing.T, p testPair) *certDir {
	t.Helper()
	d := &certDir{t: t, dir: t.TempDir()}
	d.swap(p.cert, p.key)
	for _, f := range []string{"tls.crt", "tls.key"} {
		if err := os.Symlink(filepath.Join("..data", f), filepath.Join(d.dir, f)); err != nil {
			t.Fatal(err)
		}
	}
	return d
}

func (d *certDir) certFile() string { return filepath.Join(d.dir, "tls.crt") }
func (d *certDir) keyFile() string  { return filepath.Join(d.dir, "tls.key") }

// swap writes a new version and points ..data at it, atomically.
func (d *certDir) swap(cert, key []byte) {
	d.t.Helper()
	d.versions++
	v := fmt.Sprintf("..v%d", d.versions)
	if err := os.Mkdir(filepath.Join(d.dir, v), 0o700); err != nil {
		d.t.Fatal(err)
	}
	for f, b := range map[string][]byte{"tls.crt": cert, "tls.key": key} {
		if err := os.WriteFile(filepath.Join(d.dir, v, f), b, 0o600); err != nil {
			d.t.Fatal(err)
		}
	}
	tmp := filepath.Join(d.dir, "..data_tmp")
	if err := os.Symlink(v, tmp); err != nil {
		d.t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(d.dir, "..data")); err != nil {
		d.t.Fatal(err)
	}
}

func trusting(t *testing.T, pairs ...testPair) *x509.CertPool {
	t.Helper()
	pool := x509.NewCertPool()
	for _, p := range pairs {
		if !pool.AppendCertsFromPEM(p.cert) {
			t.Fatal("bad test certificate")
		}
	}
	return pool
}

// countingTransport is an HTTPS transport that counts the TCP connections
// it dials; h2 makes it HTTP/2 only, else HTTP/1.1 only.
func countingTransport(t *testing.T, roots *x509.CertPool, h2 bool) (*http.Transport, *atomic.Int64) {
	t.Helper()
	dials := &atomic.Int64{}
	var d net.Dialer
	tr := &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: roots},
		Protocols:       new(http.Protocols),
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			dials.Add(1)
			return d.DialContext(ctx, network, addr)
		},
	}
	if h2 {
		tr.Protocols.SetHTTP2(true)
	} else {
		tr.Protocols.SetHTTP1(true)
	}
	t.Cleanup(tr.CloseIdleConnections)
	return tr, dials
}

// tlsGateway serves HTTPS with the certificate files of d, polled every
// poll, and waits until it is ready.
func (e *env) tlsGateway(d *certDir, roots *x509.CertPool, poll time.Duration, hooks ...func(*gateway.Server)) *gw {
	e.t.Helper()
	cfg := testConfig()
	cfg.TLSCertFile, cfg.TLSKeyFile = d.certFile(), d.keyFile()
	hooks = append(hooks, func(s *gateway.Server) { gateway.SetCertPoll(s, poll) })
	g := serveGateway(e.t, cfg, e.rdb, false, hooks...)
	g.URL = "https://" + strings.TrimPrefix(g.URL, "http://")
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}}
	defer tr.CloseIdleConnections()
	streamtest.Eventually(e.t, "gateway ready", func() bool {
		resp, err := (&http.Client{Transport: tr}).Get(g.URL + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	return g
}

// servedSerial is the serial number of the certificate a new TLS handshake
// with g presents.
func (g *gw) servedSerial(t *testing.T) int64 {
	t.Helper()
	c, err := tls.Dial("tcp", strings.TrimPrefix(g.URL, "https://"), &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.ConnectionState().PeerCertificates[0].SerialNumber.Int64()
}

// TestTLSHTTP2StreamsOnOneConnection: over TLS, a client that speaks
// HTTP/2 (ALPN h2) gets 20 streams at once on one TCP connection, each
// with exactly its job's events: what lifts a browser's limit of 6
// HTTP/1.1 connections per origin.
func TestTLSHTTP2StreamsOnOneConnection(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	pair := newTestPair(t, 1)
	roots := trusting(t, pair)
	var requests, notH2 atomic.Int64
	g := e.tlsGateway(newCertDir(t, pair), roots, time.Hour, func(s *gateway.Server) {
		s.Use(func(next http.Handler) http.Handler {
			return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if strings.HasSuffix(r.URL.Path, "/stream") {
					requests.Add(1)
					if r.ProtoMajor != 2 || r.TLS == nil || r.TLS.NegotiatedProtocol != "h2" {
						notH2.Add(1)
					}
				}
				next.ServeHTTP(w, r)
			})
		})
	})
	tr, dials := countingTransport(t, roots, true)
	client := &http.Client{Transport: tr}
	// One request first, so that the streams find the connection made.
	resp, err := client.Get(g.URL + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.ProtoMajor != 2 {
		t.Fatalf("GET /healthz over %s, want HTTP/2", resp.Proto)
	}

	const n = 20
	ok := must(t)
	ctx := context.Background()
	streams := make([]*streamtest.Stream, n)
	for i := range streams {
		job := fmt.Sprintf("h2-%02d", i)
		ok(e.pub.Job(job).Register(ctx))
		streams[i] = streamtest.Open(t, []string{g.streamURL(job)}, "", func(c *sseclient.Client) { c.HTTPClient = client })
	}
	for _, s := range streams {
		s.WaitEvents(t, 1)
	}
	if got := g.metric(t, "ssegate_connections"); got != n {
		t.Errorf("ssegate_connections = %v, want %d open streams", got, n)
	}
	for i := range streams {
		job := e.pub.Job(fmt.Sprintf("h2-%02d", i))
		for step := 1; step <= 3; step++ {
			ok(job.Progress(ctx, publisher.Step{Step: step, Total: 3, Name: job.ID()}))
		}
		ok(job.Complete(ctx, "r-"+job.ID(), json.RawMessage(`{"job":"`+job.ID()+`"}`)))
	}
	for i, s := range streams {
		if err := s.WaitDone(t); err != nil {
			t.Fatal(err)
		}
		streamtest.AssertExactlyOnce(t, s.Events(), e.history(fmt.Sprintf("h2-%02d", i)))
	}
	if got := dials.Load(); got != 1 {
		t.Errorf("the client dialled %d TCP connections, want 1 for all %d streams", got, n)
	}
	if requests.Load() < n || notH2.Load() != 0 {
		t.Errorf("%d stream requests, %d of them not HTTP/2 over TLS with ALPN h2", requests.Load(), notH2.Load())
	}
}

// TestTLSReloadCertificate: ReloadCertificate (SIGHUP in cmd/gateway)
// makes new handshakes present the new certificate, while a stream opened
// before (HTTP/1.1 over TLS, taken over) goes on receiving on its
// connection; a pair that does not match is refused, logged, and the
// current certificate kept.
func TestTLSReloadCertificate(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	a, b, c := newTestPair(t, 101), newTestPair(t, 102), newTestPair(t, 103)
	roots := trusting(t, a, b, c)
	d := newCertDir(t, a)
	g := e.tlsGateway(d, roots, time.Hour) // no poll in this test
	if got := g.servedSerial(t); got != a.serial {
		t.Fatalf("serving serial %d, want %d", got, a.serial)
	}
	tr, dials := countingTransport(t, roots, false)
	ok := must(t)
	ctx := context.Background()
	job := e.pub.Job("reload")
	ok(job.Register(ctx))
	s := streamtest.Open(t, []string{g.streamURL("reload")}, "", func(c *sseclient.Client) { c.HTTPClient = &http.Client{Transport: tr} })
	s.WaitEvents(t, 1)
	ok(job.Progress(ctx, publisher.Step{Step: 1, Total: 3}))
	s.WaitEvents(t, 2)

	d.swap(b.cert, b.key)
	if got := g.servedSerial(t); got != a.serial {
		t.Errorf("before the reload: serving serial %d, want still %d", got, a.serial)
	}
	if err := g.srv.ReloadCertificate(); err != nil {
		t.Fatal(err)
	}
	if got := g.servedSerial(t); got != b.serial {
		t.Errorf("after the reload: serving serial %d, want %d", got, b.serial)
	}
	ok(job.Progress(ctx, publisher.Step{Step: 2, Total: 3}))
	s.WaitEvents(t, 3)

	// c's certificate with a's key: not a pair.
	d.swap(c.cert, a.key)
	if err := g.srv.ReloadCertificate(); err == nil || !strings.Contains(err.Error(), "private key does not match") {
		t.Errorf("reload of a mismatched pair: %v, want an error", err)
	}
	if got := g.servedSerial(t); got != b.serial {
		t.Errorf("after a bad reload: serving serial %d, want still %d", got, b.serial)
	}
	if logs := g.logs.String(); !strings.Contains(logs, "TLS certificate not reloaded; keeping the current one") {
		t.Errorf("the bad pair was not logged:\n%s", logs)
	}
	ok(job.Progress(ctx, publisher.Step{Step: 3, Total: 3}))
	ok(job.Complete(ctx, "r", nil))
	if err := s.WaitDone(t); err != nil {
		t.Fatal(err)
	}
	streamtest.AssertExactlyOnce(t, s.Events(), e.history("reload"))
	if got := dials.Load(); got != 1 {
		t.Errorf("the stream dialled %d connections, want 1: it was cut by a reload", got)
	}
}

// TestTLSReloadOnFileChange: a swap of the Secret volume's files is
// noticed by the poll and the new pair served, while an HTTP/2 stream
// opened before goes on; a bad pair is logged once and the current one
// kept, until a good one comes.
func TestTLSReloadOnFileChange(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	a, b, c := newTestPair(t, 201), newTestPair(t, 202), newTestPair(t, 203)
	roots := trusting(t, a, b, c)
	d := newCertDir(t, a)
	const poll = 20 * time.Millisecond
	g := e.tlsGateway(d, roots, poll)
	tr, dials := countingTransport(t, roots, true)
	ok := must(t)
	ctx := context.Background()
	job := e.pub.Job("poll")
	ok(job.Register(ctx))
	s := streamtest.Open(t, []string{g.streamURL("poll")}, "", func(c *sseclient.Client) { c.HTTPClient = &http.Client{Transport: tr} })
	s.WaitEvents(t, 1)

	d.swap(b.cert, b.key)
	streamtest.Eventually(t, "the new certificate served", func() bool { return g.servedSerial(t) == b.serial })
	ok(job.Progress(ctx, publisher.Step{Step: 1, Total: 2}))
	s.WaitEvents(t, 2)

	d.swap(b.cert, c.key) // not a pair
	streamtest.Eventually(t, "the bad pair logged", func() bool {
		return strings.Contains(g.logs.String(), "TLS certificate not reloaded")
	})
	time.Sleep(10 * poll)
	if n := strings.Count(g.logs.String(), "TLS certificate not reloaded"); n != 1 {
		t.Errorf("the bad pair was logged %d times over 10 polls, want once", n)
	}
	if got := g.servedSerial(t); got != b.serial {
		t.Errorf("after a bad pair: serving serial %d, want still %d", got, b.serial)
	}
	d.swap(c.cert, c.key)
	streamtest.Eventually(t, "the next good certificate served", func() bool { return g.servedSerial(t) == c.serial })

	ok(job.Progress(ctx, publisher.Step{Step: 2, Total: 2}))
	ok(job.Complete(ctx, "r", nil))
	if err := s.WaitDone(t); err != nil {
		t.Fatal(err)
	}
	streamtest.AssertExactlyOnce(t, s.Events(), e.history("poll"))
	if got := dials.Load(); got != 1 {
		t.Errorf("the stream dialled %d connections, want 1", got)
	}
}

// TestTLSSmugglingRefused: over TLS, an HTTP/1.1 connection is still
// scanned (its decrypted bytes): a request with both Content-Length and
// Transfer-Encoding is refused and the request behind it never read. A
// request in plain HTTP to the TLS port is told so.
func TestTLSSmugglingRefused(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	pair := newTestPair(t, 301)
	roots := trusting(t, pair)
	g := e.tlsGateway(newCertDir(t, pair), roots, time.Hour)
	addr := strings.TrimPrefix(g.URL, "https://")

	conn, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: roots, NextProtos: []string{"http/1.1"}})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(wait))
	br := bufio.NewReader(conn)
	// A request framed by Content-Length alone keeps the connection.
	if _, err := io.WriteString(conn, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	if resp.StatusCode != http.StatusOK || resp.Close {
		t.Fatalf("GET /healthz: %s close=%v, want 200 kept alive", resp.Status, resp.Close)
	}
	if _, err := io.WriteString(conn, "POST /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"+
		"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	resp, err = http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(body), `"AMBIGUOUS_LENGTH"`) || !resp.Close {
		t.Errorf("ambiguous request: %s %q close=%v, want 400 AMBIGUOUS_LENGTH and close", resp.Status, body, resp.Close)
	}
	if rest, err := io.ReadAll(br); len(rest) > 0 {
		t.Errorf("after the refusal the server sent %q (%v), want the connection closed", rest, err)
	}

	plain, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	_ = plain.SetDeadline(time.Now().Add(wait))
	if _, err := io.WriteString(plain, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	resp, err = http.ReadResponse(bufio.NewReader(plain), nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ = io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(body), "HTTP request to an HTTPS server") {
		t.Errorf("plain HTTP to the TLS port: %s %q, want 400 saying so", resp.Status, body)
	}
}

// TestTLSConfigErrors: the certificate and key go together, and a pair
// that does not load fails New, naming the file.
func TestTLSConfigErrors(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	a, b := newTestPair(t, 401), newTestPair(t, 402)
	dir := t.TempDir()
	write := func(name string, data []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	certA, keyB := write("a.crt", a.cert), write("b.key", b.key)
	for _, tc := range []struct {
		name, cert, key, want string
	}{
		{"cert alone", certA, "", "TLSCertFile and TLSKeyFile go together"},
		{"key alone", "", keyB, "TLSCertFile and TLSKeyFile go together"},
		{"missing file", certA, filepath.Join(dir, "nope.key"), "nope.key: no such file"},
		{"not a pair", certA, keyB, "private key does not match"},
		{"not PEM", write("x.crt", []byte("hello")), keyB, "x.crt"},
	} {
		cfg := testConfig()
		cfg.TLSCertFile, cfg.TLSKeyFile = tc.cert, tc.key
		if _, err := gateway.New(cfg, e.rdb); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: New: %v, want an error with %q", tc.name, err, tc.want)
		}
	}
	if err := (gateway.Config{}).Validate(); err != nil {
		t.Fatal(err)
	}
	s, err := gateway.New(testConfig(), e.rdb)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.ReloadCertificate(); err == nil {
		t.Error("ReloadCertificate without TLS: no error")
	}
}
