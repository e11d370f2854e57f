package procstack

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
)

// Module is the import path of this module; Build compiles its commands.
const Module = "github.com/portfolio-counselor/sagamachine"

// Binaries are the paths of the compiled commands.
type Binaries struct {
	SagaMachine, Deals, Profile, Notification string
}

// For returns the binary of a service by name: "saga-machine", "deals",
// "profile" or "notification" ("" for another name).
func (b Binaries) For(name string) string {
	switch name {
	case SagaMachine:
		return b.SagaMachine
	case Deals:
		return b.Deals
	case Profile:
		return b.Profile
	case Notification:
		return b.Notification
	}
	return ""
}

// Service names, as the binaries and the saga definitions name them.
const (
	SagaMachine  = "saga-machine"
	Deals        = "deals"
	Profile      = "profile"
	Notification = "notification"
)

// BuildTo compiles cmd/saga-machine, cmd/deals, cmd/profile and
// cmd/notification (without the race detector: they are the processes under
// test, not the test) into dir and returns their paths. The go tool runs in
// the current directory, which must be inside this module.
func BuildTo(ctx context.Context, dir string) (Binaries, error) {
	goTool, err := exec.LookPath("go")
	if err != nil {
		goTool = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	cmd := exec.CommandContext(ctx, goTool, "build", "-o", dir+string(os.PathSeparator),
		Module+"/cmd/saga-machine", Module+"/cmd/deals", Module+"/cmd/profile", Module+"/cmd/notification")
	if out, err := cmd.CombinedOutput(); err != nil {
		return Binaries{}, fmt.Errorf("procstack: go build the services into %s: %w\n%s", dir, err, out)
	}
	return Binaries{
		SagaMachine:  filepath.Join(dir, SagaMachine),
		Deals:        filepath.Join(dir, Deals),
		Profile:      filepath.Join(dir, Profile),
		Notification: filepath.Join(dir, Notification),
	}, nil
}

var build struct {
	once sync.Once
	dir  string
	bins Binaries
	err  error
}

// Build is BuildTo into one temporary directory, once per test binary. A
// build failure fails the test. Call Main from TestMain to remove the
// directory at the end.
func Build(tb testing.TB) Binaries {
	tb.Helper()
	build.once.Do(func() {
		build.dir, build.err = os.MkdirTemp("", "procstack-bin-")
		if build.err != nil {
			build.err = fmt.Errorf("procstack: build directory: %w", build.err)
			return
		}
		build.bins, build.err = BuildTo(context.Background(), build.dir)
	})
	if build.err != nil {
		tb.Fatal(build.err)
	}
	return build.bins
}

// Main runs the tests of a package that uses Build and removes the
// binaries afterwards; call it from TestMain:
//
//	func TestMain(m *testing.M) { procstack.Main(m) }
func Main(m *testing.M) {
	code := m.Run()
	if build.dir != "" {
		os.RemoveAll(build.dir)
	}
	os.Exit(code)
}
