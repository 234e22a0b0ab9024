package test

import (
	"context"
	"encoding/json"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ssegate/ssegate/pkg/event"
	"github.com/ssegate/ssegate/pkg/sseclient"
	"github.com/ssegate/ssegate/test/gatewaytest"
	"github.com/ssegate/ssegate/test/redistest"
)

// TestReadmeWalkthrough does what the README tells a new user: run the
// gateway with no Redis configured (it embeds one), watch a job's stream,
// and publish the job with ssepub against the embedded Redis.
func TestReadmeWalkthrough(t *testing.T) {
	t.Parallel()
	_, ssepub := gatewaytest.Binaries(t)
	port, err := redistest.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	embedded := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	g := gatewaytest.Start(t, "", gatewaytest.WithFlags("--embedded-redis-addr", embedded))
	if !strings.Contains(g.Logs(), "embedded in-memory Redis") {
		t.Errorf("the gateway does not say it embeds Redis:\n%s", g.Logs())
	}
	redisURL := "redis://" + embedded + "/0"
	run := func(args ...string) string {
		t.Helper()
		cmd := exec.Command(ssepub, append([]string{"--redis-url", redisURL}, args...)...)
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("ssepub %v: %v", args, err)
		}
		return strings.TrimSpace(string(out))
	}
	run("demo-1", "register")

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c := &sseclient.Client{URLs: []string{g.URL + "/api/reports/demo-1/stream?includeReport=true"}}
	events := make(chan event.Message, 16)
	done := make(chan error, 1)
	go func() {
		done <- c.Stream(ctx, func(m event.Message) error {
			events <- m
			if event.Type(m.Event).Terminal() {
				return sseclient.ErrStop
			}
			return nil
		})
	}()
	if m := <-events; m.Event != "status" || !strings.Contains(string(m.Data), `"pending"`) {
		t.Fatalf("first event = %s %s", m.Event, m.Data)
	}

	report := filepath.Join(t.TempDir(), "report.json")
	if err := os.WriteFile(report, []byte(`{"title":"Q3 sales","total":1234}`), 0o600); err != nil {
		t.Fatal(err)
	}
	ids := []string{
		run("demo-1", "status", "processing"),
		run("demo-1", "progress", "--step", "1", "--total", "2", "--name", "Loading"),
		run("demo-1", "progress", "--step", "2", "--total", "2", "--name", "Rendering"),
		run("demo-1", "complete", "--report-id", "r-1", "--report", report),
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	close(events)
	var got []event.Message
	for m := range events {
		got = append(got, m)
	}
	if len(got) != len(ids) {
		t.Fatalf("got %d events after the snapshot, want %d", len(got), len(ids))
	}
	for i, m := range got {
		if m.ID != ids[i] {
			t.Errorf("event %d id %s, ssepub printed %s", i, m.ID, ids[i])
		}
	}
	var done1 event.CompleteEvent
	if err := json.Unmarshal(got[len(got)-1].Data, &done1); err != nil || string(done1.Report) != `{"title":"Q3 sales","total":1234}` {
		t.Errorf("complete = %s (%v)", got[len(got)-1].Data, err)
	}

	// SIGTERM ends the process cleanly, with exit status 0.
	g.Signal(syscall.SIGTERM)
	if code, err := g.Wait(15 * time.Second); err != nil || code != 0 {
		t.Errorf("exit after SIGTERM: %d, %v\n%s", code, err, g.Logs())
	}
}
