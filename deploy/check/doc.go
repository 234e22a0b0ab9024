// Package check renders ssegate's deployment files (the Helm chart in
// deploy/helm/ssegate, the plain manifests in deploy/k8s, the root
// docker-compose.yml) into typed objects and checks how they refer to each
// other and to the gateway's own flag table: labels and selectors, ports and
// probe paths, grace periods against the gateway's shutdown timeout, the HPA
// target, environment variable names.
//
// Each check is a function over the decoded objects that returns an error
// saying what is wrong and where; the tests run them on the chart's renders
// and on docker-compose.yml, and break each one on purpose to show it fails.
//
// It is a module of its own (deploy/go.mod) so that the Helm SDK, k8s.io/api
// and compose-go stay out of the gateway's dependencies.
package check
