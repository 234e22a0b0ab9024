// Package nginxtest runs a real nginx in front of test gateways, configured
// by the repository's own deploy/nginx.conf: Render replaces only the server
// lines of its `upstream ssegate` block and its one `listen` line, and fails
// if the file no longer has that shape, so the file people deploy is the
// file under test. Start runs nginx as a child process (not a daemon) on a
// free loopback port, with its pid file, logs and temporary files in the
// test's directory, and stops it when the test ends.
//
// The binary is NGINX_BIN, else /usr/sbin/nginx (Debian's package), else
// nginx on PATH. Without one the test is skipped, except with CI=true, where
// it fails (as redistest does for redis-server).
package nginxtest

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ssegate/ssegate/test/redistest"
)

// Binary returns the path of nginx, or "" if there is none.
func Binary() string {
	if p := os.Getenv("NGINX_BIN"); p != "" {
		return p
	}
	if _, err := os.Stat("/usr/sbin/nginx"); err == nil {
		return "/usr/sbin/nginx"
	}
	p, _ := exec.LookPath("nginx")
	return p
}

// Require returns the nginx binary, skipping tb without one (failing it
// with CI=true).
func Require(tb testing.TB) string {
	tb.Helper()
	if runtime.GOOS != "linux" {
		tb.Skip("nginxtest: Linux only (reads /proc)")
	}
	bin := Binary()
	if bin == "" {
		if redistest.InCI() {
			tb.Fatal("nginxtest: nginx not found and CI is set; install it (apt-get install nginx)")
		}
		tb.Skip("nginxtest: nginx not found (apt-get install nginx)")
	}
	return bin
}

var (
	upstreamRE = regexp.MustCompile(`(?m)^[ \t]*upstream[ \t]+ssegate[ \t]*\{`)
	serverRE   = regexp.MustCompile(`^([ \t]*)server[ \t]+(\S+?)((?:[ \t]+[^;#]*)?);[ \t]*(#.*)?$`)
	listenRE   = regexp.MustCompile(`(?m)^([ \t]*)listen[ \t]+[^;]*;`)
)

// Render returns conf, the text of deploy/nginx.conf, with the server lines
// of its `upstream ssegate` block replaced by one line per address in
// upstreams (each keeping the parameters of the file's first server line,
// such as max_fails) and its one listen directive replaced by `listen
// listen;`. Nothing else changes. It fails if there is not exactly one
// `upstream ssegate` block with at least one server line, or not exactly
// one listen directive.
func Render(conf string, upstreams []string, listen string) (string, error) {
	if len(upstreams) == 0 {
		return "", errors.New("nginxtest: no upstream addresses")
	}
	locs := upstreamRE.FindAllStringIndex(conf, -1)
	if len(locs) != 1 {
		return "", fmt.Errorf("nginxtest: want exactly one `upstream ssegate {` block in the config, found %d", len(locs))
	}
	open := locs[0][1]
	end := strings.IndexByte(conf[open:], '}')
	if end < 0 {
		return "", errors.New("nginxtest: `upstream ssegate {` block has no closing brace")
	}
	end += open
	body := conf[open:end]
	var out []string
	servers := 0
	for _, line := range strings.Split(body, "\n") {
		m := serverRE.FindStringSubmatch(line)
		if m == nil {
			if strings.HasPrefix(strings.TrimSpace(line), "server") {
				return "", fmt.Errorf("nginxtest: unexpected server line in the upstream block: %q (want `server HOST:PORT [params];`)", line)
			}
			out = append(out, line)
			continue
		}
		servers++
		if servers > 1 {
			continue
		}
		for _, u := range upstreams {
			out = append(out, m[1]+"server "+u+m[3]+";")
		}
	}
	if servers == 0 {
		return "", errors.New("nginxtest: the `upstream ssegate` block has no server line")
	}
	conf = conf[:open] + strings.Join(out, "\n") + conf[end:]

	ls := listenRE.FindAllStringSubmatchIndex(conf, -1)
	if len(ls) != 1 {
		return "", fmt.Errorf("nginxtest: want exactly one listen directive in the config, found %d", len(ls))
	}
	l := ls[0]
	conf = conf[:l[0]] + conf[l[2]:l[3]] + "listen " + listen + ";" + conf[l[1]:]
	return conf, nil
}

var accessLogRE = regexp.MustCompile(`(?m)^([ \t]*)access_log[ \t]+(\S+?)((?:[ \t]+[^;#]*)?);`)

