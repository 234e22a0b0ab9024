package check

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"time"
)

// Flag is one line of the gateway's --help: a flag, its environment twin and
// its default.
type Flag struct {
	Name    string // "shutdown-grace"
	Env     string // "SSEGATE_SHUTDOWN_GRACE"
	Default string // "5s"
	Usage   string
}

// Gateway is the gateway's configuration table, as its --help prints it.
type Gateway struct {
	Flags []Flag
	// ShutdownSlack is what the gateway adds to --shutdown-grace when
	// --shutdown-timeout is 0 ("default: shutdown-grace + 5s").
	ShutdownSlack time.Duration
	byEnv         map[string]Flag
}

// Runtime variables the Go runtime itself reads in the gateway's process; a
// deployment file may set them although they are no flag's twin.
var goRuntimeEnv = map[string]bool{
	"GOMAXPROCS": true, "GOMEMLIMIT": true, "GOGC": true, "GODEBUG": true, "GOTRACEBACK": true,
}

var (
	helpLine  = regexp.MustCompile(`^\s+--([a-z0-9-]+) \(([A-Z][A-Z0-9_]*), default "(.*)"\)$`)
	slackLine = regexp.MustCompile(`shutdown-grace \+ ([0-9a-z.]+)\)`)
)

// ParseHelp reads the gateway's --help output: "  --flag (ENV, default "…")"
// lines, each followed by its usage line.
func ParseHelp(help string) (*Gateway, error) {
	g := &Gateway{byEnv: map[string]Flag{}}
	lines := strings.Split(help, "\n")
	for i, line := range lines {
		m := helpLine.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		f := Flag{Name: m[1], Env: m[2], Default: m[3]}
		if i+1 < len(lines) {
			f.Usage = strings.TrimSpace(lines[i+1])
		}
		if _, dup := g.byEnv[f.Env]; dup {
			return nil, fmt.Errorf("gateway --help: %s is the twin of two flags", f.Env)
		}
		g.Flags = append(g.Flags, f)
		g.byEnv[f.Env] = f
	}
	if len(g.Flags) == 0 {
		return nil, fmt.Errorf("gateway --help: no `--flag (ENV, default \"…\")` line in:\n%s", help)
	}
	for _, env := range []string{"SSEGATE_SHUTDOWN_GRACE", "SSEGATE_SHUTDOWN_TIMEOUT", "SSEGATE_ADDR", "SSEGATE_HEARTBEAT", "SSEGATE_MAX_CONNECTIONS", "REDIS_URL"} {
		if _, ok := g.byEnv[env]; !ok {
			return nil, fmt.Errorf("gateway --help: no flag has the twin %s, which the deployment checks read", env)
		}
	}
	m := slackLine.FindStringSubmatch(g.byEnv["SSEGATE_SHUTDOWN_TIMEOUT"].Usage)
	if m == nil {
		return nil, fmt.Errorf("gateway --help: the usage of --shutdown-timeout no longer says its default as \"shutdown-grace + D\": %q",
			g.byEnv["SSEGATE_SHUTDOWN_TIMEOUT"].Usage)
	}
	slack, err := time.ParseDuration(m[1])
	if err != nil {
		return nil, fmt.Errorf("gateway --help: --shutdown-timeout: %w", err)
	}
	g.ShutdownSlack = slack
	return g, nil
}

// LoadGateway builds ./cmd/gateway of the repository at root into a
// temporary directory and parses its --help.
func LoadGateway(root string) (*Gateway, error) {
	dir, err := os.MkdirTemp("", "ssegate-deploy-check-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	bin := filepath.Join(dir, "gateway")
	build := exec.Command("go", "build", "-o", bin, "./cmd/gateway")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("go build ./cmd/gateway in %s: %v\n%s", root, err, out)
	}
	var out bytes.Buffer
	help := exec.Command(bin, "--help")
	help.Stdout, help.Stderr = &out, &out
	if err := help.Run(); err != nil {
		return nil, fmt.Errorf("gateway --help: %v\n%s", err, out.String())
	}
	return ParseHelp(out.String())
}

// Twin returns the flag whose environment twin is env.
func (g *Gateway) Twin(env string) (Flag, bool) {
	f, ok := g.byEnv[env]
	return f, ok
}

// Envs returns every environment twin, sorted.
func (g *Gateway) Envs() []string {
	var out []string
	for _, f := range g.Flags {
		out = append(out, f.Env)
	}
	sort.Strings(out)
	return out
}

// checkEnvName says why name is no variable the gateway's process reads.
func (g *Gateway) checkEnvName(name string) error {
	if _, ok := g.byEnv[name]; ok || goRuntimeEnv[name] {
		return nil
	}
	return fmt.Errorf("%s is not an environment variable of the gateway (its twins: %s)", name, strings.Join(g.Envs(), ", "))
}

// Settings is the environment a gateway process gets, by variable name.
type Settings map[string]string

// value returns the setting of env, or the gateway's default.
func (g *Gateway) value(s Settings, env string) string {
	if v, ok := s[env]; ok {
		return v
	}
	return g.byEnv[env].Default
}

// duration returns the setting of env as a duration.
func (g *Gateway) duration(s Settings, env string) (time.Duration, error) {
	v := g.value(s, env)
	d, err := time.ParseDuration(v)
	if err != nil {
		return 0, fmt.Errorf("%s=%q: %v", env, v, err)
	}
	return d, nil
}

// ShutdownTimeout is the bound of the gateway's whole shutdown with these
// settings: SSEGATE_SHUTDOWN_TIMEOUT, or when it is 0 the grace plus the
// slack its --help states.
func (g *Gateway) ShutdownTimeout(s Settings) (time.Duration, error) {
	t, err := g.duration(s, "SSEGATE_SHUTDOWN_TIMEOUT")
	if err != nil {
		return 0, err
	}
	if t > 0 {
		return t, nil
	}
	grace, err := g.duration(s, "SSEGATE_SHUTDOWN_GRACE")
	if err != nil {
		return 0, err
	}
	return grace + g.ShutdownSlack, nil
}

// ListenPort is the port of SSEGATE_ADDR (":8080", "0.0.0.0:8080").
func (g *Gateway) ListenPort(s Settings) (string, error) {
	addr := g.value(s, "SSEGATE_ADDR")
	i := strings.LastIndex(addr, ":")
	if i < 0 || i == len(addr)-1 {
		return "", fmt.Errorf("SSEGATE_ADDR=%q has no port", addr)
	}
	return addr[i+1:], nil
}
