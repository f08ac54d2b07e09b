package k8stest

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/warrenhq/warren/pkg/autoscale"
	"github.com/warrenhq/warren/pkg/config"
)

const (
	root      = "../.."
	manifests = "../kubernetes"
	// secretExample is not named *.yaml, so that `kubectl apply -f
	// deploy/kubernetes/` does not apply its placeholder values.
	secretExample = "secret.yaml.example"
)

// object is a Kubernetes object as the manifests write it: only the fields the
// test knows. Decoding rejects any other field, so a misspelt field (a probe
// Kubernetes would silently drop) fails here; a new field belongs here too.
type object struct {
	APIVersion string   `json:"apiVersion"`
	Kind       string   `json:"kind"`
	Metadata   metadata `json:"metadata"`
	// Deployment, Job, Service
	Spec *spec `json:"spec,omitempty"`
	// Secret
	Type       string            `json:"type,omitempty"`
	StringData map[string]string `json:"stringData,omitempty"`
	// Role, RoleBinding
	Rules    []rule    `json:"rules,omitempty"`
	RoleRef  *roleRef  `json:"roleRef,omitempty"`
	Subjects []subject `json:"subjects,omitempty"`

	file string
}

type metadata struct {
	Name   string            `json:"name"`
	Labels map[string]string `json:"labels"`
}

type spec struct {
	// Deployment
	Replicas *int `json:"replicas,omitempty"`
	Selector *struct {
		MatchLabels map[string]string `json:"matchLabels"`
	} `json:"selector,omitempty"`
	Template *struct {
		Metadata metadata `json:"metadata"`
		Spec     podSpec  `json:"spec"`
	} `json:"template,omitempty"`
	// Job
	BackoffLimit *int `json:"backoffLimit,omitempty"`
	// Service: its selector is a plain map, unlike a Deployment's.
	ServiceSelector map[string]string `json:"-"`
	Ports           []struct {
		Name       string          `json:"name"`
		Port       int             `json:"port"`
		TargetPort json.RawMessage `json:"targetPort"`
	} `json:"ports,omitempty"`
}

type podSpec struct {
	RestartPolicy                 string `json:"restartPolicy,omitempty"`
	ServiceAccountName            string `json:"serviceAccountName,omitempty"`
	AutomountServiceAccountToken  *bool  `json:"automountServiceAccountToken,omitempty"`
	TerminationGracePeriodSeconds *int   `json:"terminationGracePeriodSeconds,omitempty"`
	SecurityContext               *struct {
		RunAsNonRoot bool `json:"runAsNonRoot"`
	} `json:"securityContext,omitempty"`
	Containers []container `json:"containers"`
}

type container struct {
	Name            string   `json:"name"`
	Image           string   `json:"image"`
	ImagePullPolicy string   `json:"imagePullPolicy"`
	Command         []string `json:"command"`
	Ports           []struct {
		Name          string `json:"name"`
		ContainerPort int    `json:"containerPort"`
	} `json:"ports,omitempty"`
	Env []struct {
		Name      string  `json:"name"`
		Value     *string `json:"value,omitempty"`
		ValueFrom *struct {
			SecretKeyRef struct {
				Name     string `json:"name"`
				Key      string `json:"key"`
				Optional bool   `json:"optional,omitempty"`
			} `json:"secretKeyRef"`
		} `json:"valueFrom,omitempty"`
	} `json:"env"`
	ReadinessProbe *probe `json:"readinessProbe,omitempty"`
	LivenessProbe  *probe `json:"livenessProbe,omitempty"`
	Lifecycle      *struct {
		PreStop struct {
			Exec struct {
				Command []string `json:"command"`
			} `json:"exec"`
		} `json:"preStop"`
	} `json:"lifecycle,omitempty"`
	Resources *struct {
		Requests map[string]string `json:"requests"`
		Limits   map[string]string `json:"limits,omitempty"`
	} `json:"resources,omitempty"`
	SecurityContext *struct {
		AllowPrivilegeEscalation *bool `json:"allowPrivilegeEscalation"`
		ReadOnlyRootFilesystem   bool  `json:"readOnlyRootFilesystem"`
		Capabilities             struct {
			Drop []string `json:"drop"`
		} `json:"capabilities"`
	} `json:"securityContext,omitempty"`
}

