package k8s

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	"gopkg.in/yaml.v3"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"

	"github.com/portfolio-counselor/sagamachine/internal/imagebuild"
	"github.com/portfolio-counselor/sagamachine/internal/testenv"
)

var (
	buildOnce sync.Once
	built     []byte
	builtObjs []*object
	buildErr  error
)

// kustomizeBuild runs `kustomize build k8s` in process
// (sigs.k8s.io/kustomize/api/krusty, the library kubectl apply -k uses)
// once per test binary and returns its output and its objects.
func kustomizeBuild(tb testing.TB) ([]byte, []*object) {
	tb.Helper()
	buildOnce.Do(func() {
		k := krusty.MakeKustomizer(krusty.MakeDefaultOptions())
		m, err := k.Run(filesys.MakeFsOnDisk(), ".")
		if err != nil {
			buildErr = fmt.Errorf("kustomize build k8s: %w", err)
			return
		}
		if built, err = m.AsYaml(); err != nil {
			buildErr = fmt.Errorf("kustomize build k8s: render: %w", err)
			return
		}
		builtObjs, buildErr = parseManifest("kustomize build k8s", built)
	})
	if buildErr != nil {
		tb.Fatal(buildErr)
	}
	return built, builtObjs
}

// objectKey identifies an object in a cluster.
func objectKey(o *object) string {
	return o.meta.APIVersion + " " + o.kind() + " " + o.namespace() + "/" + o.name()
}

// TestKustomizeBuild: `kustomize build k8s` (what `kubectl apply -k k8s`
// applies) yields exactly the objects of the manifest files, field for
// field, so that every other test here, which reads the files, checks what
// is applied.
func TestKustomizeBuild(t *testing.T) {
	_, out := kustomizeBuild(t)
	want := map[string]*object{}
	for _, o := range manifests(t) {
		want[objectKey(o)] = o
	}
	got := map[string]*object{}
	for _, o := range out {
		k := objectKey(o)
		if _, dup := got[k]; dup {
			t.Errorf("kustomize build yields %s twice", k)
		}
		got[k] = o
	}
	if g, w := slices.Sorted(mapKeys(got)), slices.Sorted(mapKeys(want)); !slices.Equal(g, w) {
		t.Fatalf("kustomize build yields\n%q\nwant the manifests' objects\n%q", g, w)
	}
	for k, o := range got {
		var a, b any
		o.decode(t, &a)
		want[k].decode(t, &b)
		if !reflect.DeepEqual(a, b) {
			ay, _ := yaml.Marshal(a)
			by, _ := yaml.Marshal(b)
			t.Errorf("kustomize build changes %s:\n--- built\n%s--- %s\n%s", k, ay, want[k].file, by)
		}
	}
}

// kubernetesValidateScript installs the validator; the test reads the
// pinned version from it.
const kubernetesValidateScript = "../scripts/kubernetes-validate.sh"

// kubernetesValidate finds PyPI's kubernetes-validate as
// scripts/kubernetes-validate.sh installs it and returns the program and
// the Kubernetes release (major.minor) whose schemas it checks against.
func kubernetesValidate(tb testing.TB) (string, string) {
	tb.Helper()
	kvOnce.Do(func() { kvProg, kvRelease, kvMissing, kvErr = findKubernetesValidate() })
	if kvErr != nil {
		tb.Fatal(kvErr)
	}
	if kvMissing != "" {
		if testenv.InCI() {
			tb.Fatal(kvMissing + " [CI=true: a missing validator fails the test]")
		}
		tb.Skip(kvMissing)
	}
	return kvProg, kvRelease
}

var (
	kvOnce                       sync.Once
	kvProg, kvRelease, kvMissing string
	kvErr                        error
)

// findKubernetesValidate returns the program and release, or why it is
// missing, or an error in the repository (no pinned version).
func findKubernetesValidate() (prog, release, missing string, err error) {
	script, err := os.ReadFile(kubernetesValidateScript)
	if err != nil {
		return "", "", "", fmt.Errorf("read %s: %w", kubernetesValidateScript, err)
	}
	m := regexp.MustCompile(`(?m)^KUBERNETES_VALIDATE_VERSION=(\d+)\.(\d+)\.(\d+)$`).FindSubmatch(script)
	if m == nil {
		return "", "", "", fmt.Errorf("%s pins no KUBERNETES_VALIDATE_VERSION=X.Y.Z", kubernetesValidateScript)
	}
	version := fmt.Sprintf("%s.%s.%s", m[1], m[2], m[3])
	release = fmt.Sprintf("%s.%s", m[1], m[2])

	var candidates []string
	if p := os.Getenv("SAGA_KUBERNETES_VALIDATE"); p != "" {
		candidates = append(candidates, p)
	} else {
		candidates = append(candidates, filepath.Join(runDir(), "kubernetes-validate", "bin", "kubernetes-validate"))
		if p, err := exec.LookPath("kubernetes-validate"); err == nil {
			candidates = append(candidates, p)
		}
	}
	var tried []string
	for _, c := range candidates {
		out, err := exec.Command(c, "--version").Output()
		got := strings.TrimSpace(string(out))
		if err == nil && got == version {
			return c, release, "", nil
		}
		tried = append(tried, fmt.Sprintf("%s: version %q, err %v", c, got, err))
	}
	return "", release, fmt.Sprintf("kubernetes-validate %s not found (%s); scripts/kubernetes-validate.sh installs it (make test runs it)",
		version, strings.Join(tried, "; ")), nil
}

// runDir is scripts/lib.sh's $SAGA_RUN_DIR.
func runDir() string {
	if d := os.Getenv("SAGA_RUN_DIR"); d != "" {
		return d
	}
	if os.Geteuid() == 0 || os.Getenv("HOME") == "" {
		return "/var/tmp/saga-machine"
	}
	return filepath.Join(os.Getenv("HOME"), ".cache", "saga-machine")
}

