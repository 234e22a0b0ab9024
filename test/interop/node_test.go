package interop

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"net"
	"net/http"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestNode runs the Node clients' tests (node/*.test.js, `node --test`)
// against a gateway and a redis-server of this test. The JS tests drive the
// job and the gateway through a small control server on loopback (register,
// publish, restart, the gateway's log of stream requests); each JS test is
// reported here as a subtest.
func TestNode(t *testing.T) {
	t.Parallel()
	if _, err := exec.LookPath("node"); err != nil {
		t.Fatal("node not found: the interoperability suite needs Node.js 20+ (apt-get install nodejs npm)")
	}
	e := newEnv(t)
	big := e.defaultLimit()
	ctl := controlServer(t, e)

	ctx, cancel := context.WithTimeout(context.Background(), 80*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "node", "--test", "--test-concurrency=1", "--test-reporter=tap")
	cmd.Dir = nodeDir
	cmd.Env = append(cmd.Environ(), "GATEWAY_URL="+e.gw.URL, "GATEWAY_DEFAULT_LIMIT_URL="+big.gw.URL, "CONTROL_URL="+ctl)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	runErr := cmd.Run()

	// TAP: "ok 1 - name" / "not ok 1 - name", indented for subtests.
	line := regexp.MustCompile(`^(\s*)(not ok|ok) \d+ - (.*)$`)
	var parent string
	seen := 0
	sc := bufio.NewScanner(bytes.NewReader(out.Bytes()))
	var pending []struct{ name, status string }
	for sc.Scan() {
		m := line.FindStringSubmatch(sc.Text())
		if m == nil {
			continue
		}
		if m[1] == "" { // a describe block (a file's client) closes after its tests
			parent = m[3]
			for _, p := range pending {
				name, status := parent+"/"+p.name, p.status
				seen++
				t.Run(name, func(t *testing.T) {
					if status != "ok" {
						t.Error("failed in node --test (output below)")
					}
				})
			}
			pending = nil
			continue
		}
		pending = append(pending, struct{ name, status string }{m[3], m[2]})
	}
	t.Logf("node --test output:\n%s", out.String())
	if runErr != nil || seen == 0 || t.Failed() {
		t.Fatalf("node --test: %v, %d tests seen\n%s", runErr, seen, out.String())
	}
}

// controlServer serves the JS tests' requests on a loopback port:
//
//	POST /jobs                       register a job, answer its ID
//	POST /jobs/ID?do=A[,A...]        publish the actions (see env.do)
//	POST /jobs/ID/restart?down=A,... restart the gateway, publishing A... while it is down
//	GET  /jobs/ID/requests           the statuses of the job's stream requests, as a JSON array
func controlServer(t *testing.T, e *env) string {
	t.Helper()
	var mu sync.Mutex // one action at a time: the env is not safe for concurrent restarts
	mux := http.NewServeMux()
	fail := func(w http.ResponseWriter, err error) { http.Error(w, err.Error(), http.StatusInternalServerError) }
	split := func(s string) []string {
		if s == "" {
			return nil
		}
		return strings.Split(s, ",")
	}
	mux.HandleFunc("POST /jobs", func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		_, _ = w.Write([]byte(e.newJob()))
	})
	mux.HandleFunc("POST /jobs/{id}", func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		for _, a := range split(r.URL.Query().Get("do")) {
			if err := e.do(r.PathValue("id"), a); err != nil {
				fail(w, err)
				return
			}
		}
	})
	mux.HandleFunc("POST /jobs/{id}/restart", func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		e.gw.Stop()
		for _, a := range split(r.URL.Query().Get("down")) {
			if err := e.do(r.PathValue("id"), a); err != nil {
				fail(w, err)
				return
			}
		}
		e.gw.Restart()
	})
	mux.HandleFunc("GET /jobs/{id}/requests", func(w http.ResponseWriter, r *http.Request) {
		reqs := e.requests(r.PathValue("id"))
		if reqs == nil {
			reqs = []int{}
		}
		_ = json.NewEncoder(w).Encode(reqs)
	})
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { _ = srv.Close() })
	return "http://" + l.Addr().String()
}
