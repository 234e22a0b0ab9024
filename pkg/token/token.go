// Package token is ssegate's access token: a JWT whose claims name the jobs
// its bearer may watch (jobs) or publish to (publish). An application's
// backend mints one for each user and job (Mint, or any JWT library); the
// gateway checks it (Verifier).
//
// The signing algorithm is fixed by each verification key, never taken from
// the token: a secret verifies HS256 only, an RSA public key RS256 only, an
// ECDSA P-256 key ES256 only, and "none" nothing. Several keys may be
// configured at once, for rotation without downtime: a token whose kid
// header names a key is checked against that key, any other against each.
package token

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/ssegate/ssegate/pkg/protocol"
)

// Claims are the claims of an ssegate token. exp is required.
type Claims struct {
	jwt.RegisteredClaims
	// Jobs are the jobs the bearer may watch: job IDs, or prefix patterns
	// such as "report-*" (every job whose ID starts with "report-"; "*"
	// alone is every job).
	Jobs Grant `json:"jobs,omitempty"`
	// Publish are the jobs the bearer may publish to, in the same form.
	Publish Grant `json:"publish,omitempty"`
}

// A Grant is a list of job IDs and prefix patterns.
type Grant []string

// Covers reports whether g grants job.
func (g Grant) Covers(job string) bool {
	for _, p := range g {
		if prefix, ok := strings.CutSuffix(p, "*"); ok {
			if strings.HasPrefix(job, prefix) {
				return true
			}
		} else if p == job {
			return true
		}
	}
	return false
}

// Validate reports the first entry that is neither a job ID nor a job ID
// prefix followed by one "*".
func (g Grant) Validate() error {
	for _, p := range g {
		prefix, _ := strings.CutSuffix(p, "*")
		if prefix == "" && p == "*" {
			continue
		}
		if !protocol.ValidJobID(prefix) {
			return fmt.Errorf("%q is neither a job ID nor a job ID prefix followed by *", p)
		}
	}
	return nil
}

// MinSecretBytes is the shortest HS256 secret accepted: the hash's size, as
// RFC 7518 asks.
const MinSecretBytes = 32

// A Key verifies (or, for Mint, signs) tokens with one algorithm.
type Key struct {
	// ID is the key's name, matched against a token's kid header: the
	// "kid" header of its PEM block when there is one, else its RFC 7638
	// JWK thumbprint. Secrets have none unless given one.
	ID     string
	method jwt.SigningMethod
	key    any // []byte, *rsa.PublicKey, *ecdsa.PublicKey, or their private keys
}

// Algorithm returns the one algorithm the key works with: HS256, RS256 or
// ES256.
func (k Key) Algorithm() string { return k.method.Alg() }

// Secret is an HS256 key.
func Secret(secret []byte) (Key, error) {
	if len(secret) < MinSecretBytes {
		return Key{}, fmt.Errorf("token: an HS256 secret needs at least %d bytes, got %d", MinSecretBytes, len(secret))
	}
	return Key{method: jwt.SigningMethodHS256, key: secret}, nil
}

// Secrets parses a comma-separated list of HS256 secrets: the current one
// and, during a rotation, the previous one.
func Secrets(list string) ([]Key, error) {
	var keys []Key
	for s := range strings.SplitSeq(list, ",") {
		s = strings.TrimSpace(s)
		if s == "" {
			continue
		}
		k, err := Secret([]byte(s))
		if err != nil {
			return nil, err
		}
		keys = append(keys, k)
	}
	if len(keys) == 0 {
		return nil, errors.New("token: no secret given")
	}
	return keys, nil
}

