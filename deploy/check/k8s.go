package check

import (
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// A Check is one cross-reference rule over a render's objects. Run returns
// nil when the rule holds (or when the objects it is about were not
// rendered), else an error that names the objects and the values at fault.
type Check struct {
	Name string
	Run  func(o *Objects, g *Gateway) error
}

// Checks are the rules every render of the chart must satisfy.
var Checks = []Check{
	{"deployment-selector", checkDeploymentSelector},
	{"service-selector", checkServiceSelector},
	{"pdb-selector", checkPDBSelector},
	{"servicemonitor-selector", checkServiceMonitorSelector},
	{"standard-labels", checkStandardLabels},
	{"listen-port", checkListenPort},
	{"service-port", checkServicePort},
	{"probes", checkProbes},
	{"grace-period", checkGracePeriod},
	{"env-names", checkEnvNames},
	{"env-sources", checkEnvSources},
	{"hpa-target", checkHPATarget},
	{"pdb-budget", checkPDBBudget},
	{"security-context", checkSecurityContext},
	{"resources", checkResources},
	{"ingress", checkIngress},
	{"servicemonitor-endpoint", checkServiceMonitorEndpoint},
	{"scrape-annotations", checkScrapeAnnotations},
}

// RunChecks runs every check and returns the failures, each prefixed by its
// check's name.
func RunChecks(o *Objects, g *Gateway) []error {
	var errs []error
	for _, c := range Checks {
		if err := c.Run(o, g); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", c.Name, err))
		}
	}
	return errs
}

// StandardLabels are the app.kubernetes.io labels every object carries.
var StandardLabels = []string{
	"app.kubernetes.io/name",
	"app.kubernetes.io/instance",
	"app.kubernetes.io/version",
	"app.kubernetes.io/managed-by",
}

func podLabels(o *Objects) map[string]string { return o.Deployment.Spec.Template.Labels }

// selects says why selector (a label map) does not select labels.
func selects(selector, labels map[string]string, what string) error {
	if len(selector) == 0 {
		return fmt.Errorf("%s is empty: it would select every pod of the namespace", what)
	}
	var wrong []string
	for k, v := range selector {
		if got, ok := labels[k]; !ok {
			wrong = append(wrong, fmt.Sprintf("%s=%s (absent)", k, v))
		} else if got != v {
			wrong = append(wrong, fmt.Sprintf("%s=%s (the pods have %s=%s)", k, v, k, got))
		}
	}
	if len(wrong) > 0 {
		sort.Strings(wrong)
		return fmt.Errorf("%s does not match the labels %v: %s", what, labels, strings.Join(wrong, ", "))
	}
	return nil
}

// labelSelector checks a metav1.LabelSelector that must be a plain label map.
func labelSelector(s *metav1.LabelSelector, labels map[string]string, what string) error {
	if s == nil {
		return fmt.Errorf("%s is missing", what)
	}
	if len(s.MatchExpressions) > 0 {
		return fmt.Errorf("%s has matchExpressions; the chart selects by matchLabels only", what)
	}
	return selects(s.MatchLabels, labels, what)
}

func checkDeploymentSelector(o *Objects, _ *Gateway) error {
	d := o.Deployment
	return labelSelector(d.Spec.Selector, podLabels(o),
		fmt.Sprintf("Deployment %s: spec.selector", d.Name))
}

func checkServiceSelector(o *Objects, _ *Gateway) error {
	if o.Service == nil {
		return errors.New("no Service rendered")
	}
	return selects(o.Service.Spec.Selector, podLabels(o),
		fmt.Sprintf("Service %s: spec.selector", o.Service.Name))
}

func checkPDBSelector(o *Objects, _ *Gateway) error {
	if o.PDB == nil {
		return nil
	}
	return labelSelector(o.PDB.Spec.Selector, podLabels(o),
		fmt.Sprintf("PodDisruptionBudget %s: spec.selector", o.PDB.Name))
}

func checkServiceMonitorSelector(o *Objects, _ *Gateway) error {
	if o.ServiceMonitor == nil {
		return nil
	}
	if o.Service == nil {
		return errors.New("a ServiceMonitor without a Service")
	}
	return labelSelector(&o.ServiceMonitor.Spec.Selector, o.Service.Labels,
		fmt.Sprintf("ServiceMonitor %s: spec.selector (of Service %s's labels)", o.ServiceMonitor.Name, o.Service.Name))
}

