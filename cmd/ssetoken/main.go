// Command ssetoken mints an ssegate access token, for operators and tests:
//
//	SSEGATE_JWT_SECRET=... ssetoken --jobs 'report-42' --ttl 15m
//	ssetoken --private-key signing.pem --jobs 'report-*' --iss https://app.example --aud ssegate
//	SSEGATE_PUBLISHER_JWT_SECRET=... ssetoken --secret-env SSEGATE_PUBLISHER_JWT_SECRET --publish 'report-*'
//
// It prints the token on standard output. A secret is read from an
// environment variable, never from the command line, where ps would show it;
// with a comma-separated list (a rotation) the first one signs.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/ssegate/ssegate/pkg/token"
)

func main() {
	os.Exit(run(os.Args[1:], os.Getenv, time.Now, os.Stdout, os.Stderr))
}

func run(args []string, getenv func(string) string, now func() time.Time, stdout, stderr io.Writer) int {
	tok, err := mint(args, getenv, now, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "ssetoken: %v\n", err)
		return 2
	}
	fmt.Fprintln(stdout, tok)
	return 0
}

func mint(args []string, getenv func(string) string, now func() time.Time, usage io.Writer) (string, error) {
	fs := flag.NewFlagSet("ssetoken", flag.ContinueOnError)
	fs.SetOutput(usage)
	secretEnv := fs.String("secret-env", "SSEGATE_JWT_SECRET", "environment variable holding the HS256 secret(s); the first of a comma-separated list signs")
	keyFile := fs.String("private-key", "", "PEM private key (RSA: RS256, P-256: ES256) to sign with instead of a secret")
	jobs := fs.String("jobs", "", "comma-separated job IDs or prefix patterns (report-*) the bearer may watch")
	publish := fs.String("publish", "", "comma-separated job IDs or prefix patterns the bearer may publish to")
	ttl := fs.Duration("ttl", time.Hour, "lifetime: exp is now + ttl")
	sub := fs.String("sub", "", "subject (the user the token is for)")
	iss := fs.String("iss", "", "issuer")
	aud := fs.String("aud", "", "audience")
	kid := fs.String("kid", "", "kid header (default: a PEM key's kid header or thumbprint; none for a secret)")
	if err := fs.Parse(args); err != nil {
		return "", err
	}
	if fs.NArg() > 0 {
		return "", fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if *ttl <= 0 {
		return "", fmt.Errorf("--ttl must be positive, got %v", *ttl)
	}
	c := token.Claims{Jobs: list(*jobs), Publish: list(*publish)}
	if len(c.Jobs) == 0 && len(c.Publish) == 0 {
		return "", errors.New("name the jobs with --jobs (watch) or --publish")
	}
	if err := c.Jobs.Validate(); err != nil {
		return "", fmt.Errorf("--jobs: %w", err)
	}
	if err := c.Publish.Validate(); err != nil {
		return "", fmt.Errorf("--publish: %w", err)
	}
	t := now()
	c.IssuedAt = jwt.NewNumericDate(t)
	c.ExpiresAt = jwt.NewNumericDate(t.Add(*ttl))
	c.Subject, c.Issuer = *sub, *iss
	if *aud != "" {
		c.Audience = jwt.ClaimStrings{*aud}
	}
	var key token.Key
	if *keyFile != "" {
		pem, err := os.ReadFile(*keyFile)
		if err != nil {
			return "", fmt.Errorf("--private-key: %w", err)
		}
		if key, err = token.PrivateKey(pem); err != nil {
			return "", fmt.Errorf("--private-key %s: %w", *keyFile, err)
		}
	} else {
		v := getenv(*secretEnv)
		if v == "" {
			return "", fmt.Errorf("%s is empty: set it to the gateway's secret, or use --private-key", *secretEnv)
		}
		keys, err := token.Secrets(v)
		if err != nil {
			return "", fmt.Errorf("%s: %w", *secretEnv, err)
		}
		key = keys[0]
	}
	if *kid != "" {
		key.ID = *kid
	}
	return token.Mint(key, c)
}

func list(s string) token.Grant {
	var g token.Grant
	for p := range strings.SplitSeq(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			g = append(g, p)
		}
	}
	return g
}
