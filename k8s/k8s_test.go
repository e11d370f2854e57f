package k8s

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/portfolio-counselor/sagamachine/internal/imagebuild"
)

var update = flag.Bool("update", false, "regenerate apps/sagas-configmap.yaml and the sagas checksum and migration items in apps/saga-machine.yaml from sagas/*.yaml and sagas/migrations/*.yaml")

const (
	// imagePrefix marks the containers that run one of this repository's
	// commands: imagePrefix + <directory under cmd/> + ":" + tag, the
	// images `make images` builds (internal/imagebuild).
	imagePrefix = imagebuild.Registry + "/"
	// sagasConfigMapFile holds the saga definitions for saga-machine.
	sagasConfigMapFile = "apps/sagas-configmap.yaml"
	sagasConfigMapName = "saga-definitions"
	// migrationsConfigMapName holds the migrations of running sagas
	// (sagas/migrations/*.yaml), placed under migrationsDir of the same
	// volume.
	migrationsConfigMapName = "saga-migrations"
	migrationsDir           = "migrations"
	// sagasChecksumKey is the pod-template annotation that carries the
	// checksum of the definitions, so that a changed definition rolls out.
	sagasChecksumKey  = "sagamachine.portfolio-counselor.github.io/sagas-sha256"
	sagaMachineFile   = "apps/saga-machine.yaml"
	repoRoot          = ".."
	kustomizationFile = "kustomization.yaml"
)

// object is one YAML document of a manifest file.
type object struct {
	file  string
	index int // document index in the file, from 0
	node  yaml.Node
	meta  struct {
		APIVersion string `yaml:"apiVersion"`
		Kind       string `yaml:"kind"`
		Metadata   struct {
			Name      string `yaml:"name"`
			Namespace string `yaml:"namespace"`
		} `yaml:"metadata"`
	}
}

func (o *object) String() string {
	return fmt.Sprintf("%s#%d %s %s/%s", o.file, o.index, o.meta.Kind, o.meta.Metadata.Namespace, o.meta.Metadata.Name)
}

func (o *object) kind() string      { return o.meta.Kind }
func (o *object) name() string      { return o.meta.Metadata.Name }
func (o *object) namespace() string { return o.meta.Metadata.Namespace }

// decode decodes the whole document into v.
func (o *object) decode(tb testing.TB, v any) {
	tb.Helper()
	if err := o.node.Decode(v); err != nil {
		tb.Fatalf("%s: decode as %T: %v", o, v, err)
	}
}

// kustomizationResources lists the files kustomization.yaml applies.
func kustomizationResources(tb testing.TB) []string {
	tb.Helper()
	data, err := os.ReadFile(kustomizationFile)
	if err != nil {
		tb.Fatalf("read the kustomization: %v", err)
	}
	var k struct {
		APIVersion string   `yaml:"apiVersion"`
		Kind       string   `yaml:"kind"`
		Resources  []string `yaml:"resources"`
	}
	if err := yaml.Unmarshal(data, &k); err != nil {
		tb.Fatalf("parse %s: %v", kustomizationFile, err)
	}
	if k.Kind != "Kustomization" || k.APIVersion == "" {
		tb.Fatalf("%s: got kind %q apiVersion %q, want a Kustomization", kustomizationFile, k.Kind, k.APIVersion)
	}
	return k.Resources
}

// manifestFiles lists every *.yaml file under k8s/ except the kustomization,
// Prometheus rule files (*.rules.yaml: monitoring/alerts.rules.yaml, which
// the ConfigMap monitoring/prometheus-rules.yaml carries), Prometheus scrape
// configuration files (*.scrape.yaml: monitoring/saga-machine.scrape.yaml)
// and test data (testdata/ directories: promtool's rule tests).
func manifestFiles(tb testing.TB) []string {
	tb.Helper()
	var files []string
	err := filepath.WalkDir(".", func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && d.Name() == "testdata" {
			return filepath.SkipDir
		}
		if strings.HasSuffix(p, ".rules.yaml") || strings.HasSuffix(p, ".scrape.yaml") {
			return nil
		}
		if !d.IsDir() && (strings.HasSuffix(p, ".yaml") || strings.HasSuffix(p, ".yml")) && p != kustomizationFile {
			files = append(files, filepath.ToSlash(p))
		}
		return nil
	})
	if err != nil {
		tb.Fatalf("list the manifests: %v", err)
	}
	sort.Strings(files)
	return files
}

// parseManifest splits a multi-document YAML file into objects.
func parseManifest(file string, data []byte) ([]*object, error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var objs []*object
	for i := 0; ; i++ {
		o := &object{file: file, index: i}
		err := dec.Decode(&o.node)
		if errors.Is(err, io.EOF) {
			return objs, nil
		}
		if err != nil {
			return objs, fmt.Errorf("%s: document %d: %w", file, i, err)
		}
		if err := o.node.Decode(&o.meta); err != nil {
			return objs, fmt.Errorf("%s: document %d: %w", file, i, err)
		}
		objs = append(objs, o)
	}
}

var (
	loadOnce sync.Once
	loaded   []*object
	loadErr  error
)

