package gateway_test

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/ssegate/ssegate/gateway"
)

// TestReadyzBeforeTheHubRuns: a probe that comes before Serve has started
// the hub (a race at every start) is told Redis is not checked yet, as the
// broker knows, not that the hub stopped; "hub stopped" is for after Serve.
func TestReadyzBeforeTheHubRuns(t *testing.T) {
	t.Parallel()
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"})
	t.Cleanup(func() { rdb.Close() })
	srv, err := gateway.New(testConfig(), rdb)
	if err != nil {
		t.Fatal(err)
	}
	rec := httptest.NewRecorder()
	srv.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/readyz", nil))
	if rec.Code != http.StatusServiceUnavailable || !strings.Contains(rec.Body.String(), gateway.CodeRedisUnavailable) || !strings.Contains(rec.Body.String(), "not checked yet") {
		t.Errorf("readyz before the hub runs: %d %s", rec.Code, rec.Body.String())
	}
}