func checkStandardLabels(o *Objects, _ *Gateway) error {
	objects := map[string]map[string]string{
		"Deployment " + o.Deployment.Name: o.Deployment.Labels,
		"the Deployment's pod template":   podLabels(o),
	}
	add := func(kind string, m *metav1.ObjectMeta) { objects[kind+" "+m.Name] = m.Labels }
	if o.Service != nil {
		add("Service", &o.Service.ObjectMeta)
	}
	if o.ConfigMap != nil {
		add("ConfigMap", &o.ConfigMap.ObjectMeta)
	}
	if o.Secret != nil {
		add("Secret", &o.Secret.ObjectMeta)
	}
	if o.PDB != nil {
		add("PodDisruptionBudget", &o.PDB.ObjectMeta)
	}
	if o.HPA != nil {
		add("HorizontalPodAutoscaler", &o.HPA.ObjectMeta)
	}
	if o.Ingress != nil {
		add("Ingress", &o.Ingress.ObjectMeta)
	}
	if o.ServiceMonitor != nil {
		add("ServiceMonitor", &o.ServiceMonitor.ObjectMeta)
	}
	var missing []string
	for what, labels := range objects {
		for _, l := range StandardLabels {
			if labels[l] == "" {
				missing = append(missing, what+" lacks "+l)
			}
		}
	}
	if len(missing) > 0 {
		sort.Strings(missing)
		return errors.New(strings.Join(missing, "; "))
	}
	return nil
}

// containerPort resolves a port reference (a name or a number) to a port
// of the gateway container.
func containerPort(o *Objects, p intstr.IntOrString) (corev1.ContainerPort, bool) {
	for _, cp := range o.Container().Ports {
		if (p.Type == intstr.String && cp.Name == p.StrVal) || (p.Type == intstr.Int && cp.ContainerPort == p.IntVal) {
			return cp, true
		}
	}
	return corev1.ContainerPort{}, false
}

func checkListenPort(o *Objects, g *Gateway) error {
	port, err := g.ListenPort(o.Settings())
	if err != nil {
		return err
	}
	cp, ok := containerPort(o, intstr.FromString("http"))
	if !ok {
		return fmt.Errorf("container %s has no port named http", o.Container().Name)
	}
	if strconv.Itoa(int(cp.ContainerPort)) != port {
		return fmt.Errorf("container %s: port http is %d, but the gateway listens on %s (SSEGATE_ADDR=%q)",
			o.Container().Name, cp.ContainerPort, port, g.value(o.Settings(), "SSEGATE_ADDR"))
	}
	return nil
}

func checkServicePort(o *Objects, g *Gateway) error {
	if o.Service == nil {
		return errors.New("no Service rendered")
	}
	if len(o.Service.Spec.Ports) == 0 {
		return fmt.Errorf("Service %s has no port", o.Service.Name)
	}
	listen, err := g.ListenPort(o.Settings())
	if err != nil {
		return err
	}
	for _, sp := range o.Service.Spec.Ports {
		cp, ok := containerPort(o, sp.TargetPort)
		if !ok {
			return fmt.Errorf("Service %s: port %q targets %s, which is no port of container %s (%s)",
				o.Service.Name, sp.Name, sp.TargetPort.String(), o.Container().Name, portList(o))
		}
		if strconv.Itoa(int(cp.ContainerPort)) != listen {
			return fmt.Errorf("Service %s: port %q targets container port %d, but the gateway listens on %s",
				o.Service.Name, sp.Name, cp.ContainerPort, listen)
		}
	}
	return nil
}

func portList(o *Objects) string {
	var ps []string
	for _, cp := range o.Container().Ports {
		ps = append(ps, fmt.Sprintf("%s=%d", cp.Name, cp.ContainerPort))
	}
	return "ports " + strings.Join(ps, ", ")
}

