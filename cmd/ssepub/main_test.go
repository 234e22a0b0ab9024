package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ssegate/ssegate/pkg/event"
	"github.com/ssegate/ssegate/pkg/protocol"
	"github.com/ssegate/ssegate/test/redistest"
)

type result struct {
	code           int
	stdout, stderr string
}

func ssepub(t *testing.T, env map[string]string, stdin string, args ...string) result {
	t.Helper()
	var out, errb bytes.Buffer
	code := run(context.Background(), args, func(k string) string { return env[k] }, strings.NewReader(stdin), &out, &errb)
	return result{code, strings.TrimSpace(out.String()), errb.String()}
}

func TestFullJobWithReportFile(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	env := map[string]string{"REDIS_URL": srv.URL()}
	report := filepath.Join(t.TempDir(), "report.json")
	if err := os.WriteFile(report, []byte(`{"title":"Q3","rows":[1,2,3]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	steps := [][]string{
		{"job-7", "register"},
		{"job-7", "status", "processing"},
		{"job-7", "progress", "--step", "1", "--total", "3", "--name", "Loading"},
		{"job-7", "progress", "--step", "2", "--total", "3", "--name", "Aggregating"},
		{"job-7", "progress", "--step", "3", "--total", "3", "--name", "Rendering"},
		{"job-7", "complete", "--report-id", "r-7", "--report", report},
	}
	var ids []string
	for _, args := range steps {
		r := ssepub(t, env, "", args...)
		if r.code != 0 {
			t.Fatalf("ssepub %v: exit %d: %s", args, r.code, r.stderr)
		}
		if _, err := protocol.ParseID(r.stdout); err != nil {
			t.Fatalf("ssepub %v printed %q, not an event ID", args, r.stdout)
		}
		ids = append(ids, r.stdout)
	}

	// What redis-cli shows is what docs/protocol.md describes.
	rdb := srv.Client(t)
	entries := rdb.XRange(context.Background(), "ssegate:{job-7}:events", "-", "+").Val()
	wantTypes := []string{"status", "status", "progress", "progress", "progress", "complete"}
	if len(entries) != len(wantTypes) {
		t.Fatalf("%d entries, want %d", len(entries), len(wantTypes))
	}
	for i, e := range entries {
		if e.ID != ids[i] || e.Values["type"] != wantTypes[i] {
			t.Errorf("entry %d: %s %v, want %s %s", i, e.ID, e.Values["type"], ids[i], wantTypes[i])
		}
	}
	var p event.ProgressEvent
	if err := json.Unmarshal([]byte(entries[3].Values["data"].(string)), &p); err != nil || p.CurrentStep != "Aggregating" || p.Percentage != 66 {
		t.Errorf("progress 2 = %+v, %v", p, err)
	}
	if got := rdb.HGet(context.Background(), "ssegate:{job-7}:state", "report").Val(); got != `{"title":"Q3","rows":[1,2,3]}` {
		t.Errorf("report in state = %q", got)
	}

	if cli, err := exec.LookPath("redis-cli"); err == nil && srv.Real() {
		out, err := exec.Command(cli, "-u", srv.URL(), "XRANGE", "ssegate:{job-7}:events", "-", "+").Output()
		if err != nil {
			t.Fatal(err)
		}
		lines := strings.Split(strings.TrimSpace(string(out)), "\n")
		// Each entry prints as: ID, "type", TYPE, "data", JSON.
		if len(lines) != 5*len(entries) || lines[0] != ids[0] || lines[1] != "type" || lines[2] != "status" || lines[3] != "data" ||
			!strings.HasPrefix(lines[4], `{"type":"status","jobId":"job-7","status":"pending"`) {
			t.Errorf("redis-cli XRANGE printed:\n%s", out)
		}
	}

	if r := ssepub(t, env, "", "job-7", "progress", "--step", "1", "--total", "3"); r.code != 1 || !strings.Contains(r.stderr, "already finished") {
		t.Errorf("publish after complete: %+v", r)
	}
}

func TestReportFromStdinAndFail(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	env := map[string]string{"REDIS_URL": srv.URL(), "SSEGATE_KEY_PREFIX": "acme"}
	for _, args := range [][]string{{"a", "register"}, {"b", "register"}} {
		if r := ssepub(t, env, "", args...); r.code != 0 {
			t.Fatalf("%v: %+v", args, r)
		}
	}
	if r := ssepub(t, env, `{"ok":true}`, "a", "complete", "--report-id", "r", "--report", "-"); r.code != 0 {
		t.Fatalf("complete from stdin: %+v", r)
	}
	if r := ssepub(t, env, "", "b", "fail", "--code", "BOOM", "--message", "it broke", "--retryable"); r.code != 0 {
		t.Fatalf("fail: %+v", r)
	}
	rdb := srv.Client(t)
	ctx := context.Background()
	if got := rdb.HGet(ctx, "acme:{a}:state", "report").Val(); got != `{"ok":true}` {
		t.Errorf("report = %q", got)
	}
	var e event.ErrorEvent
	if err := json.Unmarshal([]byte(rdb.HGet(ctx, "acme:{b}:state", "result").Val()), &e); err != nil || e.Code != "BOOM" || !e.Retryable {
		t.Errorf("failure = %+v, %v", e, err)
	}
}

func TestUsageErrors(t *testing.T) {
	t.Parallel()
	bad := filepath.Join(t.TempDir(), "bad.json")
	_ = os.WriteFile(bad, []byte(`{"a":`), 0o600)
	// Nothing listens here: a usage error must be found before any dial.
	env := map[string]string{"REDIS_URL": "redis://127.0.0.1:1/0"}
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"no args", nil, "want JOB and COMMAND"},
		{"no command", []string{"job"}, "want JOB and COMMAND"},
		{"unknown command", []string{"job", "explode"}, "unknown command"},
		{"unknown flag", []string{"--nope", "job", "register"}, "flag provided but not defined"},
		{"bad url", []string{"--redis-url", "http://x", "job", "register"}, "--redis-url"},
		{"register extra arg", []string{"job", "register", "now"}, "want 0 argument"},
		{"status missing", []string{"job", "status"}, "want 1 argument"},
		{"status terminal", []string{"job", "status", "completed"}, "pending or processing"},
		{"progress no total", []string{"job", "progress", "--step", "1"}, "--total"},
		{"progress step past total", []string{"job", "progress", "--step", "4", "--total", "3"}, "0 <= N <= M"},
		{"progress not a number", []string{"job", "progress", "--step", "x", "--total", "3"}, "invalid value"},
		{"complete no id", []string{"job", "complete"}, "--report-id"},
		{"fail no code", []string{"job", "fail", "--message", "m"}, "--code and --message"},
		{"invalid job ID", []string{"a/b", "register"}, "invalid job ID"},
		{"missing report file", []string{"job", "complete", "--report-id", "r", "--report", "/nonexistent/x.json"}, "no such file"},
		{"invalid report", []string{"job", "complete", "--report-id", "r", "--report", bad}, "not valid JSON"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r := ssepub(t, env, "", tt.args...)
			if r.code != 2 || !strings.Contains(r.stderr, tt.want) || r.stdout != "" {
				t.Errorf("exit %d, stdout %q, stderr %q; want exit 2 mentioning %q", r.code, r.stdout, r.stderr, tt.want)
			}
		})
	}
	for _, args := range [][]string{{"--help"}, {"job", "progress", "--help"}} {
		if r := ssepub(t, env, "", args...); r.code != 0 || !strings.Contains(r.stdout, "usage: ssepub") {
			t.Errorf("%v: %+v", args, r)
		}
	}
}

func TestRuntimeErrors(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	env := map[string]string{"REDIS_URL": srv.URL()}
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"unregistered", []string{"ghost", "status", "processing"}, "not registered"},
		{"finished", []string{"done", "status", "processing"}, "already finished"},
	}
	for _, args := range [][]string{{"done", "register"}, {"done", "fail", "--code", "X", "--message", "x"}} {
		if r := ssepub(t, env, "", args...); r.code != 0 {
			t.Fatalf("%v: %+v", args, r)
		}
	}
	for _, tt := range tests {
		r := ssepub(t, env, "", tt.args...)
		if r.code != 1 || !strings.Contains(r.stderr, tt.want) {
			t.Errorf("%s: exit %d, stderr %q; want exit 1 mentioning %q", tt.name, r.code, r.stderr, tt.want)
		}
	}
	down := map[string]string{"REDIS_URL": "redis://127.0.0.1:1/0"}
	if r := ssepub(t, down, "", "--timeout", "2s", "x", "register"); r.code != 1 || r.stderr == "" {
		t.Errorf("Redis down: %+v", r)
	}
}
