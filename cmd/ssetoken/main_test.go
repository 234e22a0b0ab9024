package main

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ssegate/ssegate/pkg/token"
)

const secret = "0123456789abcdef0123456789abcdef"

func env(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func TestMintsWhatTheGatewayAccepts(t *testing.T) {
	at := time.Now()
	var out, errb bytes.Buffer
	code := run([]string{"--jobs", "report-1, export-*", "--publish", "report-1", "--ttl", "15m", "--iss", "https://app.example", "--aud", "ssegate", "--sub", "user-7"},
		env(map[string]string{"SSEGATE_JWT_SECRET": secret + ",older-secret-0123456789abcdef0123"}), func() time.Time { return at }, &out, &errb)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	key, _ := token.Secret([]byte(secret))
	v, err := token.NewVerifier([]token.Key{key}, token.VerifierOptions{Issuer: "https://app.example", Audience: "ssegate"})
	if err != nil {
		t.Fatal(err)
	}
	c, err := v.Verify(strings.TrimSpace(out.String()))
	if err != nil {
		t.Fatal(err)
	}
	if !c.Jobs.Covers("export-9") || c.Jobs.Covers("report-2") || !c.Publish.Covers("report-1") || c.Subject != "user-7" ||
		c.ExpiresAt.Unix() != at.Add(15*time.Minute).Unix() {
		t.Errorf("claims %+v", c)
	}
}

func TestMintsWithAPrivateKey(t *testing.T) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, _ := x509.MarshalPKCS8PrivateKey(k)
	pubDER, _ := x509.MarshalPKIXPublicKey(&k.PublicKey)
	file := filepath.Join(t.TempDir(), "signing.pem")
	if err := os.WriteFile(file, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	tok, err := mint([]string{"--private-key", file, "--jobs", "j"}, env(nil), time.Now, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	keys, err := token.PublicKeys(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER}))
	if err != nil {
		t.Fatal(err)
	}
	v, _ := token.NewVerifier(keys, token.VerifierOptions{})
	if c, err := v.Verify(tok); err != nil || !c.Jobs.Covers("j") {
		t.Errorf("Verify = %+v, %v", c, err)
	}
}

func TestRefusals(t *testing.T) {
	good := map[string]string{"SSEGATE_JWT_SECRET": secret}
	for _, tc := range []struct {
		args []string
		env  map[string]string
		want string
	}{
		{[]string{"--jobs", "j"}, nil, "SSEGATE_JWT_SECRET is empty"},
		{[]string{"--jobs", "j"}, map[string]string{"SSEGATE_JWT_SECRET": "short"}, "at least 32 bytes"},
		{nil, good, "name the jobs"},
		{[]string{"--jobs", "re*port"}, good, "--jobs"},
		{[]string{"--publish", "a b"}, good, "--publish"},
		{[]string{"--jobs", "j", "--ttl", "-1m"}, good, "--ttl must be positive"},
		{[]string{"--jobs", "j", "--private-key", "nope.pem"}, good, "--private-key"},
		{[]string{"--jobs", "j", "extra"}, good, "unexpected arguments"},
	} {
		_, err := mint(tc.args, env(tc.env), time.Now, &bytes.Buffer{})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: %v, want %q", tc.args, err, tc.want)
		}
	}
	if _, err := mint([]string{"--help"}, env(nil), time.Now, &bytes.Buffer{}); !errors.Is(err, flag.ErrHelp) {
		t.Errorf("--help: %v", err)
	}
}
