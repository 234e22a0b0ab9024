package token

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

var secret = []byte("0123456789abcdef0123456789abcdef")

func claims(jobs ...string) Claims {
	return Claims{
		RegisteredClaims: jwt.RegisteredClaims{ExpiresAt: jwt.NewNumericDate(time.Now().Add(time.Hour))},
		Jobs:             jobs,
	}
}

func TestGrantCovers(t *testing.T) {
	for _, tc := range []struct {
		grant Grant
		job   string
		want  bool
	}{
		{Grant{"report-1"}, "report-1", true},
		{Grant{"report-1"}, "report-10", false},
		{Grant{"report-1"}, "Report-1", false},
		{Grant{"report-*"}, "report-1", true},
		{Grant{"report-*"}, "report-", true},
		{Grant{"report-*"}, "reportx", false},
		{Grant{"report-*"}, "report", false},
		{Grant{"report-*"}, "xreport-1", false},
		{Grant{"*"}, "anything", true},
		{Grant{}, "report-1", false},
		{nil, "report-1", false},
		{Grant{"a", "b-*"}, "b-2", true},
	} {
		if got := tc.grant.Covers(tc.job); got != tc.want {
			t.Errorf("%q.Covers(%q) = %v, want %v", tc.grant, tc.job, got, tc.want)
		}
	}
}

func TestGrantValidate(t *testing.T) {
	for _, g := range []Grant{{"report-1"}, {"report-*"}, {"*"}, {"a:b.c_d-*"}} {
		if err := g.Validate(); err != nil {
			t.Errorf("%q: %v", g, err)
		}
	}
	for _, g := range []Grant{{""}, {"re*port"}, {"**"}, {"report-**"}, {"a b"}, {"a/*"}} {
		if err := g.Validate(); err == nil {
			t.Errorf("%q: no error", g)
		}
	}
}

func TestSecrets(t *testing.T) {
	keys, err := Secrets(" " + string(secret) + " , " + strings.Repeat("x", 40) + ",")
	if err != nil || len(keys) != 2 || keys[0].Algorithm() != "HS256" {
		t.Fatalf("Secrets = %v, %v", keys, err)
	}
	if _, err := Secrets("short"); err == nil {
		t.Error("a 5-byte secret was taken")
	}
	if _, err := Secrets(" , "); err == nil {
		t.Error("an empty list was taken")
	}
}

func pemOf(t *testing.T, typ string, der []byte, headers map[string]string) []byte {
	t.Helper()
	return pem.EncodeToMemory(&pem.Block{Type: typ, Headers: headers, Bytes: der})
}

func TestPublicKeysAndRotation(t *testing.T) {
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	ecKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	rsaPub, _ := x509.MarshalPKIXPublicKey(&rsaKey.PublicKey)
	ecPub, _ := x509.MarshalPKIXPublicKey(&ecKey.PublicKey)
	file := append(pemOf(t, "PUBLIC KEY", rsaPub, map[string]string{"kid": "old"}), pemOf(t, "PUBLIC KEY", ecPub, nil)...)
	keys, err := PublicKeys(file)
	if err != nil || len(keys) != 2 {
		t.Fatalf("PublicKeys = %v, %v", keys, err)
	}
	if keys[0].ID != "old" || keys[0].Algorithm() != "RS256" || keys[1].Algorithm() != "ES256" || len(keys[1].ID) != 43 {
		t.Fatalf("keys = %+v", keys)
	}
	v, err := NewVerifier(keys, VerifierOptions{})
	if err != nil {
		t.Fatal(err)
	}
	rsaDER, _ := x509.MarshalPKCS8PrivateKey(rsaKey)
	ecDER, _ := x509.MarshalECPrivateKey(ecKey)
	rsaPriv, err := PrivateKey(pemOf(t, "PRIVATE KEY", rsaDER, map[string]string{"kid": "old"}))
	if err != nil {
		t.Fatal(err)
	}
	ecPriv, err := PrivateKey(pemOf(t, "EC PRIVATE KEY", ecDER, nil))
	if err != nil {
		t.Fatal(err)
	}
	if ecPriv.ID != keys[1].ID {
		t.Errorf("private key ID %q, public %q: the thumbprints differ", ecPriv.ID, keys[1].ID)
	}
	for _, k := range []Key{rsaPriv, ecPriv} {
		tok, err := Mint(k, claims("job-1"))
		if err != nil {
			t.Fatal(err)
		}
		c, err := v.Verify(tok)
		if err != nil || !c.Jobs.Covers("job-1") {
			t.Errorf("%s: Verify = %v, %v", k.Algorithm(), c, err)
		}
		// Without its kid, every key is tried.
		k.ID = ""
		tok, _ = Mint(k, claims("job-1"))
		if _, err := v.Verify(tok); err != nil {
			t.Errorf("%s without kid: %v", k.Algorithm(), err)
		}
	}
	// A kid naming the wrong key: that key alone is tried.
	wrong := ecPriv
	wrong.ID = "old"
	tok, _ := Mint(wrong, claims("job-1"))
	if _, err := v.Verify(tok); !errors.Is(err, ErrInvalid) {
		t.Errorf("a kid naming another key: %v", err)
	}
	small, _ := rsa.GenerateKey(rand.Reader, 1024)
	der, _ := x509.MarshalPKIXPublicKey(&small.PublicKey)
	if _, err := PublicKeys(pemOf(t, "PUBLIC KEY", der, nil)); err == nil {
		t.Error("a 1024-bit RSA key was taken")
	}
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	der, _ = x509.MarshalPKIXPublicKey(&p384.PublicKey)
	if _, err := PublicKeys(pemOf(t, "PUBLIC KEY", der, nil)); err == nil {
		t.Error("a P-384 key was taken")
	}
	if _, err := PublicKeys([]byte("not pem")); err == nil {
		t.Error("no PEM was taken")
	}
	if _, err := PublicKeys(pemOf(t, "PRIVATE KEY", rsaDER, nil)); err == nil {
		t.Error("a private key was taken as public")
	}
}

// TestThumbprint checks the RFC 7638 example, section 3.1.
func TestThumbprint(t *testing.T) {
	n := "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw"
	der, err := base64.RawURLEncoding.DecodeString(n)
	if err != nil {
		t.Fatal(err)
	}
	pub := &rsa.PublicKey{N: new(big.Int).SetBytes(der), E: 65537}
	if got, want := thumbprint(pub), "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"; got != want {
		t.Errorf("thumbprint = %s, want %s", got, want)
	}
}