func checkProbes(o *Objects, g *Gateway) error {
	c := o.Container()
	listen, err := g.ListenPort(o.Settings())
	if err != nil {
		return err
	}
	for _, p := range []struct {
		kind  string
		probe *corev1.Probe
		path  string
	}{
		{"readinessProbe", c.ReadinessProbe, "/readyz"},
		{"livenessProbe", c.LivenessProbe, "/healthz"},
	} {
		if p.probe == nil || p.probe.HTTPGet == nil {
			return fmt.Errorf("container %s: no %s.httpGet (want GET %s)", c.Name, p.kind, p.path)
		}
		h := p.probe.HTTPGet
		if h.Path != p.path {
			return fmt.Errorf("container %s: %s.httpGet.path is %q, want %q", c.Name, p.kind, h.Path, p.path)
		}
		if h.Scheme != "" && h.Scheme != corev1.URISchemeHTTP {
			return fmt.Errorf("container %s: %s.httpGet.scheme is %s; the gateway serves plain HTTP", c.Name, p.kind, h.Scheme)
		}
		cp, ok := containerPort(o, h.Port)
		if !ok {
			return fmt.Errorf("container %s: %s.httpGet.port %s is no port of the container (%s)", c.Name, p.kind, h.Port.String(), portList(o))
		}
		if strconv.Itoa(int(cp.ContainerPort)) != listen {
			return fmt.Errorf("container %s: %s probes port %d, but the gateway listens on %s", c.Name, p.kind, cp.ContainerPort, listen)
		}
	}
	return nil
}

func checkGracePeriod(o *Objects, g *Gateway) error {
	spec := o.Deployment.Spec.Template.Spec
	c := o.Container()
	if c.Lifecycle == nil || c.Lifecycle.PreStop == nil || c.Lifecycle.PreStop.Sleep == nil {
		return fmt.Errorf("container %s has no preStop sleep: endpoints would still send streams to a draining pod", c.Name)
	}
	preStop := time.Duration(c.Lifecycle.PreStop.Sleep.Seconds) * time.Second
	if preStop <= 0 {
		return fmt.Errorf("container %s: preStop sleeps %v", c.Name, preStop)
	}
	shutdown, err := g.ShutdownTimeout(o.Settings())
	if err != nil {
		return err
	}
	if spec.TerminationGracePeriodSeconds == nil {
		return fmt.Errorf("Deployment %s: no terminationGracePeriodSeconds (Kubernetes' 30s default is not checked against the drain)", o.Deployment.Name)
	}
	grace := time.Duration(*spec.TerminationGracePeriodSeconds) * time.Second
	if grace <= preStop+shutdown {
		return fmt.Errorf("Deployment %s: terminationGracePeriodSeconds %v must exceed the preStop sleep %v + the gateway's shutdown timeout %v = %v, or SIGKILL cuts the drain",
			o.Deployment.Name, grace, preStop, shutdown, preStop+shutdown)
	}
	return nil
}

func checkEnvNames(o *Objects, g *Gateway) error {
	var errs []error
	if o.ConfigMap != nil {
		for k := range o.ConfigMap.Data {
			if err := g.checkEnvName(k); err != nil {
				errs = append(errs, fmt.Errorf("ConfigMap %s: %w", o.ConfigMap.Name, err))
			}
		}
		for k := range o.ConfigMap.BinaryData {
			errs = append(errs, fmt.Errorf("ConfigMap %s: binaryData %s", o.ConfigMap.Name, k))
		}
	}
	if o.Secret != nil {
		for k := range o.Secret.StringData {
			if err := g.checkEnvName(k); err != nil {
				errs = append(errs, fmt.Errorf("Secret %s: %w", o.Secret.Name, err))
			}
		}
		for k := range o.Secret.Data {
			if err := g.checkEnvName(k); err != nil {
				errs = append(errs, fmt.Errorf("Secret %s: %w", o.Secret.Name, err))
			}
		}
	}
	for _, e := range o.Container().Env {
		if err := g.checkEnvName(e.Name); err != nil {
			errs = append(errs, fmt.Errorf("container %s: env: %w", o.Container().Name, err))
		}
	}
	for _, from := range o.Container().EnvFrom {
		if from.Prefix != "" {
			errs = append(errs, fmt.Errorf("container %s: envFrom with prefix %q renames every variable", o.Container().Name, from.Prefix))
		}
	}
	return errors.Join(errs...)
}

