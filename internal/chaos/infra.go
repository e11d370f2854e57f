package chaos

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/portfolio-counselor/sagamachine/engine/kafka"
	"github.com/portfolio-counselor/sagamachine/internal/sqldb"
	"github.com/portfolio-counselor/sagamachine/internal/stack"
)

// Infra is a private PostgreSQL server and Kafka broker (SASL/SCRAM and
// ACLs, KRaft) started by scripts/up.sh with their own run directory and
// ports, so that a chaos run may crash and restart them without touching
// make up's services, which other tests use.
type Infra struct {
	// RunDir is the services' SAGA_RUN_DIR (data, logs, pid files).
	RunDir string
	// PostgresPort, KafkaPort and ControllerPort are their loopback ports;
	// KafkaTLSPort is the broker's SASL_SSL listener (scripts/up.sh opens
	// one; the run does not use it, but it must not take make up's).
	PostgresPort, KafkaPort, ControllerPort, KafkaTLSPort int
	// AdminUser and AdminPassword are the broker's super user (a random
	// password for this broker only).
	AdminUser, AdminPassword string

	repo string
	out  io.Writer // scripts' output (RunDir/infra.log)
	logf func(string, ...any)
}

// StartInfra starts a private PostgreSQL and Kafka with scripts/up.sh of
// the repository at repo, their data in runDir (created, and made readable
// for the postgres user, which the server runs as under root). The Kafka
// jars of make up's run directory are linked rather than fetched again when
// they are complete. On an error the caller still calls Close on the
// returned Infra (nil when nothing was started).
func StartInfra(ctx context.Context, repo, runDir string, logf func(string, ...any)) (*Infra, error) {
	if err := os.MkdirAll(runDir, 0o755); err != nil {
		return nil, fmt.Errorf("chaos: infra run directory: %w", err)
	}
	// MkdirTemp makes 0700 directories; PostgreSQL (user postgres) must
	// reach its data directory below.
	if err := os.Chmod(runDir, 0o755); err != nil {
		return nil, fmt.Errorf("chaos: infra run directory: %w", err)
	}
	ports, err := freePorts(4)
	if err != nil {
		return nil, err
	}
	log, err := os.OpenFile(filepath.Join(runDir, "infra.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("chaos: infra log: %w", err)
	}
	in := &Infra{RunDir: runDir, PostgresPort: ports[0], KafkaPort: ports[1], ControllerPort: ports[2], KafkaTLSPort: ports[3],
		AdminUser: "admin", AdminPassword: "chaos-" + randomHex(12), repo: repo, out: log, logf: logf}
	in.linkKafkaJars()
	logf("infra: starting a private PostgreSQL on 127.0.0.1:%d and Kafka on 127.0.0.1:%d (scripts/up.sh, SAGA_RUN_DIR=%s)",
		in.PostgresPort, in.KafkaPort, runDir)
	if err := in.script(ctx, "postgres kafka", "scripts/up.sh"); err != nil {
		return in, err
	}
	return in, nil
}

// PostgresURL is the URL of the private server's maintenance database.
func (in *Infra) PostgresURL() string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", in.PostgresPort)
}

// Kafka is the private broker's super user client configuration.
func (in *Infra) Kafka() kafka.Config {
	return kafka.Config{Brokers: []string{"127.0.0.1:" + strconv.Itoa(in.KafkaPort)}, ClientID: "chaos",
		SASL: kafka.SASL{Mechanism: kafka.MechanismSCRAMSHA512, User: in.AdminUser, Password: in.AdminPassword},
		// The run's own clients (the offset monitor, the stack's setup)
		// would log every refused connection while the broker is down on
		// purpose.
		Logger: slog.New(slog.DiscardHandler)}
}

// linkKafkaJars points RunDir/kafka/libs at make up's jars when those are
// complete (scripts/up.sh then fetches nothing).
func (in *Infra) linkKafkaJars() {
	shared := stack.RunDir()
	libs := filepath.Join(shared, "kafka", "libs")
	if _, err := os.Stat(filepath.Join(libs, ".complete")); err != nil || filepath.Clean(shared) == filepath.Clean(in.RunDir) {
		return
	}
	if err := os.MkdirAll(filepath.Join(in.RunDir, "kafka"), 0o755); err != nil {
		return
	}
	_ = os.Symlink(libs, filepath.Join(in.RunDir, "kafka", "libs"))
}

