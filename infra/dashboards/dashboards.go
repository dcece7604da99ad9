package dashboards

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	"sigs.k8s.io/yaml"
)

// TraceIDLabel is the exemplar label of the programs' latency histograms
// and the field of their log lines about a call (platform.TraceIDKey):
// Grafana's exemplar links read it.
const TraceIDLabel = "trace_id"

// Datasource is a Grafana datasource reference.
type Datasource struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

// Target is one query of a panel.
type Target struct {
	RefID      string      `json:"refId"`
	Datasource *Datasource `json:"datasource"`
	Expr       string      `json:"expr"`
	Exemplar   bool        `json:"exemplar"`
}

// Panel is a dashboard panel, or a row holding panels.
type Panel struct {
	ID         int         `json:"id"`
	Type       string      `json:"type"`
	Title      string      `json:"title"`
	Datasource *Datasource `json:"datasource"`
	Targets    []Target    `json:"targets"`
	Panels     []Panel     `json:"panels"`
}

// Variable is a dashboard template variable.
type Variable struct {
	Name       string      `json:"name"`
	Type       string      `json:"type"`
	Datasource *Datasource `json:"datasource"`
	Query      string      `json:"query"`
}

// Dashboard is the part of a dashboard's JSON that the checks read.
type Dashboard struct {
	UID        string  `json:"uid"`
	Title      string  `json:"title"`
	Panels     []Panel `json:"panels"`
	Templating struct {
		List []Variable `json:"list"`
	} `json:"templating"`
}

// AllPanels returns the panels with the panels of rows flattened in.
func (d *Dashboard) AllPanels() []Panel {
	var out []Panel
	for _, p := range d.Panels {
		out = append(out, p)
		out = append(out, p.Panels...)
	}
	return out
}

// Load reads every *.json dashboard in dir, by file name.
func Load(dir string) (map[string]*Dashboard, error) {
	files, err := filepath.Glob(filepath.Join(dir, "*.json"))
	if err != nil {
		return nil, err
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("no dashboards in %s", dir)
	}
	out := map[string]*Dashboard{}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		d := &Dashboard{}
		if err := json.Unmarshal(data, d); err != nil {
			return nil, fmt.Errorf("%s: %w", f, err)
		}
		out[filepath.Base(f)] = d
	}
	return out, nil
}

// VarRef matches a Grafana variable reference, $name or ${name}.
var VarRef = regexp.MustCompile(`\$\{?(\w+)\}?`)

// LabelValuesQuery matches the query of a label_values(selector, label)
// variable: the selector is group 1, the label group 2.
var LabelValuesQuery = regexp.MustCompile(`^label_values\((.+),\s*(\w+)\)$`)

// Expand replaces the variables of expr with values; an unknown one stays.
func Expand(expr string, values map[string]string) string {
	return VarRef.ReplaceAllStringFunc(expr, func(ref string) string {
		if v, ok := values[VarRef.FindStringSubmatch(ref)[1]]; ok {
			return v
		}
		return ref
	})
}

// MultiValue formats the values of a multi-value variable with every value
// selected, as Grafana does for a Prometheus regex matcher.
func MultiValue(values []string) string {
	quoted := make([]string, len(values))
	for i, v := range values {
		quoted[i] = regexp.QuoteMeta(v)
	}
	if len(quoted) == 1 {
		return quoted[0]
	}
	return "(" + strings.Join(quoted, "|") + ")"
}

// Rule is a recording or alerting rule.
type Rule struct {
	Record string `json:"record"`
	Alert  string `json:"alert"`
	Expr   string `json:"expr"`
}

// RuleGroups is the part of a Prometheus rules file the checks read.
type RuleGroups struct {
	Groups []struct {
		Name  string `json:"name"`
		Rules []Rule `json:"rules"`
	} `json:"groups"`
}

// LoadRules reads a Prometheus rules file.
func LoadRules(path string) (RuleGroups, error) {
	var rg RuleGroups
	data, err := os.ReadFile(path)
	if err != nil {
		return rg, err
	}
	if err := yaml.Unmarshal(data, &rg); err != nil {
		return rg, fmt.Errorf("%s: %w", path, err)
	}
	return rg, nil
}
