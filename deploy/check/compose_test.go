package check

import (
	"context"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/compose-spec/compose-go/v2/types"
)

func loadCompose(t *testing.T) (*types.Project, string) {
	t.Helper()
	root, err := filepath.Abs(repoRoot)
	if err != nil {
		t.Fatal(err)
	}
	p, err := LoadCompose(context.Background(), filepath.Join(root, "docker-compose.yml"))
	if err != nil {
		t.Fatal(err)
	}
	return p, root
}

// docker-compose.yml, in compose-go's typed model, passes every compose check.
func TestCompose(t *testing.T) {
	p, root := loadCompose(t)
	if errs := RunComposeChecks(p, gateway(t), root); len(errs) > 0 {
		t.Errorf("docker-compose.yml:%s", errorsText(errs))
	}
	var names []string
	for _, s := range ComposeGateways(p) {
		names = append(names, s.Name)
	}
	t.Logf("services %v; gateways %v", p.ServiceNames(), names)
}

// setService changes one service of the project.
func setService(p *types.Project, name string, change func(s *types.ServiceConfig)) {
	s := p.Services[name]
	change(&s)
	p.Services[name] = s
}

func setEnv(p *types.Project, service, key, value string) {
	setService(p, service, func(s *types.ServiceConfig) {
		env := types.MappingWithEquals{}
		for k, v := range s.Environment {
			env[k] = v
		}
		env[key] = &value
		s.Environment = env
	})
}

// Each compose check fails, saying why, when the project is broken on purpose.
func TestComposeChecksCatchBreakage(t *testing.T) {
	g := gateway(t)
	broken := map[string]bool{}
	for _, c := range []struct {
		name, check, want string
		breakIt           func(p *types.Project)
	}{
		{"one gateway", "compose-gateways", "1 gateway services, want at least two",
			func(p *types.Project) { delete(p.Services, "gateway-2") }},
		{"REDIS_URL to another host", "compose-redis-url", `service gateway-1: REDIS_URL="redis://cache:6379/0" names host "cache", which is no redis service`,
			func(p *types.Project) { setEnv(p, "gateway-1", "REDIS_URL", "redis://cache:6379/0") }},
		{"REDIS_URL on another port", "compose-redis-url", "redis listens on 6379, not 6380",
			func(p *types.Project) { setEnv(p, "ssepub", "REDIS_URL", "redis://redis:6380/0") }},
		{"no REDIS_URL", "compose-redis-url", "service gateway-2 has no REDIS_URL",
			func(p *types.Project) {
				setService(p, "gateway-2", func(s *types.ServiceConfig) {
					env := types.MappingWithEquals{}
					for k, v := range s.Environment {
						if k != "REDIS_URL" {
							env[k] = v
						}
					}
					s.Environment = env
				})
			}},
		{"unknown env name", "compose-env-names", "service gateway-2: SSEGATE_HEARTBEAT_INTERVAL is not an environment variable of the gateway",
			func(p *types.Project) { setEnv(p, "gateway-2", "SSEGATE_HEARTBEAT_INTERVAL", "10s") }},
		{"stop grace below the shutdown timeout", "compose-grace", "service gateway-1: stop_grace_period 15s must exceed the gateway's shutdown timeout 20s",
			func(p *types.Project) { setEnv(p, "gateway-1", "SSEGATE_SHUTDOWN_TIMEOUT", "20s") }},
		{"nginx without deploy/nginx.conf", "compose-nginx", "service nginx does not mount",
			func(p *types.Project) { setService(p, "nginx", func(s *types.ServiceConfig) { s.Volumes = nil }) }},
		{"nginx upstream and gateway port disagree", "compose-nginx", "deploy/nginx.conf's upstream servers are [gateway-1:8080 gateway-2:8080], but the gateways listen at [gateway-1:8080 gateway-2:9000]",
			func(p *types.Project) { setEnv(p, "gateway-2", "SSEGATE_ADDR", ":9000") }},
		{"Prometheus misses a gateway", "compose-prometheus", "scrapes no http://gateway-3:8080/metrics",
			func(p *types.Project) {
				s := p.Services["gateway-2"]
				s.Name = "gateway-3"
				p.Services["gateway-3"] = s
				ngx := p.Services["nginx"]
				ngx.DependsOn = types.DependsOnConfig{"gateway-1": {}, "gateway-2": {}, "gateway-3": {}}
				p.Services["nginx"] = ngx
			}},
		{"Prometheus config not mounted", "compose-prometheus", "reads /etc/prometheus.yml, which no bind mount of the file provides",
			func(p *types.Project) {
				setService(p, "prometheus", func(s *types.ServiceConfig) {
					s.Command = types.ShellCommand{"--config.file=/etc/prometheus.yml"}
				})
			}},
	} {
		t.Run(c.name, func(t *testing.T) {
			p, root := loadCompose(t)
			c.breakIt(p)
			var check *ComposeCheck
			for i := range ComposeChecks {
				if ComposeChecks[i].Name == c.check {
					check = &ComposeChecks[i]
				}
			}
			if check == nil {
				t.Fatalf("no check %q", c.check)
			}
			broken[c.check] = true
			err := check.Run(p, g, root)
			if err == nil {
				t.Fatalf("check %s passed on the broken project", c.check)
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Fatalf("check %s: %v\nwant a message with: %s", c.check, err, c.want)
			}
			t.Logf("%s: %v", c.check, err)
		})
	}
	for _, c := range ComposeChecks {
		if !broken[c.Name] {
			t.Errorf("no case breaks check %s", c.Name)
		}
	}
}

// `docker compose config` validates the file with Docker's own loader, when
// a Docker CLI with the compose plugin is here (it needs no engine).
func TestDockerComposeConfig(t *testing.T) {
	if _, err := exec.LookPath("docker"); err != nil {
		t.Skip("no docker CLI here: docker compose config not run")
	}
	if out, err := exec.Command("docker", "compose", "version").CombinedOutput(); err != nil {
		t.Skipf("the docker CLI here has no compose plugin (%s): docker compose config not run", strings.TrimSpace(string(out)))
	}
	cmd := exec.Command("docker", "compose", "-f", "docker-compose.yml", "--profile", "*", "config", "--quiet")
	cmd.Dir = repoRoot
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("docker compose config: %v\n%s", err, out)
	}
}
