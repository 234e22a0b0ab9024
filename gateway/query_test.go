package gateway

import (
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/ssegate/ssegate/pkg/protocol"
)

// The timeouts every query test parses against: the documented defaults.
const (
	queryTestDefault = 5 * time.Minute
	queryTestMax     = 10 * time.Minute
)

// parseRawQuery parses raw as the stream handler's query would be and the
// Last-Event-ID header value with it.
func parseRawQuery(tb testing.TB, raw, header string) (streamQuery, *apiError) {
	tb.Helper()
	q, err := url.ParseQuery(raw)
	if err != nil {
		tb.Fatalf("bad test query %q: %v", raw, err)
	}
	return parseStreamQuery(q, header, queryTestDefault, queryTestMax)
}

// wantBadRequest fails unless err is a 400 with code.
func wantBadRequest(tb testing.TB, err *apiError, code string) {
	tb.Helper()
	if err == nil {
		tb.Fatalf("got no error, want 400 %s", code)
	}
	if err.Status != http.StatusBadRequest || err.Code != code {
		tb.Fatalf("got %d %s (%q), want 400 %s", err.Status, err.Code, err.Message, code)
	}
	if err.Message == "" {
		tb.Fatalf("400 %s has no message", code)
	}
}

func TestParseStreamQueryDefaults(t *testing.T) {
	t.Parallel()
	for _, raw := range []string{"", "unknown=1", "lastEventId="} {
		sq, err := parseRawQuery(t, raw, "")
		if err != nil {
			t.Fatalf("%q: %v", raw, err)
		}
		want := streamQuery{timeout: queryTestDefault}
		if sq != want {
			t.Errorf("%q: got %+v, want %+v", raw, sq, want)
		}
	}
}

func TestParseStreamQueryIncludeReport(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		query string
		want  bool
		code  string // the error code, if any
	}{
		{name: "absent", query: "", want: false},
		{name: "true", query: "includeReport=true", want: true},
		{name: "TRUE", query: "includeReport=TRUE", want: true},
		{name: "True", query: "includeReport=True", want: true},
		{name: "one", query: "includeReport=1", want: true},
		{name: "yes", query: "includeReport=yes", want: true},
		{name: "YeS", query: "includeReport=YeS", want: true},
		{name: "empty value", query: "includeReport=", want: true},
		{name: "bare name", query: "includeReport", want: true},
		{name: "false", query: "includeReport=false", want: false},
		{name: "FALSE", query: "includeReport=FALSE", want: false},
		{name: "zero", query: "includeReport=0", want: false},
		{name: "no", query: "includeReport=no", want: false},
		{name: "NO", query: "includeReport=NO", want: false},
		{name: "garbage", query: "includeReport=maybe", code: CodeInvalidIncludeReport},
		{name: "two", query: "includeReport=2", code: CodeInvalidIncludeReport},
		{name: "t", query: "includeReport=t", code: CodeInvalidIncludeReport},
		{name: "on", query: "includeReport=on", code: CodeInvalidIncludeReport},
		{name: "padded", query: "includeReport=%20true", code: CodeInvalidIncludeReport},
		{name: "true with NUL", query: "includeReport=true%00", code: CodeInvalidIncludeReport},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			sq, err := parseRawQuery(t, tt.query, "")
			if tt.code != "" {
				wantBadRequest(t, err, tt.code)
				return
			}
			if err != nil {
				t.Fatalf("unexpected error: %v", err)
			}
			if sq.includeReport != tt.want {
				t.Errorf("includeReport = %v, want %v", sq.includeReport, tt.want)
			}
			if sq.timeout != queryTestDefault || sq.resume {
				t.Errorf("other fields changed: %+v", sq)
			}
		})
	}
}

