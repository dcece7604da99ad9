package main

import (
	"cmp"
	"encoding/json"
	"fmt"
	"strconv"
)

// The objects that Tilt deploys, as far as hostrun plan reads them.

// object is a Kubernetes object of the manifests, as far as plan reads it.
type object struct {
	Kind     string `json:"kind"`
	Metadata struct {
		Name   string            `json:"name"`
		Labels map[string]string `json:"labels"`
	} `json:"metadata"`
	Data map[string]string `json:"data"`
	Spec struct {
		Ports    []servicePort `json:"ports"`
		Template struct {
			Spec struct {
				Containers []container `json:"containers"`
			} `json:"spec"`
		} `json:"template"`
	} `json:"spec"`
}

type servicePort struct {
	Name       string      `json:"name"`
	Port       int         `json:"port"`
	TargetPort intOrString `json:"targetPort"`
}

type container struct {
	Env []struct {
		Name      string `json:"name"`
		Value     string `json:"value"`
		ValueFrom *struct {
			FieldRef *struct {
				FieldPath string `json:"fieldPath"`
			} `json:"fieldRef"`
			ConfigMapKeyRef *keyRef `json:"configMapKeyRef"`
		} `json:"valueFrom"`
	} `json:"env"`
	EnvFrom []struct {
		Prefix       string  `json:"prefix"`
		ConfigMapRef *keyRef `json:"configMapRef"`
		SecretRef    *keyRef `json:"secretRef"`
	} `json:"envFrom"`
	Ports []struct {
		Name          string `json:"name"`
		ContainerPort int    `json:"containerPort"`
	} `json:"ports"`
	ReadinessProbe *struct {
		HTTPGet *httpGet `json:"httpGet"`
	} `json:"readinessProbe"`
}

type httpGet struct {
	Path string      `json:"path"`
	Port intOrString `json:"port"`
}

type keyRef struct {
	Name     string `json:"name"`
	Key      string `json:"key"`
	Optional bool   `json:"optional"`
}

// intOrString is a port given by number or by name.
type intOrString struct {
	num  int
	name string
}

func (p *intOrString) UnmarshalJSON(b []byte) error {
	if err := json.Unmarshal(b, &p.num); err == nil {
		return nil
	}
	return json.Unmarshal(b, &p.name)
}

func (p intOrString) String() string {
	if p.name != "" {
		return p.name
	}
	return strconv.Itoa(p.num)
}

// manifests is the objects that Tilt deploys.
type manifests []object

func (m manifests) find(kind, name string) *object {
	for i := range m {
		if m[i].Kind == kind && m[i].Metadata.Name == name {
			return &m[i]
		}
	}
	return nil
}

// container returns the container of the Deployment name.
func (m manifests) container(name string) (*container, error) {
	d := m.find("Deployment", name)
	if d == nil {
		return nil, fmt.Errorf("the manifests have no Deployment %s", name)
	}
	if cs := d.Spec.Template.Spec.Containers; len(cs) == 1 {
		return &cs[0], nil
	}
	return nil, fmt.Errorf("Deployment %s has %d containers: --local runs one", name, len(d.Spec.Template.Spec.Containers))
}

// containerPort returns the port and the name of the container port that
// a Service's targetPort p names, in the Deployment of app.
func (m manifests) containerPort(app string, p servicePort) (int, string, bool) {
	c, err := m.container(app)
	if err != nil {
		return 0, "", false
	}
	target := p.TargetPort
	if target.name == "" {
		target.num = cmp.Or(target.num, p.Port)
	}
	return c.port(target)
}

// port returns the number and the name of the container's port p names
// (by name, or by number).
func (c *container) port(p intOrString) (int, string, bool) {
	for _, cp := range c.Ports {
		if (p.name != "" && cp.Name == p.name) || (p.name == "" && cp.ContainerPort == p.num) {
			return cp.ContainerPort, cp.Name, true
		}
	}
	return 0, "", false
}
