package imagebuild

import (
	"archive/tar"
	"bytes"
	"context"
	"debug/elf"
	"embed"
	"encoding/pem"
	"errors"
	"fmt"
	"go/parser"
	"go/token"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"golang.org/x/crypto/x509roots/fallback/bundle"
)

const (
	// Registry is the repository prefix of every image: the image of
	// cmd/<name> is Registry + "/" + name. The manifests in k8s/ name the
	// images this way; a deployment retags or overrides them (kustomize
	// images:) for the registry it pushes to.
	Registry = "ghcr.io/portfolio-counselor/sagamachine"
	// DefaultTag is the tag the images are written with.
	DefaultTag = "latest"
	// UID and GID of the user the images run as (nonroot in rootfs/etc/passwd).
	UID = 65532
	GID = 65532
	// BinDir is where a command's binary lies in its image.
	BinDir = "/usr/bin"
	// CAFile is the CA bundle Go's crypto/x509 reads on Linux.
	CAFile = "/etc/ssl/certs/ca-certificates.crt"
	// Source is the repository the images are built from (an OCI label).
	Source = "https://github.com/portfolio-counselor/sagamachine"
)

//go:embed rootfs
var rootfs embed.FS

// Repository is the image repository (without tag) of command cmd.
func Repository(cmd string) string { return Registry + "/" + cmd }

// Commands lists the commands of the repository at root: the directories
// under cmd/ whose non-test Go files are package main, sorted.
func Commands(root string) ([]string, error) {
	entries, err := os.ReadDir(filepath.Join(root, "cmd"))
	if err != nil {
		return nil, fmt.Errorf("list the commands: %w", err)
	}
	var cmds []string
	fset := token.NewFileSet()
	for _, e := range entries {
		if !e.IsDir() {
			continue
		}
		files, err := filepath.Glob(filepath.Join(root, "cmd", e.Name(), "*.go"))
		if err != nil {
			return nil, fmt.Errorf("list cmd/%s: %w", e.Name(), err)
		}
		for _, f := range files {
			if strings.HasSuffix(f, "_test.go") {
				continue
			}
			file, err := parser.ParseFile(fset, f, nil, parser.PackageClauseOnly)
			if err != nil {
				return nil, fmt.Errorf("read the package of %s: %w", f, err)
			}
			if file.Name.Name == "main" {
				cmds = append(cmds, e.Name())
				break
			}
		}
	}
	if len(cmds) == 0 {
		return nil, fmt.Errorf("no main package under %s", filepath.Join(root, "cmd"))
	}
	slices.Sort(cmds)
	return cmds, nil
}

// Options configures [Build].
type Options struct {
	// Root is the repository root (the directory of go.mod).
	Root string
	// Out is the output directory; Build replaces oci/ and tar/ in it.
	Out string
	// Commands to build; empty means every command ([Commands]).
	Commands []string
	// Arch is the GOARCH of the images; empty means runtime.GOARCH.
	Arch string
	// Epoch is the time written into every file and the config; the zero
	// value means the Unix epoch.
	Epoch time.Time
	// Tag of the references written into the layout and the tarball;
	// empty means DefaultTag.
	Tag string
	// Go is the go command; empty means "go" on PATH.
	Go string
	// Env is added to the go command's environment last (e.g. a GOCACHE).
	Env []string
	// NoTarball skips tar/.
	NoTarball bool
	// Log receives progress lines; nil discards them.
	Log io.Writer
}

// Image is one built image.
type Image struct {
	Command string
	Ref     string // Repository(Command) + ":" + tag
	Digest  v1.Hash
	Image   v1.Image
}

