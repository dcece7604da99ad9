package tiltsession

import (
	"fmt"
	"os"
	"strconv"
)

// DefaultPort is the port of Tilt's API and web UI unless tilt up is given
// another.
const DefaultPort = 10350 // Tilt's API and UI: a second Tilt would fight over the same resources

// Target is where a Tilt session deploys, and how it is reached.
type Target struct {
	Kubeconfig string   // KUBECONFIG of the session; "" for this process's
	Namespace  string   // the Tiltfile's --namespace
	Port       int      // Tilt's web port (tilt up --port)
	Offset     int      // the Tiltfile's --port-offset
	Options    []string // further Tiltfile options (--allowed-context...)
	// Tiltfile options of tilt up alone, which the first tilt args drops
	// (--local server, to start with).
	UpOnly []string
}

// OnHost reports whether tilt up runs program on this machine (--local).
func (tt Target) OnHost(program string) bool {
	for i, o := range tt.UpOnly {
		if o == "--local" && i+1 < len(tt.UpOnly) && tt.UpOnly[i+1] == program {
			return true
		}
	}
	return false
}

// DefaultTarget is the current kube context, namespace ns, Tilt's default
// port and no offset.
func DefaultTarget(ns string) Target { return Target{Namespace: ns, Port: DefaultPort} }

// Env is the environment of tilt commands of the target.
func (tt Target) Env() []string {
	if tt.Kubeconfig == "" {
		return os.Environ()
	}
	return append(os.Environ(), "KUBECONFIG="+tt.Kubeconfig)
}

// Args are the Tiltfile options of the target, after "--".
func (tt Target) Args(replicas, rate int) []string {
	args := []string{"--", "--client-rate", strconv.Itoa(rate), "--client-concurrency", "4", "--server-replicas", strconv.Itoa(replicas)}
	if tt.Namespace != "echo" {
		args = append(args, "--namespace", tt.Namespace)
	}
	if tt.Offset != 0 {
		args = append(args, "--port-offset", strconv.Itoa(tt.Offset))
	}
	return append(args, tt.Options...)
}

// Local is the address of a port-forward of the target: localhost, port
// plus the offset.
func (tt Target) Local(port int) string {
	return fmt.Sprintf("127.0.0.1:%d", port+tt.Offset)
}