// manifests parses every file the kustomization applies (once per test
// binary; the -update run rewrites files before the first call).
func manifests(tb testing.TB) []*object {
	tb.Helper()
	res := kustomizationResources(tb)
	loadOnce.Do(func() {
		var errs []error
		for _, f := range res {
			data, err := os.ReadFile(f)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			objs, err := parseManifest(f, data)
			errs = append(errs, err)
			loaded = append(loaded, objs...)
		}
		loadErr = errors.Join(errs...)
	})
	if loadErr != nil {
		tb.Fatalf("parse the manifests: %v", loadErr)
	}
	return loaded
}

func find(objs []*object, kind, namespace, name string) *object {
	for _, o := range objs {
		if o.kind() == kind && o.namespace() == namespace && o.name() == name {
			return o
		}
	}
	return nil
}

func TestKustomizationListsEveryManifest(t *testing.T) {
	res := kustomizationResources(t)
	files := manifestFiles(t)
	listed := slices.Sorted(slices.Values(res))
	if !slices.Equal(listed, files) {
		t.Errorf("kustomization resources and manifest files differ:\n got resources %q\nwant the files %q", listed, files)
	}
	if dup := len(res) - len(slices.Compact(slices.Clone(listed))); dup != 0 {
		t.Errorf("kustomization lists %d resources twice", dup)
	}
}

func TestManifestsParse(t *testing.T) {
	for _, f := range manifestFiles(t) {
		t.Run(f, func(t *testing.T) {
			data, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			objs, err := parseManifest(f, data)
			if err != nil {
				t.Fatal(err)
			}
			if len(objs) == 0 {
				t.Fatalf("%s holds no YAML document", f)
			}
			for _, o := range objs {
				if o.node.Kind != yaml.DocumentNode || len(o.node.Content) != 1 || o.node.Content[0].Kind != yaml.MappingNode {
					t.Errorf("%s: got a document that is not a mapping (empty document or stray ---?)", o)
					continue
				}
				if o.meta.APIVersion == "" {
					t.Errorf("%s: missing apiVersion", o)
				}
				if o.kind() == "" {
					t.Errorf("%s: missing kind", o)
				}
				if o.name() == "" {
					t.Errorf("%s: missing metadata.name", o)
				}
				// Every namespaced object names its namespace: the
				// seed's three namespaces are all used.
				if o.kind() != "Namespace" && o.namespace() == "" {
					t.Errorf("%s: missing metadata.namespace", o)
				}
			}
		})
	}
	seen := map[string]*object{}
	for _, o := range manifests(t) {
		key := o.kind() + " " + o.namespace() + "/" + o.name()
		if first, dup := seen[key]; dup {
			t.Errorf("%s: %s is already defined at %s", o, key, first)
		}
		seen[key] = o
	}
}

// TestNoDevHeaderMode: the development header mode lets anyone claim any
// identity; it must never be switched on in a deployment.
func TestNoDevHeaderMode(t *testing.T) {
	forbidden := []string{"dev-header", "dev_header", "x-dev-user", "x-dev-roles"}
	for _, f := range append(manifestFiles(t), kustomizationFile) {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		low := strings.ToLower(string(data))
		for _, bad := range forbidden {
			if strings.Contains(low, bad) {
				t.Errorf("%s contains %q: the dev header mode must never appear in the manifests", f, bad)
			}
		}
	}
}

// Minimal typed views of the workload objects.
type (
	keyRef struct {
		Name string `yaml:"name"`
		Key  string `yaml:"key"`
	}
	envVar struct {
		Name      string `yaml:"name"`
		Value     string `yaml:"value"`
		ValueFrom *struct {
			SecretKeyRef    *keyRef `yaml:"secretKeyRef"`
			ConfigMapKeyRef *keyRef `yaml:"configMapKeyRef"`
			FieldRef        *struct {
				FieldPath string `yaml:"fieldPath"`
			} `yaml:"fieldRef"`
		} `yaml:"valueFrom"`
	}
	probe struct {
		HTTPGet *struct {
			Path string `yaml:"path"`
			Port any    `yaml:"port"`
		} `yaml:"httpGet"`
	}
	container struct {
		Name            string   `yaml:"name"`
		Image           string   `yaml:"image"`
		ImagePullPolicy string   `yaml:"imagePullPolicy"`
		Command         []string `yaml:"command"`
		Args            []string `yaml:"args"`
		Env             []envVar `yaml:"env"`
		EnvFrom         []any    `yaml:"envFrom"`
		Ports           []struct {
			Name          string `yaml:"name"`
			ContainerPort int    `yaml:"containerPort"`
		} `yaml:"ports"`
		ReadinessProbe *probe `yaml:"readinessProbe"`
		LivenessProbe  *probe `yaml:"livenessProbe"`
		Resources      struct {
			Requests map[string]string `yaml:"requests"`
			Limits   map[string]string `yaml:"limits"`
		} `yaml:"resources"`
		VolumeMounts []volumeMount `yaml:"volumeMounts"`
	}
	volumeMount struct {
		Name      string `yaml:"name"`
		MountPath string `yaml:"mountPath"`
		SubPath   string `yaml:"subPath"`
	}
	// keyToPath is an item of a Secret or ConfigMap volume.
	keyToPath struct {
		Key  string `yaml:"key"`
		Path string `yaml:"path"`
	}
	volume struct {
		Name      string `yaml:"name"`
		ConfigMap *struct {
			Name string `yaml:"name"`
		} `yaml:"configMap"`
		Secret *struct {
			SecretName string      `yaml:"secretName"`
			Items      []keyToPath `yaml:"items"`
		} `yaml:"secret"`
		EmptyDir  *struct{} `yaml:"emptyDir"`
		Projected *struct {
			Sources []struct {
				ConfigMap *projectedConfigMap `yaml:"configMap"`
			} `yaml:"sources"`
		} `yaml:"projected"`
	}
	podTemplate struct {
		Metadata struct {
			Labels      map[string]string `yaml:"labels"`
			Annotations map[string]string `yaml:"annotations"`
		} `yaml:"metadata"`
		Spec struct {
			Containers     []container `yaml:"containers"`
			InitContainers []container `yaml:"initContainers"`
			Volumes        []volume    `yaml:"volumes"`
		} `yaml:"spec"`
	}
	workload struct {
		Spec struct {
			Template podTemplate `yaml:"template"`
		} `yaml:"spec"`
	}
)

