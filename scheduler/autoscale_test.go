package main

import (
	"bytes"
	"context"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/warrenhq/warren/pkg/servicetest"
	"github.com/warrenhq/warren/pkg/store/storetest"
)

func TestSimulatePrintsTheTable(t *testing.T) {
	t.Parallel()
	var out bytes.Buffer
	if err := run(context.Background(), []string{"simulate"}, env(map[string]string{}), &out); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"| steady | policy |", "| idle-then-burst | HPA |", "| diurnal | better ("} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
	if strings.Contains(out.String(), "WORSE") {
		t.Errorf("a cell misses the goal:\n%s", out.String())
	}
}

func TestBadAutoscaleSettingNamesTheVariable(t *testing.T) {
	t.Parallel()
	for vars, want := range map[string]string{
		"WARREN_AUTOSCALE=sometimes":                                             "config: WARREN_AUTOSCALE:",
		"WARREN_AUTOSCALE_TARGET_LATENCY=soon":                                   "config: WARREN_AUTOSCALE_TARGET_LATENCY:",
		"WARREN_AUTOSCALE=local WARREN_AUTOSCALE_PROCFILE=/nonexistent/Procfile": "config: WARREN_AUTOSCALE_PROCFILE:",
	} {
		m := map[string]string{"RABBITMQ_URL": servicetest.URL(t, servicetest.RabbitMQVar), "WARREN_NAMESPACE": servicetest.Name("wsa")}
		for _, kv := range strings.Fields(vars) {
			k, v, _ := strings.Cut(kv, "=")
			m[k] = v
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		err := run(ctx, nil, env(m), io.Discard)
		cancel()
		if err == nil || !strings.Contains(err.Error(), want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%s: run = %v, want one line with %q", vars, err, want)
		}
	}
}

// kubeAPI is a fake API server for one Deployment's scale subresource.
type kubeAPI struct {
	mu       sync.Mutex
	replicas int
	patches  []string
	bad      []string
}

func (k *kubeAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if r.URL.Path != "/apis/apps/v1/namespaces/jobs/deployments/warren-worker/scale" || r.Header.Get("Authorization") != "Bearer sa-token" {
		k.bad = append(k.bad, r.Method+" "+r.URL.Path)
		w.WriteHeader(http.StatusNotFound)
		return
	}
	if r.Method == http.MethodPatch {
		b, _ := io.ReadAll(r.Body)
		k.patches = append(k.patches, string(b))
		var n int
		if _, err := fmt.Sscanf(string(b), `{"spec":{"replicas":%d}}`, &n); err == nil {
			k.replicas = n
		}
	}
	fmt.Fprintf(w, `{"kind":"Scale","spec":{"replicas":%d},"status":{"replicas":%d}}`, k.replicas, k.replicas)
}

// The autoscaler runs as the leader's duty: with no load and MIN=2 it scales
// the Deployment from 0 to 2, and its figures are on /metrics.
func TestAutoscalerScalesTheDeployment(t *testing.T) {
	t.Parallel()
	api := &kubeAPI{}
	srv := httptest.NewTLSServer(api)
	t.Cleanup(srv.Close)
	sa := t.TempDir()
	ca := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
	for name, content := range map[string][]byte{"ca.crt": ca, "token": []byte("sa-token"), "namespace": []byte("jobs")} {
		if err := os.WriteFile(filepath.Join(sa, name), content, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	_ = ln.Close()
	vars := map[string]string{
		"DATABASE_URLS":               strings.Join(storetest.URLs(t, 2), ","),
		"RABBITMQ_URL":                servicetest.URL(t, servicetest.RabbitMQVar),
		"WARREN_NAMESPACE":            servicetest.Name("wsa"),
		"PORT":                        fmt.Sprint(port),
		"WARREN_AUTOSCALE":            "kubernetes",
		"WARREN_AUTOSCALE_MIN":        "2",
		"WARREN_AUTOSCALE_INTERVAL":   "200ms",
		"WARREN_AUTOSCALE_K8S_API":    srv.URL,
		"WARREN_AUTOSCALE_K8S_SA_DIR": sa,
	}
	var out syncBuffer
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx, nil, env(vars), &out) }()
	t.Cleanup(func() {
		stop()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("run: %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Error("run did not return after cancel")
		}
		if t.Failed() {
			t.Logf("scheduler output:\n%s", out.String())
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	for {
		api.mu.Lock()
		patches, bad := append([]string(nil), api.patches...), append([]string(nil), api.bad...)
		api.mu.Unlock()
		if len(bad) > 0 {
			t.Fatalf("unexpected requests: %v", bad)
		}
		if len(patches) > 0 {
			if patches[0] != `{"spec":{"replicas":2}}` || len(patches) > 1 {
				t.Fatalf("patches %v", patches)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no scale within 30s")
		}
		time.Sleep(50 * time.Millisecond)
	}
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/metrics", port))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{"warren_autoscale_desired_workers 2", `warren_autoscale_queue_waiting_jobs{queue="default"} 0`} {
		if !strings.Contains(string(body), want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	if !strings.Contains(out.String(), "scale up from 0 to 2") {
		t.Errorf("the decision is not logged:\n%s", out.String())
	}
}
