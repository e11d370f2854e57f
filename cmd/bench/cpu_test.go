package main

import (
	"context"
	"encoding/binary"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

func readFixture(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "proc", name))
	if err != nil {
		t.Fatalf("read fixture: %v", err)
	}
	return b
}

// The fixtures are /proc/<pid>/stat of make up's PostgreSQL postmaster, its
// checkpointer and Kafka's JVM, copied from a live machine.
func TestParseStat(t *testing.T) {
	for _, c := range []struct {
		name string
		text string
		want stat
	}{
		{"postmaster", string(readFixture(t, "postmaster.stat")),
			stat{pid: 2388, ppid: 1, comm: "postgres", state: 'S', utime: 76, stime: 945, cutime: 27937, cstime: 70903}},
		{"checkpointer", string(readFixture(t, "checkpointer.stat")),
			stat{pid: 2389, ppid: 2388, comm: "postgres", state: 'S', utime: 506, stime: 2556}},
		{"kafka", string(readFixture(t, "java.stat")),
			stat{pid: 3505, ppid: 1, comm: "java", state: 'S', utime: 11445, stime: 3198}},
		{"comm with spaces and parentheses",
			"77 (a) b (c)) R 5 77 77 0 -1 0 0 0 0 0 12 34 56 78 20 0 1 0 100 0 0\n",
			stat{pid: 77, ppid: 5, comm: "a) b (c)", state: 'R', utime: 12, stime: 34, cutime: 56, cstime: 78}},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, err := parseStat([]byte(c.text))
			if err != nil {
				t.Fatalf("parseStat: %v", err)
			}
			if got != c.want {
				t.Errorf("parseStat = %+v, want %+v", got, c.want)
			}
		})
	}
}

func TestParseStatRefusesMalformedText(t *testing.T) {
	for _, text := range []string{
		"",
		"2388 postgres S 1 2388", // no (comm)
		"(postgres) S 1 2388 2388 0 -1 0 0 0 0 0 1 2 3 4 5", // no pid
		"x (postgres) S 1 2388 2388 0 -1 0 0 0 0 0 1 2 3 4 5",
		"2388 (postgres) S 1 2388 2388 0 -1 0 0 0 0 0 1 2",                     // truncated
		"2388 (postgres) S one 2388 2388 0 -1 0 0 0 0 0 1 2 3 4 20 0",          // ppid
		"2388 (postgres) S 1 2388 2388 0 -1 0 0 0 0 0 1 -2 3 4 20 0 1",         // negative stime
		"2388 (postgres) S 1 2388 2388 0 -1 0 0 0 0 0 1 2 3 4e3 20 0 1",        // not a count
		"2388 (postgres) SS 1 2388 2388 0 -1 0 0 0 0 0 1 2 3 4 20 0 1 0 0 0 0", // state
	} {
		if s, err := parseStat([]byte(text)); err == nil {
			t.Errorf("parseStat(%q) = %+v, nil error; want an error", text, s)
		}
	}
}

// fakeProc is a proc filesystem in a temporary directory.
type fakeProc struct {
	t    *testing.T
	root string
}

func newFakeProc(t *testing.T) *fakeProc {
	t.Helper()
	return &fakeProc{t: t, root: t.TempDir()}
}

func (f *fakeProc) write(rel string, b []byte) {
	f.t.Helper()
	p := filepath.Join(f.root, rel)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		f.t.Fatal(err)
	}
	if err := os.WriteFile(p, b, 0o644); err != nil {
		f.t.Fatal(err)
	}
}

// proc writes process pid: its stat from a template line with the pid,
// ppid and the four times replaced, and its command line.
func (f *fakeProc) proc(pid, ppid int, comm string, utime, stime, cutime, cstime uint64, cmdline string) {
	f.t.Helper()
	line := fmt.Sprintf("%d (%s) S %d %d %d 0 -1 4194304 0 0 0 0 %d %d %d %d 20 0 1 0 4965 369524736 9792\n",
		pid, comm, ppid, pid, pid, utime, stime, cutime, cstime)
	f.write(filepath.Join(strconv.Itoa(pid), "stat"), []byte(line))
	f.write(filepath.Join(strconv.Itoa(pid), "cmdline"), []byte(strings.ReplaceAll(cmdline, " ", "\x00")+"\x00"))
}

