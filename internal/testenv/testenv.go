package testenv

import (
	"context"
	"database/sql"
	"fmt"
	"net"
	"net/url"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	_ "github.com/lib/pq" // PostgreSQL driver for the admin connection
)

// Defaults used by `make up`.
const (
	DefaultPostgresURL  = "postgres://postgres@127.0.0.1:55432/postgres?sslmode=disable"
	DefaultKafkaBrokers = "127.0.0.1:59092"
)

// InCI reports whether the tests run under CI (CI=true), where a missing
// service is a failure rather than a reason to skip.
func InCI() bool { return os.Getenv("CI") == "true" }

// Missing stops the test because a service it needs is not reachable: it
// fails under CI=true and skips otherwise.
func Missing(tb testing.TB, service string, err error) {
	tb.Helper()
	msg := fmt.Sprintf("%s is not reachable (%v); run `make up` to start it", service, err)
	if InCI() {
		tb.Fatal(msg + " [CI=true: a missing service fails the test]")
	}
	tb.Skip(msg)
}

// PostgresAdminURL is the URL of the server's maintenance database.
func PostgresAdminURL() string {
	if u := os.Getenv("SAGA_TEST_POSTGRES_URL"); u != "" {
		return u
	}
	return DefaultPostgresURL
}

var dbSeq atomic.Int64

// Postgres creates a fresh, empty database for the test and returns its URL.
// The database is dropped when the test ends.
func Postgres(tb testing.TB) string {
	tb.Helper()
	admin := PostgresAdminURL()
	db, err := sql.Open("postgres", admin)
	if err != nil {
		Missing(tb, "PostgreSQL", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := db.PingContext(ctx); err != nil {
		db.Close()
		Missing(tb, "PostgreSQL at "+admin, err)
	}
	name := fmt.Sprintf("t_%d_%d_%s", os.Getpid(), dbSeq.Add(1), strings.ReplaceAll(uuid.NewString()[:8], "-", ""))
	if _, err := db.ExecContext(ctx, "CREATE DATABASE "+name); err != nil {
		db.Close()
		tb.Fatalf("create test database: %v", err)
	}
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if _, err := db.ExecContext(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)"); err != nil {
			tb.Logf("drop test database %s: %v", name, err)
		}
		db.Close()
	})
	u, err := url.Parse(admin)
	if err != nil {
		tb.Fatalf("parse %s: %v", admin, err)
	}
	u.Path = "/" + name
	return u.String()
}

// KafkaBrokers returns the brokers of the test Kafka cluster after checking
// that the first one accepts connections.
func KafkaBrokers(tb testing.TB) []string {
	tb.Helper()
	list := os.Getenv("SAGA_TEST_KAFKA_BROKERS")
	if list == "" {
		list = DefaultKafkaBrokers
	}
	brokers := strings.Split(list, ",")
	conn, err := net.DialTimeout("tcp", brokers[0], 3*time.Second)
	if err != nil {
		Missing(tb, "Apache Kafka at "+brokers[0], err)
	}
	conn.Close()
	return brokers
}

// Name returns a name unique to this test run, for topics and consumer
// groups, e.g. Name(t, "SAGA_SERVER_TOPIC") = "SAGA_SERVER_TOPIC.t1a2b3c4".
func Name(tb testing.TB, base string) string {
	tb.Helper()
	return base + ".t" + strings.ReplaceAll(uuid.NewString(), "-", "")[:12]
}