// Build compiles the commands, assembles their images and writes them under
// opts.Out: the OCI layout oci/ and, unless opts.NoTarball, tar/<cmd>.tar.
func Build(ctx context.Context, opts Options) ([]Image, error) {
	logw := opts.Log
	if logw == nil {
		logw = io.Discard
	}
	if opts.Root == "" || opts.Out == "" {
		return nil, errors.New("build images: Root and Out must be set")
	}
	cmds := slices.Clone(opts.Commands)
	if len(cmds) == 0 {
		var err error
		if cmds, err = Commands(opts.Root); err != nil {
			return nil, err
		}
	}
	slices.Sort(cmds)
	cmds = slices.Compact(cmds)
	arch := cmp(opts.Arch, runtime.GOARCH)
	tag := cmp(opts.Tag, DefaultTag)
	epoch := opts.Epoch
	if epoch.IsZero() {
		epoch = time.Unix(0, 0)
	}

	bins, err := os.MkdirTemp("", "imagebuild-bin-")
	if err != nil {
		return nil, fmt.Errorf("build images: %w", err)
	}
	defer os.RemoveAll(bins)
	fmt.Fprintf(logw, "compiling %d commands for linux/%s (CGO_ENABLED=0, -trimpath)\n", len(cmds), arch)
	if err := Compile(ctx, opts.Root, bins, arch, cmds, opts.Go, opts.Env); err != nil {
		return nil, err
	}
	base, err := BaseLayer(epoch)
	if err != nil {
		return nil, err
	}
	var imgs []Image
	for _, c := range cmds {
		bin, err := os.ReadFile(filepath.Join(bins, c))
		if err != nil {
			return nil, fmt.Errorf("build image %s: %w", c, err)
		}
		if err := CheckStatic(bin); err != nil {
			return nil, fmt.Errorf("build image %s: %w", c, err)
		}
		img, err := assemble(base, c, bin, arch, epoch)
		if err != nil {
			return nil, err
		}
		d, err := img.Digest()
		if err != nil {
			return nil, fmt.Errorf("digest of image %s: %w", c, err)
		}
		imgs = append(imgs, Image{Command: c, Ref: Repository(c) + ":" + tag, Digest: d, Image: img})
	}
	if err := Write(opts.Out, imgs, !opts.NoTarball); err != nil {
		return nil, err
	}
	return imgs, nil
}