func (f *fakeProc) gone(pid int) {
	f.t.Helper()
	if err := os.RemoveAll(filepath.Join(f.root, strconv.Itoa(pid))); err != nil {
		f.t.Fatal(err)
	}
}

func (f *fakeProc) machine(busy, idle uint64) {
	// user nice system idle iowait irq softirq steal
	f.write("stat", fmt.Appendf(nil, "cpu  %d 0 %d %d 0 0 0 0 0 0\ncpu0 1 2 3 4\nintr 1 2\n", busy/2, busy-busy/2, idle))
}

// PostgreSQL's CPU is the postmaster's, its live children's and its reaped
// children's: a backend that disconnects mid-run moves its time into the
// postmaster's cutime/cstime and is counted once; the bench's own backends
// (by database name in the command line) are reported beside.
func TestCPUReportFromTwoSamples(t *testing.T) {
	fp := newFakeProc(t)
	fs := procFS{root: fp.root}
	const pm, bench, other, leaver, kafka, self = 100, 101, 102, 103, 200, 300
	procs := []tracked{
		{Name: "bench+system", PID: self},
		{Name: "postgresql", PID: pm, Backends: "bench_ab12_"},
		{Name: "kafka", PID: kafka},
		{Name: "ghost", PID: 999},
	}
	// before (100 ticks a second)
	fp.machine(1000, 3000)
	fp.proc(self, 1, "bench", 500, 100, 0, 0, "bench -n 10")
	fp.proc(pm, 1, "postgres", 10, 20, 1000, 2000, "/usr/lib/postgresql/15/bin/postgres -D data")
	fp.proc(bench, pm, "postgres", 50, 50, 0, 0, "postgres: postgres bench_ab12_saga 127.0.0.1(4242) idle")
	fp.proc(other, pm, "postgres", 30, 30, 0, 0, "postgres: postgres deals 127.0.0.1(4243) idle")
	fp.proc(leaver, pm, "postgres", 40, 0, 0, 0, "postgres: postgres bench_ab12_profile 127.0.0.1(4244) idle")
	fp.proc(kafka, 1, "java", 7000, 1000, 0, 0, "java -cp libs/* kafka.Kafka server.properties")
	before, err := fs.sample(procs)
	if err != nil {
		t.Fatalf("sample: %v", err)
	}
	before.at = epoch
	// after 2 s: self +300, bench backend +150, other +60, leaver +25 then
	// exits (reaped: postmaster cstime +65), a new bench backend +80,
	// postmaster itself +5, kafka +110; the machine 1,000 busy ticks more
	// over 400 ticks × 2 CPUs... (1000 busy + 200 idle more of 1200 total).
	fp.machine(2000, 3200)
	fp.proc(self, 1, "bench", 700, 200, 0, 0, "bench -n 10")
	fp.proc(pm, 1, "postgres", 15, 20, 1000, 2065, "/usr/lib/postgresql/15/bin/postgres -D data")
	fp.proc(bench, pm, "postgres", 150, 100, 0, 0, "postgres: postgres bench_ab12_saga 127.0.0.1(4242) UPDATE")
	fp.proc(other, pm, "postgres", 60, 60, 0, 0, "postgres: postgres deals 127.0.0.1(4243) idle")
	fp.gone(leaver)
	fp.proc(104, pm, "postgres", 70, 10, 0, 0, "postgres: postgres bench_ab12_deals 127.0.0.1(4245) idle")
	fp.proc(kafka, 1, "java", 7100, 1010, 0, 0, "java -cp libs/* kafka.Kafka server.properties")
	after, err := fs.sample(procs)
	if err != nil {
		t.Fatalf("sample: %v", err)
	}
	after.at = epoch.Add(2e9)

	r := cpuReport(procs, before, after, 100, 2, 100)
	byName := map[string]ProcCPU{}
	for _, p := range r.Processes {
		byName[p.Name] = p
	}
	for _, c := range []struct {
		name          string
		sec, msPerSag float64
	}{
		{"bench+system", 3.0, 30},
		// postmaster 5 + the leaver's last 25 (reaped: 65 in cstime less the 40 it
		// had as a live child) + bench 150 + other 60 + new 80 = 320 ticks
		{"postgresql", 3.2, 32},
		// bench's backends alive at the end: 150 + 80 (the leaver's 25 is in the postmaster's cstime)
		{"postgresql (backends of the bench's databases)", 2.3, 23},
		{"kafka", 1.1, 11},
		{"ghost", 0, 0},
	} {
		p, ok := byName[c.name]
		if !ok {
			t.Errorf("no entry %q in %+v", c.name, r.Processes)
			continue
		}
		if math.Abs(p.CPUSeconds-c.sec) > 1e-9 || math.Abs(p.MsPerSaga-c.msPerSag) > 1e-9 {
			t.Errorf("%s: %.3f CPU s, %.3f ms/saga; want %.3f and %.3f", c.name, p.CPUSeconds, p.MsPerSaga, c.sec, c.msPerSag)
		}
	}
	if got := byName["kafka"].Cores; math.Abs(got-0.55) > 1e-9 {
		t.Errorf("kafka cores %.3f, want 0.55 (1.1 s over 2 s)", got)
	}
	if n := byName["ghost"].Note; !strings.Contains(n, "not found") {
		t.Errorf("ghost note %q, want it to say the process was not found", n)
	}
	// machine: 1000 busy ticks of 1200 → 83%, 10 s of CPU over 100 sagas = 100 ms each
	if math.Abs(r.Machine.BusyFraction-1000.0/1200) > 1e-9 || math.Abs(r.Machine.MsPerSaga-100) > 1e-9 {
		t.Errorf("machine busy %.4f, %.3f ms/saga; want %.4f and 100", r.Machine.BusyFraction, r.Machine.MsPerSaga, 1000.0/1200)
	}
	if r.Seconds != 2 || r.Sagas != 100 {
		t.Errorf("window %.3fs, %d sagas; want 2 and 100", r.Seconds, r.Sagas)
	}
}

