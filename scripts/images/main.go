// Command images builds the OCI image of every command under cmd/ without a
// container daemon (internal/imagebuild) and prints their digests. `make
// images` runs it:
//
//	go run ./scripts/images [-out dist/images] [-arch amd64] [-tag latest] [-no-tarball] [cmd ...]
//
// It writes -out/oci (an OCI image layout, each manifest annotated with its
// reference), -out/tar/<cmd>.tar (docker-archives for docker load, kind load
// image-archive, ctr images import) and -out/digests.txt (one
// <repository>@<digest> per line). SOURCE_DATE_EPOCH, when set, is the time
// of every file and of the configs (default: the Unix epoch); the same
// sources, Go version and SOURCE_DATE_EPOCH give the same digests.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/portfolio-counselor/sagamachine/internal/imagebuild"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "images:", err)
		os.Exit(1)
	}
}

func run() error {
	out := flag.String("out", "dist/images", "output directory (replaces oci/, tar/ and digests.txt in it)")
	arch := flag.String("arch", runtime.GOARCH, "GOARCH of the images (linux only)")
	tag := flag.String("tag", imagebuild.DefaultTag, "tag of the references in the layout and the tarball")
	noTar := flag.Bool("no-tarball", false, "write only the OCI layout")
	flag.Usage = func() {
		fmt.Fprintf(flag.CommandLine.Output(), "usage: go run ./scripts/images [flags] [cmd ...]\n\nBuilds the images of cmd/* (all when no cmd is named).\n\n")
		flag.PrintDefaults()
	}
	flag.Parse()

	root, err := moduleRoot()
	if err != nil {
		return err
	}
	epoch := time.Unix(0, 0)
	if s := os.Getenv("SOURCE_DATE_EPOCH"); s != "" {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil || n < 0 {
			return fmt.Errorf("SOURCE_DATE_EPOCH=%q: want a non-negative number of seconds", s)
		}
		epoch = time.Unix(n, 0)
	}
	outDir := *out
	if !filepath.IsAbs(outDir) {
		outDir = filepath.Join(root, outDir)
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	start := time.Now()
	imgs, err := imagebuild.Build(ctx, imagebuild.Options{
		Root: root, Out: outDir, Commands: flag.Args(), Arch: *arch, Tag: *tag,
		Epoch: epoch, NoTarball: *noTar, Log: os.Stderr,
	})
	if err != nil {
		return err
	}
	var lines strings.Builder
	for _, im := range imgs {
		fmt.Printf("%-60s %s\n", im.Ref, im.Digest)
		fmt.Fprintf(&lines, "%s@%s\n", imagebuild.Repository(im.Command), im.Digest)
	}
	if err := os.WriteFile(filepath.Join(outDir, "digests.txt"), []byte(lines.String()), 0o644); err != nil {
		return fmt.Errorf("write digests.txt: %w", err)
	}
	fmt.Fprintf(os.Stderr, "%d images (linux/%s, SOURCE_DATE_EPOCH=%d) in %s: oci/ (OCI layout)%s, digests.txt; %.1fs\n",
		len(imgs), *arch, epoch.Unix(), outDir, map[bool]string{false: ", tar/<cmd>.tar (docker-archive)", true: ""}[*noTar],
		time.Since(start).Seconds())
	return nil
}

// moduleRoot is the directory of the go.mod above the working directory.
func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("no go.mod above the working directory")
		}
		dir = parent
	}
}
