package check

import (
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
)

// kinds lists the kinds a render holds, sorted.
func kinds(o *Objects) string {
	var k []string
	for kind, present := range map[string]bool{
		"ConfigMap": o.ConfigMap != nil, "Deployment": true, "HorizontalPodAutoscaler": o.HPA != nil,
		"Ingress": o.Ingress != nil, "PodDisruptionBudget": o.PDB != nil, "Secret": o.Secret != nil,
		"Service": o.Service != nil, "ServiceMonitor": o.ServiceMonitor != nil,
	} {
		if present {
			k = append(k, kind)
		}
	}
	sort.Strings(k)
	return strings.Join(k, " ")
}

// The chart with its default values and with overrides: each render lints,
// decodes strictly, passes every check, and has the objects its values ask for.
func TestChart(t *testing.T) {
	g := gateway(t)
	for _, c := range []struct {
		name, release, values string
		kinds                 string
		more                  func(t *testing.T, o *Objects, r *Render)
	}{
		{
			name: "defaults", release: "ssegate",
			kinds: "ConfigMap Deployment HorizontalPodAutoscaler PodDisruptionBudget Secret Service",
			more: func(t *testing.T, o *Objects, r *Render) {
				if o.Deployment.Name != "ssegate" || o.Deployment.Spec.Replicas != nil || *o.HPA.Spec.MinReplicas != 3 {
					t.Errorf("Deployment %s, replicas %v, HPA min %d: want ssegate, unset (the HPA holds it), 3",
						o.Deployment.Name, o.Deployment.Spec.Replicas, *o.HPA.Spec.MinReplicas)
				}
				if o.Secret.StringData["REDIS_URL"] != "redis://redis:6379/0" || len(o.Secret.StringData) != 1 {
					t.Errorf("Secret: %v", o.Secret.StringData)
				}
				if o.Container().Lifecycle.PreStop.Sleep.Seconds != 5 || *o.Deployment.Spec.Template.Spec.TerminationGracePeriodSeconds != 20 {
					t.Errorf("preStop %d s, grace %d s", o.Container().Lifecycle.PreStop.Sleep.Seconds, *o.Deployment.Spec.Template.Spec.TerminationGracePeriodSeconds)
				}
				if !strings.Contains(r.Notes, "kubectl -n default rollout status deployment/ssegate") ||
					!strings.Contains(r.Notes, "custom.metrics.k8s.io") || strings.Contains(r.Notes, "redis://redis:6379") ||
					!strings.Contains(r.Notes, "auth is off") {
					t.Errorf("NOTES.txt:\n%s", r.Notes)
				}
			},
		},
		{
			name: "replicas, HPA off", release: "ssegate", values: "replicaCount: 5\nautoscaling: {enabled: false}",
			kinds: "ConfigMap Deployment PodDisruptionBudget Secret Service",
			more: func(t *testing.T, o *Objects, r *Render) {
				if o.Deployment.Spec.Replicas == nil || *o.Deployment.Spec.Replicas != 5 {
					t.Errorf("replicas %v, want 5", o.Deployment.Spec.Replicas)
				}
				if strings.Contains(r.Notes, "custom.metrics") {
					t.Errorf("NOTES.txt speaks of the HPA:\n%s", r.Notes)
				}
			},
		},
		{
			name: "existing secret", release: "ssegate", values: "existingSecret: ssegate-prod",
			kinds: "ConfigMap Deployment HorizontalPodAutoscaler PodDisruptionBudget Service",
			more: func(t *testing.T, o *Objects, r *Render) {
				if ref := o.Container().EnvFrom[1].SecretRef; ref == nil || ref.Name != "ssegate-prod" {
					t.Errorf("envFrom: %+v", o.Container().EnvFrom)
				}
				if !strings.Contains(r.Notes, `Secret "ssegate-prod"`) {
					t.Errorf("NOTES.txt:\n%s", r.Notes)
				}
			},
		},
		{
			name: "ingress and ServiceMonitor", release: "ssegate",
			values: "ingress: {enabled: true, host: sse.example.com, tls: [{secretName: sse-tls, hosts: [sse.example.com]}]}\n" +
				"serviceMonitor: {enabled: true, labels: {release: kube-prometheus-stack}}",
			kinds: "ConfigMap Deployment HorizontalPodAutoscaler Ingress PodDisruptionBudget Secret Service ServiceMonitor",
			more: func(t *testing.T, o *Objects, r *Render) {
				if r := o.Ingress.Spec.Rules[0]; r.Host != "sse.example.com" || *o.Ingress.Spec.IngressClassName != "nginx" {
					t.Errorf("Ingress rule %+v", r)
				}
				if o.ServiceMonitor.Labels["release"] != "kube-prometheus-stack" {
					t.Errorf("ServiceMonitor labels %v", o.ServiceMonitor.Labels)
				}
			},
		},
		{
			name: "auth keys", release: "ssegate", values: "auth: {jwtSecret: s3cret, publisherJwtSecret: p4ss}",
			kinds: "ConfigMap Deployment HorizontalPodAutoscaler PodDisruptionBudget Secret Service",
			more: func(t *testing.T, o *Objects, r *Render) {
				if o.Secret.StringData["SSEGATE_JWT_SECRET"] != "s3cret" || o.Secret.StringData["SSEGATE_PUBLISHER_JWT_SECRET"] != "p4ss" {
					t.Errorf("Secret: %v", o.Secret.StringData)
				}
				if strings.Contains(r.Notes, "auth is off") {
					t.Errorf("NOTES.txt says auth is off with a secret set:\n%s", r.Notes)
				}
			},
		},
		{
			name: "release name, no PDB, extra env, other port", release: "prod",
			values: "podDisruptionBudget: {enabled: false}\nextraEnv: [{name: GOMEMLIMIT, value: 450MiB}]\n" +
				"containerPort: 9000\npodAnnotations: {prometheus.io/scrape: \"true\", prometheus.io/port: \"9000\"}\n" +
				"config: {SSEGATE_SHUTDOWN_TIMEOUT: \"0s\", SSEGATE_SHUTDOWN_GRACE: \"8s\"}\nterminationGracePeriodSeconds: 30",
			kinds: "ConfigMap Deployment HorizontalPodAutoscaler Secret Service",
			more: func(t *testing.T, o *Objects, r *Render) {
				if o.Deployment.Name != "prod-ssegate" || o.Service.Spec.Selector["app.kubernetes.io/instance"] != "prod" {
					t.Errorf("Deployment %s, Service selector %v", o.Deployment.Name, o.Service.Spec.Selector)
				}
				// config merges into the defaults' map: the entries it names change, the others stay.
				if d := o.ConfigMap.Data; d["SSEGATE_ADDR"] != ":9000" || d["SSEGATE_SHUTDOWN_GRACE"] != "8s" || d["SSEGATE_LOG_FORMAT"] != "json" {
					t.Errorf("ConfigMap: %v", d)
				}
			},
		},
		{
			name: "fullnameOverride", release: "x", values: "fullnameOverride: sse",
			kinds: "ConfigMap Deployment HorizontalPodAutoscaler PodDisruptionBudget Secret Service",
			more: func(t *testing.T, o *Objects, r *Render) {
				if o.Deployment.Name != "sse" || o.HPA.Spec.ScaleTargetRef.Name != "sse" || o.Container().EnvFrom[0].ConfigMapRef.Name != "sse" {
					t.Errorf("names: %s %s", o.Deployment.Name, o.HPA.Spec.ScaleTargetRef.Name)
				}
			},
		},
	} {
		t.Run(c.name, func(t *testing.T) {
			vals := values(t, c.values)
			for _, kv := range KubeVersions {
				problems, all, err := Lint(chartDir, vals, kv)
				if err != nil {
					t.Fatal(err)
				}
				if len(problems) > 0 {
					t.Errorf("helm lint (Kubernetes %s):%s", kv, errorsText(problems))
				}
				t.Logf("helm lint (Kubernetes %s): %d messages %v", kv, len(all), all)
			}
			r, err := RenderChart(chartDir, c.release, "default", newestKube, vals)
			if err != nil {
				t.Fatal(err)
			}
			o := decode(t, r)
			if errs := RunChecks(o, g); len(errs) > 0 {
				t.Errorf("checks failed:%s", errorsText(errs))
			}
			if got := kinds(o); got != c.kinds {
				t.Errorf("objects: %s\nwant:    %s", got, c.kinds)
			}
			c.more(t, o, r)
		})
	}
}

