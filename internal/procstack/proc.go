package procstack

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Defaults of Proc.
const (
	// HealthTimeout bounds StartProc's (and New's) wait for the health URL.
	HealthTimeout = 60 * time.Second
	// StopTimeout is how long Stop waits after SIGTERM before SIGKILL.
	StopTimeout = 15 * time.Second
	// logTail is how much of a process's output is kept (the newest).
	logTail = 1 << 20
	// failureLines is how many of the newest log lines a failed test shows
	// per process.
	failureLines = 150
)

// Spec says how to run one process.
type Spec struct {
	// Name labels the process in logs and errors, e.g. "profile".
	Name string
	// Binary is the executable's path (see Build).
	Binary string
	// Args are the command-line arguments, without the program name.
	Args []string
	// Env is added to the environment. The process gets the test's
	// environment without the variables the services read (SAGA_*,
	// DEALS_*, PROFILE_*, NOTIFICATION_*, OIDC_*), so that a developer's
	// settings cannot leak into a stack; later entries win.
	Env []string
	// Health is a URL answering 200 once the process serves, e.g.
	// http://127.0.0.1:8081/healthz. Empty: a started process counts as
	// healthy at once.
	Health string
	// Dir is the working directory. Default: a temporary directory of the
	// test (NewProc), the current directory (NewProcess).
	Dir string
	// Log, when set, also receives everything the process writes to its
	// standard output and error (e.g. a log file); Logs keeps the tail
	// either way.
	Log io.Writer
}

// Proc is one process of a Spec, started, killed and restarted any number
// of times. Its methods may be called from any goroutine.
type Proc struct {
	spec Spec
	logs *tail

	mu        sync.Mutex
	cmd       *exec.Cmd
	done      chan struct{} // closed when the current run has exited
	stopping  bool          // the current run's end was asked for (Kill, Stop)
	paused    bool
	runs      int
	startedAt time.Time
	exits     []string // runs that ended without Kill or Stop
}

// StartProc starts the process and waits until its health URL answers 200
// (HealthTimeout). It fails the test if it cannot. A cleanup kills the
// process at the end of the test and, if the test failed, writes the newest
// lines of its output to the test log.
func StartProc(tb testing.TB, spec Spec) *Proc {
	tb.Helper()
	p := NewProc(tb, spec)
	ctx, cancel := context.WithTimeout(context.Background(), HealthTimeout)
	defer cancel()
	if err := p.Restart(ctx); err != nil {
		tb.Fatal(err)
	}
	return p
}

// NewProc is StartProc without starting: the process runs at the first
// Restart.
// The cleanup is registered all the same.
func NewProc(tb testing.TB, spec Spec) *Proc {
	tb.Helper()
	if spec.Dir == "" {
		spec.Dir = tb.TempDir()
	}
	p := NewProcess(spec)
	tb.Cleanup(func() {
		_ = p.Kill()
		if tb.Failed() {
			tb.Logf("%s", p.FailureLog())
		}
	})
	return p
}

// NewProcess is a Proc of spec, not started (it runs at the first
// Restart), for a program that is not a test: the caller kills it (Kill)
// when done.
func NewProcess(spec Spec) *Proc {
	return &Proc{spec: spec, logs: &tail{max: logTail}}
}

// FailureLog is what a failed test shows of the process: its name, runs,
// unasked exits and the newest lines of its output.
func (p *Proc) FailureLog() string {
	return fmt.Sprintf("--- %s: newest %d lines of output (%d runs)%s\n%s", p.spec.Name, failureLines, p.Runs(),
		exitsNote(p.Exited()), p.logs.lastLines(failureLines))
}

func exitsNote(exits []string) string {
	if len(exits) == 0 {
		return ""
	}
	return "; exited unasked: " + strings.Join(exits, "; ")
}

// Name is the Spec's name.
func (p *Proc) Name() string { return p.spec.Name }

// Restart starts the process (again): after Kill or Stop, or the first
// time after New. It waits until the health URL answers 200 or ctx ends;
// if the process exits meanwhile, it returns the exit and the newest lines
// of its output. It is an error to restart a running process.
func (p *Proc) Restart(ctx context.Context) error {
	p.mu.Lock()
	if p.cmd != nil {
		p.mu.Unlock()
		return fmt.Errorf("procstack: restart %s: it is running (pid %d)", p.spec.Name, p.cmd.Process.Pid)
	}
	cmd := exec.Command(p.spec.Binary, p.spec.Args...)
	cmd.Dir = p.spec.Dir
	cmd.Env = append(childEnv(), p.spec.Env...)
	var out io.Writer = p.logs
	if p.spec.Log != nil {
		out = io.MultiWriter(p.logs, p.spec.Log)
	}
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = sysProcAttr()
	p.runs++
	fmt.Fprintf(out, "--- procstack: start %d of %s at %s\n", p.runs, p.spec.Name, time.Now().UTC().Format(time.RFC3339Nano))
	if err := cmd.Start(); err != nil {
		p.mu.Unlock()
		return fmt.Errorf("procstack: start %s: %w", p.spec.Name, err)
	}
	done := make(chan struct{})
	p.cmd, p.done, p.stopping, p.paused, p.startedAt = cmd, done, false, false, time.Now()
	run := p.runs
	p.mu.Unlock()

	go func() {
		err := cmd.Wait()
		p.mu.Lock()
		if !p.stopping {
			p.exits = append(p.exits, fmt.Sprintf("run %d: %v", run, exitText(err)))
		}
		if p.cmd == cmd {
			p.cmd = nil
		}
		p.mu.Unlock()
		fmt.Fprintf(out, "--- procstack: run %d of %s ended: %s\n", run, p.spec.Name, exitText(err))
		close(done)
	}()
	return p.waitHealthy(ctx, done)
}

