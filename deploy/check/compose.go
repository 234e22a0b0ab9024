package check

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"time"

	"github.com/compose-spec/compose-go/v2/loader"
	"github.com/compose-spec/compose-go/v2/types"
	"sigs.k8s.io/yaml"
)

// LoadCompose loads a compose file into compose-go's typed model, with every
// profile active (so tool services are checked too) and an empty
// environment (so ${VAR:-default} takes its default).
func LoadCompose(ctx context.Context, file string) (*types.Project, error) {
	abs, err := filepath.Abs(file)
	if err != nil {
		return nil, err
	}
	return loader.LoadWithContext(ctx, types.ConfigDetails{
		WorkingDir:  filepath.Dir(abs),
		ConfigFiles: []types.ConfigFile{{Filename: abs}},
		Environment: types.Mapping{},
	}, func(o *loader.Options) {
		o.SetProjectName("ssegate", true)
		o.Profiles = []string{"*"}
	})
}

// A ComposeCheck is one rule over a compose project; root is the
// repository, where the files the project mounts live.
type ComposeCheck struct {
	Name string
	Run  func(p *types.Project, g *Gateway, root string) error
}

// ComposeChecks are the rules docker-compose.yml must satisfy.
var ComposeChecks = []ComposeCheck{
	{"compose-gateways", checkComposeGateways},
	{"compose-redis-url", checkComposeRedisURL},
	{"compose-env-names", checkComposeEnvNames},
	{"compose-grace", checkComposeGrace},
	{"compose-nginx", checkComposeNginx},
	{"compose-prometheus", checkComposePrometheus},
}

// RunComposeChecks runs every compose check and returns the failures, each
// prefixed by its check's name.
func RunComposeChecks(p *types.Project, g *Gateway, root string) []error {
	var errs []error
	for _, c := range ComposeChecks {
		if err := c.Run(p, g, root); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", c.Name, err))
		}
	}
	return errs
}

// gatewayImage tells a service that runs the ssegate image: built from
// deploy/Dockerfile, or an image named ssegate.
func gatewayImage(s types.ServiceConfig) bool {
	if s.Build != nil && filepath.ToSlash(filepath.Clean(s.Build.Dockerfile)) == "deploy/Dockerfile" {
		return true
	}
	return s.Image == "ssegate" || strings.HasPrefix(s.Image, "ssegate:") || strings.Contains(s.Image, "/ssegate:")
}

// ComposeGateways are the services that run the gateway: the ssegate image
// with its own entrypoint (a service that overrides it, like ssepub, is a tool).
func ComposeGateways(p *types.Project) []types.ServiceConfig {
	var out []types.ServiceConfig
	for _, name := range sortedServices(p) {
		s := p.Services[name]
		if gatewayImage(s) && len(s.Entrypoint) == 0 {
			out = append(out, s)
		}
	}
	return out
}

func sortedServices(p *types.Project) []string {
	names := p.ServiceNames()
	sort.Strings(names)
	return names
}

// imageService returns the services whose image name starts with prefix.
func imageServices(p *types.Project, prefix string) []types.ServiceConfig {
	var out []types.ServiceConfig
	for _, name := range sortedServices(p) {
		s := p.Services[name]
		if strings.HasPrefix(s.Image, prefix) {
			out = append(out, s)
		}
	}
	return out
}

// composeSettings is the environment the compose file gives a service.
func composeSettings(s types.ServiceConfig) Settings {
	out := Settings{}
	for k, v := range s.Environment {
		if v != nil {
			out[k] = *v
		}
	}
	return out
}

func checkComposeGateways(p *types.Project, _ *Gateway, _ string) error {
	if gws := ComposeGateways(p); len(gws) < 2 {
		return fmt.Errorf("%d gateway services, want at least two behind nginx", len(gws))
	}
	return nil
}