// Chart.yaml's kubeVersion admits the versions the chart is checked for
// and refuses a cluster without the preStop sleep action.
func TestKubeVersion(t *testing.T) {
	for _, kv := range KubeVersions {
		if _, err := RenderChart(chartDir, "ssegate", "default", kv, nil); err != nil {
			t.Errorf("Kubernetes %s: %v", kv, err)
		}
	}
	if _, err := RenderChart(chartDir, "ssegate", "default", "v1.29.9", nil); err == nil {
		t.Error("the chart renders for Kubernetes 1.29, which has no preStop sleep action by default")
	}
}

// Decoding is strict: a field no Kubernetes type has, or a value of the
// wrong type, is an error rather than something the API server drops.
func TestDecodeIsStrict(t *testing.T) {
	for _, c := range []struct{ name, old, new, want string }{
		{"misspelled field", "readinessProbe:", "readinessProbes:", `unknown field "readinessProbes"`},
		{"duplicate field", "  selector:\n", "  selector: {}\n  selector:\n", `key "selector" already set in map`},
		{"unknown kind", "kind: Service\n", "kind: Servce\n", "unexpected object v1/Servce"},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := render(t, "ssegate", "")
			changed := false
			for i, m := range r.Manifests {
				if strings.Contains(m.Content, c.old) && !changed {
					r.Manifests[i].Content = strings.Replace(m.Content, c.old, c.new, 1)
					changed = true
				}
			}
			if !changed {
				t.Fatalf("no manifest has %q", c.old)
			}
			if _, err := Decode(r.Manifests); err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("Decode: %v; want an error with %q", err, c.want)
			}
		})
	}
	// A number in config (values.yaml says: quote them) renders as a YAML
	// number, which is no ConfigMap data.
	r := render(t, "ssegate", "config: {SSEGATE_MAX_CONNECTIONS: 20000}")
	if _, err := Decode(r.Manifests); err == nil || !strings.Contains(err.Error(), "cannot unmarshal number into Go struct field ConfigMap.data of type string") {
		t.Fatalf("Decode of an unquoted number in the ConfigMap: %v", err)
	}
}