func TestParseBool(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		in      string
		want    bool
		wantErr bool
	}{
		{name: "empty", in: "", want: true},
		{name: "true", in: "true", want: true},
		{name: "tRuE", in: "tRuE", want: true},
		{name: "1", in: "1", want: true},
		{name: "YES", in: "YES", want: true},
		{name: "false", in: "false", want: false},
		{name: "fAlSe", in: "fAlSe", want: false},
		{name: "0", in: "0", want: false},
		{name: "No", in: "No", want: false},
		{name: "y", in: "y", wantErr: true},
		{name: "n", in: "n", wantErr: true},
		{name: "off", in: "off", wantErr: true},
		{name: "01", in: "01", wantErr: true},
		{name: "space", in: " ", wantErr: true},
		{name: "trailing space", in: "true ", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := parseBool(tt.in)
			if (err != nil) != tt.wantErr {
				t.Fatalf("parseBool(%q) error = %v, want error %v", tt.in, err, tt.wantErr)
			}
			if err == nil && got != tt.want {
				t.Errorf("parseBool(%q) = %v, want %v", tt.in, got, tt.want)
			}
		})
	}
}

func TestParseStreamQueryTimeout(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		query string
		want  time.Duration
		code  string
	}{
		{name: "absent", query: "", want: queryTestDefault},
		{name: "milliseconds", query: "timeout=90000", want: 90 * time.Second},
		{name: "one millisecond", query: "timeout=1", want: time.Millisecond},
		{name: "leading zeros", query: "timeout=000090000", want: 90 * time.Second},
		{name: "seconds", query: "timeout=90s", want: 90 * time.Second},
		{name: "minutes and seconds", query: "timeout=1m30s", want: 90 * time.Second},
		{name: "fractional", query: "timeout=1.5s", want: 1500 * time.Millisecond},
		{name: "ms unit", query: "timeout=250ms", want: 250 * time.Millisecond},
		{name: "exactly max ms", query: "timeout=600000", want: queryTestMax},
		{name: "exactly max duration", query: "timeout=10m", want: queryTestMax},
		{name: "above max ms", query: "timeout=600001", want: queryTestMax},
		{name: "above max duration", query: "timeout=11m", want: queryTestMax},
		{name: "hours", query: "timeout=24h", want: queryTestMax},
		{name: "max int64 ms", query: "timeout=9223372036854775807", want: queryTestMax},
		{name: "huge digits", query: "timeout=" + strings.Repeat("9", 40), want: queryTestMax},
		{name: "overflowing duration", query: "timeout=99999999999h", want: queryTestMax},
		{name: "overflowing ns", query: "timeout=9223372036854775808ns", want: queryTestMax},
		{name: "overflowing sum", query: "timeout=2562047h2562047h", want: queryTestMax},
		{name: "zero", query: "timeout=0", code: CodeInvalidTimeout},
		{name: "zeros", query: "timeout=0000", code: CodeInvalidTimeout},
		{name: "zero duration", query: "timeout=0s", code: CodeInvalidTimeout},
		{name: "negative ms", query: "timeout=-1", code: CodeInvalidTimeout},
		{name: "negative duration", query: "timeout=-5s", code: CodeInvalidTimeout},
		{name: "plus sign", query: "timeout=%2B5s", code: CodeInvalidTimeout},
		{name: "plus sign huge", query: "timeout=%2B99999999999h", code: CodeInvalidTimeout},
		{name: "negative overflow", query: "timeout=-99999999999h", code: CodeInvalidTimeout},
		{name: "non-numeric", query: "timeout=abc", code: CodeInvalidTimeout},
		{name: "fraction without unit", query: "timeout=1.5", code: CodeInvalidTimeout},
		{name: "unknown unit", query: "timeout=5x", code: CodeInvalidTimeout},
		{name: "unit only", query: "timeout=h", code: CodeInvalidTimeout},
		{name: "empty", query: "timeout=", code: CodeInvalidTimeout},
		{name: "bare name", query: "timeout", code: CodeInvalidTimeout},
		{name: "space", query: "timeout=%2090s", code: CodeInvalidTimeout},
		{name: "exponent", query: "timeout=1e3", code: CodeInvalidTimeout},
		{name: "hex", query: "timeout=0x10", code: CodeInvalidTimeout},
		{name: "dot only", query: "timeout=.s", code: CodeInvalidTimeout},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			sq, err := parseRawQuery(t, tt.query, "")
			if tt.code != "" {
				wantBadRequest(t, err, tt.code)
				return
			}
			if err != nil {
				t.Fatalf("unexpected error: %v", err)
			}
			if sq.timeout != tt.want {
				t.Errorf("timeout = %v, want %v", sq.timeout, tt.want)
			}
		})
	}
}

