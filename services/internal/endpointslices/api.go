package endpointslices

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"
)

// The pod's service account, as the kubelet mounts it.
const serviceAccountDir = "/var/run/secrets/kubernetes.io/serviceaccount"

// tokenMaxAge is how long a read of the service account token is used: the
// kubelet rotates the file well before the token expires (client-go rereads
// it as often).
const tokenMaxAge = time.Minute

// Bounds of one request to the API. An API server that is gone (a laptop
// that slept, a VPN that dropped) fails a request in seconds rather than
// the kernel's minutes, and a watch on a connection that died without a
// word is noticed by HTTP/2's pings.
const (
	dialTimeout     = 3 * time.Second
	tlsTimeout      = 3 * time.Second
	headerTimeout   = 5 * time.Second  // a list's answer, or a watch's start
	pingAfter       = 15 * time.Second // of silence on the connection, then a ping
	pingTimeout     = 5 * time.Second  // for its answer, then the connection is closed
	tcpKeepAlive    = 15 * time.Second
	maxResponseBody = 64 << 20 // a list of slices; a watch event is far smaller
)

// kubeAPI is the Kubernetes API as a pod's service account reaches it.
type kubeAPI struct {
	base      string // https://host:port
	http      *http.Client
	tokenFile string

	mu      sync.Mutex
	token   string
	readAt  time.Time
	readErr error
}

// inClusterAPI is the API of the cluster this pod runs in, or an error that
// says why there is none (not in a pod, no token mounted).
func inClusterAPI() (*kubeAPI, error) {
	host, port := os.Getenv("KUBERNETES_SERVICE_HOST"), os.Getenv("KUBERNETES_SERVICE_PORT")
	if host == "" || port == "" {
		return nil, errors.New("not in a pod: KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT are not set")
	}
	ca, err := os.ReadFile(serviceAccountDir + "/ca.crt")
	if err != nil {
		return nil, fmt.Errorf("the service account's CA: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(ca) {
		return nil, fmt.Errorf("the service account's CA (%s/ca.crt): no certificate in it", serviceAccountDir)
	}
	a := &kubeAPI{
		base:      "https://" + net.JoinHostPort(host, port),
		http:      &http.Client{Transport: newTransport(&tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12})},
		tokenFile: serviceAccountDir + "/token",
	}
	if _, err := a.bearer(); err != nil {
		return nil, err
	}
	return a, nil
}

// newTransport is the HTTP transport to the API: HTTP/2 (one connection,
// pinged when silent), every step of a request bounded but the body (a
// watch lasts minutes).
func newTransport(tlsConfig *tls.Config) *http.Transport {
	t := &http.Transport{
		DialContext:           (&net.Dialer{Timeout: dialTimeout, KeepAlive: tcpKeepAlive}).DialContext,
		TLSClientConfig:       tlsConfig,
		TLSHandshakeTimeout:   tlsTimeout,
		ResponseHeaderTimeout: headerTimeout,
		ForceAttemptHTTP2:     true,
		HTTP2:                 &http.HTTP2Config{SendPingTimeout: pingAfter, PingTimeout: pingTimeout},
		IdleConnTimeout:       90 * time.Second,
	}
	return t
}

// bearer is the service account token, read again once it is a minute old.
func (a *kubeAPI) bearer() (string, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.readAt.IsZero() || time.Since(a.readAt) > tokenMaxAge {
		b, err := os.ReadFile(a.tokenFile)
		a.readAt, a.readErr = time.Now(), err
		if err == nil {
			a.token = strings.TrimSpace(string(b))
		}
	}
	if a.token == "" {
		return "", fmt.Errorf("the service account token: %w", a.readErr)
	}
	return a.token, nil
}

// get sends a GET of path (with its query) and returns the response when it
// is 200 OK. An error is a *statusError when the API answered, and an
// *unreachableError when it did not.
func (a *kubeAPI) get(ctx context.Context, path string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, a.base+path, nil)
	if err != nil {
		return nil, err
	}
	if a.tokenFile != "" {
		token, err := a.bearer()
		if err != nil {
			return nil, err
		}
		req.Header.Set("Authorization", "Bearer "+token)
	}
	req.Header.Set("Accept", "application/json")
	resp, err := a.http.Do(req)
	if err != nil {
		return nil, &unreachableError{err: err}
	}
	if resp.StatusCode != http.StatusOK {
		defer resp.Body.Close()
		var st apiStatus
		if json.NewDecoder(io.LimitReader(resp.Body, 1<<16)).Decode(&st) == nil && st.Message != "" {
			return nil, &statusError{code: resp.StatusCode, message: st.Message}
		}
		return nil, &statusError{code: resp.StatusCode, message: resp.Status}
	}
	resp.Body = struct {
		io.Reader
		io.Closer
	}{io.LimitReader(resp.Body, maxResponseBody), resp.Body}
	return resp, nil
}

// apiStatus is the API's metav1.Status, as much as is read of it.
type apiStatus struct {
	Code    int    `json:"code"`
	Message string `json:"message"`
}

// statusError is an answer of the API other than 200 OK.
type statusError struct {
	code    int
	message string
}

func (e *statusError) Error() string { return fmt.Sprintf("%d: %s", e.code, e.message) }

// unreachableError is a request that got no answer: no connection, no
// response in time, or a connection lost.
type unreachableError struct{ err error }

func (e *unreachableError) Error() string { return e.err.Error() }
func (e *unreachableError) Unwrap() error { return e.err }