type probe struct {
	HTTPGet struct {
		Path string          `json:"path"`
		Port json.RawMessage `json:"port"` // a number or a port's name
	} `json:"httpGet"`
	PeriodSeconds    int `json:"periodSeconds,omitempty"`
	FailureThreshold int `json:"failureThreshold,omitempty"`
}

type rule struct {
	APIGroups     []string `json:"apiGroups"`
	Resources     []string `json:"resources"`
	ResourceNames []string `json:"resourceNames"`
	Verbs         []string `json:"verbs"`
}

type roleRef struct {
	APIGroup string `json:"apiGroup"`
	Kind     string `json:"kind"`
	Name     string `json:"name"`
}

type subject struct {
	Kind      string `json:"kind"`
	Name      string `json:"name"`
	Namespace string `json:"namespace,omitempty"`
}

// The API versions the manifests may use, by kind.
var apiVersions = map[string]string{
	"Deployment": "apps/v1", "Service": "v1", "Job": "batch/v1", "Secret": "v1",
	"ServiceAccount": "v1", "Role": "rbac.authorization.k8s.io/v1", "RoleBinding": "rbac.authorization.k8s.io/v1",
}

// bundle is everything the checks compare.
type bundle struct {
	objects  []*object
	procfile map[string]string // process type → command
	binaries []string          // what `make build` writes into bin/
	image    dockerfile
}

func load(t *testing.T) *bundle {
	t.Helper()
	b := &bundle{procfile: readProcfile(t), binaries: buildOutputs(t), image: readDockerfile(t)}
	files, err := filepath.Glob(filepath.Join(manifests, "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no manifests in %s (%v)", manifests, err)
	}
	files = append(files, filepath.Join(manifests, secretExample))
	for _, f := range files {
		src, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		docs, err := parseYAML(string(src))
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		for i, d := range docs {
			o, err := decode(d)
			if err != nil {
				t.Fatalf("%s, document %d: %v", f, i+1, err)
			}
			o.file = filepath.Base(f)
			b.objects = append(b.objects, o)
		}
	}
	return b
}

