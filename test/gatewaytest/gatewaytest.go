// Package gatewaytest runs real gateway processes for tests: it builds
// cmd/gateway and cmd/ssepub once per test binary, starts gateways on free
// loopback ports against a given Redis, and stops (SIGTERM), kills (SIGKILL)
// and restarts them on the same address. Every process is stopped when its
// test ends.
//
// Set SSEGATE_TEST_RACE=1 to build the binaries with the race detector.
package gatewaytest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ssegate/ssegate/test/redistest"
)

var (
	buildOnce sync.Once
	buildDir  string
	buildErr  error
)

// Binaries returns the paths of the gateway and ssepub binaries, built once
// per test binary into a temporary directory.
func Binaries(tb testing.TB) (gateway, ssepub string) {
	tb.Helper()
	buildOnce.Do(func() {
		var root []byte
		root, buildErr = exec.Command("go", "env", "GOMOD").Output()
		if buildErr != nil {
			return
		}
		dir := filepath.Dir(strings.TrimSpace(string(root)))
		buildDir, buildErr = os.MkdirTemp("", "ssegate-bin-")
		if buildErr != nil {
			return
		}
		args := []string{"build", "-o", buildDir + "/"}
		if v, _ := strconv.ParseBool(os.Getenv("SSEGATE_TEST_RACE")); v {
			args = append(args, "-race")
		}
		cmd := exec.Command("go", append(args, "./cmd/gateway", "./cmd/ssepub")...)
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		tb.Fatalf("gatewaytest: %v", buildErr)
	}
	return filepath.Join(buildDir, "gateway"), filepath.Join(buildDir, "ssepub")
}

// Gateway is one gateway process.
type Gateway struct {
	tb    testing.TB
	bin   string
	Addr  string // 127.0.0.1:port, the same across restarts
	URL   string // http://Addr
	args  []string
	env   []string
	logs  *lockedBuffer
	ready bool

	mu     sync.Mutex // guards cmd, exited, code
	cmd    *exec.Cmd
	exited chan struct{}
	code   int
}

// Option configures a gateway process.
type Option func(*Gateway)

// WithFlags adds command-line flags.
func WithFlags(flags ...string) Option { return func(g *Gateway) { g.args = append(g.args, flags...) } }

// WithEnv adds environment variables ("NAME=value").
func WithEnv(vars ...string) Option { return func(g *Gateway) { g.env = append(g.env, vars...) } }

// NoReadyWait makes Start return once the process serves /healthz, without
// waiting for /readyz (for tests where Redis is down).
func NoReadyWait() Option { return func(g *Gateway) { g.ready = false } }

// Start starts a gateway on a free port against redisURL and waits until it
// is ready. Test-friendly defaults (a short retry hint, canary and grace)
// come first; options may override them.
func Start(tb testing.TB, redisURL string, opts ...Option) *Gateway {
	tb.Helper()
	bin, _ := Binaries(tb)
	port, err := redistest.FreePort()
	if err != nil {
		tb.Fatal(err)
	}
	g := &Gateway{
		tb: tb, bin: bin, Addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), logs: &lockedBuffer{}, ready: true,
	}
	g.URL = "http://" + g.Addr
	g.args = []string{
		"--addr", g.Addr, "--redis-url", redisURL, "--retry", "100ms", "--canary-interval", "200ms",
		"--shutdown-grace", "500ms", "--log-level", "debug",
	}
	for _, o := range opts {
		o(g)
	}
	tb.Cleanup(func() {
		g.Stop()
		if tb.Failed() {
			tb.Logf("gateway %s logs (last 60 lines):\n%s", g.Addr, lastLines(g.logs.String(), 60))
		}
	})
	g.Restart()
	return g
}

// Restart starts the process again on the same address (it must be
// stopped), and waits until it serves.
func (g *Gateway) Restart() {
	g.tb.Helper()
	g.mu.Lock()
	if g.cmd != nil {
		g.mu.Unlock()
		g.tb.Fatal("gatewaytest: Restart of a running gateway")
	}
	cmd := exec.Command(g.bin, g.args...)
	cmd.Env = append(os.Environ(), g.env...)
	cmd.Stdout, cmd.Stderr = g.logs, g.logs
	if err := cmd.Start(); err != nil {
		g.mu.Unlock()
		g.tb.Fatalf("gatewaytest: start: %v", err)
	}
	exited := make(chan struct{})
	g.cmd, g.exited = cmd, exited
	g.mu.Unlock()
	go func() {
		err := cmd.Wait()
		g.mu.Lock()
		g.code = exitCode(err)
		g.mu.Unlock()
		close(exited)
	}()
	path := "/healthz"
	if g.ready {
		path = "/readyz"
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		select {
		case <-exited:
			g.tb.Fatalf("gatewaytest: gateway exited at start:\n%s", g.logs.String())
		default:
		}
		if status(g.URL+path) == http.StatusOK {
			return
		}
		if time.Now().After(deadline) {
			g.tb.Fatalf("gatewaytest: gateway not serving %s after 15s:\n%s", path, lastLines(g.logs.String(), 30))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Signal sends sig to the process and returns at once.
func (g *Gateway) Signal(sig syscall.Signal) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.cmd != nil {
		_ = g.cmd.Process.Signal(sig)
	}
}

// Wait waits up to d for the process to exit and returns its exit code, or
// an error if it is still running.
func (g *Gateway) Wait(d time.Duration) (int, error) {
	g.mu.Lock()
	exited := g.exited
	g.mu.Unlock()
	if exited == nil {
		return 0, errors.New("gatewaytest: not started")
	}
	select {
	case <-exited:
	case <-time.After(d):
		return 0, fmt.Errorf("gatewaytest: still running after %v", d)
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	g.cmd = nil
	return g.code, nil
}

// Stop sends SIGTERM and waits for the exit (SIGKILL after 20 s). It is
// safe to call on a stopped gateway.
func (g *Gateway) Stop() { g.end(syscall.SIGTERM) }

// Kill sends SIGKILL, as a crash would, and waits for the exit.
func (g *Gateway) Kill() { g.end(syscall.SIGKILL) }

func (g *Gateway) end(sig syscall.Signal) {
	g.mu.Lock()
	cmd := g.cmd
	g.mu.Unlock()
	if cmd == nil {
		return
	}
	g.Signal(sig)
	if _, err := g.Wait(20 * time.Second); err != nil {
		_ = cmd.Process.Kill()
		_, _ = g.Wait(5 * time.Second)
	}
}

// Logs returns what the process wrote so far.
func (g *Gateway) Logs() string { return g.logs.String() }

// Metric scrapes /metrics and returns the value of the first sample whose
// line starts with name (include labels to pick one: `x_total{reason="slow"}`).
func (g *Gateway) Metric(name string) (float64, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, g.URL+"/metrics", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	var buf bytes.Buffer
	_, _ = buf.ReadFrom(resp.Body)
	for _, line := range strings.Split(buf.String(), "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			return strconv.ParseFloat(strings.TrimSpace(v), 64)
		}
	}
	return 0, fmt.Errorf("gatewaytest: no sample %s", name)
}

func status(url string) int {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

func exitCode(err error) int {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return -int(ws.Signal())
		}
		return ee.ExitCode()
	}
	if err != nil {
		return -1
	}
	return 0
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