var validateLine = regexp.MustCompile(`^(INFO|WARN|ERROR) (\S+) (.*)$`)

// schemaProblems runs kubernetes-validate --strict on data (the objects
// objs) and returns every error and warning it prints, and every object it
// did not report as valid.
func schemaProblems(tb testing.TB, prog, release string, data []byte, objs []*object) []string {
	tb.Helper()
	file := filepath.Join(tb.TempDir(), "manifests.yaml")
	if err := os.WriteFile(file, data, 0o644); err != nil {
		tb.Fatal(err)
	}
	cmd := exec.Command(prog, "--strict", "--kubernetes-version", release, file)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	runErr := cmd.Run()
	var probs []string
	passed := map[string]bool{}
	sc := bufio.NewScanner(bytes.NewReader(stdout.Bytes()))
	for sc.Scan() {
		line := sc.Text()
		m := validateLine.FindStringSubmatch(line)
		switch {
		case m == nil:
			probs = append(probs, fmt.Sprintf("kubernetes-validate printed %q", line))
		case m[1] == "INFO" && strings.HasPrefix(m[3], "passed for resource "):
			res, _, _ := strings.Cut(strings.TrimPrefix(m[3], "passed for resource "), " ")
			passed[res] = true
		default:
			probs = append(probs, fmt.Sprintf("kubernetes-validate %s: %s", m[1], m[3]))
		}
	}
	if runErr != nil {
		probs = append(probs, fmt.Sprintf("kubernetes-validate --strict -k %s: %v %s", release, runErr, bytes.TrimSpace(stderr.Bytes())))
	}
	// Every object was checked: it reports kind/name (lower-case kind).
	for _, o := range objs {
		if res := strings.ToLower(o.kind()) + "/" + o.name(); !passed[res] {
			probs = append(probs, fmt.Sprintf("%s: kubernetes-validate did not report %s as valid", o, res))
		}
	}
	return probs
}

// TestSchemas validates every object that `kustomize build k8s` yields
// against the OpenAPI schemas of a current Kubernetes release, strictly
// (an unknown field is an error), offline. An object of a kind with no
// schema (a custom resource) fails: there is none today; one added later
// needs its CRD's schema checked here.
func TestSchemas(t *testing.T) {
	prog, release := kubernetesValidate(t)
	out, objs := kustomizeBuild(t)
	for _, p := range schemaProblems(t, prog, release, out, objs) {
		t.Error(p)
	}
	t.Logf("%d objects valid against the Kubernetes %s schemas (kubernetes-validate --strict)", len(objs), release)
}

// TestSchemasCatch: the validator, as TestSchemas runs it, refuses a
// misspelled field, a wrong type and a kind it has no schema for.
func TestSchemasCatch(t *testing.T) {
	prog, release := kubernetesValidate(t)
	const good = `apiVersion: v1
kind: ConfigMap
metadata: {name: good, namespace: default}
data: {a: b}
`
	tests := []struct {
		name, doc, want string
	}{
		{"misspelled field", `apiVersion: apps/v1
kind: Deployment
metadata: {name: typo, namespace: default}
spec:
  selector: {matchLabels: {a: b}}
  template:
    metadata: {labels: {a: b}}
    spec:
      containers: [{name: c, image: x, resource: {limits: {cpu: "1"}}}]
`, "'resource' was unexpected"},
		{"wrong type", `apiVersion: apps/v1
kind: Deployment
metadata: {name: wrongtype, namespace: default}
spec:
  replicas: "2"
  selector: {matchLabels: {a: b}}
  template:
    metadata: {labels: {a: b}}
    spec:
      containers: [{name: c, image: x}]
`, "is not of type 'integer'"},
		{"custom resource", `apiVersion: example.com/v1
kind: Widget
metadata: {name: w, namespace: default}
spec: {}
`, "Couldn't find schema for kind Widget"},
	}
	// One run of the validator over all of them (it starts slowly).
	data := good
	for _, tt := range tests {
		data += "---\n" + tt.doc
	}
	objs, err := parseManifest("test", []byte(data))
	if err != nil {
		t.Fatal(err)
	}
	probs := schemaProblems(t, prog, release, []byte(data), objs)
	for _, tt := range tests {
		if !slices.ContainsFunc(probs, func(p string) bool { return strings.Contains(p, tt.want) }) {
			t.Errorf("%s: got problems %q, want one containing %q", tt.name, probs, tt.want)
		}
	}
	if slices.ContainsFunc(probs, func(p string) bool { return strings.Contains(p, "configmap/good") }) {
		t.Errorf("the valid ConfigMap is reported: %q", probs)
	}
}

