package autoscale

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// KubernetesConfig configures the kubernetes backend.
type KubernetesConfig struct {
	// APIServer is the API server's base URL, in a pod
	// https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT.
	APIServer string
	// Namespace and Deployment name the workers' Deployment. An empty
	// Namespace is read from the service account's namespace file.
	Namespace, Deployment string
	// ServiceAccountDir holds the pod's service account: token (read
	// again for every request, as projected tokens rotate), ca.crt (the
	// API server's CA) and namespace. Default
	// /var/run/secrets/kubernetes.io/serviceaccount.
	ServiceAccountDir string
	// Timeout bounds one request; default 10s.
	Timeout time.Duration
	// Retry says how failed requests are retried.
	Retry Retry
}

// DefaultServiceAccountDir is where Kubernetes mounts a pod's service
// account.
const DefaultServiceAccountDir = "/var/run/secrets/kubernetes.io/serviceaccount"

// Kubernetes scales a Deployment through its scale subresource:
// GET and PATCH /apis/apps/v1/namespaces/{namespace}/deployments/{name}/scale.
// The service account needs get and patch on deployments/scale (see
// docs/AUTOSCALING.md). Kubernetes stops surplus pods with SIGTERM and
// their terminationGracePeriodSeconds.
type Kubernetes struct {
	remote
	path string
}

// NewKubernetes returns the kubernetes backend. It reads the namespace
// (when not given) and the CA now, the token at every request.
func NewKubernetes(cfg KubernetesConfig) (*Kubernetes, error) {
	if cfg.ServiceAccountDir == "" {
		cfg.ServiceAccountDir = DefaultServiceAccountDir
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 10 * time.Second
	}
	if cfg.Deployment == "" {
		return nil, errors.New("kubernetes: no deployment name")
	}
	u, err := url.Parse(cfg.APIServer)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return nil, fmt.Errorf("kubernetes: API server %q is not an https:// URL", cfg.APIServer)
	}
	if cfg.Namespace == "" {
		b, err := os.ReadFile(filepath.Join(cfg.ServiceAccountDir, "namespace"))
		if err != nil {
			return nil, fmt.Errorf("kubernetes: no namespace given and none from the service account: %w", err)
		}
		cfg.Namespace = strings.TrimSpace(string(b))
	}
	transport := http.DefaultTransport.(*http.Transport).Clone()
	if u.Scheme == "https" {
		pool := x509.NewCertPool()
		ca, err := os.ReadFile(filepath.Join(cfg.ServiceAccountDir, "ca.crt"))
		if err != nil {
			return nil, fmt.Errorf("kubernetes: the API server's CA: %w", err)
		}
		if !pool.AppendCertsFromPEM(ca) {
			return nil, fmt.Errorf("kubernetes: no certificate in %s", filepath.Join(cfg.ServiceAccountDir, "ca.crt"))
		}
		transport.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	tokenFile := filepath.Join(cfg.ServiceAccountDir, "token")
	k := &Kubernetes{
		path: fmt.Sprintf("/apis/apps/v1/namespaces/%s/deployments/%s/scale", url.PathEscape(cfg.Namespace), url.PathEscape(cfg.Deployment)),
		remote: remote{
			backend: "kubernetes",
			base:    strings.TrimRight(cfg.APIServer, "/"),
			client:  &http.Client{Transport: transport, Timeout: cfg.Timeout},
			retry:   cfg.Retry.withDefaults(),
			header: func(h http.Header) error {
				token, err := os.ReadFile(tokenFile)
				if err != nil {
					return fmt.Errorf("service account token: %w", err)
				}
				h.Set("Authorization", "Bearer "+strings.TrimSpace(string(token)))
				h.Set("Accept", "application/json")
				return nil
			},
		},
	}
	k.hint = func(status int) string {
		switch status {
		case http.StatusUnauthorized:
			return "the service account token was refused"
		case http.StatusForbidden:
			return fmt.Sprintf("the service account needs get and patch on deployments/scale in namespace %s", cfg.Namespace)
		case http.StatusNotFound:
			return fmt.Sprintf("no deployment %s in namespace %s: check WARREN_AUTOSCALE_K8S_DEPLOYMENT and WARREN_AUTOSCALE_K8S_NAMESPACE", cfg.Deployment, cfg.Namespace)
		}
		return ""
	}
	return k, nil
}

// scale is the autoscaling/v1 Scale object, the parts used here.
type scale struct {
	Spec struct {
		Replicas int `json:"replicas"`
	} `json:"spec"`
	Status struct {
		Replicas int `json:"replicas"`
	} `json:"status"`
}

// Workers implements Scaler: the Deployment's spec.replicas.
func (k *Kubernetes) Workers(ctx context.Context) (int, error) {
	var s scale
	if err := k.do(ctx, http.MethodGet, k.path, "", nil, &s); err != nil {
		return 0, err
	}
	return s.Spec.Replicas, nil
}

// Scale implements Scaler with a JSON merge patch of spec.replicas.
func (k *Kubernetes) Scale(ctx context.Context, n int) error {
	body := map[string]any{"spec": map[string]int{"replicas": n}}
	return k.do(ctx, http.MethodPatch, k.path, "application/merge-patch+json", body, nil)
}