// Each check fails, with a message that says what is wrong, when the
// objects are broken on purpose. The base render has every optional object
// on, so that each check has something to check.
func TestChecksCatchBreakage(t *testing.T) {
	g := gateway(t)
	base := render(t, "ssegate", "ingress: {enabled: true}\nserviceMonitor: {enabled: true}")
	if errs := RunChecks(decode(t, base), g); len(errs) > 0 {
		t.Fatalf("the base render fails:%s", errorsText(errs))
	}
	broken := map[string]bool{}
	for _, c := range []struct {
		name, check, want string
		breakIt           func(o *Objects)
	}{
		{"readiness path", "probes", `readinessProbe.httpGet.path is "/ready", want "/readyz"`,
			func(o *Objects) { o.Container().ReadinessProbe.HTTPGet.Path = "/ready" }},
		{"liveness path", "probes", `livenessProbe.httpGet.path is "/readyz", want "/healthz"`,
			func(o *Objects) { o.Container().LivenessProbe.HTTPGet.Path = "/readyz" }},
		{"probe on a port the container lacks", "probes", "readinessProbe.httpGet.port 9090 is no port of the container",
			func(o *Objects) { o.Container().ReadinessProbe.HTTPGet.Port = intstr.FromInt32(9090) }},
		{"probe on a named port the container lacks", "probes", "livenessProbe.httpGet.port web is no port of the container",
			func(o *Objects) { o.Container().LivenessProbe.HTTPGet.Port = intstr.FromString("web") }},
		{"Service targets a missing port name", "service-port", `port "http" targets web, which is no port of container gateway`,
			func(o *Objects) { o.Service.Spec.Ports[0].TargetPort = intstr.FromString("web") }},
		{"Service targets a wrong port number", "service-port", "targets 9090, which is no port",
			func(o *Objects) { o.Service.Spec.Ports[0].TargetPort = intstr.FromInt32(9090) }},
		{"container port not the listen port", "listen-port", `port http is 9090, but the gateway listens on 8080 (SSEGATE_ADDR=":8080")`,
			func(o *Objects) { o.Container().Ports[0].ContainerPort = 9090 }},
		{"Service selector label mismatch", "service-selector", "app.kubernetes.io/instance=other (the pods have app.kubernetes.io/instance=ssegate)",
			func(o *Objects) { o.Service.Spec.Selector["app.kubernetes.io/instance"] = "other" }},
		{"Service selector empty", "service-selector", "spec.selector is empty",
			func(o *Objects) { o.Service.Spec.Selector = nil }},
		{"pod template label mismatch", "deployment-selector", "app.kubernetes.io/name=ssegate (the pods have app.kubernetes.io/name=gateway)",
			func(o *Objects) { o.Deployment.Spec.Template.Labels["app.kubernetes.io/name"] = "gateway" }},
		{"PDB selector label mismatch", "pdb-selector", "app.kubernetes.io/name=sse (the pods have app.kubernetes.io/name=ssegate)",
			func(o *Objects) { o.PDB.Spec.Selector.MatchLabels["app.kubernetes.io/name"] = "sse" }},
		{"ServiceMonitor selector label mismatch", "servicemonitor-selector", "app.kubernetes.io/instance=x (absent)",
			func(o *Objects) {
				delete(o.Service.Labels, "app.kubernetes.io/instance")
				o.ServiceMonitor.Spec.Selector.MatchLabels["app.kubernetes.io/instance"] = "x"
			}},
		{"standard label missing", "standard-labels", "HorizontalPodAutoscaler ssegate lacks app.kubernetes.io/version",
			func(o *Objects) { delete(o.HPA.Labels, "app.kubernetes.io/version") }},
		{"grace period too short", "grace-period", "terminationGracePeriodSeconds 15s must exceed the preStop sleep 5s + the gateway's shutdown timeout 10s = 15s",
			func(o *Objects) { o.Deployment.Spec.Template.Spec.TerminationGracePeriodSeconds = ptr.To[int64](15) }},
		{"shutdown timeout raised", "grace-period", "shutdown timeout 30s = 35s",
			func(o *Objects) { o.ConfigMap.Data["SSEGATE_SHUTDOWN_TIMEOUT"] = "30s" }},
		{"shutdown timeout from the grace", "grace-period", "shutdown timeout 25s = 30s",
			func(o *Objects) {
				delete(o.ConfigMap.Data, "SSEGATE_SHUTDOWN_TIMEOUT")
				o.ConfigMap.Data["SSEGATE_SHUTDOWN_GRACE"] = "20s"
			}},
		{"no preStop", "grace-period", "has no preStop sleep",
			func(o *Objects) { o.Container().Lifecycle = nil }},
		{"unknown env name in the ConfigMap", "env-names", "ConfigMap ssegate: SSEGATE_HEARTBEATS is not an environment variable of the gateway",
			func(o *Objects) { o.ConfigMap.Data["SSEGATE_HEARTBEATS"] = "10s" }},
		{"unknown env name in the container", "env-names", "container gateway: env: REDIS_ADDR is not an environment variable of the gateway",
			func(o *Objects) {
				o.Container().Env = append(o.Container().Env, corev1.EnvVar{Name: "REDIS_ADDR", Value: "redis:6379"})
			}},
		{"unknown env name in the Secret", "env-names", "Secret ssegate: REDIS_PASSWORD is not an environment variable",
			func(o *Objects) { o.Secret.StringData["REDIS_PASSWORD"] = "x" }},
		{"envFrom names another ConfigMap", "env-sources", `envFrom names ConfigMap "ssegate-config", which the chart does not render`,
			func(o *Objects) { o.Container().EnvFrom[0].ConfigMapRef.Name = "ssegate-config" }},
		{"Secret without REDIS_URL", "env-sources", "Secret ssegate has no REDIS_URL",
			func(o *Objects) { delete(o.Secret.StringData, "REDIS_URL") }},
		{"HPA targets another Deployment", "hpa-target", `scaleTargetRef is apps/v1 Deployment "ssegate-gateway", want apps/v1 Deployment "ssegate"`,
			func(o *Objects) { o.HPA.Spec.ScaleTargetRef.Name = "ssegate-gateway" }},
		{"HPA targets a StatefulSet", "hpa-target", "scaleTargetRef is apps/v1 StatefulSet",
			func(o *Objects) { o.HPA.Spec.ScaleTargetRef.Kind = "StatefulSet" }},
		{"HPA on another metric", "hpa-target", `metric Pods "ssegate_connections_opened_total", want the Pods metric ssegate_connections`,
			func(o *Objects) { o.HPA.Spec.Metrics[0].Pods.Metric.Name = "ssegate_connections_opened_total" }},
		{"HPA target above the connection limit", "hpa-target", "target 12k streams per pod is not below SSEGATE_MAX_CONNECTIONS=10000",
			func(o *Objects) { o.HPA.Spec.Metrics[0].Pods.Target.AverageValue = ptr.To(resource.MustParse("12k")) }},
		{"replicas beside the HPA", "hpa-target", "sets replicas (3) while HPA ssegate scales it",
			func(o *Objects) { o.Deployment.Spec.Replicas = ptr.To[int32](3) }},
		{"HPA minimum of one", "hpa-target", "minReplicas 1, maxReplicas 20",
			func(o *Objects) { o.HPA.Spec.MinReplicas = ptr.To[int32](1) }},
		{"PDB that allows no eviction", "pdb-budget", "maxUnavailable 0 of 3 pods allows no eviction",
			func(o *Objects) { o.PDB.Spec.MaxUnavailable = ptr.To(intstr.FromInt32(0)) }},
		{"root", "security-context", "runAsNonRoot is not true; runAsUser is 0 (root)",
			func(o *Objects) {
				o.Deployment.Spec.Template.Spec.SecurityContext.RunAsNonRoot = nil
				o.Container().SecurityContext.RunAsNonRoot = ptr.To(false)
				o.Container().SecurityContext.RunAsUser = ptr.To[int64](0)
			}},
		{"writable root file system", "security-context", "readOnlyRootFilesystem is not true",
			func(o *Objects) { o.Container().SecurityContext.ReadOnlyRootFilesystem = nil }},
		{"privilege escalation", "security-context", "allowPrivilegeEscalation is not false",
			func(o *Objects) { o.Container().SecurityContext.AllowPrivilegeEscalation = ptr.To(true) }},
		{"a capability added", "security-context", "capabilities are not drop [ALL] with none added",
			func(o *Objects) { o.Container().SecurityContext.Capabilities.Add = []corev1.Capability{"NET_ADMIN"} }},
		{"no memory limit", "resources", "resources lack limits.memory",
			func(o *Objects) { delete(o.Container().Resources.Limits, corev1.ResourceMemory) }},
		{"Ingress buffering", "ingress", `proxy-buffering is "on", want "off"`,
			func(o *Objects) { o.Ingress.Annotations[annBuffering] = "on" }},
		{"Ingress read timeout below the heartbeat", "ingress", "proxy-read-timeout is 30s, want at least twice SSEGATE_HEARTBEAT (30s)",
			func(o *Objects) { o.Ingress.Annotations[annReadTimeout] = "30" }},
		{"Ingress to a missing Service port", "ingress", `goes to port "web"/0 of Service ssegate, which has no such port`,
			func(o *Objects) { o.Ingress.Spec.Rules[0].HTTP.Paths[0].Backend.Service.Port.Name = "web" }},
		{"ServiceMonitor on a missing port", "servicemonitor-endpoint", `endpoint port "metrics" is no port name of Service ssegate`,
			func(o *Objects) { o.ServiceMonitor.Spec.Endpoints[0].Port = "metrics" }},
		{"scrape annotation on the wrong port", "scrape-annotations", `prometheus.io/port is "9090", but the gateway listens on 8080`,
			func(o *Objects) { o.Deployment.Spec.Template.Annotations["prometheus.io/port"] = "9090" }},
	} {
		t.Run(c.name, func(t *testing.T) {
			o := decode(t, base)
			c.breakIt(o)
			var check *Check
			for i := range Checks {
				if Checks[i].Name == c.check {
					check = &Checks[i]
				}
			}
			if check == nil {
				t.Fatalf("no check %q", c.check)
			}
			broken[c.check] = true
			err := check.Run(o, g)
			if err == nil {
				t.Fatalf("check %s passed on the broken objects", c.check)
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Fatalf("check %s: %v\nwant a message with: %s", c.check, err, c.want)
			}
			t.Logf("%s: %v", c.check, err)
		})
	}
	for _, c := range Checks {
		if !broken[c.Name] {
			t.Errorf("no case breaks check %s", c.Name)
		}
	}
}

