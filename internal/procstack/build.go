package procstack

import (
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

var build struct {
	once sync.Once
	dir  string
	bins Binaries
	err  error
}

// Build compiles cmd/saga-machine, cmd/deals, cmd/profile and
// cmd/notification (without the race detector: they are the processes under
// test, not the test) into one temporary directory, once per test binary,
// and returns their paths. A build failure fails the test. Call Main from
// TestMain to remove the directory at the end.
func Build(tb testing.TB) Binaries {
	tb.Helper()
	build.once.Do(func() {
		build.dir, build.err = os.MkdirTemp("", "procstack-bin-")
		if build.err != nil {
			build.err = fmt.Errorf("procstack: build directory: %w", build.err)
			return
		}
		goTool, err := exec.LookPath("go")
		if err != nil {
			goTool = filepath.Join(runtime.GOROOT(), "bin", "go")
		}
		cmd := exec.Command(goTool, "build", "-o", build.dir+string(os.PathSeparator),
			Module+"/cmd/saga-machine", Module+"/cmd/deals", Module+"/cmd/profile", Module+"/cmd/notification")
		if out, err := cmd.CombinedOutput(); err != nil {
			build.err = fmt.Errorf("procstack: go build the services: %w\n%s", err, out)
			return
		}
		build.bins = Binaries{
			SagaMachine:  filepath.Join(build.dir, SagaMachine),
			Deals:        filepath.Join(build.dir, Deals),
			Profile:      filepath.Join(build.dir, Profile),
			Notification: filepath.Join(build.dir, Notification),
		}
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
