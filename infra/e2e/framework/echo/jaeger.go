package echo

import (
	"context"
	"fmt"
)

// Trace is a trace as Jaeger's HTTP API, which its UI reads, gives it.
type Trace struct {
	TraceID   string `json:"traceID"`
	Spans     []Span `json:"spans"`
	Processes map[string]struct {
		ServiceName string `json:"serviceName"`
		Tags        []struct {
			Key   string `json:"key"`
			Value any    `json:"value"`
		} `json:"tags"`
	} `json:"processes"`
}

// Span is a span of a jaegerTrace.
type Span struct {
	SpanID        string `json:"spanID"`
	OperationName string `json:"operationName"`
	ProcessID     string `json:"processID"`
	References    []struct {
		RefType string `json:"refType"`
		SpanID  string `json:"spanID"`
	} `json:"references"`
	Tags []struct {
		Key   string `json:"key"`
		Value any    `json:"value"`
	} `json:"tags"`
}

// Traces is the answer of /api/traces and /api/traces/ID.
type Traces struct {
	Data []Trace `json:"data"`
}

// SpanKind is the span.kind tag of span i.
func (tr Trace) SpanKind(i int) string {
	for _, tag := range tr.Spans[i].Tags {
		if tag.Key == "span.kind" {
			return fmt.Sprint(tag.Value)
		}
	}
	return ""
}

// Service is the Service of span i.
func (tr Trace) Service(i int) string { return tr.Processes[tr.Spans[i].ProcessID].ServiceName }

// ClientAndServer reports whether the trace holds a client span of the
// client and a server span of the server that is its child.
func (tr Trace) ClientAndServer() bool {
	for i := range tr.Spans {
		if tr.Service(i) != "server" || tr.SpanKind(i) != "server" {
			continue
		}
		for _, ref := range tr.Spans[i].References {
			for j := range tr.Spans {
				if ref.RefType == "CHILD_OF" && tr.Spans[j].SpanID == ref.SpanID && tr.Service(j) == "client" && tr.SpanKind(j) == "client" {
					return true
				}
			}
		}
	}
	return false
}

// GetTrace fetches trace id from Jaeger; ok is false until Jaeger has it.
func GetTrace(ctx context.Context, base, id string) (Trace, bool) {
	var got Traces
	if err := GetJSON(ctx, base+"/api/traces/"+id, &got); err != nil || len(got.Data) == 0 {
		return Trace{}, false
	}
	return got.Data[0], true
}

// PodOf is the k8s.pod.name of the process of the first span of service.
func (tr Trace) PodOf(service string) string {
	for _, p := range tr.Processes {
		if p.ServiceName != service {
			continue
		}
		for _, tag := range p.Tags {
			if tag.Key == "k8s.pod.name" {
				return fmt.Sprint(tag.Value)
			}
		}
	}
	return ""
}