// values.yaml names every variable of the gateway (set, or commented with
// its default), so a new flag is documented where operators look.
func TestValuesDocumentEveryGatewaySetting(t *testing.T) {
	text := readFile(t, filepath.Join(chartDir, "values.yaml"))
	for _, env := range gateway(t).Envs() {
		if !strings.Contains(text, env) {
			t.Errorf("deploy/helm/ssegate/values.yaml does not mention %s: add it under config (commented, with its default) or say why not", env)
		}
	}
}

const k8sHeader = `# Generated: the Helm chart deploy/helm/ssegate rendered with its default
# values (release name "ssegate"; no namespace, so kubectl apply -n picks it).
# Do not edit: change the chart, then regenerate with
#   cd deploy && UPDATE_K8S=1 go test ./check -run TestPlainManifests
# (go test ./... in deploy/ fails while this file and the chart differ).
# Apply with: kubectl apply -n NAMESPACE -f deploy/k8s/
# Set REDIS_URL in secret.yaml first. The Deployment has no replica count:
# hpa.yaml holds it at 3 to 20 pods (3 even without a metrics adapter), and
# scales on open streams once prometheus-adapter serves ssegate_connections
# (deploy/helm/ssegate/README.md). Without hpa.yaml, kubectl scale it.
`

// deploy/k8s/ is the chart rendered with its default values: one file per
// template. UPDATE_K8S=1 rewrites it.
func TestPlainManifests(t *testing.T) {
	r, err := RenderChart(chartDir, "ssegate", "default", newestKube, nil)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{}
	var order []string
	for _, m := range r.Manifests {
		name := filepath.Base(m.Name)
		if _, ok := want[name]; !ok {
			want[name] = k8sHeader
			order = append(order, name)
		}
		want[name] += "---\n# Source: " + m.Name + "\n" + strings.TrimSpace(m.Content) + "\n"
	}
	existing, err := filepath.Glob(filepath.Join(k8sDir, "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if os.Getenv("UPDATE_K8S") != "" {
		for _, f := range existing {
			if _, ok := want[filepath.Base(f)]; !ok {
				if err := os.Remove(f); err != nil {
					t.Fatal(err)
				}
				t.Logf("removed %s", f)
			}
		}
		for _, name := range order {
			if err := os.WriteFile(filepath.Join(k8sDir, name), []byte(want[name]), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		t.Logf("wrote %s to %s", strings.Join(order, ", "), k8sDir)
		return
	}
	for _, f := range existing {
		if _, ok := want[filepath.Base(f)]; !ok {
			t.Errorf("deploy/k8s/%s is not rendered by the chart: remove it, or run UPDATE_K8S=1 go test ./check -run TestPlainManifests", filepath.Base(f))
		}
	}
	for _, name := range order {
		got, err := os.ReadFile(filepath.Join(k8sDir, name))
		if err != nil {
			t.Errorf("deploy/k8s/%s: %v (UPDATE_K8S=1 go test ./check -run TestPlainManifests writes it)", name, err)
			continue
		}
		if string(got) != want[name] {
			t.Errorf("deploy/k8s/%s differs from the chart's default render: run UPDATE_K8S=1 go test ./check -run TestPlainManifests\n%s",
				name, firstDiff(string(got), want[name]))
		}
	}
	// The files are what they say: decoding them gives the default render's
	// objects, which pass the checks.
	o := decode(t, r)
	if errs := RunChecks(o, gateway(t)); len(errs) > 0 {
		t.Errorf("checks failed on the plain manifests:%s", errorsText(errs))
	}
}

// firstDiff shows the first line where got and want differ.
func firstDiff(got, want string) string {
	g, w := strings.Split(got, "\n"), strings.Split(want, "\n")
	for i := 0; i < len(g) || i < len(w); i++ {
		var gl, wl string
		if i < len(g) {
			gl = g[i]
		}
		if i < len(w) {
			wl = w[i]
		}
		if gl != wl {
			return "line " + strconv.Itoa(i+1) + ":\n  file:  " + gl + "\n  chart: " + wl
		}
	}
	return ""
}