func cmp(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// Compile builds static linux/arch binaries of cmds (directories under
// root/cmd) into dir, one file per command, in one go build.
func Compile(ctx context.Context, root, dir, arch string, cmds []string, goCmd string, env []string) error {
	if goCmd == "" {
		goCmd = "go"
	}
	args := []string{"build", "-trimpath", "-buildvcs=false", "-ldflags=-s -w -buildid=", "-o", dir + string(filepath.Separator)}
	for _, c := range cmds {
		if c == "" || strings.ContainsAny(c, `/\`) || strings.HasPrefix(c, ".") {
			return fmt.Errorf("compile: %q is not a directory name under cmd/", c)
		}
		args = append(args, "./cmd/"+c)
	}
	cmd := exec.CommandContext(ctx, goCmd, args...)
	cmd.Dir = root
	// Only what decides the bytes of the binaries is set; GOFLAGS from the
	// caller (e.g. -race) must not leak into the images.
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+arch, "GOFLAGS=", "GOEXPERIMENT=")
	switch arch {
	case "amd64":
		cmd.Env = append(cmd.Env, "GOAMD64=v1")
	case "arm64":
		cmd.Env = append(cmd.Env, "GOARM64=v8.0")
	}
	cmd.Env = append(cmd.Env, env...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("compile %v for linux/%s: %w\n%s", cmds, arch, err, out.Bytes())
	}
	return nil
}

// CheckStatic returns an error unless bin is an ELF executable that needs no
// dynamic loader or shared library (an image FROM scratch has none).
func CheckStatic(bin []byte) error {
	f, err := elf.NewFile(bytes.NewReader(bin))
	if err != nil {
		return fmt.Errorf("read the binary as ELF: %w", err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP || p.Type == elf.PT_DYNAMIC {
			return fmt.Errorf("the binary is dynamically linked (ELF program header %v): build it with CGO_ENABLED=0", p.Type)
		}
	}
	return nil
}

// file is one entry of a layer.
type file struct {
	name     string // absolute path in the image
	mode     int64
	uid, gid int
	dir      bool
	data     []byte
}

// layer writes files as a tar archive with fixed headers (the given time,
// numeric owners only, USTAR) and returns it as a gzip-compressed OCI layer.
func layer(files []file, epoch time.Time) (v1.Layer, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, f := range files {
		h := &tar.Header{
			Name:    strings.TrimPrefix(f.name, "/"),
			Mode:    f.mode,
			Uid:     f.uid,
			Gid:     f.gid,
			ModTime: epoch,
			Format:  tar.FormatUSTAR,
		}
		if f.dir {
			h.Typeflag = tar.TypeDir
			h.Name += "/"
		} else {
			h.Typeflag = tar.TypeReg
			h.Size = int64(len(f.data))
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, fmt.Errorf("write %s into the layer: %w", f.name, err)
		}
		if _, err := tw.Write(f.data); err != nil {
			return nil, fmt.Errorf("write %s into the layer: %w", f.name, err)
		}
	}
	if err := tw.Close(); err != nil {
		return nil, fmt.Errorf("close the layer: %w", err)
	}
	data := buf.Bytes()
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(data)), nil
	}, tarball.WithMediaType(types.OCILayer), tarball.WithCompressedCaching)
	if err != nil {
		return nil, fmt.Errorf("compress the layer: %w", err)
	}
	return l, nil
}

// CABundle is the PEM bundle written to CAFile: the unconstrained roots of
// golang.org/x/crypto/x509roots/fallback/bundle, in its order. Roots with a
// distrust-after constraint are left out: a PEM file cannot carry it.
func CABundle() []byte {
	var buf bytes.Buffer
	for r := range bundle.Roots() {
		if r.Constraint != nil {
			continue
		}
		_ = pem.Encode(&buf, &pem.Block{Type: "CERTIFICATE", Bytes: r.Certificate})
	}
	return buf.Bytes()
}

// BaseLayer is the layer every image starts with: users, name service
// switch, CA bundle, /tmp and the home of nonroot.
func BaseLayer(epoch time.Time) (v1.Layer, error) {
	read := func(name string) ([]byte, error) {
		b, err := rootfs.ReadFile(path.Join("rootfs", name))
		if err != nil {
			return nil, fmt.Errorf("base layer: %w", err)
		}
		return b, nil
	}
	files := []file{
		{name: "/etc", mode: 0o755, dir: true},
	}
	for _, n := range []string{"etc/group", "etc/nsswitch.conf", "etc/passwd"} {
		b, err := read(n)
		if err != nil {
			return nil, err
		}
		files = append(files, file{name: "/" + n, mode: 0o644, data: b})
	}
	files = append(files,
		file{name: "/etc/ssl", mode: 0o755, dir: true},
		file{name: "/etc/ssl/certs", mode: 0o755, dir: true},
		file{name: CAFile, mode: 0o644, data: CABundle()},
		file{name: "/home", mode: 0o755, dir: true},
		file{name: "/home/nonroot", mode: 0o700, uid: UID, gid: GID, dir: true},
		file{name: "/tmp", mode: 0o1777, dir: true},
	)
	return layer(files, epoch)
}

// Assemble builds the image of command cmd from its static binary, for
// linux/arch, with every time set to epoch.
func Assemble(cmd string, binary []byte, arch string, epoch time.Time) (v1.Image, error) {
	base, err := BaseLayer(epoch)
	if err != nil {
		return nil, err
	}
	return assemble(base, cmd, binary, arch, epoch)
}

func assemble(base v1.Layer, cmd string, binary []byte, arch string, epoch time.Time) (v1.Image, error) {
	bin := path.Join(BinDir, cmd)
	app, err := layer([]file{
		{name: "/usr", mode: 0o755, dir: true},
		{name: BinDir, mode: 0o755, dir: true},
		{name: bin, mode: 0o755, data: binary},
	}, epoch)
	if err != nil {
		return nil, fmt.Errorf("image %s: %w", cmd, err)
	}
	created := v1.Time{Time: epoch.UTC()}
	img := mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), types.OCIConfigJSON)
	img, err = mutate.Append(img,
		mutate.Addendum{Layer: base, History: v1.History{Created: created, CreatedBy: "imagebuild: users, CA bundle, /tmp", Comment: "base"}},
		mutate.Addendum{Layer: app, History: v1.History{Created: created, CreatedBy: "imagebuild: " + bin + " (go build -trimpath, CGO_ENABLED=0)"}},
	)
	if err != nil {
		return nil, fmt.Errorf("image %s: append the layers: %w", cmd, err)
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		return nil, fmt.Errorf("image %s: read the config: %w", cmd, err)
	}
	cfg = cfg.DeepCopy()
	cfg.Architecture = arch
	cfg.OS = "linux"
	cfg.Created = created
	cfg.Author = ""
	cfg.Config = v1.Config{
		Entrypoint: []string{bin},
		User:       fmt.Sprintf("%d:%d", UID, GID),
		WorkingDir: "/home/nonroot",
		Env:        []string{"PATH=/usr/bin:/bin"},
		Labels: map[string]string{
			"org.opencontainers.image.title":  cmd,
			"org.opencontainers.image.source": Source,
		},
	}
	img, err = mutate.ConfigFile(img, cfg)
	if err != nil {
		return nil, fmt.Errorf("image %s: set the config: %w", cmd, err)
	}
	return img, nil
}

// Write replaces dir/oci with an OCI image layout holding imgs (each
// manifest annotated with its reference, in command order) and, if
// tarballs is set, dir/tar with one docker-archive per image
// (<command>.tar). Both are byte for byte the same for the same images.
func Write(dir string, imgs []Image, tarballs bool) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("write the images: %w", err)
	}
	imgs = slices.Clone(imgs)
	slices.SortFunc(imgs, func(a, b Image) int { return strings.Compare(a.Command, b.Command) })
	idx := mutate.IndexMediaType(empty.Index, types.OCIImageIndex)
	for _, im := range imgs {
		cfg, err := im.Image.ConfigFile()
		if err != nil {
			return fmt.Errorf("write image %s: %w", im.Command, err)
		}
		idx = mutate.AppendManifests(idx, mutate.IndexAddendum{
			Add: im.Image,
			Descriptor: v1.Descriptor{
				Platform: &v1.Platform{OS: cfg.OS, Architecture: cfg.Architecture},
				Annotations: map[string]string{
					// skopeo and containerd read the reference from these.
					"org.opencontainers.image.ref.name": im.Ref,
					"io.containerd.image.name":          im.Ref,
				},
			},
		})
	}
	ociDir := filepath.Join(dir, "oci")
	if err := os.RemoveAll(ociDir); err != nil {
		return fmt.Errorf("write the images: %w", err)
	}
	if _, err := layout.Write(ociDir, idx); err != nil {
		return fmt.Errorf("write the OCI layout %s: %w", ociDir, err)
	}
	tarDir := filepath.Join(dir, "tar")
	if err := os.RemoveAll(tarDir); err != nil {
		return fmt.Errorf("remove the stale %s: %w", tarDir, err)
	}
	if !tarballs {
		return nil
	}
	if err := os.MkdirAll(tarDir, 0o755); err != nil {
		return fmt.Errorf("write the images: %w", err)
	}
	for _, im := range imgs {
		ref, err := name.NewTag(im.Ref, name.StrictValidation)
		if err != nil {
			return fmt.Errorf("write image %s: reference %q: %w", im.Command, im.Ref, err)
		}
		p := filepath.Join(tarDir, im.Command+".tar")
		if err := tarball.WriteToFile(p, ref, im.Image); err != nil {
			return fmt.Errorf("write %s: %w", p, err)
		}
	}
	return nil
}
