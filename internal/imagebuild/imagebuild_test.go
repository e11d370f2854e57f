package imagebuild

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

const repoRoot = "../.."

func TestCommands(t *testing.T) {
	got, err := Commands(repoRoot)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"deals", "notification", "profile", "saga-machine", "sagactl"} {
		if !slices.Contains(got, want) {
			t.Errorf("Commands(repo) = %q, want it to hold %q", got, want)
		}
	}

	dir := t.TempDir()
	write := func(p, content string) {
		t.Helper()
		p = filepath.Join(dir, p)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("cmd/b-main/main.go", "// Command b.\npackage main\n\nfunc main() {}\n")
	write("cmd/a-main/doc.go", "package main\n")
	write("cmd/lib/lib.go", "package lib\n")
	write("cmd/onlytest/x_test.go", "package main\n")
	write("cmd/empty/README.md", "no Go here\n")
	write("cmd/file.go", "package main\n")
	got, err = Commands(dir)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"a-main", "b-main"}; !slices.Equal(got, want) {
		t.Errorf("Commands = %q, want %q", got, want)
	}
	if _, err := Commands(t.TempDir()); err == nil {
		t.Error("Commands of a directory without cmd/: got no error")
	}
}

// fakeBinary stands for a command's binary where its bytes do not matter.
var fakeBinary = []byte("\x7fELF not really a program")

func digest(tb testing.TB, img v1.Image) v1.Hash {
	tb.Helper()
	d, err := img.Digest()
	if err != nil {
		tb.Fatal(err)
	}
	return d
}

// TestAssembleReproducible: the digest is a function of the command, its
// binary, the architecture and the epoch, and of nothing else (no clock,
// no build machine state).
func TestAssembleReproducible(t *testing.T) {
	epoch := time.Unix(1_700_000_000, 0)
	ref, err := Assemble("deals", fakeBinary, "amd64", epoch)
	if err != nil {
		t.Fatal(err)
	}
	want := digest(t, ref)
	tests := []struct {
		name   string
		cmd    string
		bin    []byte
		arch   string
		epoch  time.Time
		differ bool
	}{
		{"same inputs", "deals", slices.Clone(fakeBinary), "amd64", epoch, false},
		{"same instant in another zone", "deals", fakeBinary, "amd64", epoch.In(time.FixedZone("X", 3*3600)), false},
		{"one byte of the binary", "deals", append(slices.Clone(fakeBinary[:len(fakeBinary)-1]), 'X'), "amd64", epoch, true},
		{"another command", "profile", fakeBinary, "amd64", epoch, true},
		{"another architecture", "deals", fakeBinary, "arm64", epoch, true},
		{"another epoch", "deals", fakeBinary, "amd64", epoch.Add(time.Second), true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			img, err := Assemble(tt.cmd, tt.bin, tt.arch, tt.epoch)
			if err != nil {
				t.Fatal(err)
			}
			if got := digest(t, img); (got != want) != tt.differ {
				t.Errorf("digest %s, reference %s: want differ=%v", got, want, tt.differ)
			}
		})
	}
}

// entry is a file of a layer as the test sees it.
type entry struct {
	hdr  *tar.Header
	data []byte
}

func layerEntries(tb testing.TB, l v1.Layer) []entry {
	tb.Helper()
	rc, err := l.Uncompressed()
	if err != nil {
		tb.Fatal(err)
	}
	defer rc.Close()
	tr := tar.NewReader(rc)
	var out []entry
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			tb.Fatal(err)
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			tb.Fatal(err)
		}
		out = append(out, entry{h, b})
	}
}

