package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// CPU accounting: the CPU time (user + system) that each process of the
// system under test spends during the measured run, read from the proc
// filesystem before and after it. A tracked process counts with its
// children: the live ones (PostgreSQL's backends and background workers)
// and, through its cutime/cstime, the ones it has reaped (a backend that
// disconnected).

// procFS reads a proc filesystem mounted at root ("/proc"; tests use a
// fixture).
type procFS struct{ root string }

// stat is what bench uses of /proc/<pid>/stat.
type stat struct {
	pid, ppid      int
	comm           string
	state          byte
	utime, stime   uint64 // clock ticks, this process's threads
	cutime, cstime uint64 // clock ticks, its reaped children
}

// own is the process's own CPU; withReaped adds its reaped children's.
func (s stat) own() uint64        { return s.utime + s.stime }
func (s stat) withReaped() uint64 { return s.utime + s.stime + s.cutime + s.cstime }

// parseStat parses the text of /proc/<pid>/stat (proc(5)): pid (comm)
// state ppid ... utime(14) stime(15) cutime(16) cstime(17) ... The command
// name may hold spaces and parentheses: it ends at the last ')'.
func parseStat(b []byte) (stat, error) {
	var s stat
	open, end := bytes.IndexByte(b, '('), bytes.LastIndexByte(b, ')')
	if open < 1 || end < open {
		return s, fmt.Errorf("parse proc stat %q: no (comm)", truncate(b))
	}
	pid, err := strconv.Atoi(string(bytes.TrimSpace(b[:open])))
	if err != nil {
		return s, fmt.Errorf("parse proc stat %q: pid: %w", truncate(b), err)
	}
	s.pid, s.comm = pid, string(b[open+1:end])
	f := strings.Fields(string(b[end+1:]))
	// f[0] is field 3 (state): field k is f[k-3].
	if len(f) < 15 || len(f[0]) != 1 {
		return s, fmt.Errorf("parse proc stat %q: %d fields after comm, want at least 15", truncate(b), len(f))
	}
	s.state = f[0][0]
	if s.ppid, err = strconv.Atoi(f[1]); err != nil {
		return s, fmt.Errorf("parse proc stat %q: ppid: %w", truncate(b), err)
	}
	for k, dst := range map[int]*uint64{14: &s.utime, 15: &s.stime, 16: &s.cutime, 17: &s.cstime} {
		// cutime and cstime are signed in the kernel (long); never negative in practice.
		v, err := strconv.ParseInt(f[k-3], 10, 64)
		if err != nil || v < 0 {
			return s, fmt.Errorf("parse proc stat %q: field %d %q: want a count of clock ticks", truncate(b), k, f[k-3])
		}
		*dst = uint64(v)
	}
	return s, nil
}

func truncate(b []byte) string {
	if len(b) > 80 {
		return string(b[:80]) + "…"
	}
	return string(b)
}

// stat reads one process's stat.
func (p procFS) stat(pid int) (stat, error) {
	b, err := os.ReadFile(filepath.Join(p.root, strconv.Itoa(pid), "stat"))
	if err != nil {
		return stat{}, err
	}
	return parseStat(b)
}

// cmdline is a process's command line, arguments joined by spaces (""
// when unreadable).
func (p procFS) cmdline(pid int) string {
	b, _ := os.ReadFile(filepath.Join(p.root, strconv.Itoa(pid), "cmdline"))
	return strings.TrimSpace(string(bytes.ReplaceAll(b, []byte{0}, []byte{' '})))
}

// pids lists the processes.
func (p procFS) pids() ([]int, error) {
	ents, err := os.ReadDir(p.root)
	if err != nil {
		return nil, fmt.Errorf("list processes: %w", err)
	}
	var out []int
	for _, e := range ents {
		if pid, err := strconv.Atoi(e.Name()); err == nil && pid > 0 {
			out = append(out, pid)
		}
	}
	return out, nil
}

// all reads the stat of every process (those that exit meanwhile are left
// out).
func (p procFS) all() (map[int]stat, error) {
	pids, err := p.pids()
	if err != nil {
		return nil, err
	}
	out := make(map[int]stat, len(pids))
	for _, pid := range pids {
		if s, err := p.stat(pid); err == nil {
			out[pid] = s
		}
	}
	return out, nil
}

// machine reads the busy and total clock ticks of all CPUs (the "cpu" line
// of /proc/stat: user nice system idle iowait irq softirq steal ...; idle
// and iowait are not busy; guest time is already in user).
func (p procFS) machine() (busy, total uint64, err error) {
	f, err := os.Open(filepath.Join(p.root, "stat"))
	if err != nil {
		return 0, 0, fmt.Errorf("read machine CPU: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		if len(fs) < 5 || fs[0] != "cpu" {
			continue
		}
		for i, v := range fs[1:min(len(fs), 9)] {
			n, err := strconv.ParseUint(v, 10, 64)
			if err != nil {
				return 0, 0, fmt.Errorf("read machine CPU: field %d %q: %w", i+1, v, err)
			}
			total += n
			if i != 3 && i != 4 { // idle, iowait
				busy += n
			}
		}
		return busy, total, nil
	}
	return 0, 0, errors.New("read machine CPU: no cpu line in stat")
}

