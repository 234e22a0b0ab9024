package test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ssegate/ssegate/test/gatewaytest"
	"github.com/ssegate/ssegate/test/redistest"
	"github.com/ssegate/ssegate/test/streamtest"
)

// TestRedisOverTLS runs the gateway and ssepub against a real redis-server
// that speaks TLS on the port they are given (rediss://), with a
// certificate from a CA the test makes. Trusting that CA through
// SSL_CERT_FILE (Go on Linux reads it in place of its bundle file, and
// still reads /etc/ssl/certs; a managed Redis's public CA needs nothing),
// the gateway becomes ready and streams a job's snapshot and a progress
// event ssepub published over TLS. A gateway that does not trust the CA
// stays unready and logs why.
func TestRedisOverTLS(t *testing.T) {
	t.Parallel()
	if redistest.Binary() == "" {
		t.Skip("process-level tests need redis-server")
	}
	dir := t.TempDir()
	ca := writeTestPKI(t, dir)
	tlsPort, err := redistest.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	srv := redistest.StartReal(t, redistest.WithArgs(
		"--tls-port", strconv.Itoa(tlsPort),
		"--tls-cert-file", filepath.Join(dir, "redis.pem"), "--tls-key-file", filepath.Join(dir, "redis.key"),
		"--tls-ca-cert-file", ca, "--tls-auth-clients", "no",
	))
	url := "rediss://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(tlsPort)) + "/0"
	trust := "SSL_CERT_FILE=" + ca

	g := gatewaytest.Start(t, url, gatewaytest.WithEnv(trust))
	_, ssepub := gatewaytest.Binaries(t)
	pub := func(args ...string) {
		t.Helper()
		cmd := exec.Command(ssepub, append([]string{"--redis-url", url}, args...)...)
		cmd.Env = append(os.Environ(), trust)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("ssepub %v: %v\n%s", args, err, out)
		}
	}
	job := "tls-job"
	pub(job, "register")
	s := streamtest.Open(t, []string{g.URL + "/api/reports/" + job + "/stream"}, "")
	if evs := s.WaitEvents(t, 1); evs[0].Event != "status" || !strings.Contains(string(evs[0].Data), `"pending"`) {
		t.Fatalf("first event over a TLS Redis: %s %q; want the pending snapshot", evs[0].Event, evs[0].Data)
	}
	pub(job, "progress", "--step", "1", "--total", "2", "--name", "over TLS")
	if evs := s.WaitEvents(t, 2); evs[1].Event != "progress" || !strings.Contains(string(evs[1].Data), "over TLS") {
		t.Errorf("second event: %s %q; want the progress ssepub published", evs[1].Event, evs[1].Data)
	}
	// The TLS port is all the gateway was given: its connections are there.
	if clients := srv.Do(t, "CLIENT", "LIST").(string); !strings.Contains(clients, "laddr=127.0.0.1:"+strconv.Itoa(tlsPort)) {
		t.Errorf("no client connected to the TLS port %d:\n%s", tlsPort, clients)
	}

	t.Run("untrusted CA", func(t *testing.T) {
		g := gatewaytest.Start(t, url, gatewaytest.NoReadyWait())
		streamtest.Eventually(t, "the gateway logs why it cannot reach Redis", func() bool {
			return strings.Contains(g.Logs(), "x509: certificate signed by unknown authority")
		})
		if st, body := status(g.URL + "/readyz"); st != 503 {
			t.Errorf("/readyz: %d %s; want 503 while Redis's certificate is not trusted", st, body)
		}
	})
}

// writeTestPKI writes a CA (ca.pem) and a certificate for 127.0.0.1 that it
// signed (redis.pem, redis.key) into dir, and returns the CA's path.
func writeTestPKI(t *testing.T, dir string) string {
	t.Helper()
	key := func() *ecdsa.PrivateKey {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	write := func(name, typ string, der []byte) {
		if err := os.WriteFile(filepath.Join(dir, name), pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	now := time.Now()
	caKey := key()
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "ssegate test CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, err := x509.ParseCertificate(caDER)
	if err != nil {
		t.Fatal(err)
	}
	write("ca.pem", "CERTIFICATE", caDER)

	srvKey := key()
	srvDER, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "redis"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, DNSNames: []string{"localhost"},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}, caCert, &srvKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	write("redis.pem", "CERTIFICATE", srvDER)
	pk, err := x509.MarshalPKCS8PrivateKey(srvKey)
	if err != nil {
		t.Fatal(err)
	}
	write("redis.key", "PRIVATE KEY", pk)
	return filepath.Join(dir, "ca.pem")
}