// ourContainer is a container that runs one of the repository's commands.
type ourContainer struct {
	obj *object
	tpl podTemplate
	c   container
	cmd string // directory under cmd/
}

func (oc ourContainer) String() string { return fmt.Sprintf("%s container %s", oc.obj, oc.c.Name) }

// env returns the container's variable name, or nil.
func (oc ourContainer) env(name string) *envVar {
	for i := range oc.c.Env {
		if oc.c.Env[i].Name == name {
			return &oc.c.Env[i]
		}
	}
	return nil
}

// subcommand is the first argument when it is not a flag.
func (oc ourContainer) subcommand() string {
	if len(oc.c.Args) > 0 && !strings.HasPrefix(oc.c.Args[0], "-") {
		return oc.c.Args[0]
	}
	return ""
}

var podKinds = map[string]bool{"Deployment": true, "StatefulSet": true, "Job": true, "DaemonSet": true}

// ourContainers returns every container of every workload whose image is
// one of our commands.
func ourContainers(tb testing.TB, objs []*object) []ourContainer {
	tb.Helper()
	var out []ourContainer
	for _, o := range objs {
		if !podKinds[o.kind()] {
			continue
		}
		var w workload
		o.decode(tb, &w)
		for _, c := range append(slices.Clone(w.Spec.Template.Spec.InitContainers), w.Spec.Template.Spec.Containers...) {
			rest, ok := strings.CutPrefix(c.Image, imagePrefix)
			if !ok {
				continue
			}
			cmd, _, _ := strings.Cut(rest, ":")
			cmd, _, _ = strings.Cut(cmd, "@")
			out = append(out, ourContainer{obj: o, tpl: w.Spec.Template, c: c, cmd: cmd})
		}
	}
	if len(out) == 0 {
		tb.Fatalf("no container runs an image %s<cmd>", imagePrefix)
	}
	return out
}

// readNames is what a command's Go source (its package and the packages of
// this module it imports, transitively; test files excluded) can read.
type readNames struct {
	pkgs     []string        // import paths analysed
	literals map[string]bool // every string literal
	flags    map[string]bool // names registered with a flag.FlagSet method
	// derived holds the suffixes S of calls x.env("S"):
	// participants/internal/service.App.env derives <NAME>_S from the
	// participant name (e.g. DEALS_DB_URL from "deals" and "DB_URL").
	derived map[string]bool
}

// flagRegistrars maps flag.FlagSet methods to the index of their name argument.
var flagRegistrars = map[string]int{
	"String": 0, "Bool": 0, "Int": 0, "Int64": 0, "Uint": 0, "Uint64": 0, "Float64": 0, "Duration": 0,
	"Func": 0, "BoolFunc": 0,
	"StringVar": 1, "BoolVar": 1, "IntVar": 1, "Int64Var": 1, "UintVar": 1, "Uint64Var": 1,
	"Float64Var": 1, "DurationVar": 1, "TextVar": 1, "Var": 1,
}