func TestParseTimeout(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		in      string
		max     time.Duration
		want    time.Duration
		wantErr bool
	}{
		{name: "ms below max", in: "1000", max: time.Minute, want: time.Second},
		{name: "ms at max", in: "60000", max: time.Minute, want: time.Minute},
		{name: "ms above max", in: "60001", max: time.Minute, want: time.Minute},
		{name: "ms overflowing int64", in: "99999999999999999999", max: time.Minute, want: time.Minute},
		{name: "duration below max", in: "59s", max: time.Minute, want: 59 * time.Second},
		{name: "duration above max", in: "61s", max: time.Minute, want: time.Minute},
		{name: "sub-millisecond duration", in: "1ns", max: time.Minute, want: time.Nanosecond},
		{name: "micro sign", in: "5µs", max: time.Minute, want: 5 * time.Microsecond},
		{name: "overflowing duration", in: "99999999999h", max: time.Minute, want: time.Minute},
		{name: "overflowing fraction", in: "9999999999999.5h", max: time.Minute, want: time.Minute},
		{name: "empty", in: "", max: time.Minute, wantErr: true},
		{name: "zero", in: "0", max: time.Minute, wantErr: true},
		{name: "zero duration", in: "0h0m0s", max: time.Minute, wantErr: true},
		{name: "negative", in: "-1s", max: time.Minute, wantErr: true},
		{name: "garbage", in: "soon", max: time.Minute, wantErr: true},
		{name: "trailing garbage", in: "5s!", max: time.Minute, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := parseTimeout(tt.in, tt.max)
			if (err != nil) != tt.wantErr {
				t.Fatalf("parseTimeout(%q, %v) = %v, %v; want error %v", tt.in, tt.max, got, err, tt.wantErr)
			}
			if err == nil && got != tt.want {
				t.Errorf("parseTimeout(%q, %v) = %v, want %v", tt.in, tt.max, got, tt.want)
			}
		})
	}
}

func TestWellFormedDuration(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		in   string
		want bool
	}{
		{name: "seconds", in: "90s", want: true},
		{name: "compound", in: "1h30m", want: true},
		{name: "fraction", in: "1.5s", want: true},
		{name: "leading dot", in: ".5s", want: true},
		{name: "trailing dot", in: "5.s", want: true},
		{name: "every unit", in: "1h1m1s1ms1us1µs1μs1ns", want: true},
		{name: "overflowing", in: "99999999999h", want: true},
		{name: "empty", in: "", want: false},
		{name: "no unit", in: "15", want: false},
		{name: "fraction no unit", in: "1.5", want: false},
		{name: "unit only", in: "h", want: false},
		{name: "dot only", in: ".s", want: false},
		{name: "two dots", in: "1.2.3s", want: false},
		{name: "unknown unit", in: "5x", want: false},
		{name: "days", in: "1d", want: false},
		{name: "negative", in: "-5s", want: false},
		{name: "plus", in: "+5s", want: false},
		{name: "trailing number", in: "1h30", want: false},
		{name: "space", in: "1h 30m", want: false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := wellFormedDuration(tt.in); got != tt.want {
				t.Errorf("wellFormedDuration(%q) = %v, want %v", tt.in, got, tt.want)
			}
		})
	}
}