// decode turns a parsed document into an object, refusing unknown fields.
func decode(doc any) (*object, error) {
	m, ok := doc.(map[string]any)
	if !ok {
		return nil, fmt.Errorf("not a mapping")
	}
	var serviceSelector map[string]string
	if m["kind"] == "Service" {
		// A Service's selector is a map of labels; take it out before the
		// Deployment-shaped spec is decoded.
		if sp, ok := m["spec"].(map[string]any); ok {
			sel, _ := json.Marshal(sp["selector"])
			if err := json.Unmarshal(sel, &serviceSelector); err != nil {
				return nil, fmt.Errorf("Service spec.selector: %w", err)
			}
			delete(sp, "selector")
		}
	}
	raw, err := json.Marshal(doc)
	if err != nil {
		return nil, err
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	o := &object{}
	if err := dec.Decode(o); err != nil {
		return nil, err
	}
	if o.Spec != nil {
		o.Spec.ServiceSelector = serviceSelector
	}
	want, known := apiVersions[o.Kind]
	switch {
	case !known:
		return nil, fmt.Errorf("kind %q is not one the test knows", o.Kind)
	case o.APIVersion != want:
		return nil, fmt.Errorf("%s: apiVersion %q, want %q", o.Kind, o.APIVersion, want)
	case o.Metadata.Name == "":
		return nil, fmt.Errorf("%s without metadata.name", o.Kind)
	}
	return o, nil
}

func (b *bundle) find(kind, name string) *object {
	for _, o := range b.objects {
		if o.Kind == kind && o.Metadata.Name == name {
			return o
		}
	}
	return nil
}

func (b *bundle) all(kind string) []*object {
	var out []*object
	for _, o := range b.objects {
		if o.Kind == kind {
			out = append(out, o)
		}
	}
	return out
}

// workload is a container of a Deployment or Job, with the Procfile process
// its command runs.
type workload struct {
	obj       *object
	pod       *podSpec
	c         *container
	procType  string
	labels    map[string]string
	envValues map[string]string // what the process sees: the image's ENV, then the manifest's
	setByYAML []string          // the names the manifest sets
}

func (w workload) String() string {
	return fmt.Sprintf("%s %s (%s), container %s", w.obj.Kind, w.obj.Metadata.Name, w.obj.file, w.c.Name)
}

func (b *bundle) workloads(t *testing.T) []workload {
	t.Helper()
	secret := b.find("Secret", "warren")
	if secret == nil {
		t.Fatalf("%s defines no Secret warren", secretExample)
	}
	var out []workload
	for _, o := range b.objects {
		if o.Kind != "Deployment" && o.Kind != "Job" {
			continue
		}
		if o.Spec == nil || o.Spec.Template == nil || len(o.Spec.Template.Spec.Containers) == 0 {
			t.Errorf("%s %s has no pod template with containers", o.Kind, o.Metadata.Name)
			continue
		}
		pod := &o.Spec.Template.Spec
		for i := range pod.Containers {
			c := &pod.Containers[i]
			w := workload{obj: o, pod: pod, c: c, labels: o.Spec.Template.Metadata.Labels, envValues: map[string]string{}}
			for k, v := range b.image.env {
				w.envValues[k] = v
			}
			if len(c.Command) == 0 {
				t.Errorf("%s has no command: name the Procfile's, the image serves every process", w)
				continue
			}
			cmd := strings.Join(c.Command, " ")
			for typ, line := range b.procfile {
				if line == cmd {
					w.procType = typ
				}
			}
			if w.procType == "" {
				t.Errorf("%s: command %q is none of the Procfile's (%v)", w, cmd, b.procfile)
			}
			seen := map[string]bool{}
			for _, e := range c.Env {
				if seen[e.Name] {
					t.Errorf("%s sets %s twice", w, e.Name)
				}
				seen[e.Name] = true
				w.setByYAML = append(w.setByYAML, e.Name)
				switch {
				case e.Value != nil && e.ValueFrom == nil:
					w.envValues[e.Name] = *e.Value
				case e.Value == nil && e.ValueFrom != nil:
					ref := e.ValueFrom.SecretKeyRef
					v, ok := secret.StringData[ref.Key]
					if ref.Name != secret.Metadata.Name || !ok {
						t.Errorf("%s: %s refers to key %s of Secret %s, which %s does not define", w, e.Name, ref.Key, ref.Name, secretExample)
					}
					w.envValues[e.Name] = v
				default:
					t.Errorf("%s: %s needs exactly one of value and valueFrom", w, e.Name)
				}
			}
			out = append(out, w)
		}
	}
	return out
}

// loaders are what each Procfile process reads its settings with (its main
// package calls these), and what its configuration says about where it listens.
var loaders = map[string]func(config.Getenv) (listen string, err error){
	"web": func(get config.Getenv) (string, error) {
		c, err := config.LoadAPI(get)
		return c.Addr, err
	},
	"worker": func(get config.Getenv) (string, error) {
		c, err := config.LoadWorker(get)
		return c.MetricsAddr, err
	},
	"scheduler": func(get config.Getenv) (string, error) {
		c, err := config.LoadScheduler(get)
		if err != nil {
			return "", err
		}
		_, err = config.LoadAutoscale(get)
		return c.MetricsAddr, err
	},
	"release": func(get config.Getenv) (string, error) { // scheduler migrate
		_, err := config.LoadScheduler(get)
		return "", err
	},
}

// inCluster is what Kubernetes itself sets in every container.
var inCluster = map[string]string{"KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443"}

// readBy runs the process's configuration loader on env and returns the
// names it read, and where the process listens.
func readBy(t *testing.T, w workload) (read map[string]bool, listen string) {
	t.Helper()
	read = map[string]bool{}
	get := func(name string) string {
		read[name] = true
		if v, ok := w.envValues[name]; ok {
			return v
		}
		return inCluster[name]
	}
	load, ok := loaders[w.procType]
	if !ok {
		t.Fatalf("%s: the test knows no loader for process type %q", w, w.procType)
	}
	listen, err := load(get)
	if err != nil {
		t.Errorf("%s: its settings do not load: %v", w, err)
	}
	return read, listen
}

func TestManifestsRunTheProcfile(t *testing.T) {
	t.Parallel()
	b := load(t)
	covered := map[string]bool{}
	images := map[string]bool{}
	for _, w := range b.workloads(t) {
		covered[w.procType] = true
		images[w.c.Image] = true
		// Kubernetes runs a relative command from the image's WORKDIR, where the
		// image has bin/ (checked in TestDockerfile).
		if bin, ok := strings.CutPrefix(w.c.Command[0], "bin/"); !ok || !slices.Contains(b.binaries, bin) {
			t.Errorf("%s runs %s; `make build` writes only %v into bin/", w, w.c.Command[0], b.binaries)
		}
		if w.pod.SecurityContext == nil || !w.pod.SecurityContext.RunAsNonRoot {
			t.Errorf("%s: want securityContext.runAsNonRoot (the image runs as user %s)", w, b.image.user)
		}
		switch w.obj.Kind {
		case "Job":
			if w.procType != "release" {
				t.Errorf("%s: a Job should run the release command, not %s", w, w.procType)
			}
			if p := w.pod.RestartPolicy; p != "Never" && p != "OnFailure" {
				t.Errorf("%s: restartPolicy %q, want Never or OnFailure", w, p)
			}
		case "Deployment":
			if w.procType == "release" {
				t.Errorf("%s runs the release command: that is the migration Job's", w)
			}
			sel := w.obj.Spec.Selector
			if sel == nil || len(sel.MatchLabels) == 0 || !subset(sel.MatchLabels, w.labels) {
				t.Errorf("%s: selector %v does not match the pod labels %v", w, sel, w.labels)
			}
		}
	}
	for typ := range b.procfile {
		if !covered[typ] {
			t.Errorf("no manifest runs the Procfile's %s process (%s)", typ, b.procfile[typ])
		}
	}
	if len(images) != 1 {
		t.Errorf("the manifests use images %v; want the one image deploy/Dockerfile builds for every process", images)
	}
}

func TestManifestsSetOnlyWhatTheProcessesRead(t *testing.T) {
	t.Parallel()
	b := load(t)
	usedKeys := map[string]bool{}
	for _, w := range b.workloads(t) {
		read, listen := readBy(t, w)
		for _, name := range w.setByYAML {
			if !read[name] {
				t.Errorf("%s sets %s, which the %s process does not read", w, name, w.procType)
			}
		}
		for name := range b.image.env {
			if !read[name] {
				t.Errorf("deploy/Dockerfile sets ENV %s, which the %s process does not read", name, w.procType)
			}
		}
		for _, e := range w.c.Env {
			if e.ValueFrom != nil {
				usedKeys[e.ValueFrom.SecretKeyRef.Key] = true
			}
		}
		if w.obj.Kind == "Job" {
			continue
		}
		// A long-running process listens on PORT, on every interface, and
		// declares that port; the probes use it.
		port := w.envValues["PORT"]
		if port == "" || !strings.HasPrefix(listen, "0.0.0.0:") || strings.TrimPrefix(listen, "0.0.0.0:") != port {
			t.Errorf("%s listens on %q; want 0.0.0.0:PORT (PORT=%q), reachable by probes and Services", w, listen, port)
		}
		if len(w.c.Ports) != 1 || strconv.Itoa(w.c.Ports[0].ContainerPort) != port {
			t.Errorf("%s: ports %+v, want one, its PORT %s", w, w.c.Ports, port)
		}
		for _, p := range []*probe{w.c.ReadinessProbe, w.c.LivenessProbe} {
			if p != nil && !w.portOf(p.HTTPGet.Port) {
				t.Errorf("%s: a probe's port %s is not the container's port", w, p.HTTPGet.Port)
			}
		}
		if w.c.LivenessProbe == nil || w.c.LivenessProbe.HTTPGet.Path != "/healthz" {
			t.Errorf("%s: want a liveness probe on /healthz", w)
		}
	}
	secret := b.find("Secret", "warren")
	for k := range secret.StringData {
		if !usedKeys[k] {
			t.Errorf("%s defines %s, which no manifest passes to a process", secretExample, k)
		}
	}
}

// portOf reports whether a probe's or Service's port (a number or a name)
// is the container's port.
func (w workload) portOf(raw json.RawMessage) bool {
	var name string
	var num int
	for _, p := range w.c.Ports {
		switch {
		case json.Unmarshal(raw, &name) == nil:
			if name == p.Name {
				return true
			}
		case json.Unmarshal(raw, &num) == nil:
			if num == p.ContainerPort {
				return true
			}
		}
	}
	return false
}

func TestAPIService(t *testing.T) {
	t.Parallel()
	b := load(t)
	var api *workload
	for _, w := range b.workloads(t) {
		if w.procType == "web" {
			api = &w
		}
	}
	if api == nil {
		t.Fatal("no Deployment runs the web process")
	}
	if p := api.c.ReadinessProbe; p == nil || p.HTTPGet.Path != "/readyz" {
		t.Errorf("%s: want a readiness probe on /readyz, so that Services route only to ready pods", api)
	}
	services := b.all("Service")
	if len(services) != 1 {
		t.Fatalf("Services: %d, want one, in front of the api", len(services))
	}
	svc := services[0].Spec
	if len(svc.ServiceSelector) == 0 || !subset(svc.ServiceSelector, api.labels) {
		t.Errorf("Service %s selects %v; the api's pods are labelled %v", services[0].Metadata.Name, svc.ServiceSelector, api.labels)
	}
	if len(svc.Ports) == 0 {
		t.Fatalf("Service %s has no ports", services[0].Metadata.Name)
	}
	for _, p := range svc.Ports {
		if !api.portOf(p.TargetPort) {
			t.Errorf("Service %s: targetPort %s is not the api container's port", services[0].Metadata.Name, p.TargetPort)
		}
	}
}

func TestSchedulerScalesTheWorkers(t *testing.T) {
	t.Parallel()
	b := load(t)
	var sched, workers []workload
	for _, w := range b.workloads(t) {
		switch w.procType {
		case "scheduler":
			sched = append(sched, w)
		case "worker":
			workers = append(workers, w)
		}
	}
	if len(sched) != 1 || len(workers) != 1 {
		t.Fatalf("Deployments running the scheduler: %d, the workers: %d; want one each", len(sched), len(workers))
	}
	s, w := sched[0], workers[0]
	get := func(env map[string]string) config.Getenv {
		return func(name string) string {
			if v, ok := env[name]; ok {
				return v
			}
			return inCluster[name]
		}
	}
	as, err := config.LoadAutoscale(get(s.envValues))
	if err != nil {
		t.Fatalf("%s: %v", s, err)
	}
	wc, err := config.LoadWorker(get(w.envValues))
	if err != nil {
		t.Fatalf("%s: %v", w, err)
	}
	if as.Mode != config.AutoscaleKubernetes {
		t.Errorf("%s: WARREN_AUTOSCALE=%s, want kubernetes", s, as.Mode)
	}
	if as.Deployment != w.obj.Metadata.Name {
		t.Errorf("%s scales Deployment %q (WARREN_AUTOSCALE_K8S_DEPLOYMENT); the workers' is %q", s, as.Deployment, w.obj.Metadata.Name)
	}
	if as.Namespace != "" {
		t.Errorf("%s: WARREN_AUTOSCALE_K8S_NAMESPACE=%s; leave it to the service account, so the manifests work in any namespace", s, as.Namespace)
	}
	if as.ServiceAccountDir != autoscale.DefaultServiceAccountDir {
		t.Errorf("%s reads its service account from %s; Kubernetes mounts it at %s", s, as.ServiceAccountDir, autoscale.DefaultServiceAccountDir)
	}
	// The autoscaler sizes the fleet by the workers' own queues and slots.
	if as.Concurrency != wc.Concurrency || !slices.Equal(as.Queues, wc.Queues) {
		t.Errorf("the autoscaler counts %d slots a worker on queues %v; the workers run %d on %v",
			as.Concurrency, as.Queues, wc.Concurrency, wc.Queues)
	}
	if w.obj.Spec.Replicas != nil {
		t.Errorf("%s sets replicas: applying it again would undo the autoscaler's count", w)
	}
	if g := w.pod.TerminationGracePeriodSeconds; g == nil || time.Duration(*g)*time.Second <= wc.ShutdownGrace {
		t.Errorf("%s: want terminationGracePeriodSeconds above WARREN_SHUTDOWN_GRACE (%s), so Kubernetes lets a worker finish its jobs", w, wc.ShutdownGrace)
	}

	// RBAC: the scheduler's service account may get and patch that
	// Deployment's scale subresource, and its pods carry the token.
	sa := s.pod.ServiceAccountName
	if sa == "" || b.find("ServiceAccount", sa) == nil {
		t.Fatalf("%s: serviceAccountName %q is not a ServiceAccount of the manifests", s, sa)
	}
	if a := s.pod.AutomountServiceAccountToken; a != nil && !*a {
		t.Errorf("%s: automountServiceAccountToken is false; the autoscaler needs the token", s)
	}
	allowed := false
	for _, rb := range b.all("RoleBinding") {
		bound := false
		for _, sub := range rb.Subjects {
			bound = bound || (sub.Kind == "ServiceAccount" && sub.Name == sa)
		}
		if !bound || rb.RoleRef == nil || rb.RoleRef.Kind != "Role" || rb.RoleRef.APIGroup != "rbac.authorization.k8s.io" {
			continue
		}
		role := b.find("Role", rb.RoleRef.Name)
		if role == nil {
			t.Errorf("RoleBinding %s refers to Role %s, which the manifests do not define", rb.Metadata.Name, rb.RoleRef.Name)
			continue
		}
		for _, r := range role.Rules {
			if slices.Contains(r.APIGroups, "apps") && slices.Contains(r.Resources, "deployments/scale") &&
				(len(r.ResourceNames) == 0 || slices.Contains(r.ResourceNames, as.Deployment)) &&
				slices.Contains(r.Verbs, "get") && slices.Contains(r.Verbs, "patch") {
				allowed = true
			}
		}
	}
	if !allowed {
		t.Errorf("no Role bound to ServiceAccount %s allows get and patch on deployments/scale of %s", sa, as.Deployment)
	}
	// The other pods have no business with the API server.
	for _, o := range b.workloads(t) {
		if o.procType != "scheduler" && (o.pod.AutomountServiceAccountToken == nil || *o.pod.AutomountServiceAccountToken) {
			t.Errorf("%s: set automountServiceAccountToken: false; only the scheduler talks to the API server", o)
		}
	}
}

// dockerfile is what the test reads of deploy/Dockerfile.
type dockerfile struct {
	stages  []stage
	args    map[string]string // ARG defaults before the first FROM
	env     map[string]string // ENV of the final stage
	user    string
	workdir string
	cmd     []string
}

type stage struct {
	from, name string
	lines      []string // "INSTRUCTION args"
}

func readDockerfile(t *testing.T) dockerfile {
	t.Helper()
	f, err := os.Open(filepath.Join(root, "deploy", "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	d := dockerfile{args: map[string]string{}, env: map[string]string{}}
	sc := bufio.NewScanner(f)
	var line string
	for sc.Scan() {
		s := strings.TrimSpace(sc.Text())
		if strings.HasPrefix(s, "#") || (s == "" && line == "") {
			continue
		}
		if cont, ok := strings.CutSuffix(s, "\\"); ok {
			line += cont
			continue
		}
		line += s
		d.add(t, line)
		line = ""
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if line != "" {
		d.add(t, line)
	}
	return d
}

func (d *dockerfile) add(t *testing.T, line string) {
	instr, rest, _ := strings.Cut(line, " ")
	instr = strings.ToUpper(instr)
	rest = strings.TrimSpace(rest)
	switch instr {
	case "ARG":
		if len(d.stages) == 0 {
			k, v, _ := strings.Cut(rest, "=")
			d.args[k] = v
		}
		return
	case "FROM":
		from, name, _ := strings.Cut(rest, " AS ")
		d.stages = append(d.stages, stage{from: os.Expand(from, func(k string) string { return d.args[k] }), name: strings.TrimSpace(name)})
		d.env, d.user, d.workdir, d.cmd = map[string]string{}, "", "", nil
		return
	case "ENV":
		for _, kv := range strings.Fields(rest) {
			k, v, ok := strings.Cut(kv, "=")
			if !ok {
				t.Fatalf("deploy/Dockerfile: ENV %s: write ENV NAME=value", rest)
			}
			d.env[k] = v
		}
	case "USER":
		d.user = rest
	case "WORKDIR":
		d.workdir = rest
	case "CMD":
		if err := json.Unmarshal([]byte(rest), &d.cmd); err != nil {
			t.Fatalf("deploy/Dockerfile: CMD %s: want the exec form, [\"bin/api\"]: %v", rest, err)
		}
	}
	if len(d.stages) == 0 {
		t.Fatalf("deploy/Dockerfile: %s before FROM", instr)
	}
	s := &d.stages[len(d.stages)-1]
	s.lines = append(s.lines, instr+" "+rest)
}

func TestDockerfile(t *testing.T) {
	t.Parallel()
	b := load(t)
	d := b.image
	if len(d.stages) != 2 {
		t.Fatalf("deploy/Dockerfile has %d stages, want two: build and run", len(d.stages))
	}
	build, run := d.stages[0], d.stages[1]
	if want := "golang:" + goVersion(t) + "-"; !strings.HasPrefix(build.from, want) {
		t.Errorf("the build stage is FROM %s, want %s… (go.mod's Go version, a Debian image)", build.from, want)
	}
	if !slices.ContainsFunc(build.lines, func(l string) bool { return strings.HasPrefix(l, "RUN ") && strings.HasSuffix(l, "make build") }) {
		t.Errorf("the build stage does not RUN make build")
	}
	if !regexp.MustCompile(`^debian:[a-z]+-slim$`).MatchString(run.from) {
		t.Errorf("the run stage is FROM %s, want debian:<release>-slim", run.from)
	}
	// The Procfile's commands are relative: bin/ and the Procfile must be in the WORKDIR.
	if !strings.HasPrefix(d.workdir, "/") {
		t.Errorf("the run stage's WORKDIR is %q, want an absolute directory holding bin/", d.workdir)
	}
	copies := strings.Join(run.lines, "\n")
	if !strings.Contains(copies, "COPY --from="+build.name+" /src/bin/ bin/") || !strings.Contains(copies, "COPY Procfile ./") {
		t.Errorf("the run stage does not copy bin/ from the %s stage and the Procfile into its WORKDIR:\n%s", build.name, copies)
	}
	if !slices.ContainsFunc(build.lines, func(l string) bool { return l == "WORKDIR /src" }) {
		t.Errorf("the build stage does not work in /src, where the run stage copies bin/ from")
	}
	// runAsNonRoot can only check a numeric user.
	if uid, err := strconv.Atoi(d.user); err != nil || uid == 0 {
		t.Errorf("the image's USER is %q, want a numeric non-root uid (for runAsNonRoot)", d.user)
	}
	cmd := strings.Join(d.cmd, " ")
	if !slices.Contains(mapsValues(b.procfile), cmd) {
		t.Errorf("the image's CMD %q is none of the Procfile's commands", cmd)
	}

	ignore, err := os.ReadFile(filepath.Join(root, ".dockerignore"))
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(ignore), "\n")
	for _, p := range []string{".data", ".env", "bin", ".git"} {
		if !slices.Contains(lines, p) && !slices.Contains(lines, p+"/") {
			t.Errorf(".dockerignore does not leave out %s", p)
		}
	}
}

// readProcfile returns the Procfile's process types and commands.
func readProcfile(t *testing.T) map[string]string {
	t.Helper()
	src, err := os.ReadFile(filepath.Join(root, "Procfile"))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, m := range regexp.MustCompile(`(?m)^([A-Za-z0-9_-]+):[ \t]*(.+?)\s*$`).FindAllStringSubmatch(string(src), -1) {
		out[m[1]] = m[2]
	}
	if len(out) == 0 {
		t.Fatal("the Procfile lists no processes")
	}
	return out
}

// buildOutputs returns the names `make build` gives the binaries it writes
// into bin/: go build -o names them after the packages' directories.
func buildOutputs(t *testing.T) []string {
	t.Helper()
	src, err := os.ReadFile(filepath.Join(root, "Makefile"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^build:.*\n\t\$\(GO\) build -o \$\(BIN\)/ ((?:\./[a-z]+ ?)+)$`).FindSubmatch(src)
	if m == nil {
		t.Fatal("the Makefile's build target is not `$(GO) build -o $(BIN)/ ./pkg…` as the test expects")
	}
	var out []string
	for _, p := range strings.Fields(string(m[1])) {
		out = append(out, strings.TrimPrefix(p, "./"))
	}
	return out
}

// goVersion is go.mod's go directive as major.minor.
func goVersion(t *testing.T) string {
	t.Helper()
	src, err := os.ReadFile(filepath.Join(root, "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^go ([0-9]+\.[0-9]+)`).FindSubmatch(src)
	if m == nil {
		t.Fatal("go.mod has no go directive")
	}
	return string(m[1])
}

func subset(small, big map[string]string) bool {
	for k, v := range small {
		if big[k] != v {
			return false
		}
	}
	return true
}

func mapsValues(m map[string]string) []string {
	var out []string
	for _, v := range m {
		out = append(out, v)
	}
	return out
}
