package infra

import (
	"fmt"
	"path/filepath"
	"strings"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"
)

// Tree is one built kustomize tree, every object decoded into its API type,
// each kind by name.
type Tree struct {
	Namespaces      map[string]*corev1.Namespace
	ServiceAccounts map[string]*corev1.ServiceAccount
	Services        map[string]*corev1.Service
	ConfigMaps      map[string]*corev1.ConfigMap
	Deployments     map[string]*appsv1.Deployment
	Roles           map[string]*rbacv1.Role
	RoleBindings    map[string]*rbacv1.RoleBinding
	ServiceMonitors map[string]*monitoringv1.ServiceMonitor
	PrometheusRules map[string]*monitoringv1.PrometheusRule
	// Raw is each object's YAML by "kind/name", the kind in lower case.
	Raw map[string][]byte
}

// Build runs kustomize on dir in process and decodes every object strictly:
// an unknown field or kind is an error.
func Build(dir string) (*Tree, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	resMap, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).Run(filesys.MakeFsOnDisk(), abs)
	if err != nil {
		return nil, fmt.Errorf("kustomize build %s: %w", dir, err)
	}
	t := &Tree{
		Namespaces: map[string]*corev1.Namespace{}, ServiceAccounts: map[string]*corev1.ServiceAccount{},
		Services: map[string]*corev1.Service{}, ConfigMaps: map[string]*corev1.ConfigMap{},
		Deployments: map[string]*appsv1.Deployment{}, Roles: map[string]*rbacv1.Role{},
		RoleBindings: map[string]*rbacv1.RoleBinding{}, ServiceMonitors: map[string]*monitoringv1.ServiceMonitor{},
		PrometheusRules: map[string]*monitoringv1.PrometheusRule{}, Raw: map[string][]byte{},
	}
	for _, r := range resMap.Resources() {
		data, err := r.AsYAML()
		if err != nil {
			return nil, err
		}
		id := strings.ToLower(r.GetKind()) + "/" + r.GetName()
		if _, dup := t.Raw[id]; dup {
			return nil, fmt.Errorf("%s: defined twice", id)
		}
		t.Raw[id] = data
		if err := t.add(r.GetKind(), data); err != nil {
			return nil, fmt.Errorf("%s: %w", id, err)
		}
	}
	return t, nil
}

func (t *Tree) add(kind string, data []byte) error {
	switch kind {
	case "Namespace":
		return put(t.Namespaces, data)
	case "ServiceAccount":
		return put(t.ServiceAccounts, data)
	case "Service":
		return put(t.Services, data)
	case "ConfigMap":
		return put(t.ConfigMaps, data)
	case "Deployment":
		return put(t.Deployments, data)
	case "Role":
		return put(t.Roles, data)
	case "RoleBinding":
		return put(t.RoleBindings, data)
	case "ServiceMonitor": // the Prometheus Operator's kinds, into its own types
		return put(t.ServiceMonitors, data)
	case "PrometheusRule":
		return put(t.PrometheusRules, data)
	}
	return fmt.Errorf("kind %q is not expected in this tree", kind)
}

// put decodes data strictly into a new object and keeps it in m by name.
func put[T any, P interface {
	*T
	GetName() string
}](m map[string]P, data []byte) error {
	o := P(new(T))
	if err := yaml.UnmarshalStrict(data, o); err != nil {
		return fmt.Errorf("strict decode: %w", err)
	}
	m[o.GetName()] = o
	return nil
}
