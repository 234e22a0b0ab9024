package gateway_test

import (
	"context"
	"strings"
	"testing"

	"github.com/ssegate/ssegate/test/streamtest"
)

// accessLines returns the gateway's access-log lines.
func (g *gw) accessLines() []string {
	var out []string
	for line := range strings.SplitSeq(g.logs.String(), "\n") {
		if strings.Contains(line, `msg=request `) {
			out = append(out, line)
		}
	}
	return out
}

// TestAccessLog: one info line per request with the method, the path
// without its query (where tokens travel), the status, the duration in ms,
// the bytes and the remote address; taken-over streams say so.
func TestAccessLog(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	g := e.gateway(testConfig())
	ok := must(t)
	ok(e.pub.Job("al").Register(context.Background()))
	rawGet(t, g.URL+"/api/reports/al?includeReport=true&access_token=s3cret")
	rawGet(t, g.streamURL("missing", "access_token=s3cret"))
	s := streamtest.Open(t, []string{g.streamURL("al", "access_token=s3cret")}, "")
	s.WaitEvents(t, 1)
	s.Close()

	want := []string{
		`method=GET path=/api/reports/al status=200`,
		`method=GET path=/api/reports/missing/stream status=404`,
		`method=GET path=/api/reports/al/stream status=200`,
	}
	streamtest.Eventually(t, "access lines", func() bool {
		lines := strings.Join(g.accessLines(), "\n")
		for _, w := range want {
			if !strings.Contains(lines, w) {
				return false
			}
		}
		return true
	})
	for _, line := range g.accessLines() {
		if strings.Contains(line, "s3cret") || strings.Contains(line, "access_token") {
			t.Errorf("the access log shows the query: %s", line)
		}
		for _, field := range []string{"level=INFO", "duration_ms=", "bytes=", "remote=127.0.0.1"} {
			if !strings.Contains(line, field) {
				t.Errorf("access line without %s: %s", field, line)
			}
		}
		if strings.Contains(line, "/al/stream") && !strings.Contains(line, "taken_over=true") {
			t.Errorf("the taken-over stream's line does not say so: %s", line)
		}
	}
	if strings.Contains(g.logs.String(), "s3cret") {
		t.Error("a token from the query reached the gateway's logs")
	}
}

// TestAccessLogOff: Config.NoAccessLog turns the lines off.
func TestAccessLogOff(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	cfg := testConfig()
	cfg.NoAccessLog = true
	g := e.gateway(cfg)
	rawGet(t, g.URL+"/api/reports/none")
	if lines := g.accessLines(); len(lines) != 0 {
		t.Errorf("access lines with the access log off: %q", lines)
	}
}