func modulePath(tb testing.TB) string {
	tb.Helper()
	data, err := os.ReadFile(filepath.Join(repoRoot, "go.mod"))
	if err != nil {
		tb.Fatalf("read go.mod: %v", err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if m, ok := strings.CutPrefix(strings.TrimSpace(line), "module "); ok {
			return strings.TrimSpace(m)
		}
	}
	tb.Fatal("go.mod names no module")
	return ""
}

var (
	sourceMu    sync.Mutex
	sourceCache = map[string]*readNames{}
)

// analyseCommand parses cmd/<name> and the module's packages it imports.
func analyseCommand(tb testing.TB, name string) *readNames {
	tb.Helper()
	sourceMu.Lock()
	defer sourceMu.Unlock()
	if rn, ok := sourceCache[name]; ok {
		return rn
	}
	mod := modulePath(tb)
	rn := &readNames{literals: map[string]bool{}, flags: map[string]bool{}, derived: map[string]bool{}}
	start := mod + "/cmd/" + name
	queue := []string{start}
	seen := map[string]bool{start: true}
	fset := token.NewFileSet()
	for len(queue) > 0 {
		pkg := queue[0]
		queue = queue[1:]
		dir := filepath.Join(repoRoot, filepath.FromSlash(strings.TrimPrefix(pkg, mod)))
		files, err := filepath.Glob(filepath.Join(dir, "*.go"))
		if err != nil {
			tb.Fatal(err)
		}
		var parsed int
		for _, f := range files {
			if strings.HasSuffix(f, "_test.go") {
				continue
			}
			file, err := parser.ParseFile(fset, f, nil, parser.SkipObjectResolution)
			if err != nil {
				tb.Fatalf("parse %s: %v", f, err)
			}
			parsed++
			for _, imp := range file.Imports {
				p, _ := strconv.Unquote(imp.Path.Value)
				if (p == mod || strings.HasPrefix(p, mod+"/")) && !seen[p] {
					seen[p] = true
					queue = append(queue, p)
				}
			}
			collectNames(file, rn)
		}
		if parsed == 0 {
			tb.Fatalf("package %s (%s) has no Go files: is cmd/%s there yet?", pkg, dir, name)
		}
		rn.pkgs = append(rn.pkgs, pkg)
	}
	sourceCache[name] = rn
	return rn
}

func collectNames(file *ast.File, rn *readNames) {
	strArg := func(call *ast.CallExpr, i int) (string, bool) {
		if i >= len(call.Args) {
			return "", false
		}
		lit, ok := call.Args[i].(*ast.BasicLit)
		if !ok || lit.Kind != token.STRING {
			return "", false
		}
		s, err := strconv.Unquote(lit.Value)
		return s, err == nil
	}
	ast.Inspect(file, func(n ast.Node) bool {
		switch n := n.(type) {
		case *ast.BasicLit:
			if n.Kind == token.STRING {
				if s, err := strconv.Unquote(n.Value); err == nil {
					rn.literals[s] = true
				}
			}
		case *ast.CallExpr:
			sel, ok := n.Fun.(*ast.SelectorExpr)
			if !ok {
				return true
			}
			if i, ok := flagRegistrars[sel.Sel.Name]; ok {
				if s, ok := strArg(n, i); ok {
					rn.flags[s] = true
				}
			}
			if sel.Sel.Name == "env" && len(n.Args) == 1 {
				if s, ok := strArg(n, 0); ok {
					rn.derived[s] = true
				}
			}
		}
		return true
	})
}

// readsEnv tells whether the command reads the variable name.
func (rn *readNames) readsEnv(cmd, name string) bool {
	if rn.literals[name] {
		return true
	}
	// <NAME>_<SUFFIX> derived by service.App.env from the participant
	// name, which must be the command's name and appear in the source.
	prefix := strings.ToUpper(strings.ReplaceAll(cmd, "-", "_")) + "_"
	suffix, ok := strings.CutPrefix(name, prefix)
	return ok && rn.derived[suffix] && rn.literals[cmd]
}

// flagName returns the name of a --flag or --flag=value argument.
func flagName(arg string) (string, bool) {
	if !strings.HasPrefix(arg, "-") {
		return "", false
	}
	name := strings.TrimLeft(arg, "-")
	name, _, _ = strings.Cut(name, "=")
	return name, true
}

// TestBinariesReadEveryEnvAndFlag: every variable and flag given to one of
// our binaries must be one its source reads (a literal in the command or a
// package of this module it imports; flags must be registered on a
// flag.FlagSet).
func TestBinariesReadEveryEnvAndFlag(t *testing.T) {
	for _, oc := range ourContainers(t, manifests(t)) {
		t.Run(oc.obj.name()+"/"+oc.c.Name, func(t *testing.T) {
			if _, err := os.Stat(filepath.Join(repoRoot, "cmd", oc.cmd)); err != nil {
				t.Fatalf("%s runs image %s, but cmd/%s does not exist: %v", oc, oc.c.Image, oc.cmd, err)
			}
			rn := analyseCommand(t, oc.cmd)
			if len(oc.c.EnvFrom) > 0 {
				t.Errorf("%s uses envFrom: list each variable under env so that this test can check it", oc)
			}
			for _, e := range oc.c.Env {
				if !rn.readsEnv(oc.cmd, e.Name) {
					t.Errorf("%s sets %s, which cmd/%s does not read (looked in %v)", oc, e.Name, oc.cmd, rn.pkgs)
				}
			}
			for _, a := range append(slices.Clone(oc.c.Command), oc.c.Args...) {
				if name, ok := flagName(a); ok {
					if !rn.flags[name] {
						t.Errorf("%s passes %s, but cmd/%s registers no flag %q", oc, a, oc.cmd, name)
					}
				}
			}
			if sub := oc.subcommand(); sub != "" && !rn.literals[sub] {
				t.Errorf("%s runs subcommand %q, which cmd/%s does not know", oc, sub, oc.cmd)
			}
		})
	}
}

// TestWorkloads checks what every Deployment of ours needs in a cluster.
func TestWorkloads(t *testing.T) {
	objs := manifests(t)
	all := ourContainers(t, objs)
	var servers, jobs []ourContainer
	for _, oc := range all {
		switch {
		case oc.obj.kind() == "Deployment":
			servers = append(servers, oc)
		case oc.obj.kind() == "Job" && oc.subcommand() == "migrate":
			jobs = append(jobs, oc)
		case oc.obj.kind() == "Job" && oc.subcommand() == "kafka-setup" && oc.cmd == "saga-machine":
			// Checked by TestKafkaSetup; it has no database.
		default:
			t.Errorf("%s: want a Deployment, a migration Job (args [migrate]) or the kafka-setup Job", oc)
		}
	}
	wantCmds := []string{"deals", "notification", "profile", "saga-machine"}
	var gotCmds []string
	for _, s := range servers {
		gotCmds = append(gotCmds, s.cmd)
	}
	slices.Sort(gotCmds)
	if !slices.Equal(gotCmds, wantCmds) {
		t.Errorf("Deployments run %v, want %v", gotCmds, wantCmds)
	}

	for _, oc := range all {
		// Variables from Secrets and ConfigMaps must name existing keys.
		for _, e := range oc.c.Env {
			if e.ValueFrom == nil {
				continue
			}
			for kind, ref := range map[string]*keyRef{"Secret": e.ValueFrom.SecretKeyRef, "ConfigMap": e.ValueFrom.ConfigMapKeyRef} {
				if ref == nil {
					continue
				}
				src := find(objs, kind, oc.obj.namespace(), ref.Name)
				if src == nil {
					t.Errorf("%s: %s comes from %s %s/%s, which no manifest defines", oc, e.Name, kind, oc.obj.namespace(), ref.Name)
					continue
				}
				var data struct {
					Data       map[string]string `yaml:"data"`
					StringData map[string]string `yaml:"stringData"`
				}
				src.decode(t, &data)
				_, inData := data.Data[ref.Key]
				_, inString := data.StringData[ref.Key]
				if !inData && !inString {
					t.Errorf("%s: %s comes from key %q of %s, which has no such key", oc, e.Name, ref.Key, src)
				}
			}
		}
		if oc.c.Resources.Requests["cpu"] == "" || oc.c.Resources.Requests["memory"] == "" ||
			oc.c.Resources.Limits["cpu"] == "" || oc.c.Resources.Limits["memory"] == "" {
			t.Errorf("%s: want cpu and memory requests and limits, got %+v", oc, oc.c.Resources)
		}
		if oc.subcommand() == "kafka-setup" {
			continue
		}
		// The database URL is a Secret and never the SQLite default.
		db := oc.dbEnv()
		if db == nil {
			t.Errorf("%s: no database URL variable (want %s)", oc, dbEnvName(oc.cmd))
		} else if db.ValueFrom == nil || db.ValueFrom.SecretKeyRef == nil {
			t.Errorf("%s: %s must come from a Secret, got value %q", oc, db.Name, db.Value)
		}
	}

	for _, s := range servers {
		for _, p := range []struct {
			name string
			pr   *probe
			path string
		}{{"readinessProbe", s.c.ReadinessProbe, "/readyz"}, {"livenessProbe", s.c.LivenessProbe, "/healthz"}} {
			if p.pr == nil || p.pr.HTTPGet == nil || p.pr.HTTPGet.Path != p.path {
				t.Errorf("%s: want %s httpGet %s", s, p.name, p.path)
			}
		}
		// A migration Job per database: same image, same database variable
		// from the same Secret key.
		var job *ourContainer
		for i := range jobs {
			if jobs[i].c.Image == s.c.Image {
				job = &jobs[i]
			}
		}
		if job == nil {
			t.Errorf("%s: no migration Job runs %s migrate", s, s.c.Image)
		} else if a, b := s.dbEnv(), job.dbEnv(); a != nil && b != nil && a.ValueFrom != nil && b.ValueFrom != nil &&
			(a.ValueFrom.SecretKeyRef == nil || b.ValueFrom.SecretKeyRef == nil || *a.ValueFrom.SecretKeyRef != *b.ValueFrom.SecretKeyRef) {
			t.Errorf("%s and %s migrate different databases", s, job)
		}
		// The participants leave migrations to the Job.
		if s.cmd != "saga-machine" && !slices.Contains(s.c.Args, "--migrate=false") {
			t.Errorf("%s: got args %q, want --migrate=false (the migration Job migrates)", s, s.c.Args)
		}
		// Every HTTP API verifies tokens from Keycloak: the issuer comes
		// from the shared ConfigMap, the audience is the service's client.
		if iss := s.env("OIDC_ISSUER"); iss == nil || iss.ValueFrom == nil || iss.ValueFrom.ConfigMapKeyRef == nil {
			t.Errorf("%s: want OIDC_ISSUER from the shared ConfigMap", s)
		}
		if aud := s.env("OIDC_AUDIENCE"); aud == nil || aud.Value != s.cmd {
			t.Errorf("%s: want OIDC_AUDIENCE %q (the service's Keycloak client)", s, s.cmd)
		}
		if s.env("SAGA_KAFKA_BROKERS") == nil {
			t.Errorf("%s: SAGA_KAFKA_BROKERS not set (saga-machine would start its embedded broker, participants would dial 127.0.0.1)", s)
		}
		// Its own Kafka principal, its password from the Secret that
		// kafka-setup sets the users from, and a stable instance id.
		if u := s.env("SAGA_KAFKA_USER"); u == nil || u.Value != s.cmd {
			t.Errorf("%s: want SAGA_KAFKA_USER %q (its own principal)", s, s.cmd)
		}
		if pw := s.env("SAGA_KAFKA_PASSWORD"); pw == nil || pw.ValueFrom == nil || pw.ValueFrom.SecretKeyRef == nil ||
			*pw.ValueFrom.SecretKeyRef != (keyRef{Name: kafkaUsersSecret, Key: s.cmd}) {
			t.Errorf("%s: want SAGA_KAFKA_PASSWORD from Secret %s key %s", s, kafkaUsersSecret, s.cmd)
		}
		if id := s.env("SAGA_KAFKA_INSTANCE_ID"); id == nil || id.ValueFrom == nil || id.ValueFrom.FieldRef == nil || id.ValueFrom.FieldRef.FieldPath != "metadata.name" {
			t.Errorf("%s: want SAGA_KAFKA_INSTANCE_ID from the pod name (fieldRef metadata.name)", s)
		}
		for _, e := range s.c.Env {
			if e.Name == "SAGA_KAFKA_PASSWORD_FILE" || (strings.Contains(e.Name, "PASSWORD") && e.Value != "") {
				t.Errorf("%s: %s is a literal; passwords come from Secrets", s, e.Name)
			}
		}
	}
}

func dbEnvName(cmd string) string {
	if cmd == "saga-machine" {
		return "SAGA_DB_URL"
	}
	return strings.ToUpper(cmd) + "_DB_URL"
}

func (oc ourContainer) dbEnv() *envVar { return oc.env(dbEnvName(oc.cmd)) }

// sagaFiles reads sagas/*.yaml, by file name.
func sagaFiles(tb testing.TB) map[string][]byte {
	tb.Helper()
	files := yamlFiles(tb, filepath.Join(repoRoot, "sagas"))
	if len(files) == 0 {
		tb.Fatal("no sagas/*.yaml")
	}
	return files
}

// migrationFiles reads sagas/migrations/*.yaml, by file name (none is
// fine: a cluster then migrates nothing).
func migrationFiles(tb testing.TB) map[string][]byte {
	tb.Helper()
	return yamlFiles(tb, filepath.Join(repoRoot, "sagas", migrationsDir))
}

// yamlFiles reads dir/*.yaml and dir/*.yml, by file name.
func yamlFiles(tb testing.TB, dir string) map[string][]byte {
	tb.Helper()
	paths, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
	if err != nil {
		tb.Fatal(err)
	}
	more, err := filepath.Glob(filepath.Join(dir, "*.yml"))
	if err != nil {
		tb.Fatal(err)
	}
	files := map[string][]byte{}
	for _, p := range append(paths, more...) {
		data, err := os.ReadFile(p)
		if err != nil {
			tb.Fatal(err)
		}
		files[filepath.Base(p)] = data
	}
	return files
}

// sagasChecksum is the SHA-256 over each definition's and each
// migration's path under SAGA_SAGAS_DIR (NAME, migrations/NAME) and bytes,
// in path order.
func sagasChecksum(files, migrations map[string][]byte) string {
	all := make(map[string][]byte, len(files)+len(migrations))
	for name, data := range files {
		all[name] = data
	}
	for name, data := range migrations {
		all[migrationsDir+"/"+name] = data
	}
	h := sha256.New()
	for _, name := range slices.Sorted(mapKeys(all)) {
		fmt.Fprintf(h, "%s\x00%d\x00", name, len(all[name]))
		h.Write(all[name])
	}
	return hex.EncodeToString(h.Sum(nil))
}

func mapKeys[V any](m map[string]V) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

// renderSagasConfigMap is the content of apps/sagas-configmap.yaml: the
// ConfigMap of the definitions, then the one of the migrations.
func renderSagasConfigMap(files, migrations map[string][]byte) ([]byte, error) {
	str := func(s string) *yaml.Node { return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: s} }
	mapping := func(kv ...*yaml.Node) *yaml.Node { return &yaml.Node{Kind: yaml.MappingNode, Content: kv} }
	configMap := func(name string, files map[string][]byte) *yaml.Node {
		data := mapping()
		for _, name := range slices.Sorted(mapKeys(files)) {
			v := str(string(files[name]))
			v.Style = yaml.LiteralStyle
			data.Content = append(data.Content, str(name), v)
		}
		return mapping(
			str("apiVersion"), str("v1"),
			str("kind"), str("ConfigMap"),
			str("metadata"), mapping(
				str("name"), str(name),
				str("namespace"), str("default"),
				str("labels"), mapping(
					str("app.kubernetes.io/name"), str("saga-machine"),
					str("app.kubernetes.io/part-of"), str("saga-machine"),
				),
			),
			str("data"), data,
		)
	}
	var buf bytes.Buffer
	buf.WriteString("# GENERATED from sagas/*.yaml and sagas/migrations/*.yaml by\n" +
		"# `go test ./k8s -run TestSagasConfigMap -update`: do not edit. saga-machine\n" +
		"# reads the definitions (saga-definitions) from the directory SAGA_SAGAS_DIR\n" +
		"# and the migrations of running sagas (saga-migrations) from its migrations/\n" +
		"# subdirectory: one projected volume (apps/saga-machine.yaml).\n")
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	for _, doc := range []*yaml.Node{configMap(sagasConfigMapName, files), configMap(migrationsConfigMapName, migrations)} {
		if err := enc.Encode(doc); err != nil {
			return nil, fmt.Errorf("encode the sagas ConfigMaps: %w", err)
		}
	}
	if err := enc.Close(); err != nil {
		return nil, fmt.Errorf("encode the sagas ConfigMaps: %w", err)
	}
	return buf.Bytes(), nil
}