func checkComposeRedisURL(p *types.Project, _ *Gateway, _ string) error {
	redis := map[string]bool{}
	for _, s := range imageServices(p, "redis") {
		redis[s.Name] = true
	}
	if len(redis) == 0 {
		return errors.New("no service runs a redis image")
	}
	var errs []error
	for _, name := range sortedServices(p) {
		s := p.Services[name]
		v, ok := s.Environment["REDIS_URL"]
		if !ok && gatewayImage(s) {
			errs = append(errs, fmt.Errorf("service %s has no REDIS_URL: it would run its own embedded Redis", name))
			continue
		}
		if !ok {
			continue
		}
		if v == nil {
			errs = append(errs, fmt.Errorf("service %s: REDIS_URL is taken from the host's environment", name))
			continue
		}
		u, err := url.Parse(*v)
		if err != nil || (u.Scheme != "redis" && u.Scheme != "rediss") {
			errs = append(errs, fmt.Errorf("service %s: REDIS_URL=%q is no redis:// URL", name, *v))
			continue
		}
		if !redis[u.Hostname()] {
			errs = append(errs, fmt.Errorf("service %s: REDIS_URL=%q names host %q, which is no redis service of the file (%s)",
				name, *v, u.Hostname(), strings.Join(keys(redis), ", ")))
			continue
		}
		if port := u.Port(); port != "" && port != "6379" {
			errs = append(errs, fmt.Errorf("service %s: REDIS_URL=%q: redis listens on 6379, not %s", name, *v, port))
		}
		if _, ok := s.DependsOn[u.Hostname()]; !ok {
			errs = append(errs, fmt.Errorf("service %s does not depend_on %s, its Redis", name, u.Hostname()))
		}
	}
	return errors.Join(errs...)
}

func keys(m map[string]bool) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func checkComposeEnvNames(p *types.Project, g *Gateway, _ string) error {
	var errs []error
	for _, s := range ComposeGateways(p) {
		names := make([]string, 0, len(s.Environment))
		for k := range s.Environment {
			names = append(names, k)
		}
		sort.Strings(names)
		for _, k := range names {
			if err := g.checkEnvName(k); err != nil {
				errs = append(errs, fmt.Errorf("service %s: %w", s.Name, err))
			}
		}
	}
	return errors.Join(errs...)
}

// dockerStopGrace is what compose waits after the stop signal when a
// service sets no stop_grace_period.
const dockerStopGrace = 10 * time.Second

func checkComposeGrace(p *types.Project, g *Gateway, _ string) error {
	var errs []error
	for _, s := range ComposeGateways(p) {
		shutdown, err := g.ShutdownTimeout(composeSettings(s))
		if err != nil {
			errs = append(errs, fmt.Errorf("service %s: %w", s.Name, err))
			continue
		}
		grace := dockerStopGrace
		if s.StopGracePeriod != nil {
			grace = time.Duration(*s.StopGracePeriod)
		}
		if grace <= shutdown {
			errs = append(errs, fmt.Errorf("service %s: stop_grace_period %v must exceed the gateway's shutdown timeout %v, or SIGKILL cuts the drain", s.Name, grace, shutdown))
		}
		if s.StopSignal != "" && s.StopSignal != "SIGTERM" && s.StopSignal != "SIGINT" {
			errs = append(errs, fmt.Errorf("service %s: stop_signal %s does not start the gateway's drain (SIGTERM or SIGINT do)", s.Name, s.StopSignal))
		}
	}
	return errors.Join(errs...)
}

// gatewayTargets are "service:port" of every gateway, the port from its
// SSEGATE_ADDR.
func gatewayTargets(p *types.Project, g *Gateway) ([]string, error) {
	var out []string
	for _, s := range ComposeGateways(p) {
		port, err := g.ListenPort(composeSettings(s))
		if err != nil {
			return nil, fmt.Errorf("service %s: %w", s.Name, err)
		}
		out = append(out, s.Name+":"+port)
	}
	return out, nil
}

// hostPath maps a path inside service s's container to the host file a
// bind mount puts there.
func hostPath(s types.ServiceConfig, inContainer string) (string, bool) {
	best := ""
	var src string
	for _, v := range s.Volumes {
		if v.Type != types.VolumeTypeBind {
			continue
		}
		t := filepath.Clean(v.Target)
		if (inContainer == t || strings.HasPrefix(inContainer, t+"/")) && len(t) > len(best) {
			best, src = t, filepath.Join(v.Source, strings.TrimPrefix(inContainer, t))
		}
	}
	return src, best != ""
}

var (
	upstreamBlock = regexp.MustCompile(`(?s)upstream\s+\S+\s*\{(.*?)\}`)
	serverLine    = regexp.MustCompile(`(?m)^\s*server\s+([^\s;]+)`)
)