func checkEnvSources(o *Objects, _ *Gateway) error {
	c := o.Container()
	var cm, secret bool
	for _, from := range c.EnvFrom {
		switch {
		case from.ConfigMapRef != nil:
			if o.ConfigMap == nil || from.ConfigMapRef.Name != o.ConfigMap.Name {
				return fmt.Errorf("container %s: envFrom names ConfigMap %q, which the chart does not render", c.Name, from.ConfigMapRef.Name)
			}
			cm = true
		case from.SecretRef != nil:
			if from.SecretRef.Name == "" {
				return fmt.Errorf("container %s: envFrom names a Secret without a name", c.Name)
			}
			if o.Secret != nil && from.SecretRef.Name != o.Secret.Name {
				return fmt.Errorf("container %s: envFrom names Secret %q, but the chart renders Secret %q", c.Name, from.SecretRef.Name, o.Secret.Name)
			}
			if from.SecretRef.Optional != nil && *from.SecretRef.Optional {
				return fmt.Errorf("container %s: the Secret %q is optional: without it the gateway starts on its embedded Redis", c.Name, from.SecretRef.Name)
			}
			secret = true
		}
	}
	if o.ConfigMap != nil && !cm {
		return fmt.Errorf("container %s does not read ConfigMap %s", c.Name, o.ConfigMap.Name)
	}
	if !secret {
		return fmt.Errorf("container %s reads no Secret: REDIS_URL would be unset and each pod would run its own embedded Redis", c.Name)
	}
	if o.Secret != nil {
		if _, ok := o.Settings()["REDIS_URL"]; !ok {
			return fmt.Errorf("Secret %s has no REDIS_URL", o.Secret.Name)
		}
	}
	return nil
}

// ConnectionsMetric is the gauge the HPA scales on.
const ConnectionsMetric = "ssegate_connections"

func checkHPATarget(o *Objects, g *Gateway) error {
	h := o.HPA
	if h == nil {
		if o.Deployment.Spec.Replicas == nil {
			return fmt.Errorf("Deployment %s has no replica count and no HPA holds one", o.Deployment.Name)
		}
		return nil
	}
	if o.Deployment.Spec.Replicas != nil {
		return fmt.Errorf("Deployment %s sets replicas (%d) while HPA %s scales it: every apply would reset the HPA's choice",
			o.Deployment.Name, *o.Deployment.Spec.Replicas, h.Name)
	}
	ref := h.Spec.ScaleTargetRef
	if ref.APIVersion != "apps/v1" || ref.Kind != "Deployment" || ref.Name != o.Deployment.Name {
		return fmt.Errorf("HPA %s: scaleTargetRef is %s %s %q, want apps/v1 Deployment %q", h.Name, ref.APIVersion, ref.Kind, ref.Name, o.Deployment.Name)
	}
	if h.Spec.MinReplicas == nil || *h.Spec.MinReplicas < 2 || *h.Spec.MinReplicas > h.Spec.MaxReplicas {
		return fmt.Errorf("HPA %s: minReplicas %v, maxReplicas %d: want 2 ≤ min ≤ max, so a pod's loss or drain leaves another to resume on",
			h.Name, ptrString(h.Spec.MinReplicas), h.Spec.MaxReplicas)
	}
	if len(h.Spec.Metrics) != 1 {
		return fmt.Errorf("HPA %s: %d metrics, want the one Pods metric %s", h.Name, len(h.Spec.Metrics), ConnectionsMetric)
	}
	m := h.Spec.Metrics[0]
	if m.Type != "Pods" || m.Pods == nil || m.Pods.Metric.Name != ConnectionsMetric {
		name := ""
		if m.Pods != nil {
			name = m.Pods.Metric.Name
		}
		return fmt.Errorf("HPA %s: metric %s %q, want the Pods metric %s", h.Name, m.Type, name, ConnectionsMetric)
	}
	t := m.Pods.Target
	if t.Type != "AverageValue" || t.AverageValue == nil || t.AverageValue.Sign() <= 0 {
		return fmt.Errorf("HPA %s: target of %s must be a positive AverageValue (streams per pod)", h.Name, ConnectionsMetric)
	}
	maxConns, err := strconv.ParseInt(g.value(o.Settings(), "SSEGATE_MAX_CONNECTIONS"), 10, 64)
	if err != nil {
		return fmt.Errorf("SSEGATE_MAX_CONNECTIONS: %v", err)
	}
	if maxConns > 0 && t.AverageValue.Cmp(*resource.NewQuantity(maxConns, resource.DecimalSI)) >= 0 {
		return fmt.Errorf("HPA %s: target %s streams per pod is not below SSEGATE_MAX_CONNECTIONS=%d: pods would refuse streams before the HPA scales out",
			h.Name, t.AverageValue.String(), maxConns)
	}
	return nil
}

func ptrString(p *int32) string {
	if p == nil {
		return "unset"
	}
	return strconv.Itoa(int(*p))
}

