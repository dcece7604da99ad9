package framework

import (
	"errors"
	"strings"
	"testing"
)

func TestReadSettings(t *testing.T) {
	noTilt := func(string) (string, error) { return "", errors.New("not found") }
	tilt := func(string) (string, error) { return "/usr/local/bin/tilt", nil }
	for _, c := range []struct {
		name    string
		env     map[string]string
		look    func(string) (string, error)
		want    Settings
		wantErr string
	}{
		{"defaults with tilt", nil, tilt,
			Settings{Deploy: "tilt", Faults: true, Rate: 60, Namespace: "echo", Tilt: "/usr/local/bin/tilt"}, ""},
		{"defaults without tilt", nil, noTilt,
			Settings{Deploy: "kustomize", Faults: true, Rate: 60, Namespace: "echo"}, ""},
		{"every variable", map[string]string{"E2E_DEPLOY": "none", "E2E_SKIP_GRAFANA": "1", "E2E_FAULTS": "0",
			"E2E_RATE": "25", "E2E_BASE_IMAGE": "debian:12", "E2E_NAMESPACE": "alice"}, noTilt,
			Settings{Deploy: "none", SkipGrafana: true, Rate: 25, BaseImage: "debian:12", Namespace: "alice"}, ""},
		{"tilt asked for, none there", map[string]string{"E2E_DEPLOY": "tilt"}, noTilt, Settings{}, "no tilt on PATH"},
		{"unknown deploy", map[string]string{"E2E_DEPLOY": "helm"}, tilt, Settings{}, `E2E_DEPLOY="helm": use tilt, kustomize or none`},
		{"rate not a number", map[string]string{"E2E_RATE": "fast"}, tilt, Settings{}, `E2E_RATE="fast": not a positive`},
		{"rate zero", map[string]string{"E2E_RATE": "0"}, tilt, Settings{}, `E2E_RATE="0": not a positive`},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, err := ReadSettings(func(k string) string { return c.env[k] }, c.look)
			if c.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), c.wantErr) {
					t.Fatalf("error %v, want one saying %q", err, c.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != c.want {
				t.Errorf("got %+v\nwant %+v", got, c.want)
			}
		})
	}
}
