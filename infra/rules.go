package infra

import (
	"bytes"
	"fmt"
	"os"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"
)

// PrometheusRuleFile is where PrometheusRuleYAML's output is kept, relative
// to this module; RulesFile is its one source.
const (
	PrometheusRuleFile = "operator/monitoring/prometheusrule.yaml"
	RulesFile          = "prometheus/rules.yml"
)

// PrometheusRuleYAML returns the PrometheusRule object that holds exactly
// the rule groups of a Prometheus rules file, for the Prometheus Operator. The
// file is decoded strictly into the operator's own types: a field they do
// not know is an error.
func PrometheusRuleYAML(rules []byte) ([]byte, error) {
	var spec monitoringv1.PrometheusRuleSpec
	if err := yaml.UnmarshalStrict(rules, &spec); err != nil {
		return nil, fmt.Errorf("%s: %w", RulesFile, err)
	}
	if len(spec.Groups) == 0 {
		return nil, fmt.Errorf("%s: no rule group", RulesFile)
	}
	obj := monitoringv1.PrometheusRule{
		TypeMeta:   metav1.TypeMeta{APIVersion: "monitoring.coreos.com/v1", Kind: "PrometheusRule"},
		ObjectMeta: metav1.ObjectMeta{Name: "echo", Labels: map[string]string{"app": "echo"}},
		Spec:       spec,
	}
	out, err := yaml.Marshal(obj)
	if err != nil {
		return nil, err
	}
	// The server sets creationTimestamp; an empty one is noise.
	out = bytes.Replace(out, []byte("  creationTimestamp: null\n"), nil, 1)
	header := "# The recording and alerting rules of infra/prometheus/rules.yml, as a\n" +
		"# PrometheusRule. Written by scripts/generate: edit rules.yml, not this file\n" +
		"# (a test of infra/ fails when the two differ).\n"
	return append([]byte(header), out...), nil
}

// WritePrometheusRule regenerates PrometheusRuleFile from RulesFile, both
// relative to dir (this module's directory).
func WritePrometheusRule(dir string) error {
	rules, err := os.ReadFile(dir + "/" + RulesFile)
	if err != nil {
		return err
	}
	out, err := PrometheusRuleYAML(rules)
	if err != nil {
		return err
	}
	return os.WriteFile(dir+"/"+PrometheusRuleFile, out, 0o644)
}
