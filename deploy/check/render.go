package check

import (
	"fmt"
	"path"
	"strings"

	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/engine"
	"helm.sh/helm/v3/pkg/lint"
	"helm.sh/helm/v3/pkg/lint/support"
	"helm.sh/helm/v3/pkg/releaseutil"
)

// KubeVersions are the Kubernetes versions the chart is rendered and linted
// for: the oldest its Chart.yaml admits and the one k8s.io/api here knows.
var KubeVersions = []string{"v1.30.0", "v1.37.0"}

// Render is the chart rendered as `helm template` would: its manifests in
// Helm's install order, and its NOTES.txt.
type Render struct {
	Manifests []releaseutil.Manifest
	Notes     string
}

// RenderChart renders the chart at dir as the release name in namespace,
// with overrides over its values.yaml, for a cluster of kubeVersion, with
// the Helm SDK's engine in strict mode (a template that reads a value
// values.yaml does not have fails).
func RenderChart(dir, name, namespace, kubeVersion string, overrides map[string]any) (*Render, error) {
	ch, err := loader.Load(dir)
	if err != nil {
		return nil, err
	}
	caps := chartutil.DefaultCapabilities.Copy()
	kv, err := chartutil.ParseKubeVersion(kubeVersion)
	if err != nil {
		return nil, err
	}
	caps.KubeVersion = *kv
	if c := ch.Metadata.KubeVersion; c != "" && !chartutil.IsCompatibleRange(c, kubeVersion) {
		return nil, fmt.Errorf("chart %s needs Kubernetes %s, not %s", ch.Name(), c, kubeVersion)
	}
	if overrides == nil {
		overrides = map[string]any{}
	}
	vals, err := chartutil.ToRenderValues(ch, overrides, chartutil.ReleaseOptions{
		Name: name, Namespace: namespace, Revision: 1, IsInstall: true,
	}, caps)
	if err != nil {
		return nil, err
	}
	files, err := engine.Engine{Strict: true}.Render(ch, vals)
	if err != nil {
		return nil, err
	}
	r := &Render{}
	for name, content := range files {
		switch {
		case strings.HasSuffix(name, "NOTES.txt"):
			r.Notes = content
			delete(files, name)
		case strings.HasPrefix(path.Base(name), "_"), strings.TrimSpace(content) == "":
			delete(files, name)
		}
	}
	hooks, manifests, err := releaseutil.SortManifests(files, caps.APIVersions, releaseutil.InstallOrder)
	if err != nil {
		return nil, err
	}
	if len(hooks) > 0 {
		return nil, fmt.Errorf("the chart has %d hooks; these checks expect none", len(hooks))
	}
	r.Manifests = manifests
	return r, nil
}

// YAML is the render as one stream, the way `helm template` prints it.
func (r *Render) YAML() string {
	var b strings.Builder
	for _, m := range r.Manifests {
		fmt.Fprintf(&b, "---\n# Source: %s\n%s\n", m.Name, strings.TrimSpace(m.Content))
	}
	return b.String()
}

// Lint runs the Helm SDK's linter (`helm lint`) on the chart at dir with
// overrides, for kubeVersion, and returns its messages of warning severity
// or worse as errors, and every message as text.
func Lint(dir string, overrides map[string]any, kubeVersion string) (problems []error, all []string, err error) {
	kv, err := chartutil.ParseKubeVersion(kubeVersion)
	if err != nil {
		return nil, nil, err
	}
	if overrides == nil {
		overrides = map[string]any{}
	}
	l := lint.AllWithKubeVersion(dir, overrides, "default", kv)
	for _, m := range l.Messages {
		all = append(all, m.Error())
		if m.Severity >= support.WarningSev {
			problems = append(problems, m)
		}
	}
	return problems, all, nil
}
