package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// writeTestPair writes a self-signed ECDSA P-256 certificate for 127.0.0.1
// with the given serial, and its key, to cert and key.
func writeTestPair(t *testing.T, serial int64, cert, key string) *x509.Certificate {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: "ssegate test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, BasicConstraintsValid: true, IsCA: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	kd, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(cert, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(key, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kd}), 0o600); err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return leaf
}

// TestTLSFlagErrors: --tls-cert and --tls-key go together, and a file that
// cannot be read fails the start with a message naming it; both are usage
// errors (exit 2).
func TestTLSFlagErrors(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	cert, key := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	writeTestPair(t, 1, cert, key)
	base := []string{"--addr", "127.0.0.1:0", "--embedded-redis-addr", "127.0.0.1:0", "--demo", "off"}
	for _, tc := range []struct {
		name string
		args []string
		env  map[string]string
		want string
	}{
		{"cert alone", []string{"--tls-cert", cert}, nil, "--tls-cert and --tls-key"},
		{"key alone, from the environment", nil, map[string]string{"SSEGATE_TLS_KEY": key}, "--tls-cert and --tls-key"},
		{"missing key", []string{"--tls-cert", cert, "--tls-key", filepath.Join(dir, "nope.key")}, nil, "nope.key: no such file or directory"},
		{"not a certificate", []string{"--tls-cert", key, "--tls-key", key}, nil, "TLS certificate " + key},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stderr bytes.Buffer
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if code := run(ctx, append(append([]string{}, base...), tc.args...), env(tc.env), io.Discard, &stderr); code != 2 || !strings.Contains(stderr.String(), tc.want) {
				t.Errorf("exit %d, stderr %q; want 2 and a message with %q", code, stderr.String(), tc.want)
			}
		})
	}
}

// TestServeTLS: with --tls-cert and --tls-key the gateway serves HTTPS with
// HTTP/2, `gateway healthcheck` with the same flags asks it over HTTPS, and
// SIGHUP makes it present a certificate written over the files since.
func TestServeTLS(t *testing.T) {
	// Not parallel: it sends the test process a SIGHUP, which only the
	// gateway's handler may be there to receive.
	dir := t.TempDir()
	cert, key := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	first := writeTestPair(t, 1, cert, key)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	args := []string{"--addr", addr, "--tls-cert", cert, "--tls-key", key, "--shutdown-grace", "100ms"}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var stderr bytes.Buffer // read once run has returned
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, append([]string{"--embedded-redis-addr", "127.0.0.1:0", "--demo", "off"}, args...), env(nil), io.Discard, &stderr)
	}()
	healthy := false
	for deadline := time.Now().Add(15 * time.Second); !healthy && time.Now().Before(deadline); {
		select {
		case code := <-done:
			t.Fatalf("gateway exited %d: %s", code, stderr.String())
		case <-time.After(20 * time.Millisecond):
		}
		healthy = run(context.Background(), append([]string{"healthcheck"}, args...), env(nil), io.Discard, io.Discard) == 0
	}
	if !healthy {
		cancel()
		<-done
		t.Fatalf("healthcheck over HTTPS never passed: %s", stderr.String())
	}

	roots := x509.NewCertPool()
	roots.AddCert(first)
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}, Protocols: new(http.Protocols)}
	tr.Protocols.SetHTTP2(true)
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Get("https://" + addr + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.ProtoMajor != 2 {
		t.Errorf("GET /healthz: %s %s, want 200 over HTTP/2", resp.Proto, resp.Status)
	}

	writeTestPair(t, 2, cert, key)
	if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	serial := func() int64 {
		c, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		return c.ConnectionState().PeerCertificates[0].SerialNumber.Int64()
	}
	for deadline := time.Now().Add(3 * time.Second); serial() != 2 && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	if got := serial(); got != 2 {
		t.Errorf("after SIGHUP: serving serial %d, want 2", got)
	}
	cancel()
	if code := <-done; code != 0 {
		t.Errorf("gateway exited %d", code)
	}
	// The poll (every 5s) may have seen the new files too; the SIGHUP
	// reload is logged either way.
	if !strings.Contains(stderr.String(), `trigger="reload requested"`) {
		t.Errorf("no reload on SIGHUP in the logs:\n%s", stderr.String())
	}
}