func checkComposeNginx(p *types.Project, g *Gateway, root string) error {
	ngx := imageServices(p, "nginx")
	if len(ngx) != 1 {
		return fmt.Errorf("%d services run an nginx image, want one", len(ngx))
	}
	s := ngx[0]
	want := filepath.Join(root, "deploy", "nginx.conf")
	var conf string
	for _, v := range s.Volumes {
		if v.Type == types.VolumeTypeBind && filepath.Clean(v.Source) == want {
			if !strings.HasPrefix(v.Target, "/etc/nginx/") {
				return fmt.Errorf("service %s mounts deploy/nginx.conf at %s, outside /etc/nginx/", s.Name, v.Target)
			}
			if !v.ReadOnly {
				return fmt.Errorf("service %s mounts deploy/nginx.conf read-write", s.Name)
			}
			conf = v.Source
		}
	}
	if conf == "" {
		return fmt.Errorf("service %s does not mount %s", s.Name, want)
	}
	if len(s.Ports) == 0 {
		return fmt.Errorf("service %s publishes no port", s.Name)
	}
	data, err := os.ReadFile(conf)
	if err != nil {
		return err
	}
	targets, err := gatewayTargets(p, g)
	if err != nil {
		return err
	}
	var servers []string
	for _, block := range upstreamBlock.FindAllStringSubmatch(string(data), -1) {
		for _, m := range serverLine.FindAllStringSubmatch(block[1], -1) {
			servers = append(servers, m[1])
		}
	}
	sort.Strings(servers)
	if strings.Join(servers, " ") != strings.Join(targets, " ") {
		return fmt.Errorf("deploy/nginx.conf's upstream servers are [%s], but the gateways listen at [%s]",
			strings.Join(servers, " "), strings.Join(targets, " "))
	}
	for _, gw := range ComposeGateways(p) {
		if _, ok := s.DependsOn[gw.Name]; !ok {
			return fmt.Errorf("service %s does not depend_on gateway %s", s.Name, gw.Name)
		}
	}
	return nil
}

// promConfig is the part of a Prometheus configuration the check reads.
type promConfig struct {
	RuleFiles     []string `json:"rule_files"`
	ScrapeConfigs []struct {
		JobName       string `json:"job_name"`
		MetricsPath   string `json:"metrics_path"`
		Scheme        string `json:"scheme"`
		StaticConfigs []struct {
			Targets []string `json:"targets"`
		} `json:"static_configs"`
	} `json:"scrape_configs"`
}

func checkComposePrometheus(p *types.Project, g *Gateway, _ string) error {
	proms := imageServices(p, "prom/prometheus")
	if len(proms) != 1 {
		return fmt.Errorf("%d services run prom/prometheus, want one", len(proms))
	}
	s := proms[0]
	file := "/etc/prometheus/prometheus.yml" // the image's default
	for _, arg := range s.Command {
		if v, ok := strings.CutPrefix(arg, "--config.file="); ok {
			file = v
		}
	}
	host, ok := hostPath(s, file)
	if !ok {
		return fmt.Errorf("service %s reads %s, which no bind mount of the file provides", s.Name, file)
	}
	data, err := os.ReadFile(host)
	if err != nil {
		return fmt.Errorf("service %s: %v", s.Name, err)
	}
	var cfg promConfig
	if err := yaml.Unmarshal(data, &cfg); err != nil {
		return fmt.Errorf("%s: %v", host, err)
	}
	for _, rf := range cfg.RuleFiles {
		h, ok := hostPath(s, rf)
		if !ok {
			return fmt.Errorf("%s: rule file %s is not mounted into service %s", host, rf, s.Name)
		}
		if _, err := os.Stat(h); err != nil {
			return fmt.Errorf("%s: rule file %s: %v", host, rf, err)
		}
	}
	scraped := map[string]bool{}
	for _, sc := range cfg.ScrapeConfigs {
		path := sc.MetricsPath
		if path == "" {
			path = "/metrics"
		}
		if path != "/metrics" || (sc.Scheme != "" && sc.Scheme != "http") {
			continue
		}
		for _, st := range sc.StaticConfigs {
			for _, t := range st.Targets {
				scraped[t] = true
			}
		}
	}
	targets, err := gatewayTargets(p, g)
	if err != nil {
		return err
	}
	var missing []string
	for _, t := range targets {
		if !scraped[t] {
			missing = append(missing, t)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("%s scrapes no http://%s/metrics", host, strings.Join(missing, "/metrics, http://"))
	}
	return nil
}