func TestMachineCPUFromFixture(t *testing.T) {
	fp := newFakeProc(t)
	fp.write("stat", append(readFixture(t, "stat-cpu"), "cpu0 1 2 3 4 5 6 7 8 0 0\n"...))
	busy, total, err := procFS{root: fp.root}.machine()
	if err != nil {
		t.Fatalf("machine: %v", err)
	}
	// cpu  396964 1770 182705 190451 6725 0 7493 298 0 0
	wantBusy := uint64(396964 + 1770 + 182705 + 0 + 7493 + 298)
	if busy != wantBusy || total != wantBusy+190451+6725 {
		t.Errorf("busy %d total %d, want %d and %d", busy, total, wantBusy, wantBusy+190451+6725)
	}
	fp.write("stat", []byte("intr 1 2 3\n"))
	if _, _, err := (procFS{root: fp.root}).machine(); err == nil {
		t.Error("machine() on a stat without a cpu line: nil error, want one")
	}
}

// The process listening on a port is found through the socket inode of
// net/tcp (IPv4) or net/tcp6 and the fd links; a forked child sharing the
// socket is not taken for the server; a connected (not listening) socket
// on the same port is ignored.
func TestListenerFromFixture(t *testing.T) {
	fp := newFakeProc(t)
	fp.write("net/tcp", readFixture(t, "net-tcp"))   // 127.0.0.1:55432 listening, inode 6193; connections to it
	fp.write("net/tcp6", readFixture(t, "net-tcp6")) // ...:37855 listening, inode 584598
	fp.proc(2388, 1, "postgres", 0, 0, 0, 0, "postgres")
	fp.proc(2400, 2388, "postgres", 0, 0, 0, 0, "postgres: a forked child still holding it")
	fp.proc(3505, 1, "java", 0, 0, 0, 0, "java kafka.Kafka")
	fp.proc(4000, 1, "client", 0, 0, 0, 0, "client")
	link := func(pid, fd int, target string) {
		p := filepath.Join(fp.root, strconv.Itoa(pid), "fd", strconv.Itoa(fd))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(target, p); err != nil {
			t.Fatal(err)
		}
	}
	link(2388, 0, "/dev/null")
	link(2388, 5, "socket:[6193]")
	link(2400, 5, "socket:[6193]")
	link(3505, 140, "socket:[584598]")
	link(4000, 3, "socket:[606315]") // the client end of a connection to 55432
	fs := procFS{root: fp.root}
	for _, c := range []struct {
		port, want int
	}{{55432, 2388}, {37855, 3505}} {
		got, err := fs.listener(c.port)
		if err != nil || got != c.want {
			t.Errorf("listener(%d) = %d, %v; want %d", c.port, got, err, c.want)
		}
	}
	for _, port := range []int{45800, 7800} { // 45800: only a connection's local port; 7800: listening, no process holds it
		if pid, err := fs.listener(port); err == nil {
			t.Errorf("listener(%d) = %d, nil error; want an error", port, pid)
		}
	}
	// findServer refuses an address that is not this machine's, and falls
	// back to a pid file when the socket is not found.
	if _, err := findServer(context.Background(), fs, "192.0.2.1:55432", nil); err == nil || !strings.Contains(err.Error(), "not on this machine") {
		t.Errorf("findServer(192.0.2.1:55432) error %v, want 'not on this machine'", err)
	}
	pid, err := findServer(context.Background(), fs, "127.0.0.1:7800", func(port int) (int, bool) { return 3505, port == 7800 })
	if err != nil || pid != 3505 {
		t.Errorf("findServer with a pid file fallback = %d, %v; want 3505", pid, err)
	}
	if _, err := findServer(context.Background(), fs, "127.0.0.1:7800", func(int) (int, bool) { return 9999, true }); err == nil {
		t.Error("findServer with a pid file naming a dead process: nil error, want one")
	}
}

