package k8s

import (
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"testing"

	"github.com/portfolio-counselor/sagamachine/engine/definition"
	"github.com/portfolio-counselor/sagamachine/internal/system"
)

// TestSagasVolumeLoads lays out saga-machine's sagas volume as the kubelet
// writes a projected volume (the files in a timestamped directory, ..data
// pointing at it, a symlink per top-level entry: every definition and the
// migrations directory) from the ConfigMaps and items of the manifests, and
// loads it the way saga-machine does at start (system.LoadCatalog, then the
// migrations/ subdirectory checked against the definitions): every shipped
// definition and migration is there and fits.
func TestSagasVolumeLoads(t *testing.T) {
	objs := manifests(t)
	data := map[string]map[string]string{}
	for _, name := range []string{sagasConfigMapName, migrationsConfigMapName} {
		cm := find(objs, "ConfigMap", "default", name)
		if cm == nil {
			t.Fatalf("no ConfigMap default/%s", name)
		}
		var got struct {
			Data map[string]string `yaml:"data"`
		}
		cm.decode(t, &got)
		data[name] = got.Data
	}
	var sm *ourContainer
	for _, oc := range ourContainers(t, objs) {
		if oc.cmd == "saga-machine" && oc.obj.kind() == "Deployment" {
			sm = &oc
		}
	}
	if sm == nil {
		t.Fatal("no saga-machine Deployment")
	}
	files := map[string]string{} // path in the volume → content
	for _, v := range sm.tpl.Spec.Volumes {
		if v.Name != "sagas" || v.Projected == nil {
			continue
		}
		for _, src := range v.Projected.Sources {
			if src.ConfigMap == nil {
				continue
			}
			cm := data[src.ConfigMap.Name]
			if len(src.ConfigMap.Items) == 0 {
				for k, c := range cm {
					files[k] = c
				}
			}
			for _, it := range src.ConfigMap.Items {
				c, ok := cm[it.Key]
				if !ok {
					t.Fatalf("item %s: no such key in ConfigMap %s", it.Key, src.ConfigMap.Name)
				}
				files[it.Path] = c
			}
		}
	}
	if len(files) == 0 {
		t.Fatal("saga-machine has no projected volume sagas")
	}

	// The kubelet's atomic writer: ..<timestamp>/<files>, ..data →
	// ..<timestamp>, and each top-level name → ..data/<name>.
	dir := t.TempDir()
	const stamp = "..2026_11_26_10_00_00.000000001"
	top := map[string]bool{}
	for p, c := range files {
		full := filepath.Join(dir, stamp, filepath.FromSlash(p))
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte(c), 0o644); err != nil {
			t.Fatal(err)
		}
		first, _, _ := strings.Cut(p, "/")
		top[first] = true
	}
	if err := os.Symlink(stamp, filepath.Join(dir, "..data")); err != nil {
		t.Fatal(err)
	}
	for name := range top {
		if err := os.Symlink(path.Join("..data", name), filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}

	fsys := os.DirFS(dir)
	cat, err := system.LoadCatalog(fsys, nil)
	if err != nil {
		t.Fatalf("load the definitions from the volume: %v", err)
	}
	if got, want := len(cat.List()), len(sagaFiles(t)); got != want {
		t.Errorf("the volume holds %d definitions, sagas/ %d", got, want)
	}
	sub, err := fs.Sub(fsys, migrationsDir)
	if err != nil {
		t.Fatal(err)
	}
	var defs []*definition.Definition
	for _, m := range cat.List() {
		defs = append(defs, m.Definition())
	}
	migs, probs := definition.LoadMigrations(sub, defs)
	if len(probs) > 0 {
		t.Fatalf("the migrations in the volume: %v", probs)
	}
	if cat, err = cat.WithMigrations(migs...); err != nil {
		t.Fatalf("the migrations in the volume do not fit its definitions: %v", err)
	}
	if got, want := len(cat.Migrations()), len(migrationFiles(t)); got != want || want == 0 {
		t.Errorf("saga-machine would load %d migrations from the volume; sagas/migrations has %d", got, want)
	}
}
