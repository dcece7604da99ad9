// Package framework holds what the cluster checks of infra/e2e share: the
// settings of a run, read from the environment (this package), the cluster
// (kube), the echo environment seen from outside (echo) and a Tilt session
// in a copy of the repository (tiltsession). The specs are in
// infra/e2e/stack, for a deployed stack, and infra/e2e/session, which run
// their own Tilt.
package framework

import (
	"fmt"
	"os"
	"os/exec"
	"strconv"
)

// Settings are a run's, from the environment (scripts/e2e documents them).
type Settings struct {
	Deploy      string // tilt, kustomize or none
	SkipGrafana bool   // E2E_SKIP_GRAFANA=1: Grafana's own checks are skipped, and say so
	Faults      bool   // E2E_FAULTS (default 1)
	Rate        int    // E2E_RATE: client calls per second during the faults (default 60)
	BaseImage   string // E2E_BASE_IMAGE: base of the program images (kustomize)
	Namespace   string // E2E_NAMESPACE: the environment's (default echo)
	Tilt        string // the tilt binary on PATH, or ""
}

// ReadSettings reads the settings from the environment, through getenv, and
// finds tilt with lookPath.
func ReadSettings(getenv func(string) string, lookPath func(string) (string, error)) (Settings, error) {
	s := Settings{Faults: getenv("E2E_FAULTS") != "0", Rate: 60, BaseImage: getenv("E2E_BASE_IMAGE"), Namespace: "echo"}
	s.SkipGrafana = getenv("E2E_SKIP_GRAFANA") == "1"
	if tilt, err := lookPath("tilt"); err == nil {
		s.Tilt = tilt
	}
	s.Deploy = getenv("E2E_DEPLOY")
	switch s.Deploy {
	case "":
		s.Deploy = "kustomize"
		if s.Tilt != "" {
			s.Deploy = "tilt"
		}
	case "tilt":
		if s.Tilt == "" {
			return s, fmt.Errorf("E2E_DEPLOY=tilt: no tilt on PATH")
		}
	case "kustomize", "none":
	default:
		return s, fmt.Errorf("E2E_DEPLOY=%q: use tilt, kustomize or none", s.Deploy)
	}
	if v := getenv("E2E_NAMESPACE"); v != "" {
		s.Namespace = v
	}
	if v := getenv("E2E_RATE"); v != "" {
		r, err := strconv.Atoi(v)
		if err != nil || r < 1 {
			return s, fmt.Errorf("E2E_RATE=%q: not a positive whole number of calls per second", v)
		}
		s.Rate = r
	}
	return s, nil
}

// FromEnvironment is ReadSettings of this process's environment and PATH.
func FromEnvironment() (Settings, error) { return ReadSettings(os.Getenv, exec.LookPath) }