func TestClockTicksFromAuxv(t *testing.T) {
	fp := newFakeProc(t)
	fs := procFS{root: fp.root}
	if got := fs.clockTicks(); got != 100 {
		t.Errorf("clockTicks without auxv = %d, want 100", got)
	}
	var auxv []byte
	for _, kv := range [][2]uint64{{6, 4096}, {atClkTck, 250}, {0, 0}} { // AT_PAGESZ, AT_CLKTCK, AT_NULL
		auxv = binary.NativeEndian.AppendUint64(auxv, kv[0])
		auxv = binary.NativeEndian.AppendUint64(auxv, kv[1])
	}
	fp.write("self/auxv", auxv)
	if got := fs.clockTicks(); got != 250 {
		t.Errorf("clockTicks = %d, want 250", got)
	}
	if got := (procFS{root: "/proc"}).clockTicks(); got == 0 {
		t.Errorf("clockTicks of this machine = 0")
	}
}

// make up's pid files count only when they are for the port asked about.
func TestPidFiles(t *testing.T) {
	dir := t.TempDir()
	write := func(rel, text string) {
		t.Helper()
		p := filepath.Join(dir, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if _, ok := postmasterPID(dir, 55432); ok {
		t.Error("postmasterPID without a file: ok")
	}
	write("postgres/data/postmaster.pid", "2388\n/var/tmp/saga-machine/postgres/data\n1764120000\n55432\n\n127.0.0.1\n  55432001         0\nready   \n")
	if pid, ok := postmasterPID(dir, 55432); !ok || pid != 2388 {
		t.Errorf("postmasterPID = %d, %v; want 2388", pid, ok)
	}
	if _, ok := postmasterPID(dir, 5432); ok {
		t.Error("postmasterPID for another port: ok")
	}
	write("kafka/kafka.pid", "3505\n")
	write("kafka/server.properties", "process.roles=broker,controller\nlisteners=SASL_PLAINTEXT://127.0.0.1:59092,CONTROLLER://127.0.0.1:59093\n")
	if pid, ok := kafkaPID(dir, 59092); !ok || pid != 3505 {
		t.Errorf("kafkaPID = %d, %v; want 3505", pid, ok)
	}
	if pid, ok := kafkaPID(dir, 59093); !ok || pid != 3505 {
		t.Errorf("kafkaPID(controller port) = %d, %v; want 3505", pid, ok)
	}
	if _, ok := kafkaPID(dir, 5909); ok {
		t.Error("kafkaPID for a port that is a prefix of the broker's: ok")
	}
}

func TestPostgresAddr(t *testing.T) {
	for _, c := range []struct{ url, want string }{
		{"postgres://postgres@127.0.0.1:55432/postgres?sslmode=disable", "127.0.0.1:55432"},
		{"postgresql://u:p@localhost/db", "localhost:5432"},
		{"postgres://[::1]:6000/x", "[::1]:6000"},
	} {
		if got, err := postgresAddr(c.url); err != nil || got != c.want {
			t.Errorf("postgresAddr(%q) = %q, %v; want %q", c.url, got, err, c.want)
		}
	}
	for _, bad := range []string{"host=127.0.0.1 port=55432", "mysql://x:1/y", "%zz"} {
		if got, err := postgresAddr(bad); err == nil {
			t.Errorf("postgresAddr(%q) = %q, nil error; want one", bad, got)
		}
	}
}