// TestImagesAreBuilt: every container of ours runs an image that `make
// images` builds (repository imagebuild.Repository(cmd) for a command of
// cmd/), and every other image is a pinned third-party release.
func TestImagesAreBuilt(t *testing.T) {
	cmds, err := imagebuild.Commands(repoRoot)
	if err != nil {
		t.Fatal(err)
	}
	thirdParty := map[string]bool{ // repository -> allowed
		"postgres":                          true,
		"apache/kafka":                      true,
		"quay.io/keycloak/keycloak":         true,
		"quay.io/oauth2-proxy/oauth2-proxy": true,
	}
	ours := map[string]bool{}
	for _, c := range cmds {
		ours[imagebuild.Repository(c)] = true
	}
	used := map[string]bool{}
	for _, o := range manifests(t) {
		if !podKinds[o.kind()] {
			continue
		}
		var w workload
		o.decode(t, &w)
		for _, c := range append(slices.Clone(w.Spec.Template.Spec.InitContainers), w.Spec.Template.Spec.Containers...) {
			repo, tag, digest := splitImage(c.Image)
			switch {
			case ours[repo]:
				used[repo] = true
				if tag != imagebuild.DefaultTag && digest == "" {
					t.Errorf("%s container %s: image %s: want tag %s (what make images writes) or a digest", o, c.Name, c.Image, imagebuild.DefaultTag)
				}
				// An image loaded into the nodes from dist/images (kind
				// load, ctr import) is used as it is; with Always (the
				// default for :latest) the kubelet would pull it from a
				// registry it was never pushed to.
				if digest == "" && c.ImagePullPolicy != "IfNotPresent" {
					t.Errorf("%s container %s: imagePullPolicy %q, want IfNotPresent (loaded images; pin digests in an overlay)", o, c.Name, c.ImagePullPolicy)
				}
			case strings.HasPrefix(c.Image, imagePrefix):
				t.Errorf("%s container %s: image %s is not built by make images (its commands: %q)", o, c.Name, c.Image, cmds)
			case thirdParty[repo]:
				if (tag == "" || tag == "latest") && digest == "" {
					t.Errorf("%s container %s: third-party image %s: pin a version", o, c.Name, c.Image)
				}
			default:
				t.Errorf("%s container %s: image %s is neither built by make images nor a known third-party image", o, c.Name, c.Image)
			}
		}
	}
	for _, c := range []string{"saga-machine", "deals", "profile", "notification"} {
		if !used[imagebuild.Repository(c)] {
			t.Errorf("no workload runs %s", imagebuild.Repository(c))
		}
	}
}

// splitImage splits an image reference into repository, tag and digest.
func splitImage(ref string) (repo, tag, digest string) {
	repo, digest, _ = strings.Cut(ref, "@")
	if i := strings.LastIndex(repo, ":"); i > strings.LastIndex(repo, "/") {
		repo, tag = repo[:i], repo[i+1:]
	}
	return repo, tag, digest
}

// Names and quantities as the API server validates them
// (k8s.io/apimachinery/pkg/util/validation, resource.Quantity).
var (
	dns1123Label     = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)
	dns1123Subdomain = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`)
	dns1035Label     = regexp.MustCompile(`^[a-z]([-a-z0-9]*[a-z0-9])?$`)
	ianaSvcName      = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]*[a-z0-9])?$`)
	configKey        = regexp.MustCompile(`^[-._a-zA-Z0-9]+$`)
	labelValue       = regexp.MustCompile(`^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$`)
	quantity         = regexp.MustCompile(`^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$`)
)

// parseQuantity returns a Kubernetes quantity ("100m", "1", "128Mi", "1e3")
// as a float.
func parseQuantity(s string) (float64, error) {
	m := quantity.FindStringSubmatch(s)
	if m == nil {
		return 0, fmt.Errorf("%q is not a quantity", s)
	}
	n, err := strconv.ParseFloat(m[1], 64)
	if err != nil {
		return 0, fmt.Errorf("%q is not a quantity: %w", s, err)
	}
	mult := map[string]float64{
		"": 1, "n": 1e-9, "u": 1e-6, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15, "E": 1e18,
		"Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30, "Ti": 1 << 40, "Pi": 1 << 50, "Ei": 1 << 60,
	}
	if f, ok := mult[m[2]]; ok {
		return n * f, nil
	}
	if e, ok := strings.CutPrefix(strings.ToLower(m[2]), "e"); ok {
		x, err := strconv.Atoi(e)
		if err == nil {
			return n * pow10(x), nil
		}
	}
	return 0, fmt.Errorf("%q is not a quantity: unknown suffix %q", s, m[2])
}

func pow10(x int) float64 {
	f := 1.0
	for ; x > 0; x-- {
		f *= 10
	}
	for ; x < 0; x++ {
		f /= 10
	}
	return f
}