// TestImageContents: what a pod gets: a nonroot user, the entrypoint, a CA
// bundle, fixed times and owners, nothing else.
func TestImageContents(t *testing.T) {
	epoch := time.Unix(1_234_567_890, 0)
	img, err := Assemble("saga-machine", fakeBinary, "arm64", epoch)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if got, want := cfg.Config.User, "65532:65532"; got != want {
		t.Errorf("User = %q, want %q", got, want)
	}
	if got, want := cfg.Config.Entrypoint, []string{"/usr/bin/saga-machine"}; !slices.Equal(got, want) {
		t.Errorf("Entrypoint = %q, want %q", got, want)
	}
	if len(cfg.Config.Cmd) != 0 {
		t.Errorf("Cmd = %q, want none (the manifests pass args)", cfg.Config.Cmd)
	}
	if cfg.OS != "linux" || cfg.Architecture != "arm64" {
		t.Errorf("platform %s/%s, want linux/arm64", cfg.OS, cfg.Architecture)
	}
	if !cfg.Created.Time.Equal(epoch) {
		t.Errorf("Created = %v, want %v", cfg.Created.Time, epoch)
	}
	for _, h := range cfg.History {
		if !h.Created.Time.Equal(epoch) {
			t.Errorf("history %q created %v, want %v", h.CreatedBy, h.Created.Time, epoch)
		}
	}
	if got := cfg.Config.Env; !slices.Equal(got, []string{"PATH=/usr/bin:/bin"}) {
		t.Errorf("Env = %q, want only PATH", got)
	}
	m, err := img.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	if m.MediaType != "application/vnd.oci.image.manifest.v1+json" || m.Config.MediaType != "application/vnd.oci.image.config.v1+json" {
		t.Errorf("media types %s / %s, want OCI", m.MediaType, m.Config.MediaType)
	}

	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	if len(layers) != 2 {
		t.Fatalf("%d layers, want 2 (base, binary)", len(layers))
	}
	files := map[string]entry{}
	var names []string
	for _, l := range layers {
		for _, e := range layerEntries(t, l) {
			if !e.hdr.ModTime.Equal(epoch) {
				t.Errorf("%s: mtime %v, want %v", e.hdr.Name, e.hdr.ModTime, epoch)
			}
			if e.hdr.Uname != "" || e.hdr.Gname != "" || len(e.hdr.PAXRecords) > 0 {
				t.Errorf("%s: owner names %q/%q or PAX records %v: want numeric owners only", e.hdr.Name, e.hdr.Uname, e.hdr.Gname, e.hdr.PAXRecords)
			}
			owner := 0
			if e.hdr.Name == "home/nonroot/" {
				owner = UID
			}
			if e.hdr.Uid != owner || e.hdr.Gid != owner {
				t.Errorf("%s: owner %d:%d, want %d:%d", e.hdr.Name, e.hdr.Uid, e.hdr.Gid, owner, owner)
			}
			files[e.hdr.Name] = e
			names = append(names, e.hdr.Name)
		}
	}
	wantNames := []string{
		"etc/", "etc/group", "etc/nsswitch.conf", "etc/passwd", "etc/ssl/", "etc/ssl/certs/",
		"etc/ssl/certs/ca-certificates.crt", "home/", "home/nonroot/", "tmp/",
		"usr/", "usr/bin/", "usr/bin/saga-machine",
	}
	if !slices.Equal(names, wantNames) {
		t.Errorf("files %q, want %q", names, wantNames)
	}
	modes := map[string]int64{"usr/bin/saga-machine": 0o755, "tmp/": 0o1777, "home/nonroot/": 0o700, "etc/passwd": 0o644}
	for n, want := range modes {
		if got := files[n].hdr; got == nil || got.Mode != want {
			t.Errorf("%s: mode %o, want %o", n, got.Mode, want)
		}
	}
	if got := files["usr/bin/saga-machine"].data; !bytes.Equal(got, fakeBinary) {
		t.Errorf("binary in the image differs from the one given")
	}
	if !strings.Contains(string(files["etc/passwd"].data), "nonroot:x:65532:65532:") {
		t.Errorf("/etc/passwd has no nonroot 65532:\n%s", files["etc/passwd"].data)
	}
	if !strings.Contains(string(files["etc/group"].data), "nonroot:x:65532:") {
		t.Errorf("/etc/group has no nonroot 65532:\n%s", files["etc/group"].data)
	}

	// The CA bundle: every block a CA certificate, as many as the module
	// ships unconstrained.
	rest := files["etc/ssl/certs/ca-certificates.crt"].data
	var n int
	for {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			t.Fatalf("CA bundle block %d: %v", n, err)
		}
		if !c.IsCA {
			t.Errorf("CA bundle block %d (%s) is not a CA", n, c.Subject)
		}
		n++
	}
	if len(bytes.TrimSpace(rest)) != 0 {
		t.Errorf("CA bundle has %d bytes after the last certificate", len(rest))
	}
	if n < 100 {
		t.Errorf("CA bundle has %d certificates, want the ~140 Mozilla roots", n)
	}
}