var (
	checksumLine = regexp.MustCompile(`(?m)^(\s*` + regexp.QuoteMeta(sagasChecksumKey) + `: )"[^"]*"$`)
	// migrationItems is the generated items list of the saga-migrations
	// source of saga-machine's sagas volume, between its markers.
	migrationItems = regexp.MustCompile(`(?ms)^( *)# BEGIN generated migration items\n.*?^ *# END generated migration items\n`)
)

// renderMigrationItems is the items list of the saga-migrations source,
// indented by indent, with its markers: each migration at migrations/NAME.
func renderMigrationItems(indent string, migrations map[string][]byte) string {
	var b strings.Builder
	b.WriteString(indent + "# BEGIN generated migration items\n")
	if len(migrations) == 0 {
		b.WriteString(indent + "items: []\n")
	} else {
		b.WriteString(indent + "items:\n")
		for _, name := range slices.Sorted(mapKeys(migrations)) {
			fmt.Fprintf(&b, "%s  - key: %s\n%s    path: %s/%s\n", indent, name, indent, migrationsDir, name)
		}
	}
	b.WriteString(indent + "# END generated migration items\n")
	return b.String()
}

// updateSagaMachine writes the checksum and the migration items into
// apps/saga-machine.yaml.
func updateSagaMachine(sum string, migrations map[string][]byte) error {
	sm, err := os.ReadFile(sagaMachineFile)
	if err != nil {
		return err
	}
	if !checksumLine.Match(sm) {
		return fmt.Errorf("%s has no %s annotation line to update", sagaMachineFile, sagasChecksumKey)
	}
	sm = checksumLine.ReplaceAll(sm, []byte(`${1}"`+sum+`"`))
	m := migrationItems.FindSubmatch(sm)
	if m == nil {
		return fmt.Errorf("%s has no generated migration items (# BEGIN/END generated migration items) to update", sagaMachineFile)
	}
	sm = migrationItems.ReplaceAllLiteral(sm, []byte(renderMigrationItems(string(m[1]), migrations)))
	return os.WriteFile(sagaMachineFile, sm, 0o644)
}