// atClkTck is the auxiliary vector entry of the clock tick rate (elf.h).
const atClkTck = 17

// clockTicks is the rate of the ticks in stat (sysconf(_SC_CLK_TCK)), read
// from the process's auxiliary vector; 100, Linux's USER_HZ, if unreadable.
func (p procFS) clockTicks() uint64 {
	b, err := os.ReadFile(filepath.Join(p.root, "self", "auxv"))
	if err == nil {
		for ; len(b) >= 16; b = b[16:] {
			k, v := binary.NativeEndian.Uint64(b), binary.NativeEndian.Uint64(b[8:])
			if k == atClkTck && v > 0 {
				return v
			}
		}
	}
	return 100
}

// listeners are the socket inodes listening on TCP port (IPv4 and IPv6).
func (p procFS) listeners(port int) (map[uint64]bool, error) {
	out := map[uint64]bool{}
	var read int
	for _, name := range []string{"tcp", "tcp6"} {
		f, err := os.Open(filepath.Join(p.root, "net", name))
		if err != nil {
			continue
		}
		read++
		sc := bufio.NewScanner(f)
		sc.Scan() // header
		for sc.Scan() {
			// sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
			fs := strings.Fields(sc.Text())
			if len(fs) < 10 || fs[3] != "0A" { // 0A: LISTEN
				continue
			}
			i := strings.LastIndexByte(fs[1], ':')
			lp, err := strconv.ParseUint(fs[1][i+1:], 16, 16)
			if i < 0 || err != nil || int(lp) != port {
				continue
			}
			if inode, err := strconv.ParseUint(fs[9], 10, 64); err == nil && inode != 0 {
				out[inode] = true
			}
		}
		f.Close()
	}
	if read == 0 {
		return nil, errors.New("no readable net/tcp or net/tcp6")
	}
	return out, nil
}

// listener finds the process listening on TCP port: the one holding the
// listening socket (PostgreSQL's postmaster, not its backends: they close
// it). It needs to read other processes' fd directories (the same user, or
// root).
func (p procFS) listener(port int) (int, error) {
	inodes, err := p.listeners(port)
	if err != nil {
		return 0, fmt.Errorf("find the process listening on port %d: %w", port, err)
	}
	if len(inodes) == 0 {
		return 0, fmt.Errorf("find the process listening on port %d: nothing listens there", port)
	}
	pids, err := p.pids()
	if err != nil {
		return 0, err
	}
	var found []int
	for _, pid := range pids {
		fds, err := os.ReadDir(filepath.Join(p.root, strconv.Itoa(pid), "fd"))
		if err != nil {
			continue
		}
		for _, fd := range fds {
			l, err := os.Readlink(filepath.Join(p.root, strconv.Itoa(pid), "fd", fd.Name()))
			if !strings.HasPrefix(l, "socket:[") {
				continue
			}
			if inode, err2 := strconv.ParseUint(strings.TrimSuffix(l[len("socket:["):], "]"), 10, 64); err == nil && err2 == nil && inodes[inode] {
				found = append(found, pid)
				break
			}
		}
	}
	if len(found) == 0 {
		return 0, fmt.Errorf("find the process listening on port %d: its socket is in no readable process (another user's?)", port)
	}
	// Forked children may share the socket: the parent is the process.
	slices.Sort(found)
	for _, pid := range found {
		s, err := p.stat(pid)
		if err != nil || !slices.Contains(found, s.ppid) {
			return pid, nil
		}
	}
	return found[0], nil
}

// tracked is a process whose CPU bench reports.
type tracked struct {
	Name string
	PID  int
	// Backends, for a PostgreSQL postmaster, selects the backends whose
	// command line holds this text (the bench's database prefix): reported
	// as a second entry.
	Backends string
	Note     string
}

// cpuSample is the CPU counters at one moment.
type cpuSample struct {
	at          time.Time
	busy, total uint64           // the machine's, all CPUs
	group       []uint64         // per tracked process: itself and its children, live and reaped
	backends    []map[int]uint64 // per tracked process with Backends: the matching children's
	missing     []bool           // tracked process gone
}