// env is the scripts' environment: ours without SAGA_* (a developer's
// settings must not point the scripts at make up's services), plus the
// private run directory, ports, super user and the services to start.
func (in *Infra) env(services string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "SAGA_") {
			env = append(env, kv)
		}
	}
	return append(env,
		"SAGA_RUN_DIR="+in.RunDir,
		"SAGA_PG_PORT="+strconv.Itoa(in.PostgresPort),
		"SAGA_KAFKA_PORT="+strconv.Itoa(in.KafkaPort),
		"SAGA_KAFKA_CONTROLLER_PORT="+strconv.Itoa(in.ControllerPort),
		"SAGA_KAFKA_TLS_PORT="+strconv.Itoa(in.KafkaTLSPort),
		"SAGA_TEST_KAFKA_USER="+in.AdminUser,
		"SAGA_TEST_KAFKA_PASSWORD="+in.AdminPassword,
		"SAGA_UP_SERVICES="+services)
}

// script runs a script of the repository (or bash -c code with args) with
// env(services), its output to RunDir/infra.log; an error carries the
// output's tail.
func (in *Infra) script(ctx context.Context, services string, path string, args ...string) error {
	var cmd *exec.Cmd
	if strings.HasPrefix(path, "scripts/") {
		cmd = exec.CommandContext(ctx, "bash", append([]string{filepath.Join(in.repo, path)}, args...)...)
	} else {
		cmd = exec.CommandContext(ctx, "bash", append([]string{"-c", path, "chaos"}, args...)...)
	}
	cmd.Dir = in.repo
	cmd.Env = in.env(services)
	var tail bytes.Buffer
	cmd.Stdout = io.MultiWriter(in.out, &tail)
	cmd.Stderr = cmd.Stdout
	// The scripts start servers that outlive them (setsid): WaitDelay keeps
	// an inherited descriptor from holding Wait.
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Run(); err != nil {
		out := tail.String()
		if len(out) > 4000 {
			out = "…" + out[len(out)-4000:]
		}
		return fmt.Errorf("chaos: %s (services %q): %w\n%s", path, services, err, out)
	}
	return nil
}

// libSh is the path of scripts/lib.sh, sourced by the inline scripts.
func (in *Infra) libSh() string { return filepath.Join(in.repo, "scripts", "lib.sh") }

// CrashPostgres stops PostgreSQL the way a crash does: pg_ctl stop -m
// immediate (every server process quits at once, no checkpoint; the next
// start runs crash recovery).
func (in *Infra) CrashPostgres(ctx context.Context) error {
	return in.script(ctx, "postgres", `source "$1"; bin="$(pg_bin_dir)"; as_pg "$bin/pg_ctl" -D "$PG_DATA" -m immediate -w -t 30 stop`, in.libSh())
}

// StartPostgres starts PostgreSQL again (scripts/up.sh, postgres only) and
// returns when it answers.
func (in *Infra) StartPostgres(ctx context.Context) error {
	return in.script(ctx, "postgres", "scripts/up.sh")
}

// kafkaPIDFile is where scripts/up.sh (and RestartKafka) keep the broker's
// pid.
func (in *Infra) kafkaPIDFile() string { return filepath.Join(in.RunDir, "kafka", "kafka.pid") }

// kafkaProcess returns the broker's pid and command line, checking that the
// pid is still this run's broker.
func (in *Infra) kafkaProcess() (int, []string, error) {
	b, err := os.ReadFile(in.kafkaPIDFile())
	if err != nil {
		return 0, nil, fmt.Errorf("chaos: Kafka pid: %w", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return 0, nil, fmt.Errorf("chaos: Kafka pid file %s: %w", in.kafkaPIDFile(), err)
	}
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return 0, nil, fmt.Errorf("chaos: Kafka pid %d: %w", pid, err)
	}
	argv := strings.Split(strings.TrimRight(string(cmdline), "\x00"), "\x00")
	conf := filepath.Join(in.RunDir, "kafka", "server.properties")
	if !strings.Contains(string(cmdline), "kafka.Kafka\x00"+conf) {
		return 0, nil, fmt.Errorf("chaos: pid %d is not the private broker (%s)", pid, strings.Join(argv, " "))
	}
	return pid, argv, nil
}