// serviceEnv are the prefixes of the variables the services read.
var serviceEnv = []string{"SAGA_", "DEALS_", "PROFILE_", "NOTIFICATION_", "OIDC_"}

// childEnv is the test's environment without the services' variables.
func childEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !slices.ContainsFunc(serviceEnv, func(p string) bool { return strings.HasPrefix(kv, p) }) {
			env = append(env, kv)
		}
	}
	return env
}

func exitText(err error) string {
	if err == nil {
		return "exit status 0"
	}
	return err.Error()
}

// WaitHealthy waits until the health URL answers 200, the process exits
// (an error with the newest lines of its output) or ctx ends.
func (p *Proc) WaitHealthy(ctx context.Context) error {
	p.mu.Lock()
	done := p.done
	running := p.cmd != nil
	p.mu.Unlock()
	if !running {
		return fmt.Errorf("procstack: %s is not running", p.spec.Name)
	}
	return p.waitHealthy(ctx, done)
}

// waitHealthy is WaitHealthy for the run that closes done when it exits.
func (p *Proc) waitHealthy(ctx context.Context, done chan struct{}) error {
	if p.spec.Health == "" {
		return nil
	}
	client := &http.Client{Timeout: 2 * time.Second}
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	var last error
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.spec.Health, nil)
		if err != nil {
			return fmt.Errorf("procstack: %s health URL: %w", p.spec.Name, err)
		}
		resp, err := client.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = fmt.Errorf("status %d", resp.StatusCode)
		}
		last = err
		select {
		case <-done:
			return fmt.Errorf("procstack: %s exited before it was healthy; newest output:\n%s", p.spec.Name, p.logs.lastLines(40))
		case <-ctx.Done():
			return fmt.Errorf("procstack: %s not healthy at %s: %w (last: %v)", p.spec.Name, p.spec.Health, ctx.Err(), last)
		case <-tick.C:
		}
	}
}

// signal sends sig to the running process; with stop it marks the run's
// end as asked for and waits for it (bounded by wait, then SIGKILL).
func (p *Proc) signal(sig syscall.Signal, stop bool, wait time.Duration) error {
	p.mu.Lock()
	cmd, done := p.cmd, p.done
	if cmd == nil {
		p.mu.Unlock()
		if stop {
			return nil
		}
		return fmt.Errorf("procstack: %s is not running", p.spec.Name)
	}
	if stop {
		p.stopping = true
	}
	paused := p.paused
	p.mu.Unlock()
	if err := cmd.Process.Signal(sig); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("procstack: signal %s to %s: %w", sig, p.spec.Name, err)
	}
	if !stop {
		return nil
	}
	if paused && sig != syscall.SIGKILL {
		_ = cmd.Process.Signal(syscall.SIGCONT) // a stopped process cannot handle SIGTERM
	}
	select {
	case <-done:
		return nil
	case <-time.After(wait):
		_ = cmd.Process.Signal(syscall.SIGKILL)
		<-done
		return fmt.Errorf("procstack: %s did not stop within %s of %s: killed", p.spec.Name, wait, sig)
	}
}

// Kill sends SIGKILL (kill -9) and waits until the process is gone. Killing
// a process that is not running does nothing.
func (p *Proc) Kill() error { return p.signal(syscall.SIGKILL, true, time.Minute) }

// Stop sends SIGTERM (a graceful stop) and waits until the process exits;
// after StopTimeout it kills it and returns an error.
func (p *Proc) Stop() error { return p.signal(syscall.SIGTERM, true, StopTimeout) }

// Pause sends SIGSTOP: the process keeps its connections and its Kafka
// group membership but does nothing until Resume.
func (p *Proc) Pause() error {
	if err := p.signal(syscall.SIGSTOP, false, 0); err != nil {
		return err
	}
	p.mu.Lock()
	p.paused = true
	p.mu.Unlock()
	return nil
}

// Resume sends SIGCONT to a paused process.
func (p *Proc) Resume() error {
	if err := p.signal(syscall.SIGCONT, false, 0); err != nil {
		return err
	}
	p.mu.Lock()
	p.paused = false
	p.mu.Unlock()
	return nil
}

// Running reports whether the process runs (paused included).
func (p *Proc) Running() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.cmd != nil
}

// PID is the running process's id, 0 when it does not run.
func (p *Proc) PID() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return 0
	}
	return p.cmd.Process.Pid
}

// StartedAt is when the latest run was started (zero before the first).
func (p *Proc) StartedAt() time.Time {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.startedAt
}

// Runs is how many times the process was started.
func (p *Proc) Runs() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.runs
}

// Exited lists the runs that ended without Kill or Stop (a crash, a fatal
// error at start), each with its exit status; nil when there were none.
func (p *Proc) Exited() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.exits...)
}

// Logs returns the newest output of every run (up to 1 MiB), with a line
// marking each start and end.
func (p *Proc) Logs() string { return p.logs.String() }

// LastLines returns the newest n lines of Logs.
func (p *Proc) LastLines(n int) string { return p.logs.lastLines(n) }

// Paused reports whether the process was paused (Pause) and not resumed.
func (p *Proc) Paused() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.paused && p.cmd != nil
}

// tail is an io.Writer keeping the newest max bytes written to it.
type tail struct {
	mu  sync.Mutex
	max int
	b   []byte
}

func (t *tail) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.b = append(t.b, p...)
	if over := len(t.b) - t.max; over > 0 {
		t.b = append(t.b[:0], t.b[over:]...)
	}
	return len(p), nil
}

func (t *tail) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.b)
}

// lastLines returns the newest n lines.
func (t *tail) lastLines(n int) string {
	s := strings.TrimRight(t.String(), "\n")
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
