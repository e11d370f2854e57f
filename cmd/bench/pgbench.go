package main

import (
	"bytes"
	"context"
	"database/sql"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/portfolio-counselor/sagamachine/internal/sqldb"
)

// The PostgreSQL floor: pgbench's built-in write-only transaction
// (simple-update, pgbench -N: BEGIN; UPDATE pgbench_accounts; SELECT;
// INSERT INTO pgbench_history; END: one commit, one fsync) with the same
// number of clients, against the same server, in a database of its own.

// pgbenchConfig is one pgbench measurement.
type pgbenchConfig struct {
	server   string // postgres:// URL of the server (any database)
	clients  int
	threads  int
	duration time.Duration
	scale    int
	cpu      bool
	env      func(string) string
}

// Pgbench is what a pgbench run measured.
type Pgbench struct {
	Builtin string `json:"builtin"`
	// Database is the temporary database (dropped afterwards).
	Database string `json:"database"`
	// Clients is the client count run; Requested the one asked for, when
	// the server's free connections forced fewer.
	Clients   int     `json:"clients"`
	Requested int     `json:"requested_clients,omitempty"`
	Threads   int     `json:"threads"`
	Scale     int     `json:"scale"`
	Seconds   float64 `json:"seconds"`
	TPS       float64 `json:"tps"`
	// LatencyAvgMs is pgbench's "latency average" (it has no percentiles
	// without per-transaction logs).
	LatencyAvgMs float64    `json:"latency_avg_ms"`
	Transactions int64      `json:"transactions"`
	Failed       int64      `json:"failed"`
	Version      string     `json:"version"`
	CPU          *CPUReport `json:"cpu,omitempty"`
}

// pgbenchBinary finds pgbench: on PATH, else the newest
// /usr/lib/postgresql/*/bin/pgbench (Debian's server package ships it there).
func pgbenchBinary() (string, error) {
	if p, err := exec.LookPath("pgbench"); err == nil {
		return p, nil
	}
	found, _ := filepath.Glob("/usr/lib/postgresql/*/bin/pgbench")
	slices.SortFunc(found, func(a, b string) int {
		va, _ := strconv.Atoi(filepath.Base(filepath.Dir(filepath.Dir(a))))
		vb, _ := strconv.Atoi(filepath.Base(filepath.Dir(filepath.Dir(b))))
		return vb - va
	})
	if len(found) == 0 {
		return "", fmt.Errorf("pgbench not found on PATH nor in /usr/lib/postgresql/*/bin (Debian: apt-get install postgresql-contrib)")
	}
	return found[0], nil
}

var (
	reTPS     = regexp.MustCompile(`(?m)^tps = ([0-9.]+) \((?:without initial connection time|excluding connections establishing)\)`)
	reLatency = regexp.MustCompile(`(?m)^latency average = ([0-9.]+) ms`)
	reTx      = regexp.MustCompile(`(?m)^number of transactions actually processed: ([0-9]+)`)
	reFailed  = regexp.MustCompile(`(?m)^number of failed transactions: ([0-9]+)`)
	reVersion = regexp.MustCompile(`(?m)^pgbench \(PostgreSQL\) ([0-9.]+)|^pgbench \(([0-9.]+)`)
)

// parsePgbench reads the summary pgbench prints at the end of a run.
func parsePgbench(out []byte) (Pgbench, error) {
	var r Pgbench
	m := reTPS.FindSubmatch(out)
	if m == nil {
		return r, fmt.Errorf("pgbench output has no tps line: %q", tail(out, 400))
	}
	var err error
	if r.TPS, err = strconv.ParseFloat(string(m[1]), 64); err != nil {
		return r, fmt.Errorf("pgbench tps %q: %w", m[1], err)
	}
	if m := reLatency.FindSubmatch(out); m != nil {
		r.LatencyAvgMs, _ = strconv.ParseFloat(string(m[1]), 64)
	}
	if m := reTx.FindSubmatch(out); m != nil {
		r.Transactions, _ = strconv.ParseInt(string(m[1]), 10, 64)
	}
	if m := reFailed.FindSubmatch(out); m != nil {
		r.Failed, _ = strconv.ParseInt(string(m[1]), 10, 64)
	}
	if m := reVersion.FindSubmatch(out); m != nil {
		r.Version = string(bytes.TrimSpace(append(m[1], m[2]...)))
	}
	return r, nil
}

func tail(b []byte, n int) string {
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}

// freeConnections is how many more connections the server takes now,
// keeping reserve for its superuser slots and other users.
func freeConnections(ctx context.Context, db *sql.DB, reserve int) (int, error) {
	var free int
	err := db.QueryRowContext(ctx, `SELECT current_setting('max_connections')::int
		- current_setting('superuser_reserved_connections')::int
		- (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend')`).Scan(&free)
	if err != nil {
		return 0, fmt.Errorf("count the server's free connections: %w", err)
	}
	return max(0, free-reserve), nil
}

