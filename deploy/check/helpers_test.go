package check

import (
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"helm.sh/helm/v3/pkg/chartutil"
)

// Paths from this package's directory (deploy/check).
const (
	repoRoot = "../.."
	chartDir = "../helm/ssegate"
	k8sDir   = "../k8s"
)

// newestKube is the Kubernetes version the renders of the tests are for.
var newestKube = KubeVersions[len(KubeVersions)-1]

var (
	gatewayOnce sync.Once
	gatewayTab  *Gateway
	gatewayErr  error
)

// gateway builds the gateway once per test binary and returns its flag table.
func gateway(t *testing.T) *Gateway {
	t.Helper()
	gatewayOnce.Do(func() {
		root, err := filepath.Abs(repoRoot)
		if err != nil {
			gatewayErr = err
			return
		}
		gatewayTab, gatewayErr = LoadGateway(root)
	})
	if gatewayErr != nil {
		t.Fatal(gatewayErr)
	}
	return gatewayTab
}

// values parses a values override the way `helm --values` does.
func values(t *testing.T, y string) map[string]any {
	t.Helper()
	v, err := chartutil.ReadValues([]byte(y))
	if err != nil {
		t.Fatalf("values %q: %v", y, err)
	}
	return v.AsMap()
}

// render renders the chart as release name with the override y.
func render(t *testing.T, name, y string) *Render {
	t.Helper()
	r, err := RenderChart(chartDir, name, "default", newestKube, values(t, y))
	if err != nil {
		t.Fatalf("render with %q: %v", y, err)
	}
	return r
}

// decode decodes a render strictly.
func decode(t *testing.T, r *Render) *Objects {
	t.Helper()
	o, err := Decode(r.Manifests)
	if err != nil {
		t.Fatal(err)
	}
	return o
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func errorsText(errs []error) string {
	var b strings.Builder
	for _, e := range errs {
		b.WriteString("\n  " + e.Error())
	}
	return b.String()
}