func TestParseStreamQueryLastEventID(t *testing.T) {
	t.Parallel()
	maxID := "18446744073709551615-18446744073709551615" // 41 bytes, the longest valid ID
	tests := []struct {
		name   string
		query  string
		header string
		want   protocol.ID // resume point; zero with resume false
		resume bool
		code   string
	}{
		{name: "none", resume: false},
		{name: "header", header: "1764230400000-0", want: protocol.ID{Ms: 1764230400000}, resume: true},
		{name: "header with seq", header: "1764230400000-7", want: protocol.ID{Ms: 1764230400000, Seq: 7}, resume: true},
		{name: "zero ID", header: "0-0", want: protocol.ID{}, resume: true},
		{name: "longest", header: maxID, want: protocol.ID{Ms: 1<<64 - 1, Seq: 1<<64 - 1}, resume: true},
		{name: "query fallback", query: "lastEventId=5-1", want: protocol.ID{Ms: 5, Seq: 1}, resume: true},
		{name: "header wins", query: "lastEventId=5-1", header: "9-2", want: protocol.ID{Ms: 9, Seq: 2}, resume: true},
		{name: "header wins over bad query", query: "lastEventId=junk", header: "9-2", want: protocol.ID{Ms: 9, Seq: 2}, resume: true},
		{name: "empty header falls back", query: "lastEventId=3-0", header: "", want: protocol.ID{Ms: 3}, resume: true},
		{name: "empty query", query: "lastEventId=", resume: false},
		{name: "bare query name", query: "lastEventId", resume: false},
		{name: "bad header wins over good query", query: "lastEventId=5-1", header: "junk", code: CodeInvalidLastEventID},
		{name: "no dash", header: "1", code: CodeInvalidLastEventID},
		{name: "no seq", header: "1-", code: CodeInvalidLastEventID},
		{name: "no ms", header: "-1", code: CodeInvalidLastEventID},
		{name: "letters", header: "a-b", code: CodeInvalidLastEventID},
		{name: "dash only", header: "-", code: CodeInvalidLastEventID},
		{name: "two dashes", header: "1-2-3", code: CodeInvalidLastEventID},
		{name: "sign", header: "+1-0", code: CodeInvalidLastEventID},
		{name: "leading space", header: " 1-0", code: CodeInvalidLastEventID},
		{name: "trailing space", header: "1-0 ", code: CodeInvalidLastEventID},
		{name: "inner space", header: "1 -0", code: CodeInvalidLastEventID},
		{name: "overlong", header: strings.Repeat("1", 21) + "-" + strings.Repeat("1", 21), code: CodeInvalidLastEventID},
		{name: "overlong zeros", header: strings.Repeat("0", 40) + "-0", code: CodeInvalidLastEventID},
		{name: "ms overflow", header: "18446744073709551616-0", code: CodeInvalidLastEventID},
		{name: "seq overflow", header: "0-18446744073709551616", code: CodeInvalidLastEventID},
		{name: "bad query", query: "lastEventId=1-", code: CodeInvalidLastEventID},
		{name: "query with space", query: "lastEventId=1-0%20", code: CodeInvalidLastEventID},
		{name: "query star", query: "lastEventId=*", code: CodeInvalidLastEventID},
		{name: "newline", header: "1-0\n", code: CodeInvalidLastEventID},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			sq, err := parseRawQuery(t, tt.query, tt.header)
			if tt.code != "" {
				wantBadRequest(t, err, tt.code)
				return
			}
			if err != nil {
				t.Fatalf("unexpected error: %v", err)
			}
			if sq.resume != tt.resume || sq.lastID != tt.want {
				t.Errorf("resume, lastID = %v, %v; want %v, %v", sq.resume, sq.lastID, tt.resume, tt.want)
			}
		})
	}
}

func TestParseStreamQueryDuplicates(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		query  string
		header string
	}{
		{name: "includeReport", query: "includeReport=true&includeReport=false"},
		{name: "includeReport same value", query: "includeReport=true&includeReport=true"},
		{name: "bare includeReport", query: "includeReport&includeReport"},
		{name: "timeout", query: "timeout=1000&timeout=2000"},
		{name: "timeout one bad", query: "timeout=1000&timeout=nope"},
		{name: "lastEventId", query: "lastEventId=1-0&lastEventId=2-0"},
		{name: "lastEventId with header", query: "lastEventId=1-0&lastEventId=2-0", header: "3-0"},
		{name: "empty lastEventIds", query: "lastEventId=&lastEventId="},
		{name: "unknown parameter", query: "foo=1&foo=2"},
		{name: "among valid parameters", query: "includeReport=1&timeout=90s&x=&x="},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := parseRawQuery(t, tt.query, tt.header)
			wantBadRequest(t, err, CodeInvalidQuery)
		})
	}
}