// PublicKeys parses every public key in a PEM file: "PUBLIC KEY" (PKIX) or
// "RSA PUBLIC KEY" blocks holding RSA (RS256, 2048 bits or more) or ECDSA
// P-256 (ES256) keys, or certificates carrying them. A block's "kid" header,
// if any, names its key.
func PublicKeys(pemData []byte) ([]Key, error) {
	var keys []Key
	for n := 1; ; n++ {
		var b *pem.Block
		b, pemData = pem.Decode(pemData)
		if b == nil {
			break
		}
		var pub any
		var err error
		switch b.Type {
		case "PUBLIC KEY":
			pub, err = x509.ParsePKIXPublicKey(b.Bytes)
		case "RSA PUBLIC KEY":
			pub, err = x509.ParsePKCS1PublicKey(b.Bytes)
		case "CERTIFICATE":
			var c *x509.Certificate
			if c, err = x509.ParseCertificate(b.Bytes); err == nil {
				pub = c.PublicKey
			}
		default:
			return nil, fmt.Errorf("token: PEM block %d is a %q, not a public key", n, b.Type)
		}
		if err != nil {
			return nil, fmt.Errorf("token: PEM block %d: %w", n, err)
		}
		k, err := verifyKey(pub)
		if err != nil {
			return nil, fmt.Errorf("token: PEM block %d: %w", n, err)
		}
		k.ID = b.Headers["kid"]
		if k.ID == "" {
			k.ID = thumbprint(pub)
		}
		keys = append(keys, k)
	}
	if len(keys) == 0 {
		return nil, errors.New("token: no PEM public key found")
	}
	return keys, nil
}

func verifyKey(pub any) (Key, error) {
	switch p := pub.(type) {
	case *rsa.PublicKey:
		if p.N.BitLen() < 2048 {
			return Key{}, fmt.Errorf("an RSA key needs 2048 bits or more, got %d", p.N.BitLen())
		}
		return Key{method: jwt.SigningMethodRS256, key: p}, nil
	case *ecdsa.PublicKey:
		if p.Curve != elliptic.P256() {
			return Key{}, fmt.Errorf("an ECDSA key must be on P-256 (ES256), got %s", p.Curve.Params().Name)
		}
		return Key{method: jwt.SigningMethodES256, key: p}, nil
	}
	return Key{}, fmt.Errorf("unsupported public key type %T (want RSA or ECDSA P-256)", pub)
}

// thumbprint is the RFC 7638 JWK thumbprint of an RSA or P-256 key.
func thumbprint(pub any) string {
	b64 := base64.RawURLEncoding.EncodeToString
	var j string
	switch p := pub.(type) {
	case *rsa.PublicKey:
		j = fmt.Sprintf(`{"e":%q,"kty":"RSA","n":%q}`, b64(big.NewInt(int64(p.E)).Bytes()), b64(p.N.Bytes()))
	case *ecdsa.PublicKey:
		b, err := p.Bytes() // 0x04 || X || Y, 32 bytes each on P-256
		if err != nil || len(b) != 65 {
			return ""
		}
		j = fmt.Sprintf(`{"crv":"P-256","kty":"EC","x":%q,"y":%q}`, b64(b[1:33]), b64(b[33:]))
	}
	sum := sha256.Sum256([]byte(j))
	return b64(sum[:])
}

// PrivateKey parses a PEM private key (PKCS #8, PKCS #1 RSA or SEC 1 EC) for
// Mint; its ID is its public key's thumbprint unless the block has a kid
// header.
func PrivateKey(pemData []byte) (Key, error) {
	b, _ := pem.Decode(pemData)
	if b == nil {
		return Key{}, errors.New("token: no PEM block found")
	}
	var priv any
	var err error
	switch b.Type {
	case "PRIVATE KEY":
		priv, err = x509.ParsePKCS8PrivateKey(b.Bytes)
	case "RSA PRIVATE KEY":
		priv, err = x509.ParsePKCS1PrivateKey(b.Bytes)
	case "EC PRIVATE KEY":
		priv, err = x509.ParseECPrivateKey(b.Bytes)
	default:
		return Key{}, fmt.Errorf("token: PEM block is a %q, not a private key", b.Type)
	}
	if err != nil {
		return Key{}, fmt.Errorf("token: %w", err)
	}
	var pub any
	switch p := priv.(type) {
	case *rsa.PrivateKey:
		pub = &p.PublicKey
	case *ecdsa.PrivateKey:
		pub = &p.PublicKey
	default:
		return Key{}, fmt.Errorf("token: unsupported private key type %T (want RSA or ECDSA P-256)", priv)
	}
	k, err := verifyKey(pub)
	if err != nil {
		return Key{}, fmt.Errorf("token: %w", err)
	}
	k.key = priv
	k.ID = b.Headers["kid"]
	if k.ID == "" {
		k.ID = thumbprint(pub)
	}
	return k, nil
}

// Mint signs claims with key (a secret or a private key), setting its ID as
// the kid header when it has one.
func Mint(key Key, claims Claims) (string, error) {
	t := jwt.NewWithClaims(key.method, claims)
	if key.ID != "" {
		t.Header["kid"] = key.ID
	}
	return t.SignedString(key.key)
}