// projectedConfigMap is one ConfigMap source of a projected volume.
type projectedConfigMap struct {
	Name  string `yaml:"name"`
	Items []struct {
		Key  string `yaml:"key"`
		Path string `yaml:"path"`
	} `yaml:"items"`
}

// TestSagasConfigMap: saga-machine in the cluster runs exactly the
// definitions of sagas/*.yaml and the migrations of
// sagas/migrations/*.yaml, and a change to either rolls the Deployment.
func TestSagasConfigMap(t *testing.T) {
	files, migrations := sagaFiles(t), migrationFiles(t)
	sum := sagasChecksum(files, migrations)
	if *update {
		out, err := renderSagasConfigMap(files, migrations)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(sagasConfigMapFile, out, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := updateSagaMachine(sum, migrations); err != nil {
			t.Fatal(err)
		}
		t.Logf("updated %s and the checksum and migration items in %s", sagasConfigMapFile, sagaMachineFile)
	}

	objs := manifests(t)
	for _, want := range []struct {
		name, dir string
		files     map[string][]byte
	}{
		{sagasConfigMapName, "sagas", files},
		{migrationsConfigMapName, "sagas/" + migrationsDir, migrations},
	} {
		cm := find(objs, "ConfigMap", "default", want.name)
		if cm == nil {
			t.Errorf("no ConfigMap default/%s (run go test ./k8s -run TestSagasConfigMap -update)", want.name)
			continue
		}
		if cm.file != sagasConfigMapFile {
			t.Errorf("%s is in %s, want the generated %s", cm, cm.file, sagasConfigMapFile)
		}
		var got struct {
			Data map[string]string `yaml:"data"`
		}
		cm.decode(t, &got)
		for name, data := range want.files {
			g, ok := got.Data[name]
			switch {
			case !ok:
				t.Errorf("%s lacks %s/%s (run go test ./k8s -run TestSagasConfigMap -update)", cm, want.dir, name)
			case g != string(data):
				t.Errorf("%s: %s differs from %s/%s (run go test ./k8s -run TestSagasConfigMap -update)", cm, name, want.dir, name)
			}
		}
		for name := range got.Data {
			if _, ok := want.files[name]; !ok {
				t.Errorf("%s holds %s, which is not in %s/", cm, name, want.dir)
			}
		}
	}

	// saga-machine mounts both where SAGA_SAGAS_DIR points, the
	// migrations under migrations/, and its pod template carries the
	// checksum.
	var sm *ourContainer
	for _, oc := range ourContainers(t, objs) {
		if oc.cmd == "saga-machine" && oc.obj.kind() == "Deployment" {
			sm = &oc
		}
	}
	if sm == nil {
		t.Fatal("no saga-machine Deployment")
	}
	dir := sm.env("SAGA_SAGAS_DIR")
	if dir == nil || dir.Value == "" {
		t.Fatalf("%s: SAGA_SAGAS_DIR not set: it would run the definitions built into the image", sm)
	}
	var mountedVolume string
	for _, m := range sm.c.VolumeMounts {
		if path.Clean(m.MountPath) == path.Clean(dir.Value) {
			mountedVolume = m.Name
		}
	}
	if mountedVolume == "" {
		t.Fatalf("%s: nothing is mounted at SAGA_SAGAS_DIR %s", sm, dir.Value)
	}
	var sources []projectedConfigMap
	for _, v := range sm.tpl.Spec.Volumes {
		if v.Name != mountedVolume {
			continue
		}
		if v.Projected == nil {
			t.Fatalf("%s: volume %s at SAGA_SAGAS_DIR is not the projected volume of %s and %s", sm, v.Name, sagasConfigMapName, migrationsConfigMapName)
		}
		for _, src := range v.Projected.Sources {
			if src.ConfigMap != nil {
				sources = append(sources, *src.ConfigMap)
			}
		}
	}
	var defs, migs *projectedConfigMap
	for i := range sources {
		switch sources[i].Name {
		case sagasConfigMapName:
			defs = &sources[i]
		case migrationsConfigMapName:
			migs = &sources[i]
		}
	}
	switch {
	case defs == nil:
		t.Errorf("%s: ConfigMap %s is not in the volume at SAGA_SAGAS_DIR %s", sm, sagasConfigMapName, dir.Value)
	case len(defs.Items) > 0:
		t.Errorf("%s: ConfigMap %s has items: every definition must be at the root of SAGA_SAGAS_DIR", sm, sagasConfigMapName)
	}
	if migs == nil {
		t.Errorf("%s: ConfigMap %s is not in the volume at SAGA_SAGAS_DIR %s: the cluster cannot migrate running sagas", sm, migrationsConfigMapName, dir.Value)
	} else {
		placed := map[string]bool{}
		for _, it := range migs.Items {
			if _, ok := migrations[it.Key]; !ok {
				t.Errorf("%s: item %s of ConfigMap %s is not in sagas/%s/ (the pod would not start: the key is missing)", sm, it.Key, migrationsConfigMapName, migrationsDir)
			}
			if want := migrationsDir + "/" + it.Key; it.Path != want {
				t.Errorf("%s: item %s of ConfigMap %s is placed at %s, want %s", sm, it.Key, migrationsConfigMapName, it.Path, want)
			}
			placed[it.Key] = true
		}
		for name := range migrations {
			if !placed[name] {
				t.Errorf("%s: sagas/%s/%s is not placed in SAGA_SAGAS_DIR (run go test ./k8s -run TestSagasConfigMap -update)", sm, migrationsDir, name)
			}
		}
	}
	if got, want := sm.tpl.Metadata.Annotations[sagasChecksumKey], sum; got != want {
		t.Errorf("%s: annotation %s = %q, want %q (run go test ./k8s -run TestSagasConfigMap -update)", sm, sagasChecksumKey, got, want)
	}
}

// TestIngressRoutes: every backend exists with the named port, and the
// public paths reach the right service.
func TestIngressRoutes(t *testing.T) {
	objs := manifests(t)
	type route struct{ host, path, ns, svc string }
	var routes []route
	for _, o := range objs {
		if o.kind() != "Ingress" {
			continue
		}
		var ing struct {
			Spec struct {
				IngressClassName string `yaml:"ingressClassName"`
				Rules            []struct {
					Host string `yaml:"host"`
					HTTP struct {
						Paths []struct {
							Path     string `yaml:"path"`
							PathType string `yaml:"pathType"`
							Backend  struct {
								Service struct {
									Name string `yaml:"name"`
									Port struct {
										Name   string `yaml:"name"`
										Number int    `yaml:"number"`
									} `yaml:"port"`
								} `yaml:"service"`
							} `yaml:"backend"`
						} `yaml:"paths"`
					} `yaml:"http"`
				} `yaml:"rules"`
			} `yaml:"spec"`
		}
		o.decode(t, &ing)
		if ing.Spec.IngressClassName != "nginx" {
			t.Errorf("%s: ingressClassName %q, want nginx", o, ing.Spec.IngressClassName)
		}
		for _, r := range ing.Spec.Rules {
			for _, p := range r.HTTP.Paths {
				b := p.Backend.Service
				routes = append(routes, route{r.Host, p.Path, o.namespace(), b.Name})
				svc := find(objs, "Service", o.namespace(), b.Name)
				if svc == nil {
					t.Errorf("%s: path %s goes to Service %s/%s, which no manifest defines", o, p.Path, o.namespace(), b.Name)
					continue
				}
				var s struct {
					Spec struct {
						Ports []struct {
							Name string `yaml:"name"`
							Port int    `yaml:"port"`
						} `yaml:"ports"`
					} `yaml:"spec"`
				}
				svc.decode(t, &s)
				found := false
				for _, sp := range s.Spec.Ports {
					found = found || (b.Port.Name != "" && sp.Name == b.Port.Name) || (b.Port.Number != 0 && sp.Port == b.Port.Number)
				}
				if !found {
					t.Errorf("%s: path %s names port %+v, which %s does not have", o, p.Path, b.Port, svc)
				}
			}
		}
	}
	tests := []struct {
		path, svc string
	}{
		{"/api/v1", "saga-machine"},
		{"/console", "saga-machine"},
		{"/deals/api/v1(/|$)(.*)", "deals"},
		{"/profile/api/v1(/|$)(.*)", "profile"},
		{"/notification/api/v1(/|$)(.*)", "notification"},
		{"/auth", "keycloak"},
		{"/oauth2", "oauth2-proxy"},
	}
	for _, tt := range tests {
		var got []string
		for _, r := range routes {
			if r.path == tt.path {
				got = append(got, r.svc)
			}
		}
		if len(got) != 1 || got[0] != tt.svc {
			t.Errorf("path %s goes to %v, want [%s]", tt.path, got, tt.svc)
		}
	}
}
