package check

import (
	"bytes"
	"encoding/json"
	"fmt"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	"helm.sh/helm/v3/pkg/releaseutil"
)

// ServiceMonitor is the part of the Prometheus Operator's
// monitoring.coreos.com/v1 ServiceMonitor that the chart renders; decoded
// strictly, so a field the chart adds must be added here too.
type ServiceMonitor struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              ServiceMonitorSpec `json:"spec"`
}

// ServiceMonitorSpec is the spec of a ServiceMonitor.
type ServiceMonitorSpec struct {
	Selector  metav1.LabelSelector `json:"selector"`
	Endpoints []Endpoint           `json:"endpoints"`
}

// Endpoint is one scraped endpoint of a ServiceMonitor.
type Endpoint struct {
	Port          string `json:"port,omitempty"`
	Path          string `json:"path,omitempty"`
	Interval      string `json:"interval,omitempty"`
	ScrapeTimeout string `json:"scrapeTimeout,omitempty"`
}

// Objects are the objects of one render, typed. The chart renders at most
// one of each kind; those it did not render are nil.
type Objects struct {
	Deployment     *appsv1.Deployment
	Service        *corev1.Service
	ConfigMap      *corev1.ConfigMap
	Secret         *corev1.Secret
	PDB            *policyv1.PodDisruptionBudget
	HPA            *autoscalingv2.HorizontalPodAutoscaler
	Ingress        *networkingv1.Ingress
	ServiceMonitor *ServiceMonitor
}

// Decode decodes every manifest strictly (an unknown or duplicated field is
// an error) into its typed Kubernetes API object. A kind the checks do not
// know, or a second object of a kind, is an error too.
func Decode(manifests []releaseutil.Manifest) (*Objects, error) {
	o := &Objects{}
	for _, m := range manifests {
		var tm metav1.TypeMeta
		if err := yaml.Unmarshal([]byte(m.Content), &tm); err != nil {
			return nil, fmt.Errorf("%s: %v", m.Name, err)
		}
		var target any
		var seen bool
		switch gvk := tm.APIVersion + "/" + tm.Kind; gvk {
		case "apps/v1/Deployment":
			seen, o.Deployment = o.Deployment != nil, &appsv1.Deployment{}
			target = o.Deployment
		case "v1/Service":
			seen, o.Service = o.Service != nil, &corev1.Service{}
			target = o.Service
		case "v1/ConfigMap":
			seen, o.ConfigMap = o.ConfigMap != nil, &corev1.ConfigMap{}
			target = o.ConfigMap
		case "v1/Secret":
			seen, o.Secret = o.Secret != nil, &corev1.Secret{}
			target = o.Secret
		case "policy/v1/PodDisruptionBudget":
			seen, o.PDB = o.PDB != nil, &policyv1.PodDisruptionBudget{}
			target = o.PDB
		case "autoscaling/v2/HorizontalPodAutoscaler":
			seen, o.HPA = o.HPA != nil, &autoscalingv2.HorizontalPodAutoscaler{}
			target = o.HPA
		case "networking.k8s.io/v1/Ingress":
			seen, o.Ingress = o.Ingress != nil, &networkingv1.Ingress{}
			target = o.Ingress
		case "monitoring.coreos.com/v1/ServiceMonitor":
			seen, o.ServiceMonitor = o.ServiceMonitor != nil, &ServiceMonitor{}
			target = o.ServiceMonitor
		default:
			return nil, fmt.Errorf("%s: unexpected object %s", m.Name, gvk)
		}
		if seen {
			return nil, fmt.Errorf("%s: a second %s %s", m.Name, tm.APIVersion, tm.Kind)
		}
		if err := decodeStrict(m.Content, target); err != nil {
			return nil, fmt.Errorf("%s: %s %s: %v", m.Name, tm.APIVersion, tm.Kind, err)
		}
	}
	if o.Deployment == nil {
		return nil, fmt.Errorf("no Deployment rendered")
	}
	if len(o.Deployment.Spec.Template.Spec.Containers) != 1 {
		return nil, fmt.Errorf("Deployment %s: %d containers, want the gateway alone", o.Deployment.Name, len(o.Deployment.Spec.Template.Spec.Containers))
	}
	return o, nil
}

// decodeStrict decodes one YAML document as the API server does with strict
// field validation: YAML to JSON (a duplicated key is an error), then JSON
// into the typed object with unknown fields refused. Unlike
// sigs.k8s.io/yaml.UnmarshalStrict it does not convert a YAML number into a
// string field, which the server refuses too.
func decodeStrict(content string, target any) error {
	j, err := yaml.YAMLToJSONStrict([]byte(content))
	if err != nil {
		return err
	}
	dec := json.NewDecoder(bytes.NewReader(j))
	dec.DisallowUnknownFields()
	if err := dec.Decode(target); err != nil {
		return err
	}
	if dec.More() {
		return fmt.Errorf("more than one object in one document")
	}
	return nil
}

// Container is the Deployment's gateway container.
func (o *Objects) Container() *corev1.Container {
	return &o.Deployment.Spec.Template.Spec.Containers[0]
}

// Settings is the environment the gateway container gets: the ConfigMap and
// Secret it reads with envFrom (when they are rendered here), then its env
// entries with literal values, later ones winning as in Kubernetes.
func (o *Objects) Settings() Settings {
	s := Settings{}
	for _, from := range o.Container().EnvFrom {
		switch {
		case from.ConfigMapRef != nil && o.ConfigMap != nil && from.ConfigMapRef.Name == o.ConfigMap.Name:
			for k, v := range o.ConfigMap.Data {
				s[from.Prefix+k] = v
			}
		case from.SecretRef != nil && o.Secret != nil && from.SecretRef.Name == o.Secret.Name:
			for k, v := range o.Secret.Data {
				s[from.Prefix+k] = string(v)
			}
			for k, v := range o.Secret.StringData {
				s[from.Prefix+k] = v
			}
		}
	}
	for _, e := range o.Container().Env {
		if e.ValueFrom == nil {
			s[e.Name] = e.Value
		}
	}
	return s
}
