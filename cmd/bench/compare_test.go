package main

import (
	"context"
	"database/sql"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/portfolio-counselor/sagamachine/engine/kafka"
	"github.com/portfolio-counselor/sagamachine/internal/testenv"
)

// The fixture is the output of PostgreSQL 15's pgbench -b simple-update.
func TestParsePgbench(t *testing.T) {
	out, err := os.ReadFile(filepath.Join("testdata", "pgbench-15-simple-update.txt"))
	if err != nil {
		t.Fatal(err)
	}
	got, err := parsePgbench(out)
	if err != nil {
		t.Fatalf("parsePgbench: %v", err)
	}
	if got.TPS != 886.438131 || got.LatencyAvgMs != 4.512 || got.Transactions != 2656 || got.Failed != 0 || got.Version != "15.18" {
		t.Errorf("parsePgbench = %+v, want tps 886.438131, latency 4.512, 2656 transactions, 0 failed, version 15.18", got)
	}
	// PostgreSQL 13 and older say "excluding connections establishing".
	old := []byte("pgbench (PostgreSQL) 13.4\nlatency average = 2.000 ms\ntps = 500.5 (including connections establishing)\ntps = 501.25 (excluding connections establishing)\n")
	if got, err := parsePgbench(old); err != nil || got.TPS != 501.25 || got.Version != "13.4" {
		t.Errorf("parsePgbench(13) = %+v, %v; want tps 501.25 (excluding connections), version 13.4", got, err)
	}
	for _, bad := range []string{"", "pgbench: error: connection to server failed\n", "tps = fast (without initial connection time)\n"} {
		if got, err := parsePgbench([]byte(bad)); err == nil {
			t.Errorf("parsePgbench(%q) = %+v, nil error; want one", bad, got)
		}
	}
}

// The password of --postgres never reaches pgbench's command line (any
// user of the machine can read it in the process list).
func TestPgbenchConnKeepsThePasswordOffTheCommandLine(t *testing.T) {
	u, _ := url.Parse("postgres://bench:s3cret@127.0.0.1:55432/postgres?sslmode=disable")
	conn, pw := pgbenchConn(u, "bench_pgb_x")
	if strings.Contains(conn, "s3cret") || pw != "s3cret" {
		t.Errorf("pgbenchConn = %q, %q; want the password apart", conn, pw)
	}
	if want := "postgres://bench@127.0.0.1:55432/bench_pgb_x?sslmode=disable"; conn != want {
		t.Errorf("conn %q, want %q", conn, want)
	}
	u, _ = url.Parse("postgres://127.0.0.1:55432/postgres")
	if conn, pw := pgbenchConn(u, "d"); pw != "" || conn != "postgres://127.0.0.1:55432/d" {
		t.Errorf("pgbenchConn without a user = %q, %q", conn, pw)
	}
}

func TestCompareFlags(t *testing.T) {
	env := func(k string) string {
		return map[string]string{"SAGA_TEST_POSTGRES_URL": "postgres://postgres@127.0.0.1:55432/postgres?sslmode=disable",
			"SAGA_TEST_KAFKA_BROKERS": "127.0.0.1:59092", "SAGA_KAFKA_USER": "admin", "SAGA_KAFKA_PASSWORD": "pw"}[k]
	}
	c, err := parseCompareFlags([]string{"-c", "16", "--rounds", "2", "--saga-args", "--participant-concurrency 4"}, env, io.Discard)
	if err != nil {
		t.Fatalf("parseCompareFlags: %v", err)
	}
	if c.clients != 16 || c.pgbench.clients != 16 || c.rt.clients != 16 || c.rounds != 2 || c.sasl.User != "admin" ||
		c.rt.kafka.SASL.Password != "pw" || len(c.brokers) != 1 || c.pgbench.server != c.postgres {
		t.Errorf("parseCompareFlags = %+v", c)
	}
	if strings.Join(c.sagaArgs, " ") != "--participant-concurrency 4" {
		t.Errorf("saga args %q", c.sagaArgs)
	}
	for _, args := range [][]string{
		{"-c", "0"}, {"-c", "100000"}, {"-n", "-1"}, {"--rounds", "0"}, {"--rounds", "1000"}, {"--hops", "0"},
		{"--brokers", " , "}, {"--pgbench-duration", "10ms"}, {"--pgbench-scale", "0"}, {"--kafka-duration", "0s"},
		{"--postgres", "host=127.0.0.1 port=55432"}, {"--postgres", "mysql://x:1/y"},
		// --saga-args cannot redirect the saga run elsewhere or change what is compared
		{"--saga-args", "--postgres=postgres://evil:1/x"}, {"--saga-args", "-n 1"}, {"--saga-args", "--remote"},
		{"--saga-args", "--rate 5"}, {"--saga-args", "--kafka-password x"},
		{"extra"},
	} {
		if _, err := parseCompareFlags(args, env, io.Discard); err == nil {
			t.Errorf("parseCompareFlags(%q) = nil error, want one", args)
		}
	}
	// A password without a user is refused (it would silently not authenticate).
	noUser := func(k string) string {
		if k == "SAGA_KAFKA_PASSWORD" {
			return "pw"
		}
		return ""
	}
	if _, err := parseCompareFlags(nil, noUser, io.Discard); err == nil {
		t.Error("parseCompareFlags with a Kafka password and no user: nil error")
	}
}