func TestParseQuantity(t *testing.T) {
	tests := []struct {
		in   string
		want float64
		bad  bool
	}{
		{in: "100m", want: 0.1},
		{in: "1", want: 1},
		{in: "0.5", want: 0.5},
		{in: "128Mi", want: 128 << 20},
		{in: "1Gi", want: 1 << 30},
		{in: "512M", want: 512e6},
		{in: "1e3", want: 1000},
		{in: "128MB", bad: true},
		{in: "1 Gi", bad: true},
		{in: "", bad: true},
		{in: "Mi", bad: true},
	}
	for _, tt := range tests {
		got, err := parseQuantity(tt.in)
		if tt.bad {
			if err == nil {
				t.Errorf("parseQuantity(%q) = %v, want an error", tt.in, got)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("parseQuantity(%q) = %v, %v, want %v", tt.in, got, err, tt.want)
		}
	}
}

// Typed views for TestAPIServerRules.
type (
	objMeta struct {
		Metadata struct {
			Name        string            `yaml:"name"`
			Labels      map[string]string `yaml:"labels"`
			Annotations map[string]string `yaml:"annotations"`
		} `yaml:"metadata"`
		Type       string            `yaml:"type"`
		Data       map[string]string `yaml:"data"`
		StringData map[string]string `yaml:"stringData"`
	}
	selector struct {
		MatchLabels      map[string]string `yaml:"matchLabels"`
		MatchExpressions []struct {
			Key      string   `yaml:"key"`
			Operator string   `yaml:"operator"`
			Values   []string `yaml:"values"`
		} `yaml:"matchExpressions"`
	}
	podPort struct {
		Name          string `yaml:"name"`
		ContainerPort int    `yaml:"containerPort"`
	}
	podProbe struct {
		HTTPGet *struct {
			Port any `yaml:"port"`
		} `yaml:"httpGet"`
		TCPSocket *struct {
			Port any `yaml:"port"`
		} `yaml:"tcpSocket"`
	}
	podContainer struct {
		Name           string    `yaml:"name"`
		Ports          []podPort `yaml:"ports"`
		ReadinessProbe *podProbe `yaml:"readinessProbe"`
		LivenessProbe  *podProbe `yaml:"livenessProbe"`
		StartupProbe   *podProbe `yaml:"startupProbe"`
		Env            []struct {
			Name      string `yaml:"name"`
			ValueFrom *struct {
				SecretKeyRef    *optionalKeyRef `yaml:"secretKeyRef"`
				ConfigMapKeyRef *optionalKeyRef `yaml:"configMapKeyRef"`
			} `yaml:"valueFrom"`
		} `yaml:"env"`
		EnvFrom []struct {
			SecretRef *struct {
				Name string `yaml:"name"`
			} `yaml:"secretRef"`
			ConfigMapRef *struct {
				Name string `yaml:"name"`
			} `yaml:"configMapRef"`
		} `yaml:"envFrom"`
		Resources struct {
			Requests map[string]string `yaml:"requests"`
			Limits   map[string]string `yaml:"limits"`
		} `yaml:"resources"`
		VolumeMounts []struct {
			Name string `yaml:"name"`
		} `yaml:"volumeMounts"`
	}
	podSpec struct {
		RestartPolicy  string         `yaml:"restartPolicy"`
		Containers     []podContainer `yaml:"containers"`
		InitContainers []podContainer `yaml:"initContainers"`
		Volumes        []struct {
			Name      string `yaml:"name"`
			ConfigMap *struct {
				Name     string `yaml:"name"`
				Optional bool   `yaml:"optional"`
			} `yaml:"configMap"`
			Secret *struct {
				SecretName string      `yaml:"secretName"`
				Optional   bool        `yaml:"optional"`
				Items      []keyToPath `yaml:"items"`
			} `yaml:"secret"`
			Projected *struct {
				Sources []struct {
					ConfigMap *struct {
						Name     string `yaml:"name"`
						Optional bool   `yaml:"optional"`
						Items    []struct {
							Key  string `yaml:"key"`
							Path string `yaml:"path"`
						} `yaml:"items"`
					} `yaml:"configMap"`
				} `yaml:"sources"`
			} `yaml:"projected"`
		} `yaml:"volumes"`
	}
	optionalKeyRef struct {
		Name     string `yaml:"name"`
		Key      string `yaml:"key"`
		Optional bool   `yaml:"optional"`
	}
	podWorkload struct {
		Spec struct {
			Selector    *selector `yaml:"selector"`
			ServiceName string    `yaml:"serviceName"`
			// VolumeClaimTemplates add volumes to a StatefulSet's pods.
			VolumeClaimTemplates []struct {
				Metadata struct {
					Name string `yaml:"name"`
				} `yaml:"metadata"`
			} `yaml:"volumeClaimTemplates"`
			Template struct {
				Metadata struct {
					Labels map[string]string `yaml:"labels"`
				} `yaml:"metadata"`
				Spec podSpec `yaml:"spec"`
			} `yaml:"template"`
		} `yaml:"spec"`
	}
	serviceSpec struct {
		Spec struct {
			Selector map[string]string `yaml:"selector"`
			Ports    []struct {
				Name       string `yaml:"name"`
				Port       int    `yaml:"port"`
				TargetPort any    `yaml:"targetPort"`
			} `yaml:"ports"`
		} `yaml:"spec"`
	}
)

// matches tells whether labels satisfy the selector.
func (s *selector) matches(labels map[string]string) bool {
	if s == nil || (len(s.MatchLabels) == 0 && len(s.MatchExpressions) == 0) {
		return false // an empty workload selector is refused by the API server
	}
	for k, v := range s.MatchLabels {
		if labels[k] != v {
			return false
		}
	}
	for _, e := range s.MatchExpressions {
		v, has := labels[e.Key]
		switch e.Operator {
		case "In":
			if !has || !slices.Contains(e.Values, v) {
				return false
			}
		case "NotIn":
			if has && slices.Contains(e.Values, v) {
				return false
			}
		case "Exists":
			if !has {
				return false
			}
		case "DoesNotExist":
			if has {
				return false
			}
		default:
			return false
		}
	}
	return true
}

// apiProblems lists what the API server (or the kubelet, at the latest
// when the pod starts) refuses in objs and what the schemas cannot say:
// names, label syntax, a workload selector that does not select its own
// template, volume mounts of undefined volumes, named ports that do not
// exist, quantities that do not parse and requests above limits, a Job
// that restarts Always, a Service that selects no pod or a port no pod
// has, references to Secrets and ConfigMaps that no manifest defines, and
// ConfigMaps or Secrets larger than the 1 MiB an object may hold.
func apiProblems(objs []*object) []string {
	var probs []string
	add := func(o *object, format string, args ...any) {
		probs = append(probs, o.String()+": "+fmt.Sprintf(format, args...))
	}
	defined := map[string]bool{} // kind ns/name
	for _, o := range objs {
		defined[o.kind()+" "+o.namespace()+"/"+o.name()] = true
	}
	configKeys := map[string]map[string]bool{} // ns/name of a ConfigMap → its keys
	for _, o := range objs {
		if o.kind() != "ConfigMap" {
			continue
		}
		var cm struct {
			Data       map[string]string `yaml:"data"`
			BinaryData map[string]string `yaml:"binaryData"`
		}
		if o.node.Decode(&cm) != nil {
			continue // reported below
		}
		keys := map[string]bool{}
		for k := range cm.Data {
			keys[k] = true
		}
		for k := range cm.BinaryData {
			keys[k] = true
		}
		configKeys[o.namespace()+"/"+o.name()] = keys
	}
	secretKeys := map[string]map[string]bool{} // ns/name of a Secret → its keys
	for _, o := range objs {
		if o.kind() != "Secret" {
			continue
		}
		var sec objMeta
		if o.node.Decode(&sec) != nil {
			continue // reported below
		}
		keys := map[string]bool{}
		for _, d := range []map[string]string{sec.Data, sec.StringData} {
			for k := range d {
				keys[k] = true
			}
		}
		secretKeys[o.namespace()+"/"+o.name()] = keys
	}
	type pod struct {
		obj    *object
		labels map[string]string
		spec   podSpec
	}
	var pods []pod
	for _, o := range objs {
		var m objMeta
		if err := o.node.Decode(&m); err != nil {
			add(o, "decode: %v", err)
			continue
		}
		name := o.name()
		switch o.kind() {
		case "Namespace":
			if !dns1123Label.MatchString(name) || len(name) > 63 {
				add(o, "name %q is not a DNS-1123 label", name)
			}
		case "Service":
			if !dns1035Label.MatchString(name) || len(name) > 63 {
				add(o, "name %q is not a DNS-1035 label", name)
			}
		case "Job", "Deployment", "StatefulSet":
			// Their names end up in pod labels (job-name, controller
			// revision) and host names.
			if !dns1123Label.MatchString(name) || len(name) > 63 {
				add(o, "name %q is not a DNS-1123 label", name)
			}
		default:
			if !dns1123Subdomain.MatchString(name) || len(name) > 253 {
				add(o, "name %q is not a DNS-1123 subdomain", name)
			}
		}
		for k, v := range m.Metadata.Labels {
			if err := labelKeyProblem(k); err != "" {
				add(o, "label key %q: %s", k, err)
			}
			if !labelValue.MatchString(v) || len(v) > 63 {
				add(o, "label %s: value %q is not a valid label value", k, v)
			}
		}
		for k := range m.Metadata.Annotations {
			if err := labelKeyProblem(k); err != "" {
				add(o, "annotation key %q: %s", k, err)
			}
		}
		if o.kind() == "ConfigMap" || o.kind() == "Secret" {
			size := 0
			for _, d := range []map[string]string{m.Data, m.StringData} {
				for k, v := range d {
					if !configKey.MatchString(k) || len(k) > 253 {
						add(o, "key %q is not a valid ConfigMap/Secret key", k)
					}
					size += len(k) + len(v)
				}
			}
			if size > 1<<20 {
				add(o, "holds %d bytes, more than the 1 MiB an object may hold", size)
			}
		}
		if o.kind() == "Secret" && m.Type == "kubernetes.io/tls" {
			// The API server refuses a TLS Secret without both.
			for _, k := range []string{"tls.crt", "tls.key"} {
				if _, ok := m.Data[k]; !ok {
					if _, ok := m.StringData[k]; !ok {
						add(o, "type kubernetes.io/tls without key %s (the API server refuses it)", k)
					}
				}
			}
		}
		if !podKinds[o.kind()] {
			continue
		}
		var w podWorkload
		if err := o.node.Decode(&w); err != nil {
			add(o, "decode: %v", err)
			continue
		}
		tplLabels := w.Spec.Template.Metadata.Labels
		if o.kind() != "Job" && !w.Spec.Selector.matches(tplLabels) {
			add(o, "spec.selector does not select the template's labels %v (the API server refuses it)", tplLabels)
		}
		if o.kind() == "StatefulSet" && !defined["Service "+o.namespace()+"/"+w.Spec.ServiceName] {
			add(o, "serviceName %q: no such Service", w.Spec.ServiceName)
		}
		spec := w.Spec.Template.Spec
		switch rp := spec.RestartPolicy; {
		case o.kind() == "Job" && rp != "OnFailure" && rp != "Never":
			add(o, "restartPolicy %q: a Job's pods need OnFailure or Never", rp)
		case o.kind() != "Job" && rp != "" && rp != "Always":
			add(o, "restartPolicy %q: want Always (or none)", rp)
		}
		vols := map[string]bool{}
		for _, v := range spec.Volumes {
			if vols[v.Name] {
				add(o, "volume %q defined twice", v.Name)
			}
			vols[v.Name] = true
			if v.ConfigMap != nil && !v.ConfigMap.Optional && !defined["ConfigMap "+o.namespace()+"/"+v.ConfigMap.Name] {
				add(o, "volume %s: ConfigMap %s/%s is defined by no manifest", v.Name, o.namespace(), v.ConfigMap.Name)
			}
			if v.Secret != nil && !v.Secret.Optional && !defined["Secret "+o.namespace()+"/"+v.Secret.SecretName] {
				add(o, "volume %s: Secret %s/%s is defined by no manifest", v.Name, o.namespace(), v.Secret.SecretName)
			}
			if v.Secret != nil && !v.Secret.Optional {
				// The kubelet refuses to start the pod when an item's
				// key is missing.
				keys, ok := secretKeys[o.namespace()+"/"+v.Secret.SecretName]
				for _, it := range v.Secret.Items {
					if ok && !keys[it.Key] {
						add(o, "volume %s: item %s is no key of Secret %s/%s (the pod would not start)", v.Name, it.Key, o.namespace(), v.Secret.SecretName)
					}
				}
			}
			if v.Projected != nil {
				// The kubelet refuses to start the pod when a source's
				// ConfigMap or an item's key is missing, and the API
				// server refuses an item path that is absolute, climbs
				// out with .., or is given twice.
				paths := map[string]bool{}
				for _, src := range v.Projected.Sources {
					cm := src.ConfigMap
					if cm == nil {
						continue
					}
					keys, ok := configKeys[o.namespace()+"/"+cm.Name]
					if !ok && !cm.Optional {
						add(o, "volume %s: ConfigMap %s/%s is defined by no manifest", v.Name, o.namespace(), cm.Name)
					}
					for _, it := range cm.Items {
						if ok && !keys[it.Key] && !cm.Optional {
							add(o, "volume %s: item %s is no key of ConfigMap %s/%s (the pod would not start)", v.Name, it.Key, o.namespace(), cm.Name)
						}
						if it.Path == "" || path.IsAbs(it.Path) || slices.Contains(strings.Split(it.Path, "/"), "..") {
							add(o, "volume %s: item %s has path %q: want a relative path without ..", v.Name, it.Key, it.Path)
						}
						if paths[it.Path] {
							add(o, "volume %s: path %q is given twice", v.Name, it.Path)
						}
						paths[it.Path] = true
					}
				}
			}
		}
		for _, vc := range w.Spec.VolumeClaimTemplates {
			vols[vc.Metadata.Name] = true
		}
		names := map[string]bool{}
		for _, c := range append(slices.Clone(spec.InitContainers), spec.Containers...) {
			if !dns1123Label.MatchString(c.Name) || names[c.Name] {
				add(o, "container name %q is not a DNS-1123 label or not unique", c.Name)
			}
			names[c.Name] = true
			ports := map[string]bool{}
			for _, p := range c.Ports {
				if p.Name == "" {
					continue
				}
				if !ianaSvcName.MatchString(p.Name) || len(p.Name) > 15 || strings.Contains(p.Name, "--") ||
					!strings.ContainsAny(p.Name, "abcdefghijklmnopqrstuvwxyz") || ports[p.Name] {
					add(o, "container %s: port name %q is not a unique IANA service name (at most 15 characters)", c.Name, p.Name)
				}
				ports[p.Name] = true
			}
			for which, pr := range map[string]*podProbe{"readinessProbe": c.ReadinessProbe, "livenessProbe": c.LivenessProbe, "startupProbe": c.StartupProbe} {
				if pr == nil {
					continue
				}
				var port any
				switch {
				case pr.HTTPGet != nil:
					port = pr.HTTPGet.Port
				case pr.TCPSocket != nil:
					port = pr.TCPSocket.Port
				}
				if s, ok := port.(string); ok && !ports[s] {
					add(o, "container %s: %s uses port %q, which the container does not name", c.Name, which, s)
				}
			}
			for _, m := range c.VolumeMounts {
				if !vols[m.Name] {
					add(o, "container %s: volumeMount %q names no volume of the pod (the API server refuses it)", c.Name, m.Name)
				}
			}
			for _, e := range c.Env {
				// The kubelet refuses to start a container whose variable
				// names a missing key (unless optional).
				if e.ValueFrom == nil {
					continue
				}
				for kind, ref := range map[string]*optionalKeyRef{"Secret": e.ValueFrom.SecretKeyRef, "ConfigMap": e.ValueFrom.ConfigMapKeyRef} {
					if ref == nil || ref.Optional {
						continue
					}
					keys := secretKeys
					if kind == "ConfigMap" {
						keys = configKeys
					}
					have, ok := keys[o.namespace()+"/"+ref.Name]
					switch {
					case !ok:
						add(o, "container %s: %s comes from %s %s/%s, which no manifest defines", c.Name, e.Name, kind, o.namespace(), ref.Name)
					case !have[ref.Key]:
						add(o, "container %s: %s comes from key %s, which %s %s/%s lacks (the container would not start)", c.Name, e.Name, ref.Key, kind, o.namespace(), ref.Name)
					}
				}
			}
			for _, ef := range c.EnvFrom {
				if ef.SecretRef != nil && !defined["Secret "+o.namespace()+"/"+ef.SecretRef.Name] {
					add(o, "container %s: envFrom Secret %s is defined by no manifest", c.Name, ef.SecretRef.Name)
				}
				if ef.ConfigMapRef != nil && !defined["ConfigMap "+o.namespace()+"/"+ef.ConfigMapRef.Name] {
					add(o, "container %s: envFrom ConfigMap %s is defined by no manifest", c.Name, ef.ConfigMapRef.Name)
				}
			}
			for _, res := range []string{"cpu", "memory"} {
				req, hasReq := c.Resources.Requests[res]
				lim, hasLim := c.Resources.Limits[res]
				r, errR := parseQuantity(req)
				l, errL := parseQuantity(lim)
				if hasReq && errR != nil {
					add(o, "container %s: requests.%s: %v", c.Name, res, errR)
				}
				if hasLim && errL != nil {
					add(o, "container %s: limits.%s: %v", c.Name, res, errL)
				}
				if hasReq && hasLim && errR == nil && errL == nil && r > l {
					add(o, "container %s: requests.%s %s exceeds limits.%s %s (the API server refuses it)", c.Name, res, req, res, lim)
				}
			}
		}
		pods = append(pods, pod{o, tplLabels, spec})
	}
	for _, o := range objs {
		if o.kind() != "Service" {
			continue
		}
		var s serviceSpec
		if err := o.node.Decode(&s); err != nil {
			add(o, "decode: %v", err)
			continue
		}
		if len(s.Spec.Selector) == 0 {
			continue // endpoints managed by hand
		}
		sel := &selector{MatchLabels: s.Spec.Selector}
		var selected []pod
		for _, p := range pods {
			if p.obj.namespace() == o.namespace() && p.obj.kind() != "Job" && sel.matches(p.labels) {
				selected = append(selected, p)
			}
		}
		if len(selected) == 0 {
			add(o, "selector %v selects no Deployment or StatefulSet pod", s.Spec.Selector)
			continue
		}
		for _, sp := range s.Spec.Ports {
			name, ok := sp.TargetPort.(string)
			if !ok {
				continue
			}
			for _, p := range selected {
				found := false
				for _, c := range p.spec.Containers {
					for _, cp := range c.Ports {
						found = found || cp.Name == name
					}
				}
				if !found {
					add(o, "port %s: targetPort %q is not a port of %s", sp.Name, name, p.obj)
				}
			}
		}
	}
	slices.Sort(probs)
	return probs
}

// labelKeyProblem checks a label or annotation key: an optional DNS
// subdomain prefix and a name of at most 63 characters.
func labelKeyProblem(k string) string {
	prefix, name, hasPrefix := strings.Cut(k, "/")
	if !hasPrefix {
		prefix, name = "", k
	}
	if hasPrefix && (!dns1123Subdomain.MatchString(prefix) || len(prefix) > 253) {
		return "prefix is not a DNS subdomain"
	}
	if len(name) == 0 || len(name) > 63 || !labelValue.MatchString(name) {
		return "name is not 1-63 characters of [A-Za-z0-9_.-] beginning and ending alphanumeric"
	}
	return ""
}

// TestAPIServerRules: what the schemas cannot check but the API server or
// the kubelet refuses, on what kustomize builds.
func TestAPIServerRules(t *testing.T) {
	_, objs := kustomizeBuild(t)
	for _, p := range apiProblems(objs) {
		t.Error(p)
	}
}

// TestAPIServerRulesCatch: each rule of apiProblems refuses a manifest
// broken the way it describes (so that a rule cannot silently pass).
func TestAPIServerRulesCatch(t *testing.T) {
	base := `apiVersion: v1
kind: ConfigMap
metadata: {name: cfg, namespace: default}
data: {KEY: v}
---
apiVersion: v1
kind: Secret
metadata: {name: tls, namespace: default}
type: kubernetes.io/tls
stringData:
  tls.crt: CHANGE_ME
  tls.key: CHANGE_ME
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: default}
spec:
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: http}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: default, labels: {app: web}}
spec:
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
        - name: web
          image: x
          ports: [{name: http, containerPort: 8080}]
          readinessProbe: {httpGet: {path: /, port: http}}
          resources: {requests: {cpu: 100m, memory: 64Mi}, limits: {cpu: "1", memory: 128Mi}}
          envFrom: [{configMapRef: {name: cfg}}]
          volumeMounts: [{name: c, mountPath: /c}]
      volumes: [{name: c, configMap: {name: cfg}}]
---
apiVersion: batch/v1
kind: Job
metadata: {name: once, namespace: default}
spec:
  template:
    spec:
      restartPolicy: Never
      containers: [{name: once, image: x}]
`
	parse := func(t *testing.T, s string) []*object {
		t.Helper()
		objs, err := parseManifest("test", []byte(s))
		if err != nil {
			t.Fatal(err)
		}
		return objs
	}
	if probs := apiProblems(parse(t, base)); len(probs) != 0 {
		t.Fatalf("the valid base has problems: %q", probs)
	}
	tests := []struct {
		name, old, new, want string
	}{
		{"selector misses the template", "selector: {matchLabels: {app: web}}", "selector: {matchLabels: {app: webx}}", "does not select the template"},
		{"service selects nothing", "selector: {app: web}\n", "selector: {app: nothing}\n", "selects no Deployment"},
		{"target port unnamed in the pod", "targetPort: http}", "targetPort: https}", `targetPort "https"`},
		{"probe on an unnamed port", "port: http}}", "port: metrics}}", `uses port "metrics"`},
		{"requests above limits", "limits: {cpu: \"1\"", "limits: {cpu: 50m", "exceeds limits.cpu"},
		{"bad quantity", "memory: 128Mi}", "memory: 128MB}", `"128MB" is not a quantity`},
		{"mount of no volume", "volumeMounts: [{name: c,", "volumeMounts: [{name: d,", `volumeMount "d"`},
		{"volume of an undefined ConfigMap", "configMap: {name: cfg}}]", "configMap: {name: gone}}]", "ConfigMap default/gone is defined by no manifest"},
		{"projected volume of an undefined ConfigMap", "volumes: [{name: c, configMap: {name: cfg}}]", "volumes: [{name: c, projected: {sources: [{configMap: {name: gone}}]}}]", "ConfigMap default/gone is defined by no manifest"},
		{"projected item of a missing key", "volumes: [{name: c, configMap: {name: cfg}}]", "volumes: [{name: c, projected: {sources: [{configMap: {name: cfg, items: [{key: GONE, path: sub/gone}]}}]}}]", "item GONE is no key of ConfigMap default/cfg"},
		{"projected item climbing out", "volumes: [{name: c, configMap: {name: cfg}}]", "volumes: [{name: c, projected: {sources: [{configMap: {name: cfg, items: [{key: KEY, path: ../key}]}}]}}]", `path "../key"`},
		{"envFrom an undefined ConfigMap", "configMapRef: {name: cfg}", "configMapRef: {name: gone}", "envFrom ConfigMap gone"},
		{"Job restarting Always", "restartPolicy: Never", "restartPolicy: Always", "OnFailure or Never"},
		{"upper-case name", "metadata: {name: web, namespace: default, labels", "metadata: {name: Web, namespace: default, labels", `name "Web"`},
		{"long port name", "ports: [{name: http, containerPort", "ports: [{name: http-with-a-long-name, containerPort", "IANA service name"},
		{"bad label value", "labels: {app: web}}\nspec:\n  selector", "labels: {app: web, x: -bad}}\nspec:\n  selector", `value "-bad"`},
		{"bad ConfigMap key", "data: {KEY: v}", "data: {KEY: v, \"a b\": v}", `key "a b"`},
		{"service name not DNS-1035", "metadata: {name: web, namespace: default}\nspec:\n  selector", "metadata: {name: 1web, namespace: default}\nspec:\n  selector", "DNS-1035"},
		{"secret item of a missing key", "volumes: [{name: c, configMap: {name: cfg}}]", "volumes: [{name: c, configMap: {name: cfg}}, {name: s, secret: {secretName: tls, items: [{key: ca.pem, path: ca.pem}]}}]", "item ca.pem is no key of Secret default/tls"},
		{"TLS Secret without its key", "  tls.key: CHANGE_ME\n", "", "without key tls.key"},
		{"variable from a missing Secret key", "envFrom: [{configMapRef: {name: cfg}}]", "envFrom: [{configMapRef: {name: cfg}}]\n          env: [{name: PW, valueFrom: {secretKeyRef: {name: tls, key: password}}}]", "key password, which Secret default/tls lacks"},
		{"variable from a missing ConfigMap", "envFrom: [{configMapRef: {name: cfg}}]", "envFrom: [{configMapRef: {name: cfg}}]\n          env: [{name: X, valueFrom: {configMapKeyRef: {name: gone, key: X}}}]", "ConfigMap default/gone, which no manifest defines"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if !strings.Contains(base, tt.old) {
				t.Fatalf("the base has no %q", tt.old)
			}
			probs := apiProblems(parse(t, strings.Replace(base, tt.old, tt.new, 1)))
			if !slices.ContainsFunc(probs, func(p string) bool { return strings.Contains(p, tt.want) }) {
				t.Errorf("got problems %q, want one containing %q", probs, tt.want)
			}
		})
	}
}