// sample reads the counters of procs.
func (p procFS) sample(procs []tracked) (cpuSample, error) {
	s := cpuSample{at: time.Now(), group: make([]uint64, len(procs)), backends: make([]map[int]uint64, len(procs)), missing: make([]bool, len(procs))}
	var err error
	if s.busy, s.total, err = p.machine(); err != nil {
		return s, err
	}
	all, err := p.all()
	if err != nil {
		return s, err
	}
	children := map[int][]stat{}
	for _, st := range all {
		children[st.ppid] = append(children[st.ppid], st)
	}
	for i, t := range procs {
		st, ok := all[t.PID]
		if !ok {
			s.missing[i] = true
			continue
		}
		ticks := st.withReaped()
		for _, c := range children[t.PID] {
			ticks += c.withReaped()
		}
		s.group[i] = ticks
		if t.Backends != "" {
			s.backends[i] = map[int]uint64{}
			for _, c := range children[t.PID] {
				if strings.Contains(p.cmdline(c.pid), t.Backends) {
					s.backends[i][c.pid] = c.withReaped()
				}
			}
		}
	}
	return s, nil
}

// CPUReport is the CPU that the system's processes spent during the run.
type CPUReport struct {
	// Seconds is the length of the measured window (the sagas' phase).
	Seconds float64 `json:"window_seconds"`
	// Sagas is the number of sagas finished in it.
	Sagas int `json:"sagas"`
	// Processes are the tracked processes.
	Processes []ProcCPU `json:"processes"`
	// Machine is every CPU of the machine: the tracked processes and
	// whatever else ran (other users' work on a shared box).
	Machine MachineCPU `json:"machine"`
	// Notes say what the figures include.
	Notes []string `json:"notes,omitempty"`
}

// ProcCPU is one process's CPU over the window.
type ProcCPU struct {
	Name string `json:"name"`
	PID  int    `json:"pid"`
	// CPUSeconds is user + system time of the process and its children.
	CPUSeconds float64 `json:"cpu_seconds"`
	// MsPerSaga is CPUSeconds per finished saga, in milliseconds.
	MsPerSaga float64 `json:"ms_per_saga"`
	// Cores is the average number of CPUs it kept busy.
	Cores float64 `json:"cores"`
	Note  string  `json:"note,omitempty"`
}

// MachineCPU is the whole machine's CPU over the window.
type MachineCPU struct {
	CPUs int `json:"cpus"`
	// BusyFraction is the share of all CPUs' time that was not idle.
	BusyFraction float64 `json:"busy_fraction"`
	// MsPerSaga is the busy time of all CPUs per finished saga.
	MsPerSaga float64 `json:"ms_per_saga"`
}

// cpuReport turns two samples into a report for sagas finished sagas.
func cpuReport(procs []tracked, before, after cpuSample, hz uint64, cpus, sagas int) *CPUReport {
	win := after.at.Sub(before.at).Seconds()
	r := &CPUReport{Seconds: win, Sagas: sagas, Machine: MachineCPU{CPUs: cpus}}
	perSaga := func(sec float64) float64 {
		if sagas == 0 {
			return 0
		}
		return sec * 1000 / float64(sagas)
	}
	sec := func(ticks uint64) float64 { return float64(ticks) / float64(hz) }
	for i, t := range procs {
		pc := ProcCPU{Name: t.Name, PID: t.PID, Note: t.Note}
		if before.missing[i] || after.missing[i] {
			pc.Note = strings.TrimSpace(pc.Note + " (process not found before or after the run: not measured)")
			r.Processes = append(r.Processes, pc)
			continue
		}
		var d uint64
		if after.group[i] > before.group[i] { // a child that exits between the two reads can make it shrink
			d = after.group[i] - before.group[i]
		}
		pc.CPUSeconds = sec(d)
		pc.MsPerSaga, pc.Cores = perSaga(pc.CPUSeconds), pc.CPUSeconds/win
		r.Processes = append(r.Processes, pc)
		if t.Backends != "" {
			var bd uint64
			for pid, a := range after.backends[i] {
				if b := before.backends[i][pid]; a > b {
					bd += a - b
				}
			}
			bs := sec(bd)
			r.Processes = append(r.Processes, ProcCPU{
				Name: t.Name + " (backends of the bench's databases)", PID: t.PID,
				CPUSeconds: bs, MsPerSaga: perSaga(bs), Cores: bs / win,
				Note: "backends connected to the bench's databases, alive at the end; the rest of " + t.Name + " is its background processes (WAL writer, checkpointer, autovacuum) and other clients' backends",
			})
		}
	}
	if after.total > before.total && after.busy >= before.busy {
		r.Machine.BusyFraction = float64(after.busy-before.busy) / float64(after.total-before.total)
		r.Machine.MsPerSaga = perSaga(sec(after.busy - before.busy))
	}
	return r
}

// cpuMeter measures the tracked processes over a window.
type cpuMeter struct {
	fs     procFS
	procs  []tracked
	notes  []string
	before cpuSample
	hz     uint64
}

