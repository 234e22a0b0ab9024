// Package redistest starts Redis servers for tests: a real redis-server on a
// free loopback port, stopped when the test ends, or miniredis where no
// redis-server binary exists and CI is not set. With CI=true a missing
// redis-server fails the test instead of falling back.
//
// The binary is found on PATH, or named by REDIS_SERVER_BIN.
package redistest

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
)

// Server is one Redis server owned by a test.
type Server struct {
	tb   testing.TB
	mini *miniredis.Miniredis

	mu      sync.Mutex // guards cmd, exited, paused
	bin     string
	dir     string
	port    int
	persist bool
	conf    string   // config file, the first argument when set (sentinels need one)
	args    []string // extra arguments, after the defaults, so they win
	cmd     *exec.Cmd
	exited  chan struct{}
	paused  bool
}

// Option changes how a real server is started.
type Option func(*Server)

// WithPersistence turns on the append-only file, so the server's data
// survives Stop and Start (for restart tests).
func WithPersistence() Option { return func(s *Server) { s.persist = true } }

// WithArgs passes extra redis-server arguments ("--maxmemory", "10mb"),
// after the default ones, so they override them.
func WithArgs(args ...string) Option {
	return func(s *Server) { s.args = append(s.args, args...) }
}

// Binary returns the path of redis-server, or "" if there is none.
func Binary() string {
	if p := os.Getenv("REDIS_SERVER_BIN"); p != "" {
		return p
	}
	p, _ := exec.LookPath("redis-server")
	return p
}

// InCI reports whether the tests run in CI, where a real Redis is required.
func InCI() bool {
	v, _ := strconv.ParseBool(os.Getenv("CI"))
	return v
}

// Start starts a real redis-server for tb, or miniredis when there is no
// redis-server and CI is not set.
func Start(tb testing.TB, opts ...Option) *Server {
	tb.Helper()
	bin := Binary()
	if bin == "" {
		if InCI() {
			tb.Fatal("redistest: redis-server not found and CI is set; install it (apt-get install redis-server)")
		}
		tb.Log("redistest: redis-server not found, falling back to miniredis")
		return StartMini(tb)
	}
	return StartReal(tb, opts...)
}

// StartReal starts a real redis-server, failing tb when there is none.
func StartReal(tb testing.TB, opts ...Option) *Server {
	tb.Helper()
	s := &Server{tb: tb, bin: Binary(), dir: tb.TempDir()}
	if s.bin == "" {
		tb.Fatal("redistest: redis-server not found")
	}
	for _, o := range opts {
		o(s)
	}
	var err error
	for attempt := 0; attempt < 5; attempt++ {
		if s.port, err = FreePort(); err != nil {
			continue
		}
		if err = s.start(); err == nil {
			tb.Cleanup(s.Stop)
			return s
		}
	}
	tb.Fatalf("redistest: start redis-server: %v", err)
	return nil
}

// StartMini starts an in-process miniredis.
func StartMini(tb testing.TB) *Server {
	tb.Helper()
	return &Server{tb: tb, mini: miniredis.RunT(tb)}
}

// Real reports whether s is a real redis-server.
func (s *Server) Real() bool { return s.mini == nil }

// Mini returns the miniredis server, or nil for a real one.
func (s *Server) Mini() *miniredis.Miniredis { return s.mini }

// Addr returns host:port.
func (s *Server) Addr() string {
	if s.mini != nil {
		return s.mini.Addr()
	}
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port))
}

// URL returns the redis:// URL of the server.
func (s *Server) URL() string { return "redis://" + s.Addr() + "/0" }

// Client returns a new client of the server, closed when the test ends.
func (s *Server) Client(tb testing.TB) *redis.Client {
	tb.Helper()
	c := redis.NewClient(&redis.Options{Addr: s.Addr(), MaxRetries: -1, DialTimeout: time.Second})
	tb.Cleanup(func() { _ = c.Close() })
	return c
}

// Do runs one command on a short-lived connection and returns its reply.
func (s *Server) Do(tb testing.TB, args ...any) any {
	tb.Helper()
	c := redis.NewClient(&redis.Options{Addr: s.Addr(), MaxRetries: -1})
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	v, err := c.Do(ctx, args...).Result()
	if err != nil && err != redis.Nil {
		tb.Fatalf("redistest: %v: %v", args, err)
	}
	return v
}