func TestParseStreamQueryAll(t *testing.T) {
	t.Parallel()
	sq, err := parseRawQuery(t, "includeReport=yes&timeout=1m30s&lastEventId=1-1", "1764230400000-3")
	if err != nil {
		t.Fatal(err)
	}
	want := streamQuery{
		includeReport: true,
		timeout:       90 * time.Second,
		resume:        true,
		lastID:        protocol.ID{Ms: 1764230400000, Seq: 3},
	}
	if sq != want {
		t.Errorf("got %+v, want %+v", sq, want)
	}
}

// FuzzParseStreamQuery feeds arbitrary raw queries and Last-Event-ID values.
// No input may panic; an error is always a 400 with a known code; a success
// has a timeout in (0, max] and a resume point that round-trips.
func FuzzParseStreamQuery(f *testing.F) {
	seeds := []struct{ query, header string }{
		{"", ""},
		{"includeReport=true&timeout=90s", "1764230400000-0"},
		{"includeReport&timeout=600001", ""},
		{"timeout=99999999999h", ""},
		{"timeout=" + strings.Repeat("9", 30), ""},
		{"timeout=1.5", ""},
		{"timeout=-0", ""},
		{"timeout=.5s", ""},
		{"lastEventId=5-1", ""},
		{"lastEventId=5-1", "junk"},
		{"lastEventId=1-0&lastEventId=1-0", ""},
		{"", "18446744073709551615-18446744073709551615"},
		{"", "18446744073709551616-0"},
		{"", "007-008"},
		{"%zz&timeout=5s;x=1", " 1-0"},
		{"includeReport=%59ES&timeout=1m30s&lastEventId=", "1-"},
	}
	for _, s := range seeds {
		f.Add(s.query, s.header)
	}
	codes := map[string]bool{
		CodeInvalidQuery: true, CodeInvalidIncludeReport: true,
		CodeInvalidTimeout: true, CodeInvalidLastEventID: true,
	}
	f.Fuzz(func(t *testing.T, rawQuery, header string) {
		q, _ := url.ParseQuery(rawQuery) // the handler sees what parses
		sq, err := parseStreamQuery(q, header, queryTestDefault, queryTestMax)
		if err != nil {
			if err.Status != http.StatusBadRequest || err.Code == "" || !codes[err.Code] || err.Message == "" {
				t.Fatalf("query %q, header %q: bad error %+v", rawQuery, header, err)
			}
			return
		}
		if sq.timeout <= 0 || sq.timeout > queryTestMax {
			t.Fatalf("query %q: timeout %v outside (0, %v]", rawQuery, sq.timeout, queryTestMax)
		}
		raw := header
		if raw == "" {
			raw = q.Get("lastEventId")
		}
		if sq.resume != (raw != "") {
			t.Fatalf("query %q, header %q: resume = %v", rawQuery, header, sq.resume)
		}
		if !sq.resume {
			if !sq.lastID.IsZero() {
				t.Fatalf("no resume but lastID %v", sq.lastID)
			}
			return
		}
		s := sq.lastID.String()
		back, perr := protocol.ParseID(s)
		if perr != nil || back != sq.lastID {
			t.Fatalf("lastID %v: String %q parses back to %v, %v", sq.lastID, s, back, perr)
		}
		// Without leading zeros, the client's own text is the canonical form.
		ms, seq, _ := strings.Cut(raw, "-")
		if len(ms) > 1 && ms[0] == '0' || len(seq) > 1 && seq[0] == '0' {
			return
		}
		if s != raw {
			t.Fatalf("Last-Event-ID %q parsed as %q", raw, s)
		}
	})
}
