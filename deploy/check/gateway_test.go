package check

import (
	"strings"
	"testing"
	"time"
)

const sampleHelp = `usage: gateway [flags]

  --addr (SSEGATE_ADDR, default ":8080")
      listen address
  --heartbeat (SSEGATE_HEARTBEAT, default "30s")
      a heartbeat goes out after this long without any other write
  --max-connections (SSEGATE_MAX_CONNECTIONS, default "10000")
      open streams per instance; 0: unlimited
  --redis-url (REDIS_URL, default "")
      Redis URL
  --shutdown-grace (SSEGATE_SHUTDOWN_GRACE, default "5s")
      time over which streams are closed in waves on shutdown
  --shutdown-timeout (SSEGATE_SHUTDOWN_TIMEOUT, default "0s")
      bound of the whole shutdown (default: shutdown-grace + 5s)
`

func TestParseHelp(t *testing.T) {
	g, err := ParseHelp(sampleHelp)
	if err != nil {
		t.Fatal(err)
	}
	if len(g.Flags) != 6 || g.ShutdownSlack != 5*time.Second {
		t.Fatalf("flags %v, slack %v", g.Flags, g.ShutdownSlack)
	}
	if f, ok := g.Twin("SSEGATE_ADDR"); !ok || f.Name != "addr" || f.Default != ":8080" || f.Usage != "listen address" {
		t.Fatalf("SSEGATE_ADDR: %+v", f)
	}
	for _, c := range []struct {
		s    Settings
		want time.Duration
	}{
		{Settings{}, 10 * time.Second},
		{Settings{"SSEGATE_SHUTDOWN_GRACE": "20s"}, 25 * time.Second},
		{Settings{"SSEGATE_SHUTDOWN_GRACE": "20s", "SSEGATE_SHUTDOWN_TIMEOUT": "7s"}, 7 * time.Second},
	} {
		if got, err := g.ShutdownTimeout(c.s); err != nil || got != c.want {
			t.Errorf("ShutdownTimeout(%v) = %v, %v; want %v", c.s, got, err, c.want)
		}
	}
	if err := g.checkEnvName("SSEGATE_HEARTBEATS"); err == nil || !strings.Contains(err.Error(), "SSEGATE_HEARTBEATS is not an environment variable of the gateway") {
		t.Errorf("checkEnvName(SSEGATE_HEARTBEATS) = %v", err)
	}

	// A --help that changed shape is an error, not a silently empty table.
	for _, broken := range []string{
		"usage: gateway [flags]\n",
		strings.Replace(sampleHelp, "(default: shutdown-grace + 5s)", "(default: twice the grace)", 1),
		strings.Replace(sampleHelp, "SSEGATE_SHUTDOWN_GRACE", "SSEGATE_GRACE", 1),
	} {
		if _, err := ParseHelp(broken); err == nil {
			t.Errorf("ParseHelp accepted:\n%s", broken)
		}
	}
}

// The real gateway's table has the variables the checks rely on (ParseHelp
// insists on them) and the slack its docs state.
func TestGatewayHelp(t *testing.T) {
	g := gateway(t)
	if len(g.Flags) < 20 {
		t.Errorf("only %d flags parsed from the gateway's --help", len(g.Flags))
	}
	t.Logf("%d flags; shutdown timeout by default: %v", len(g.Flags), func() time.Duration { d, _ := g.ShutdownTimeout(Settings{}); return d }())
}