func (s *Server) start() error {
	var args []string
	if s.conf != "" {
		args = append(args, s.conf)
	}
	args = append(args,
		"--port", strconv.Itoa(s.port), "--bind", "127.0.0.1", "--protected-mode", "no",
		"--dir", s.dir, "--save", "", "--logfile", filepath.Join(s.dir, "redis.log"),
		"--daemonize", "no",
	)
	if s.persist {
		args = append(args, "--appendonly", "yes", "--appendfsync", "always")
	} else {
		args = append(args, "--appendonly", "no")
	}
	args = append(args, s.args...)
	cmd := exec.Command(s.bin, args...)
	var stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stderr, &stderr
	if err := cmd.Start(); err != nil {
		return err
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()

	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-exited:
			log, _ := os.ReadFile(filepath.Join(s.dir, "redis.log"))
			return fmt.Errorf("redis-server exited: %s %s", stderr.String(), lastLines(string(log), 5))
		default:
		}
		if ping(s.Addr()) == nil {
			s.mu.Lock()
			s.cmd, s.exited = cmd, exited
			s.mu.Unlock()
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	_ = cmd.Process.Kill()
	<-exited
	return fmt.Errorf("redis-server on port %d did not answer PING", s.port)
}

// Stop stops the server (SIGTERM, then SIGKILL after 5 s) and waits for it.
// It is safe to call more than once.
func (s *Server) Stop() {
	if s.mini != nil {
		s.mini.Close()
		return
	}
	s.signal(syscall.SIGTERM, 5*time.Second)
}

// Kill stops the server with SIGKILL, as a crash would.
func (s *Server) Kill() { s.signal(syscall.SIGKILL, 5*time.Second) }

func (s *Server) signal(sig syscall.Signal, wait time.Duration) {
	s.mu.Lock()
	cmd, exited, paused := s.cmd, s.exited, s.paused
	s.cmd, s.paused = nil, false
	s.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(sig)
	if paused {
		_ = cmd.Process.Signal(syscall.SIGCONT) // a stopped process handles SIGTERM only once continued
	}
	select {
	case <-exited:
	case <-time.After(wait):
		_ = cmd.Process.Kill()
		<-exited
	}
}

// Pause stops the real server's process with SIGSTOP, as a hung Redis: it
// keeps its port and accepts connections (the kernel does), but answers
// nothing until Resume. Resume is also registered as a cleanup of tb, so a
// failing test never leaves the server stopped. miniredis cannot be paused:
// tb is skipped.
func (s *Server) Pause(tb testing.TB) {
	tb.Helper()
	if s.mini != nil {
		tb.Skip("redistest: Pause needs a real redis-server (miniredis cannot be paused)")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		tb.Fatal("redistest: Pause of a stopped server")
	}
	if s.paused {
		return
	}
	if err := s.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		tb.Fatalf("redistest: pause: %v", err)
	}
	s.paused = true
	tb.Cleanup(func() { s.Resume(tb) })
}

// Resume continues a server stopped by Pause (SIGCONT). It does nothing to
// a server that is not paused, so it is safe to call more than once.
func (s *Server) Resume(tb testing.TB) {
	tb.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.paused || s.cmd == nil {
		return
	}
	if err := s.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		tb.Errorf("redistest: resume: %v", err)
		return
	}
	s.paused = false
}

// Restart starts a stopped real server again on the same port, with the
// same data directory.
func (s *Server) Restart() {
	s.tb.Helper()
	if s.mini != nil {
		s.tb.Fatal("redistest: Restart needs a real redis-server")
	}
	s.Stop()
	var err error
	for attempt := 0; attempt < 50; attempt++ {
		if err = s.start(); err == nil {
			return
		}
		time.Sleep(100 * time.Millisecond) // the port may linger for a moment
	}
	s.tb.Fatalf("redistest: restart: %v", err)
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func ping(addr string) error {
	c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(time.Second))
	if _, err := c.Write([]byte("PING\r\n")); err != nil {
		return err
	}
	buf := make([]byte, 7)
	n, err := c.Read(buf)
	if err != nil {
		return err
	}
	if !strings.HasPrefix(string(buf[:n]), "+PONG") {
		return fmt.Errorf("unexpected reply %q", buf[:n])
	}
	return nil
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// Backend is one kind of server a suite runs against.
type Backend struct {
	Name  string
	Start func(testing.TB) *Server
}

// Backends returns the real redis-server (when there is one, or always in
// CI, where it is required) and miniredis, so one suite can run against
// both.
func Backends() []Backend {
	bs := []Backend{}
	if Binary() != "" || InCI() {
		bs = append(bs, Backend{"redis", func(tb testing.TB) *Server { return Start(tb) }})
	}
	return append(bs, Backend{"miniredis", StartMini})
}