func TestCheckStatic(t *testing.T) {
	if err := CheckStatic([]byte("#!/bin/sh\necho hi\n")); err == nil {
		t.Error("CheckStatic(shell script): got no error")
	}
	// The test binary itself links libc when built with -race (cgo); any
	// dynamic executable of the machine serves otherwise.
	for _, p := range []string{"/bin/sh", "/usr/bin/env"} {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		if err := CheckStatic(b); err == nil {
			t.Errorf("CheckStatic(%s): got no error for a dynamically linked program", p)
		}
		return
	}
	t.Skip("no dynamically linked program found to check against")
}

// TestBuildReproducible builds the image of cmd/sagactl twice, the second
// time with an empty Go build cache (everything recompiled), into two
// directories: the digests and every byte of the outputs must be equal.
// Then it reads the outputs back and, as root, runs the image's binary in
// a chroot of the image's file system as user 65532.
func TestBuildReproducible(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	epoch := time.Unix(1_600_000_000, 0)
	out1, out2 := t.TempDir(), t.TempDir()
	build := func(out string, env ...string) []Image {
		t.Helper()
		imgs, err := Build(ctx, Options{Root: repoRoot, Out: out, Commands: []string{"sagactl"}, Epoch: epoch, Env: env})
		if err != nil {
			t.Fatal(err)
		}
		if len(imgs) != 1 || imgs[0].Command != "sagactl" || imgs[0].Ref != Repository("sagactl")+":"+DefaultTag {
			t.Fatalf("Build returned %+v, want one image of sagactl", imgs)
		}
		return imgs
	}
	first := build(out1)
	second := build(out2, "GOCACHE="+t.TempDir())
	if first[0].Digest != second[0].Digest {
		t.Fatalf("two builds of the same sources: digests %s and %s", first[0].Digest, second[0].Digest)
	}
	t.Logf("sagactl image %s (twice, the second from an empty build cache)", first[0].Digest)
	if a, b := treeDigest(t, out1), treeDigest(t, out2); !slices.Equal(a, b) {
		t.Errorf("the output directories differ:\n%q\n%q", a, b)
	}

	// The layout names the image and holds it.
	idx, err := layout.ImageIndexFromPath(filepath.Join(out1, "oci"))
	if err != nil {
		t.Fatal(err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if len(im.Manifests) != 1 || im.Manifests[0].Digest != first[0].Digest ||
		im.Manifests[0].Annotations["org.opencontainers.image.ref.name"] != first[0].Ref {
		t.Fatalf("OCI layout index %+v, want one manifest %s named %s", im.Manifests, first[0].Digest, first[0].Ref)
	}
	fromLayout, err := idx.Image(first[0].Digest)
	if err != nil {
		t.Fatal(err)
	}
	if err := validateBlobs(fromLayout); err != nil {
		t.Fatalf("image in the layout: %v", err)
	}
	// The docker-archive holds the same config and layers under the same
	// tag (it keeps no manifest: a loader writes its own, so only the
	// image ID, the config's digest, is the same).
	tag, err := name.NewTag(first[0].Ref)
	if err != nil {
		t.Fatal(err)
	}
	fromTar, err := tarball.ImageFromPath(filepath.Join(out1, "tar", "sagactl.tar"), &tag)
	if err != nil {
		t.Fatal(err)
	}
	for _, im := range []struct {
		name string
		img  v1.Image
	}{{"layout", first[0].Image}, {"tar", fromTar}} {
		if got, want := configName(t, im.img), configName(t, fromLayout); got != want {
			t.Errorf("%s: image ID %s, want the layout's %s", im.name, got, want)
		}
	}

	root := extract(t, fromLayout)
	bin, err := os.ReadFile(filepath.Join(root, "usr/bin/sagactl"))
	if err != nil {
		t.Fatal(err)
	}
	if err := CheckStatic(bin); err != nil {
		t.Errorf("usr/bin/sagactl: %v", err)
	}
	if os.Geteuid() != 0 {
		t.Skip("not root: the image's binary is not run in a chroot")
	}
	def, err := os.ReadFile(filepath.Join(repoRoot, "sagas", "manual_create_order.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "tmp", "saga.yaml"), def, 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("/usr/bin/sagactl", "validate", "/tmp/saga.yaml")
	cmd.Env = []string{"PATH=/usr/bin:/bin"}
	cmd.Dir = "/"
	cmd.SysProcAttr = &syscall.SysProcAttr{Chroot: root, Credential: &syscall.Credential{Uid: UID, Gid: GID}}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("sagactl validate in the image's file system as %d: %v\n%s", UID, err, out)
	}
	if !strings.Contains(string(out), "/tmp/saga.yaml: ok (MANUAL_CREATE_ORDER") {
		t.Errorf("sagactl validate printed %q, want the definition ok", out)
	}
}

func configName(tb testing.TB, img v1.Image) v1.Hash {
	tb.Helper()
	h, err := img.ConfigName()
	if err != nil {
		tb.Fatal(err)
	}
	return h
}

// validateBlobs reads every blob of img and checks it against its digest.
func validateBlobs(img v1.Image) error {
	layers, err := img.Layers()
	if err != nil {
		return err
	}
	for _, l := range layers {
		rc, err := l.Compressed()
		if err != nil {
			return err
		}
		h, _, err := v1.SHA256(rc)
		rc.Close()
		if err != nil {
			return err
		}
		if want, _ := l.Digest(); h != want {
			return errors.New("layer " + want.String() + " has content " + h.String())
		}
	}
	return nil
}

// treeDigest lists every file under dir with its mode and a digest of its bytes.
func treeDigest(tb testing.TB, dir string) []string {
	tb.Helper()
	var out []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		info, err := d.Info()
		if err != nil {
			return err
		}
		line := rel + " " + info.Mode().String()
		if !d.IsDir() {
			f, err := os.Open(p)
			if err != nil {
				return err
			}
			h, _, err := v1.SHA256(f)
			f.Close()
			if err != nil {
				return err
			}
			line += " " + h.String()
		}
		out = append(out, line)
		return nil
	})
	if err != nil {
		tb.Fatal(err)
	}
	return out
}

// extract unpacks the image's file system into a temporary directory, with
// its modes and, as root, its owners.
func extract(tb testing.TB, img v1.Image) string {
	tb.Helper()
	dir := tb.TempDir()
	// t.TempDir must be able to remove what the image owns (0700, 65532).
	tb.Cleanup(func() { _ = os.Chmod(filepath.Join(dir, "home", "nonroot"), 0o755) })
	rc := mutate.Extract(img)
	defer rc.Close()
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return dir
		}
		if err != nil {
			tb.Fatal(err)
		}
		p := filepath.Join(dir, filepath.FromSlash(h.Name))
		if !strings.HasPrefix(p, dir+string(filepath.Separator)) {
			tb.Fatalf("image entry %q leaves the root", h.Name)
		}
		switch h.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(p, 0o755); err != nil {
				tb.Fatal(err)
			}
		case tar.TypeReg:
			b, err := io.ReadAll(tr)
			if err != nil {
				tb.Fatal(err)
			}
			if err := os.WriteFile(p, b, 0o600); err != nil {
				tb.Fatal(err)
			}
		default:
			tb.Fatalf("image entry %q has type %c, want only files and directories", h.Name, h.Typeflag)
		}
		if err := os.Chmod(p, fs.FileMode(h.Mode).Perm()|modeBits(h.Mode)); err != nil {
			tb.Fatal(err)
		}
		if os.Geteuid() == 0 {
			if err := os.Lchown(p, h.Uid, h.Gid); err != nil {
				tb.Fatal(err)
			}
		}
	}
}

func modeBits(m int64) fs.FileMode {
	var out fs.FileMode
	if m&0o1000 != 0 {
		out |= fs.ModeSticky
	}
	return out
}