// CrashKafka kills the broker with SIGKILL and waits until it is gone. It
// returns the broker's command line, for RestartKafka.
func (in *Infra) CrashKafka(ctx context.Context) ([]string, error) {
	pid, argv, err := in.kafkaProcess()
	if err != nil {
		return nil, err
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		return nil, fmt.Errorf("chaos: kill -9 Kafka (pid %d): %w", pid, err)
	}
	for {
		if !alive(pid) && !portOpen(in.KafkaPort) {
			return argv, nil
		}
		select {
		case <-ctx.Done():
			return argv, fmt.Errorf("chaos: Kafka (pid %d) still there after kill -9: %w", pid, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// RestartKafka starts the broker again with the command line CrashKafka
// returned (the one scripts/up.sh started it with), in its own session,
// its output appended to the broker's log, and waits until its port
// accepts connections. The Go build of the tree is not involved (up.sh's
// probe and setup steps compile the tree, which may be mid-edit).
func (in *Infra) RestartKafka(ctx context.Context, argv []string) error {
	if len(argv) == 0 {
		return errors.New("chaos: restart Kafka: no command line")
	}
	logFile, err := os.OpenFile(filepath.Join(in.RunDir, "kafka", "server.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("chaos: restart Kafka: %w", err)
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Dir = in.RunDir
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return fmt.Errorf("chaos: restart Kafka: %w", err)
	}
	logFile.Close()
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }() // reap it whenever it ends (Close stops it)
	if err := os.WriteFile(in.kafkaPIDFile(), []byte(strconv.Itoa(cmd.Process.Pid)+"\n"), 0o644); err != nil {
		return fmt.Errorf("chaos: restart Kafka: %w", err)
	}
	for !portOpen(in.KafkaPort) {
		select {
		case <-exited:
			return fmt.Errorf("chaos: the restarted Kafka exited (log: %s)", filepath.Join(in.RunDir, "kafka", "server.log"))
		case <-ctx.Done():
			return fmt.Errorf("chaos: the restarted Kafka did not open port %d: %w", in.KafkaPort, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
	return nil
}

// Close stops both servers (scripts/down.sh) and deletes RunDir unless
// keep. Safe to call on a partly started Infra.
func (in *Infra) Close(keep bool) error {
	if in == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	err := in.script(ctx, "postgres kafka", "scripts/down.sh")
	if c, ok := in.out.(io.Closer); ok {
		c.Close()
	}
	if !keep {
		if rmErr := os.RemoveAll(in.RunDir); rmErr != nil {
			err = errors.Join(err, fmt.Errorf("chaos: remove %s: %w", in.RunDir, rmErr))
		}
	}
	return err
}

// alive reports whether pid is a process that has not exited (a zombie
// counts as gone).
func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	s := string(b)
	if i := strings.LastIndexByte(s, ')'); i >= 0 && i+2 < len(s) {
		return s[i+2] != 'Z' && s[i+2] != 'X'
	}
	return true
}

func portOpen(port int) bool {
	c, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(port), 200*time.Millisecond)
	if err != nil {
		return false
	}
	c.Close()
	return true
}

// freePorts returns n loopback ports that were free a moment ago.
func freePorts(n int) ([]int, error) {
	var lns []net.Listener
	defer func() {
		for _, ln := range lns {
			ln.Close()
		}
	}()
	var ports []int
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("chaos: find a free port: %w", err)
		}
		lns = append(lns, ln)
		ports = append(ports, ln.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// LockWaits lists the client sessions of the private server that wait for
// a lock held by another client session (autovacuum and other server
// processes left out), grouped by database and by the session blocking
// them: how many wait, the blocker's state (e.g. "idle in transaction"),
// for how long, and its last statement.
func (in *Infra) LockWaits(ctx context.Context) ([]string, error) {
	return lockWaits(ctx, in.PostgresURL())
}

// lockWaits is LockWaits on the server of the database at url.
func lockWaits(ctx context.Context, url string) ([]string, error) {
	db, err := sqldb.OpenPostgres(url)
	if err != nil {
		return nil, fmt.Errorf("chaos: lock waits: %w", err)
	}
	defer db.Close()
	var rows []struct {
		DB      string  `db:"datname"`
		Waiting int     `db:"waiting"`
		Blocker int     `db:"blocker"`
		State   string  `db:"state"`
		Since   float64 `db:"since"`
		Query   string  `db:"query"`
	}
	if err := db.SelectContext(ctx, &rows, `SELECT coalesce(w.datname, '') AS datname, count(*) AS waiting, b.pid AS blocker,
		coalesce(b.state, '') AS state, greatest(coalesce(extract(epoch FROM now() - b.state_change), 0), 0) AS since,
		left(regexp_replace(coalesce(b.query, ''), '\s+', ' ', 'g'), 120) AS query
		FROM pg_stat_activity w
		CROSS JOIN LATERAL unnest(pg_blocking_pids(w.pid)) AS bp(pid)
		JOIN pg_stat_activity b ON b.pid = bp.pid
		WHERE w.backend_type = 'client backend' AND b.backend_type = 'client backend'
		GROUP BY w.datname, b.pid, b.state, b.state_change, b.query
		ORDER BY count(*) DESC`); err != nil {
		return nil, fmt.Errorf("chaos: lock waits: %w", err)
	}
	var out []string
	for _, r := range rows {
		out = append(out, fmt.Sprintf("%s: %d sessions wait for pid %d, %s for %.1fs, last statement %q", r.DB, r.Waiting, r.Blocker, r.State, r.Since, r.Query))
	}
	return out, nil
}
