package gateway

import (
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/ssegate/ssegate/pkg/protocol"
)

// streamQuery is the parsed input of a stream request.
type streamQuery struct {
	includeReport bool
	timeout       time.Duration
	resume        bool        // the client named a Last-Event-ID
	lastID        protocol.ID // valid when resume
}

// parseStreamQuery parses the query parameters and the Last-Event-ID header
// of a stream request. The header wins over the lastEventId parameter (the
// fallback for clients that cannot set headers); an empty value of either
// means "no resume point", as a first EventSource connection sends none.
func parseStreamQuery(q url.Values, lastEventIDHeader string, defaultTimeout, maxTimeout time.Duration) (streamQuery, *apiError) {
	sq := streamQuery{timeout: defaultTimeout}
	for name, vs := range q {
		if len(vs) > 1 {
			return sq, badRequest(CodeInvalidQuery, "query parameter "+strconv.Quote(name)+" given more than once")
		}
	}
	if v, ok := single(q, "includeReport"); ok {
		b, err := parseBool(v)
		if err != nil {
			return sq, badRequest(CodeInvalidIncludeReport, "includeReport must be true or false")
		}
		sq.includeReport = b
	}
	if v, ok := single(q, "timeout"); ok {
		d, err := parseTimeout(v, maxTimeout)
		if err != nil {
			return sq, badRequest(CodeInvalidTimeout, "timeout must be a positive number of milliseconds or a duration such as 90s")
		}
		sq.timeout = d
	}
	raw := lastEventIDHeader
	if raw == "" {
		raw, _ = single(q, "lastEventId")
	}
	if raw != "" {
		id, err := protocol.ParseID(raw)
		if err != nil {
			return sq, badRequest(CodeInvalidLastEventID, "Last-Event-ID must be an event ID such as 1764230400000-0")
		}
		sq.resume, sq.lastID = true, id
	}
	return sq, nil
}

func single(q url.Values, name string) (string, bool) {
	vs, ok := q[name]
	if !ok || len(vs) == 0 {
		return "", false
	}
	return vs[0], true
}

// parseBool accepts true/false, 1/0 and yes/no in any case; an empty value
// (?includeReport) means true.
func parseBool(v string) (bool, error) {
	switch strings.ToLower(v) {
	case "", "true", "1", "yes":
		return true, nil
	case "false", "0", "no":
		return false, nil
	}
	return false, strconv.ErrSyntax
}

// parseTimeout accepts whole milliseconds ("90000") or a Go duration
// ("90s", "1m30s"). It must be positive; above max it is clamped to max.
func parseTimeout(v string, max time.Duration) (time.Duration, error) {
	if v == "" || v[0] == '+' || v[0] == '-' {
		return 0, strconv.ErrSyntax // no signs: a timeout is a plain positive amount
	}
	if allDigits(v) {
		// Whole milliseconds. Too many digits to fit is simply "huge".
		ms, err := strconv.ParseInt(v, 10, 64)
		if err != nil || ms > int64(max/time.Millisecond) {
			return max, nil
		}
		if ms == 0 {
			return 0, strconv.ErrRange
		}
		return time.Duration(ms) * time.Millisecond, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		if wellFormedDuration(v) {
			return max, nil // a valid duration too large for time.Duration: huge
		}
		return 0, err
	}
	if d <= 0 {
		return 0, strconv.ErrRange
	}
	return min(d, max), nil
}

// wellFormedDuration reports whether v follows the grammar of a positive Go
// duration ("1h30m", "1.5s"), to tell overflow from nonsense.
func wellFormedDuration(v string) bool {
	if v == "" {
		return false
	}
	for v != "" {
		i := 0
		for i < len(v) && ('0' <= v[i] && v[i] <= '9' || v[i] == '.') {
			i++
		}
		num := v[:i]
		if num == "" || num == "." || strings.Count(num, ".") > 1 {
			return false
		}
		v = v[i:]
		unit := ""
		for _, u := range []string{"ns", "us", "µs", "μs", "ms", "s", "m", "h"} {
			if strings.HasPrefix(v, u) {
				unit = u
				break
			}
		}
		if unit == "" {
			return false
		}
		v = v[len(unit):]
	}
	return true
}

func allDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return s != ""
}