// withTestLogs points each access_log directive of site at dir/site-access.log
// (keeping its format) and adds the test's own log (see Access) beside it:
// a directive in a server block replaces the http-level ones, the test's
// among them. `access_log off;` becomes the test's log alone.
func withTestLogs(site, dir string) string {
	return accessLogRE.ReplaceAllStringFunc(site, func(d string) string {
		m := accessLogRE.FindStringSubmatch(d)
		test := m[1] + "access_log " + filepath.Join(dir, "access.log") + " ssegate_test;"
		if m[2] == "off" {
			return test
		}
		return m[1] + "access_log " + filepath.Join(dir, "site-access.log") + m[3] + ";\n" + test
	})
}

// Nginx is one nginx process.
type Nginx struct {
	tb   testing.TB
	Dir  string // prefix: config, logs, pid file, temporary files
	Addr string // 127.0.0.1:port
	URL  string // http://Addr

	cmd    *exec.Cmd
	exited chan struct{}
	out    *bytes.Buffer
	mu     sync.Mutex // guards out
	once   sync.Once
}

// LogFormat is the access log's format: tab-separated fields that Entry
// parses.
const LogFormat = "$request_method\\t$request_uri\\t$status\\t$upstream_addr\\t$upstream_status\\t$request_time"

// Start renders confPath (deploy/nginx.conf) for upstreams and runs nginx
// with it on a free loopback port, waiting until it accepts connections.
func Start(tb testing.TB, confPath string, upstreams []string) *Nginx {
	tb.Helper()
	bin := Require(tb)
	src, err := os.ReadFile(confPath)
	if err != nil {
		tb.Fatal(err)
	}
	dir := tb.TempDir()
	port, err := redistest.FreePort()
	if err != nil {
		tb.Fatal(err)
	}
	n := &Nginx{tb: tb, Dir: dir, Addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), out: &bytes.Buffer{}, exited: make(chan struct{})}
	n.URL = "http://" + n.Addr
	site, err := Render(string(src), upstreams, n.Addr)
	if err != nil {
		tb.Fatalf("%v (in %s)", err, confPath)
	}
	site = withTestLogs(site, dir)
	if err := os.WriteFile(filepath.Join(dir, "ssegate.conf"), []byte(site), 0o644); err != nil {
		tb.Fatal(err)
	}
	var main strings.Builder
	if os.Geteuid() == 0 {
		// As root, workers would switch to nobody, who cannot enter the
		// test's 0700 directory.
		main.WriteString("user root;\n")
	}
	fmt.Fprintf(&main, `worker_processes 1;
pid %[1]s/nginx.pid;
error_log %[1]s/error.log info;
events { worker_connections 1024; }
http {
    log_format ssegate_test "%[2]s";
    access_log %[1]s/access.log ssegate_test;
    # What a distribution's nginx.conf logs for every site that does not say
    # otherwise (Debian's and the nginx image's: the whole request line).
    access_log %[1]s/default-access.log combined;
    client_body_temp_path %[1]s/client_body;
    proxy_temp_path %[1]s/proxy;
    fastcgi_temp_path %[1]s/fastcgi;
    uwsgi_temp_path %[1]s/uwsgi;
    scgi_temp_path %[1]s/scgi;
    include %[1]s/ssegate.conf;
}
`, dir, LogFormat)
	confFile := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(confFile, []byte(main.String()), 0o644); err != nil {
		tb.Fatal(err)
	}
	n.cmd = exec.Command(bin, "-p", dir+"/", "-e", filepath.Join(dir, "error.log"), "-c", confFile, "-g", "daemon off;")
	n.cmd.Stdout, n.cmd.Stderr = lockedWriter{n}, lockedWriter{n}
	if err := n.cmd.Start(); err != nil {
		tb.Fatalf("nginxtest: start %s: %v", bin, err)
	}
	go func() { _ = n.cmd.Wait(); close(n.exited) }()
	tb.Cleanup(func() {
		n.Stop()
		if tb.Failed() {
			tb.Logf("nginx error log (last 40 lines):\n%s", lastLines(n.ErrorLog(), 40))
		}
	})
	deadline := time.Now().Add(10 * time.Second)
	for {
		select {
		case <-n.exited:
			tb.Fatalf("nginxtest: nginx exited at start: %s\n%s", n.output(), n.ErrorLog())
		default:
		}
		if c, err := net.DialTimeout("tcp", n.Addr, 200*time.Millisecond); err == nil {
			c.Close()
			return n
		}
		if time.Now().After(deadline) {
			tb.Fatalf("nginxtest: nginx not listening on %s after 10s: %s\n%s", n.Addr, n.output(), n.ErrorLog())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

type lockedWriter struct{ n *Nginx }

func (w lockedWriter) Write(p []byte) (int, error) {
	w.n.mu.Lock()
	defer w.n.mu.Unlock()
	return w.n.out.Write(p)
}

func (n *Nginx) output() string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.out.String()
}

// Stop stops nginx (SIGTERM, fast shutdown; SIGKILL after 5s) and waits
// for it. Idempotent.
func (n *Nginx) Stop() {
	n.once.Do(func() {
		_ = n.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-n.exited:
		case <-time.After(5 * time.Second):
			_ = n.cmd.Process.Kill()
			<-n.exited
		}
	})
}