// replicas is the least number of pods the Deployment runs.
func replicas(o *Objects) int32 {
	if o.HPA != nil && o.HPA.Spec.MinReplicas != nil {
		return *o.HPA.Spec.MinReplicas
	}
	if o.Deployment.Spec.Replicas != nil {
		return *o.Deployment.Spec.Replicas
	}
	return 1
}

func checkPDBBudget(o *Objects, _ *Gateway) error {
	p := o.PDB
	if p == nil {
		return nil
	}
	n := int(replicas(o))
	switch {
	case p.Spec.MaxUnavailable != nil && p.Spec.MinAvailable != nil:
		return fmt.Errorf("PodDisruptionBudget %s sets both minAvailable and maxUnavailable", p.Name)
	case p.Spec.MaxUnavailable != nil:
		v, err := intstr.GetScaledValueFromIntOrPercent(p.Spec.MaxUnavailable, n, true)
		if err != nil {
			return fmt.Errorf("PodDisruptionBudget %s: maxUnavailable: %v", p.Name, err)
		}
		if v < 1 {
			return fmt.Errorf("PodDisruptionBudget %s: maxUnavailable %s of %d pods allows no eviction: node drains would hang", p.Name, p.Spec.MaxUnavailable.String(), n)
		}
	case p.Spec.MinAvailable != nil:
		v, err := intstr.GetScaledValueFromIntOrPercent(p.Spec.MinAvailable, n, true)
		if err != nil {
			return fmt.Errorf("PodDisruptionBudget %s: minAvailable: %v", p.Name, err)
		}
		if v >= n {
			return fmt.Errorf("PodDisruptionBudget %s: minAvailable %s of %d pods allows no eviction: node drains would hang", p.Name, p.Spec.MinAvailable.String(), n)
		}
	default:
		return fmt.Errorf("PodDisruptionBudget %s sets neither minAvailable nor maxUnavailable", p.Name)
	}
	return nil
}

func checkSecurityContext(o *Objects, _ *Gateway) error {
	c := o.Container()
	pod := o.Deployment.Spec.Template.Spec.SecurityContext
	sc := c.SecurityContext
	if sc == nil {
		return fmt.Errorf("container %s has no securityContext", c.Name)
	}
	nonRoot := sc.RunAsNonRoot
	if nonRoot == nil && pod != nil {
		nonRoot = pod.RunAsNonRoot
	}
	user := sc.RunAsUser
	if user == nil && pod != nil {
		user = pod.RunAsUser
	}
	var errs []string
	if nonRoot == nil || !*nonRoot {
		errs = append(errs, "runAsNonRoot is not true")
	}
	if user != nil && *user == 0 {
		errs = append(errs, "runAsUser is 0 (root)")
	}
	if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
		errs = append(errs, "readOnlyRootFilesystem is not true")
	}
	if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
		errs = append(errs, "allowPrivilegeEscalation is not false")
	}
	if sc.Privileged != nil && *sc.Privileged {
		errs = append(errs, "privileged is true")
	}
	if sc.Capabilities == nil || len(sc.Capabilities.Drop) != 1 || sc.Capabilities.Drop[0] != "ALL" || len(sc.Capabilities.Add) > 0 {
		errs = append(errs, "capabilities are not drop [ALL] with none added")
	}
	if len(errs) > 0 {
		return fmt.Errorf("container %s: %s", c.Name, strings.Join(errs, "; "))
	}
	return nil
}