// start takes the first sample.
func (m *cpuMeter) start() error {
	var err error
	m.hz = m.fs.clockTicks()
	m.before, err = m.fs.sample(m.procs)
	return err
}

// stop takes the second sample and reports.
func (m *cpuMeter) stop(cpus, sagas int) (*CPUReport, error) {
	after, err := m.fs.sample(m.procs)
	if err != nil {
		return nil, err
	}
	r := cpuReport(m.procs, m.before, after, m.hz, cpus, sagas)
	r.Notes = append(r.Notes, m.notes...)
	return r, nil
}

// findServer finds the local process serving addr (host:port): the process
// listening on the port if the host is this machine, else the pid file
// fallback (when it names a live process), else an error.
func findServer(ctx context.Context, fs procFS, addr string, fallback func(port int) (int, bool)) (int, error) {
	host, ps, err := net.SplitHostPort(addr)
	if err != nil {
		return 0, fmt.Errorf("address %q: %w", addr, err)
	}
	port, err := strconv.Atoi(ps)
	if err != nil || port <= 0 || port > 65535 {
		return 0, fmt.Errorf("address %q: bad port", addr)
	}
	if !isLocalHost(ctx, host) {
		return 0, fmt.Errorf("%s is not on this machine", addr)
	}
	pid, err := fs.listener(port)
	if err == nil {
		return pid, nil
	}
	if fallback != nil {
		if pid, ok := fallback(port); ok {
			if _, serr := fs.stat(pid); serr == nil {
				return pid, nil
			}
		}
	}
	return 0, err
}

// isLocalHost tells whether host names this machine: loopback, or one of
// its interfaces' addresses.
func isLocalHost(ctx context.Context, host string) bool {
	if host == "" {
		return true
	}
	var ips []net.IP
	if ip := net.ParseIP(host); ip != nil {
		ips = []net.IP{ip}
	} else {
		ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		addrs, err := net.DefaultResolver.LookupIPAddr(ctx, host)
		if err != nil {
			return false
		}
		for _, a := range addrs {
			ips = append(ips, a.IP)
		}
	}
	ifaddrs, _ := net.InterfaceAddrs()
	for _, ip := range ips {
		if ip.IsLoopback() || ip.IsUnspecified() {
			return true
		}
		for _, a := range ifaddrs {
			if n, ok := a.(*net.IPNet); ok && n.IP.Equal(ip) {
				return true
			}
		}
	}
	return false
}

// postgresAddr is host:port of a postgres:// URL (port 5432 if none).
func postgresAddr(raw string) (string, error) {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
		return "", fmt.Errorf("not a postgres:// URL")
	}
	port := u.Port()
	if port == "" {
		port = "5432"
	}
	return net.JoinHostPort(u.Hostname(), port), nil
}

// runDir is scripts/lib.sh's $SAGA_RUN_DIR, where make up keeps the
// services' pid files.
func runDir(env func(string) string) string {
	if d := env("SAGA_RUN_DIR"); d != "" {
		return d
	}
	if os.Geteuid() == 0 || env("HOME") == "" {
		return "/var/tmp/saga-machine"
	}
	return filepath.Join(env("HOME"), ".cache", "saga-machine")
}

// postmasterPID reads make up's postmaster.pid: the pid on line 1, the
// port on line 4; ok only when the port is port.
func postmasterPID(dir string, port int) (int, bool) {
	b, err := os.ReadFile(filepath.Join(dir, "postgres", "data", "postmaster.pid"))
	if err != nil {
		return 0, false
	}
	lines := strings.Split(string(b), "\n")
	if len(lines) < 4 {
		return 0, false
	}
	pid, err1 := strconv.Atoi(strings.TrimSpace(lines[0]))
	p, err2 := strconv.Atoi(strings.TrimSpace(lines[3]))
	return pid, err1 == nil && err2 == nil && p == port
}

// kafkaPID reads make up's kafka.pid; ok only when that broker's
// server.properties listens on port.
func kafkaPID(dir string, port int) (int, bool) {
	b, err := os.ReadFile(filepath.Join(dir, "kafka", "kafka.pid"))
	if err != nil {
		return 0, false
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return 0, false
	}
	conf, err := os.ReadFile(filepath.Join(dir, "kafka", "server.properties"))
	if err != nil {
		return 0, false
	}
	for _, l := range strings.Split(string(conf), "\n") {
		if strings.HasPrefix(l, "listeners=") && strings.Contains(l, ":"+strconv.Itoa(port)+",") ||
			strings.HasPrefix(l, "listeners=") && strings.HasSuffix(strings.TrimSpace(l), ":"+strconv.Itoa(port)) {
			return pid, true
		}
	}
	return 0, false
}
