// Package imagebuild builds one OCI image per command of this repository
// (every directory under cmd/ that holds a main package) without a container
// daemon, reproducibly: the same sources, Go toolchain and SOURCE_DATE_EPOCH
// give the same image digests on any machine.
//
// Each image is FROM scratch and has two layers:
//
//   - the base: /etc/passwd and /etc/group with the user nonroot (65532) and
//     /etc/nsswitch.conf from rootfs/ in this package, the CA bundle
//     /etc/ssl/certs/ca-certificates.crt written from the Mozilla (NSS) roots
//     that the pinned module golang.org/x/crypto/x509roots/fallback ships (not
//     from the build machine, so the layer does not depend on it), /tmp and
//     /home/nonroot;
//   - the command: /usr/bin/<cmd>, a static binary (CGO_ENABLED=0, -trimpath,
//     -buildvcs=false, -ldflags "-s -w -buildid=") that is the entrypoint.
//
// The config runs as 65532:65532. Every file, the config's creation time and
// the history carry one fixed time: SOURCE_DATE_EPOCH, or the Unix epoch. Layers
// are gzip-compressed by the standard library, which is deterministic for one
// Go version.
//
// [Build] compiles the commands, assembles the images ([Assemble]) and writes
// them as one OCI image layout (oci/, each manifest annotated with its
// reference) and one docker-archive per image (tar/<cmd>.tar, for docker
// load, kind load image-archive or ctr images import). `make images` runs it
// through scripts/images and prints the digests.
package imagebuild