func checkResources(o *Objects, _ *Gateway) error {
	c := o.Container()
	r := c.Resources
	var missing []string
	for _, want := range []struct {
		list corev1.ResourceList
		kind string
		name corev1.ResourceName
	}{
		{r.Requests, "requests", corev1.ResourceCPU},
		{r.Requests, "requests", corev1.ResourceMemory},
		{r.Limits, "limits", corev1.ResourceMemory},
	} {
		if q, ok := want.list[want.name]; !ok || q.Sign() <= 0 {
			missing = append(missing, want.kind+"."+string(want.name))
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("container %s: resources lack %s", c.Name, strings.Join(missing, ", "))
	}
	for name, limit := range r.Limits {
		if req, ok := r.Requests[name]; ok && req.Cmp(limit) > 0 {
			return fmt.Errorf("container %s: request of %s (%s) above its limit (%s)", c.Name, name, req.String(), limit.String())
		}
	}
	return nil
}

// Ingress-nginx annotations SSE needs, checked on an Ingress of class nginx
// (or of no class).
const (
	annBuffering   = "nginx.ingress.kubernetes.io/proxy-buffering"
	annHTTPVersion = "nginx.ingress.kubernetes.io/proxy-http-version"
	annReadTimeout = "nginx.ingress.kubernetes.io/proxy-read-timeout"
	annSendTimeout = "nginx.ingress.kubernetes.io/proxy-send-timeout"
)

func checkIngress(o *Objects, g *Gateway) error {
	in := o.Ingress
	if in == nil {
		return nil
	}
	if o.Service == nil {
		return errors.New("an Ingress without a Service")
	}
	for _, rule := range in.Spec.Rules {
		if rule.HTTP == nil {
			continue
		}
		for _, p := range rule.HTTP.Paths {
			b := p.Backend.Service
			if b == nil || b.Name != o.Service.Name {
				return fmt.Errorf("Ingress %s: path %s does not go to Service %s", in.Name, p.Path, o.Service.Name)
			}
			found := false
			for _, sp := range o.Service.Spec.Ports {
				if (b.Port.Name != "" && b.Port.Name == sp.Name) || (b.Port.Number != 0 && b.Port.Number == sp.Port) {
					found = true
				}
			}
			if !found {
				return fmt.Errorf("Ingress %s: path %s goes to port %q/%d of Service %s, which has no such port", in.Name, p.Path, b.Port.Name, b.Port.Number, o.Service.Name)
			}
		}
	}
	if c := in.Spec.IngressClassName; c != nil && *c != "nginx" {
		return nil // the annotations below are ingress-nginx's
	}
	a := in.Annotations
	if a[annBuffering] != "off" {
		return fmt.Errorf("Ingress %s: %s is %q, want \"off\": a buffering proxy holds events back", in.Name, annBuffering, a[annBuffering])
	}
	if a[annHTTPVersion] != "1.1" {
		return fmt.Errorf("Ingress %s: %s is %q, want \"1.1\"", in.Name, annHTTPVersion, a[annHTTPVersion])
	}
	heartbeat, err := g.duration(o.Settings(), "SSEGATE_HEARTBEAT")
	if err != nil {
		return err
	}
	for _, ann := range []string{annReadTimeout, annSendTimeout} {
		secs, err := strconv.Atoi(a[ann])
		if err != nil {
			return fmt.Errorf("Ingress %s: %s is %q, want seconds", in.Name, ann, a[ann])
		}
		if time.Duration(secs)*time.Second < 2*heartbeat {
			return fmt.Errorf("Ingress %s: %s is %ds, want at least twice SSEGATE_HEARTBEAT (%v): a silent stream would be cut", in.Name, ann, secs, heartbeat)
		}
	}
	return nil
}

func checkServiceMonitorEndpoint(o *Objects, _ *Gateway) error {
	sm := o.ServiceMonitor
	if sm == nil {
		return nil
	}
	if len(sm.Spec.Endpoints) == 0 {
		return fmt.Errorf("ServiceMonitor %s has no endpoint", sm.Name)
	}
	for _, e := range sm.Spec.Endpoints {
		found := false
		for _, sp := range o.Service.Spec.Ports {
			found = found || sp.Name == e.Port
		}
		if !found {
			return fmt.Errorf("ServiceMonitor %s: endpoint port %q is no port name of Service %s", sm.Name, e.Port, o.Service.Name)
		}
		if e.Path != "/metrics" {
			return fmt.Errorf("ServiceMonitor %s: endpoint path %q, want /metrics", sm.Name, e.Path)
		}
	}
	return nil
}

func checkScrapeAnnotations(o *Objects, g *Gateway) error {
	a := o.Deployment.Spec.Template.Annotations
	if a["prometheus.io/scrape"] != "true" {
		return nil
	}
	listen, err := g.ListenPort(o.Settings())
	if err != nil {
		return err
	}
	if a["prometheus.io/port"] != listen {
		return fmt.Errorf("pod annotation prometheus.io/port is %q, but the gateway listens on %s", a["prometheus.io/port"], listen)
	}
	if p := a["prometheus.io/path"]; p != "" && p != "/metrics" {
		return fmt.Errorf("pod annotation prometheus.io/path is %q, want /metrics", p)
	}
	return nil
}
