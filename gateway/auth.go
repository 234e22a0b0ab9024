package gateway

import (
	"errors"
	"net/http"
	"strings"

	"github.com/ssegate/ssegate/pkg/protocol"
	"github.com/ssegate/ssegate/pkg/token"
)

// Error codes of authentication and authorization.
const (
	CodeAuthRequired = "AUTH_REQUIRED" // 401: no token
	CodeInvalidToken = "INVALID_TOKEN" // 401: a token that is not valid
	CodeTokenExpired = "TOKEN_EXPIRED" // 401: a valid token past its exp
	CodeForbidden    = "FORBIDDEN"     // 403: a valid token that does not grant this job
)

// accessTokenParam is the query parameter that may carry the token: an
// EventSource cannot set headers.
const accessTokenParam = "access_token"

// A grant says which claim of a token an endpoint asks for.
type grant int

const (
	grantWatch   grant = iota // the jobs claim: stream, snapshot, report
	grantPublish              // the publish claim: POST .../events
)

// checkJob authenticates r (with the verifier of g), validates the job ID
// and checks that the token grants it, in that order: 401, 400, 403. The
// grant is checked before the job is looked up, so a token for one job
// cannot tell whether another exists. It returns the token's claims, nil
// with auth off.
func (s *Server) checkJob(r *http.Request, job string, g grant) (*token.Claims, *apiError) {
	v := s.cfg.Auth
	if g == grantPublish {
		v = s.cfg.PublishAuth
	}
	claims, err := s.authenticate(r, v)
	if err != nil {
		return nil, err
	}
	if !protocol.ValidJobID(job) {
		return nil, badRequest(CodeInvalidJobID, protocol.ErrInvalidJobID.Error())
	}
	if err := authorize(claims, g, job); err != nil {
		return nil, err
	}
	return claims, nil
}

// authenticate checks the request's token with v and returns its claims.
// With v nil (auth off) it returns nil claims and no error. Every failure
// is a 401 with a WWW-Authenticate challenge (RFC 6750).
func (s *Server) authenticate(r *http.Request, v *token.Verifier) (*token.Claims, *apiError) {
	if v == nil {
		return nil, nil
	}
	raw, ok := s.requestToken(r)
	if !ok {
		return nil, &apiError{Status: http.StatusUnauthorized, Message: "an access token is required", Code: CodeAuthRequired,
			challenge: `Bearer realm="ssegate"`}
	}
	c, err := v.Verify(raw)
	if err != nil {
		s.log.Debug("token refused", "path", r.URL.Path, "err", err)
		if errors.Is(err, token.ErrExpired) {
			return nil, &apiError{Status: http.StatusUnauthorized, Message: "the access token has expired", Code: CodeTokenExpired,
				challenge: `Bearer realm="ssegate", error="invalid_token", error_description="the access token has expired"`}
		}
		return nil, &apiError{Status: http.StatusUnauthorized, Message: "the access token is not valid", Code: CodeInvalidToken,
			challenge: `Bearer realm="ssegate", error="invalid_token", error_description="the access token is not valid"`}
	}
	return c, nil
}

// authorize checks that claims (from authenticate) grant job. Nil claims
// (auth off) grant everything.
func authorize(c *token.Claims, g grant, job string) *apiError {
	if c == nil {
		return nil
	}
	claim := c.Jobs
	if g == grantPublish {
		claim = c.Publish
	}
	if claim.Covers(job) {
		return nil
	}
	return &apiError{Status: http.StatusForbidden, Message: "the access token does not grant this job", Code: CodeForbidden,
		challenge: `Bearer realm="ssegate", error="insufficient_scope"`}
}

// requestToken finds the token: the Authorization header (Bearer), else the
// access_token query parameter, else the configured cookie.
func (s *Server) requestToken(r *http.Request) (string, bool) {
	if h := r.Header.Get("Authorization"); h != "" {
		scheme, tok, _ := strings.Cut(h, " ")
		if strings.EqualFold(scheme, "Bearer") {
			tok = strings.TrimSpace(tok)
			return tok, tok != ""
		}
	}
	if r.URL.RawQuery != "" {
		if vs := r.URL.Query()[accessTokenParam]; len(vs) > 0 && vs[0] != "" {
			return vs[0], true
		}
	}
	if s.cfg.AuthCookie != "" {
		if ck, err := r.Cookie(s.cfg.AuthCookie); err == nil && ck.Value != "" {
			return ck.Value, true
		}
	}
	return "", false
}