// ErrorLog returns nginx's error log so far.
func (n *Nginx) ErrorLog() string {
	b, _ := os.ReadFile(filepath.Join(n.Dir, "error.log"))
	return string(b)
}

// Logs returns the text of every log nginx wrote but the test's own
// access log (see Access) and its error log, by file name: what an
// operator's log files would hold.
func (n *Nginx) Logs() map[string]string {
	n.tb.Helper()
	files, err := filepath.Glob(filepath.Join(n.Dir, "*.log"))
	if err != nil {
		n.tb.Fatal(err)
	}
	out := map[string]string{}
	for _, f := range files {
		name := filepath.Base(f)
		if name == "access.log" || name == "error.log" {
			continue
		}
		b, err := os.ReadFile(f)
		if err != nil {
			n.tb.Fatal(err)
		}
		out[name] = string(b)
	}
	return out
}

// Entry is one access log line (see LogFormat).
type Entry struct {
	Method, URI    string
	Status         int
	Upstream       string // $upstream_addr: "A" or, after a retry, "A, B"
	UpstreamStatus string
	Duration       string
}

// Access returns the access log's entries so far (nginx writes a line when
// a request ends).
func (n *Nginx) Access() []Entry {
	n.tb.Helper()
	b, err := os.ReadFile(filepath.Join(n.Dir, "access.log"))
	if err != nil && !os.IsNotExist(err) {
		n.tb.Fatal(err)
	}
	var out []Entry
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		f := strings.Split(sc.Text(), "\t")
		if len(f) != 6 {
			n.tb.Fatalf("nginxtest: access log line %q: want 6 tab-separated fields", sc.Text())
		}
		st, _ := strconv.Atoi(f[2])
		out = append(out, Entry{Method: f[0], URI: f[1], Status: st, Upstream: f[3], UpstreamStatus: f[4], Duration: f[5]})
	}
	return out
}

// UpstreamConns returns the local addresses of the established TCP
// connections that nginx's processes hold to any of the addresses in to
// (IPv4 host:port), read from /proc: which upstream connections nginx has
// open or keeps idle right now.
func (n *Nginx) UpstreamConns(to ...string) ([]string, error) {
	inodes := map[string]bool{}
	for _, pid := range n.pids() {
		fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
		if err != nil {
			continue // a worker that just exited
		}
		for _, fd := range fds {
			l, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, fd.Name()))
			if err == nil && strings.HasPrefix(l, "socket:[") {
				inodes[strings.TrimSuffix(strings.TrimPrefix(l, "socket:["), "]")] = true
			}
		}
	}
	want := map[string]bool{}
	for _, a := range to {
		want[a] = true
	}
	b, err := os.ReadFile("/proc/net/tcp")
	if err != nil {
		return nil, err
	}
	var out []string
	for _, line := range strings.Split(string(b), "\n")[1:] {
		f := strings.Fields(line)
		if len(f) < 10 || f[3] != "01" || !inodes[f[9]] { // 01: ESTABLISHED
			continue
		}
		local, remote := procAddr(f[1]), procAddr(f[2])
		if want[remote] {
			out = append(out, local)
		}
	}
	return out, nil
}

// pids returns the master's pid and its children's (the workers).
func (n *Nginx) pids() []int {
	master := n.cmd.Process.Pid
	out := []int{master}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...; comm may hold spaces, so cut at the last ')'.
		s := string(b)
		i := strings.LastIndexByte(s, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(s[i+1:])
		if len(f) > 1 && f[1] == strconv.Itoa(master) {
			out = append(out, pid)
		}
	}
	return out
}

// procAddr turns /proc/net/tcp's "0100007F:1F90" into "127.0.0.1:8080".
func procAddr(s string) string {
	h, p, ok := strings.Cut(s, ":")
	if !ok || len(h) != 8 {
		return s
	}
	ip, err1 := strconv.ParseUint(h, 16, 32)
	port, err2 := strconv.ParseUint(p, 16, 16)
	if err1 != nil || err2 != nil {
		return s
	}
	// The address is in host byte order (little-endian on the machines this runs on).
	a := net.IPv4(byte(ip), byte(ip>>8), byte(ip>>16), byte(ip>>24))
	return net.JoinHostPort(a.String(), strconv.Itoa(int(port)))
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