// TestDatabasesHaveOwners: every database otus-pg creates has an owner that
// connects to it (a service's URL in the Secret saga-db, whose migration
// Job TestWorkloads requires, or Keycloak, which migrates its own), with its
// own login role and password; and every database an owner connects to is
// created. A database added without an owner (such as the seed's stock,
// k8s/README.md) fails.
func TestDatabasesHaveOwners(t *testing.T) {
	objs := manifests(t)
	init := find(objs, "ConfigMap", "default", "otus-pg-init")
	if init == nil {
		t.Fatal("no ConfigMap default/otus-pg-init")
	}
	var cm struct {
		Data map[string]string `yaml:"data"`
	}
	init.decode(t, &cm)
	var created []string
	for _, script := range cm.Data {
		if m := regexp.MustCompile(`(?m)^\s*for db in ([a-z0-9_ ]+); do$`).FindStringSubmatch(script); m != nil {
			created = append(created, strings.Fields(m[1])...)
		}
	}
	if len(created) == 0 {
		t.Fatalf("%s: no `for db in ...; do` loop found", init)
	}
	slices.Sort(created)
	passwords := secretKeys(t, objs, "default", "otus-pg")

	owners := map[string][]string{} // database -> who connects (role@owner)
	dbURL := regexp.MustCompile(`^postgres(?:ql)?://([^:@/]+)(?::[^@]*)?@otus-pg\.default\.svc\.cluster\.local:5432/([^?/]+)`)
	sagaDB := find(objs, "Secret", "default", "saga-db")
	if sagaDB == nil {
		t.Fatal("no Secret default/saga-db")
	}
	var sec struct {
		StringData map[string]string `yaml:"stringData"`
	}
	sagaDB.decode(t, &sec)
	for key, u := range sec.StringData {
		m := dbURL.FindStringSubmatch(u)
		if m == nil {
			t.Errorf("%s: %s is not a URL of otus-pg: %q", sagaDB, key, u)
			continue
		}
		owners[m[2]] = append(owners[m[2]], m[1]+"@"+key)
	}
	// Keycloak (auth namespace) connects with KC_DB_URL and KC_DB_USERNAME.
	kc := find(objs, "Deployment", "auth", "keycloak")
	if kc == nil {
		t.Fatal("no Deployment auth/keycloak")
	}
	var w workload
	kc.decode(t, &w)
	for _, c := range w.Spec.Template.Spec.Containers {
		var url, user string
		for _, e := range c.Env {
			switch e.Name {
			case "KC_DB_URL":
				url = e.Value
			case "KC_DB_USERNAME":
				user = e.Value
			}
		}
		m := regexp.MustCompile(`^jdbc:postgresql://otus-pg\.default\.svc\.cluster\.local:5432/([^?/]+)`).FindStringSubmatch(url)
		if m == nil {
			t.Errorf("%s: KC_DB_URL %q is not a database of otus-pg", kc, url)
			continue
		}
		owners[m[1]] = append(owners[m[1]], user+"@keycloak")
	}

	for _, db := range created {
		if len(owners[db]) == 0 {
			t.Errorf("otus-pg creates database %q, which nothing connects to: a database without an owner (see k8s/README.md, Databases)", db)
		}
		if !slices.Contains(passwords, "PG_PASSWORD_"+strings.ToUpper(db)) {
			t.Errorf("otus-pg creates role %q without a password key PG_PASSWORD_%s in Secret otus-pg", db, strings.ToUpper(db))
		}
		for _, who := range owners[db] {
			// The init script names each role after its database.
			if role, _, _ := strings.Cut(who, "@"); role != db {
				t.Errorf("%s connects to database %q as role %q; otus-pg creates only role %q for it", who, db, role, db)
			}
		}
	}
	for db, who := range owners {
		if !slices.Contains(created, db) {
			t.Errorf("%v connect to database %q, which otus-pg does not create", who, db)
		}
	}
	t.Logf("databases and owners: %v", owners)
}
