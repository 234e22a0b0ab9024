package token

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"testing"
)

// BenchmarkVerify is the cost of checking one token, as each stream open
// with auth on pays it: per algorithm, and with two keys configured during
// a rotation (the token signed by the second; no kid, so both are tried).
func BenchmarkVerify(b *testing.B) {
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	ecKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	rsaPub, _ := verifyKey(&rsaKey.PublicKey)
	ecPub, _ := verifyKey(&ecKey.PublicKey)
	rsaPriv, ecPriv := rsaPub, ecPub
	rsaPriv.key, ecPriv.key = rsaKey, ecKey
	s1, _ := Secret([]byte("0123456789abcdef0123456789abcdef"))
	s2, _ := Secret([]byte("fedcba9876543210fedcba9876543210"))
	for _, tc := range []struct {
		name   string
		verify []Key
		sign   Key
	}{
		{"HS256", []Key{s1}, s1},
		{"HS256-rotation", []Key{s1, s2}, s2},
		{"RS256", []Key{rsaPub}, rsaPriv},
		{"ES256", []Key{ecPub}, ecPriv},
	} {
		b.Run(tc.name, func(b *testing.B) {
			v, err := NewVerifier(tc.verify, VerifierOptions{Issuer: "https://app.example", Audience: "ssegate"})
			if err != nil {
				b.Fatal(err)
			}
			c := claims("report-1", "export-*")
			c.Issuer, c.Audience = "https://app.example", []string{"ssegate"}
			tok, err := Mint(tc.sign, c)
			if err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			for b.Loop() {
				got, err := v.Verify(tok)
				if err != nil || !got.Jobs.Covers("export-9") {
					b.Fatal(got, err)
				}
			}
		})
	}
}