// runPgbench initializes a fresh database, runs pgbench -b simple-update on
// it and drops it.
func runPgbench(ctx context.Context, c pgbenchConfig, stderr io.Writer) (Pgbench, error) {
	res := Pgbench{Builtin: "simple-update", Clients: c.clients, Threads: c.threads, Scale: c.scale}
	bin, err := pgbenchBinary()
	if err != nil {
		return res, err
	}
	u, err := url.Parse(c.server)
	if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
		return res, fmt.Errorf("pgbench: --postgres %q: want a postgres:// URL", redactURL(c.server))
	}
	admin, err := sqldb.OpenPostgres(c.server)
	if err != nil {
		return res, fmt.Errorf("pgbench: open %s: %w", redactURL(c.server), err)
	}
	defer admin.Close()
	free, err := freeConnections(ctx, admin.DB, 10)
	if err != nil {
		return res, err
	}
	if free < 1 {
		return res, fmt.Errorf("pgbench: the server at %s has no free connection", redactURL(c.server))
	}
	if c.clients > free {
		res.Requested, res.Clients = c.clients, free
		fmt.Fprintf(stderr, "pgbench: %d clients asked, the server has %d free connections: running %d\n", c.clients, free, free)
	}
	res.Threads = min(res.Threads, res.Clients)
	dbName := "bench_pgb_" + strings.ReplaceAll(uuid.NewString(), "-", "")[:10]
	res.Database = dbName
	if _, err := admin.ExecContext(ctx, `CREATE DATABASE `+sqldb.QuoteIdentifier(dbName)); err != nil {
		return res, fmt.Errorf("pgbench: create database %s: %w", dbName, err)
	}
	defer func() {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		if _, err := admin.ExecContext(dctx, `DROP DATABASE IF EXISTS `+sqldb.QuoteIdentifier(dbName)+` WITH (FORCE)`); err != nil {
			fmt.Fprintf(stderr, "pgbench: drop database %s: %v\n", dbName, err)
		}
	}()
	conn, pw := pgbenchConn(u, dbName)
	env := os.Environ()
	if pw != "" {
		env = append(env, "PGPASSWORD="+pw)
	}
	pgb := func(args ...string) ([]byte, error) {
		cmd := exec.CommandContext(ctx, bin, append(args, conn)...)
		cmd.Env = env
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		err := cmd.Run()
		if err != nil {
			return out.Bytes(), fmt.Errorf("%s %s: %w\n%s", bin, strings.Join(args, " "), err, tail(out.Bytes(), 2000))
		}
		return out.Bytes(), nil
	}
	if _, err := pgb("-i", "-q", "-s", strconv.Itoa(c.scale)); err != nil {
		return res, fmt.Errorf("pgbench: initialize: %w", err)
	}
	var meter *cpuMeter
	if c.cpu {
		procs, notes := pgbenchCPUTargets(ctx, procFS{root: "/proc"}, c.server, c.env)
		meter = &cpuMeter{fs: procFS{root: "/proc"}, procs: procs, notes: notes}
		if err := meter.start(); err != nil {
			fmt.Fprintf(stderr, "CPU not measured: %v\n", err)
			meter = nil
		}
	}
	start := time.Now()
	out, err := pgb("-b", "simple-update", "-c", strconv.Itoa(res.Clients), "-j", strconv.Itoa(res.Threads),
		"-T", strconv.Itoa(int(c.duration.Round(time.Second).Seconds())))
	elapsed := time.Since(start)
	if err != nil {
		return res, fmt.Errorf("pgbench: run: %w", err)
	}
	p, err := parsePgbench(out)
	if err != nil {
		return res, err
	}
	res.TPS, res.LatencyAvgMs, res.Transactions, res.Failed, res.Version = p.TPS, p.LatencyAvgMs, p.Transactions, p.Failed, p.Version
	res.Seconds = elapsed.Seconds()
	if meter != nil {
		if res.CPU, err = meter.stop(runtime.NumCPU(), int(res.Transactions)); err != nil {
			fmt.Fprintf(stderr, "CPU not measured: %v\n", err)
		}
	}
	return res, nil
}

// pgbenchConn is the connection URL pgbench gets for database dbName on
// server u, without the password, which is returned apart (for PGPASSWORD:
// a command line is visible to every user of the machine).
func pgbenchConn(u *url.URL, dbName string) (conn, password string) {
	c := *u
	c.Path, c.RawPath = "/"+dbName, ""
	if c.User != nil {
		password, _ = c.User.Password()
		c.User = url.User(c.User.Username())
	}
	return c.String(), password
}

// pgbenchCPUTargets are bench's own process (pgbench runs as its child:
// its CPU is counted once it has exited and been reaped) and PostgreSQL.
func pgbenchCPUTargets(ctx context.Context, fs procFS, server string, env func(string) string) ([]tracked, []string) {
	procs := []tracked{{Name: "pgbench", PID: os.Getpid(), Note: "bench and pgbench, its child (the client)"}}
	var notes []string
	addr, err := postgresAddr(server)
	var pid int
	if err == nil {
		pid, err = findServer(ctx, fs, addr, func(port int) (int, bool) { return postmasterPID(runDir(env), port) })
	}
	if err != nil {
		notes = append(notes, "postgresql not measured: "+err.Error())
	} else {
		procs = append(procs, tracked{Name: "postgresql", PID: pid,
			Note: "the postmaster and all its children, live and reaped (pgbench's backends exit with it; other clients' backends count too)"})
	}
	return procs, notes
}

// redactURL hides a URL's password.
func redactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(unparsable URL)"
	}
	return u.Redacted()
}