// Errors of Verify. Every error Verify returns is one of these, wrapped
// with the detail.
var (
	ErrInvalid = errors.New("invalid token")
	ErrExpired = errors.New("token expired")
)

// VerifierOptions are the checks of a Verifier beyond the signature and exp.
type VerifierOptions struct {
	Issuer   string           // when set, iss must be it
	Audience string           // when set, aud must contain it
	Now      func() time.Time // the clock; default time.Now
}

// A Verifier checks tokens against a fixed set of keys. It is safe for
// concurrent use.
type Verifier struct {
	keys    []Key
	byID    map[string]int
	parsers map[string]*jwt.Parser // by algorithm
}

// NewVerifier returns a Verifier of keys.
func NewVerifier(keys []Key, o VerifierOptions) (*Verifier, error) {
	if len(keys) == 0 {
		return nil, errors.New("token: a verifier needs a key")
	}
	v := &Verifier{keys: keys, byID: map[string]int{}, parsers: map[string]*jwt.Parser{}}
	for i, k := range keys {
		if k.method == nil {
			return nil, errors.New("token: a key made outside this package")
		}
		if k.ID != "" {
			v.byID[k.ID] = i
		}
		alg := k.Algorithm()
		if v.parsers[alg] != nil {
			continue
		}
		opts := []jwt.ParserOption{
			jwt.WithValidMethods([]string{alg}),
			jwt.WithExpirationRequired(),
			jwt.WithJSONNumber(),
		}
		if o.Issuer != "" {
			opts = append(opts, jwt.WithIssuer(o.Issuer))
		}
		if o.Audience != "" {
			opts = append(opts, jwt.WithAudience(o.Audience))
		}
		if o.Now != nil {
			opts = append(opts, jwt.WithTimeFunc(o.Now))
		}
		v.parsers[alg] = jwt.NewParser(opts...)
	}
	return v, nil
}

// Verify checks the token's signature with the key its kid names, or each
// key in turn, then its claims: exp (required), nbf, iss and aud as
// configured, and the jobs and publish grants' form. It returns the claims
// or an error that is ErrExpired or ErrInvalid.
func (v *Verifier) Verify(tok string) (*Claims, error) {
	keys := v.keys
	if kid, ok := kidOf(tok); ok {
		if i, found := v.byID[kid]; found {
			keys = v.keys[i : i+1]
		}
	}
	var firstErr error
	for _, k := range keys {
		c := &Claims{}
		_, err := v.parsers[k.Algorithm()].ParseWithClaims(tok, c, func(*jwt.Token) (any, error) {
			return publicOf(k.key), nil
		})
		if err == nil {
			if err := c.Jobs.Validate(); err != nil {
				return nil, fmt.Errorf("%w: jobs claim: %v", ErrInvalid, err)
			}
			if err := c.Publish.Validate(); err != nil {
				return nil, fmt.Errorf("%w: publish claim: %v", ErrInvalid, err)
			}
			return c, nil
		}
		if errors.Is(err, jwt.ErrTokenExpired) {
			// The signature was good: the token is this key's, and late.
			return nil, fmt.Errorf("%w: %v", ErrExpired, err)
		}
		if firstErr == nil || !errors.Is(err, jwt.ErrTokenSignatureInvalid) {
			// A claim error says more than another key's bad signature.
			firstErr = err
		}
	}
	return nil, fmt.Errorf("%w: %v", ErrInvalid, firstErr)
}

// kidOf returns the kid of a token's header without checking anything
// else.
func kidOf(tok string) (string, bool) {
	head, _, ok := strings.Cut(tok, ".")
	if !ok || len(head) > 1024 {
		return "", false
	}
	raw, err := base64.RawURLEncoding.DecodeString(head)
	if err != nil {
		return "", false
	}
	var h struct {
		Kid string `json:"kid"`
	}
	if json.Unmarshal(raw, &h) != nil || h.Kid == "" {
		return "", false
	}
	return h.Kid, true
}

func publicOf(k any) any {
	switch p := k.(type) {
	case *rsa.PrivateKey:
		return &p.PublicKey
	case *ecdsa.PrivateKey:
		return &p.PublicKey
	}
	return k
}