func TestRoundTripFlags(t *testing.T) {
	for _, args := range [][]string{
		{}, {"--brokers", ","}, {"--brokers", "127.0.0.1:1", "-c", "0"}, {"--brokers", "127.0.0.1:1", "--partitions", "0"},
		{"--brokers", "127.0.0.1:1", "--duration", "0s"}, {"--brokers", "127.0.0.1:1", "--warmup", "-1s"},
		{"--brokers", "127.0.0.1:1", "x"},
	} {
		if _, _, err := parseRoundTripFlags(args, noEnv, io.Discard); err == nil {
			t.Errorf("parseRoundTripFlags(%q) = nil error, want one", args)
		}
	}
}

// The Kafka floor on the real broker: round trips are counted and timed,
// and the temporary topic is gone afterwards.
func TestKafkaRoundTripsOnRealKafka(t *testing.T) {
	kcfg := testenv.Kafka(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute) // liveness bound only
	defer cancel()
	res, err := kafkaRoundTrips(ctx, rtConfig{kafka: kcfg, clients: 4, partitions: 2, duration: time.Second, warmup: 200 * time.Millisecond, cpu: true, env: noEnv}, io.Discard)
	if err != nil {
		t.Fatalf("kafkaRoundTrips: %v", err)
	}
	if res.Count <= 0 || res.PerSec <= 0 || res.LatencyMs.P50 <= 0 || res.LatencyMs.Max < res.LatencyMs.P99 || res.Clients != 4 {
		t.Errorf("inconsistent result %+v", res)
	}
	if res.CPU == nil || len(res.CPU.Processes) == 0 || res.CPU.Processes[0].Name != "bench" || res.CPU.Sagas != int(res.Count) {
		t.Errorf("CPU report %+v, want the bench process first, per round trip", res.CPU)
	}
	wantTopicGone(ctx, t, kcfg, res.Topic)
}

// wantTopicGone checks, through a client of kcfg, that the round trips'
// temporary topic was deleted.
func wantTopicGone(ctx context.Context, t *testing.T, kcfg kafka.Config, topic string) {
	t.Helper()
	opts, err := kcfg.ClientOpts()
	if err != nil {
		t.Fatal(err)
	}
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	topics, err := kadm.NewClient(cl).ListTopics(ctx)
	if err != nil {
		t.Fatalf("list topics: %v", err)
	}
	if topics.Has(topic) {
		t.Errorf("topic %s left behind", topic)
	}
}

// The PostgreSQL floor on the real server: pgbench runs in a database of
// its own, dropped afterwards.
func TestPgbenchOnRealPostgres(t *testing.T) {
	_ = testenv.Postgres(t)
	if _, err := pgbenchBinary(); err != nil {
		testenv.Missing(t, "pgbench", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute) // liveness bound only
	defer cancel()
	res, err := runPgbench(ctx, pgbenchConfig{server: testenv.PostgresAdminURL(), clients: 2, threads: 2, duration: time.Second, scale: 1, cpu: true, env: noEnv}, io.Discard)
	if err != nil {
		t.Fatalf("runPgbench: %v", err)
	}
	if res.TPS <= 0 || res.Transactions <= 0 || res.Failed != 0 || res.Clients != 2 || !strings.HasPrefix(res.Database, "bench_pgb_") {
		t.Errorf("inconsistent result %+v", res)
	}
	db, err := sql.Open("postgres", testenv.PostgresAdminURL())
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var n int
	if err := db.QueryRowContext(ctx, `SELECT count(*) FROM pg_database WHERE datname = $1`, res.Database).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Errorf("database %s left behind", res.Database)
	}
}
