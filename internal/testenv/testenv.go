package testenv

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	_ "github.com/lib/pq" // PostgreSQL driver for the admin connection

	"github.com/portfolio-counselor/sagamachine/engine/kafka"
	"github.com/portfolio-counselor/sagamachine/internal/stack"
)

// Defaults used by `make up`.
const (
	DefaultPostgresURL  = "postgres://postgres@127.0.0.1:55432/postgres?sslmode=disable"
	DefaultKafkaBrokers = "127.0.0.1:59092"
	// DefaultKafkaUser and DefaultKafkaPassword are the super user that
	// `make up` gives its loopback-only test broker (scripts/lib.sh).
	// Tests use it to create their own topics, groups and principals.
	DefaultKafkaUser     = "admin"
	DefaultKafkaPassword = "saga-test-admin"
	// DefaultKafkaTLSBrokers is the same broker's SASL_SSL listener (the
	// same users over TLS, a certificate of make up's test CA).
	DefaultKafkaTLSBrokers = "127.0.0.1:59094"
)

// KafkaTLSCAFile is the PEM file of the CA that signs the test broker's
// TLS certificate: SAGA_TEST_KAFKA_TLS_CA, else where `make up` writes it
// (scripts/devcert): kafka/tls/ca.pem in its run directory (stack.RunDir).
func KafkaTLSCAFile() string {
	if f := os.Getenv("SAGA_TEST_KAFKA_TLS_CA"); f != "" {
		return f
	}
	return filepath.Join(stack.RunDir(), "kafka", "tls", "ca.pem")
}

// KafkaTLS returns the test cluster's SASL_SSL listener
// (SAGA_TEST_KAFKA_TLS_BROKERS, default DefaultKafkaTLSBrokers) with the
// super user's credentials and a TLS configuration that trusts the test
// CA (KafkaTLSCAFile) and nothing else. A listener that does not accept
// connections or a CA file that is missing is Missing.
func KafkaTLS(tb testing.TB) kafka.Config {
	tb.Helper()
	brokers := dialBrokers(tb, "SAGA_TEST_KAFKA_TLS_BROKERS", DefaultKafkaTLSBrokers, "the TLS listener of Apache Kafka")
	tlsCfg, err := kafka.TLSWithCAFile(KafkaTLSCAFile())
	var unread *fs.PathError
	if errors.As(err, &unread) {
		Missing(tb, "the test CA of Kafka's TLS listener", err)
	}
	if err != nil {
		tb.Fatal(err) // a CA file without a certificate
	}
	return kafka.Config{Brokers: brokers, SASL: KafkaAdmin(), TLS: tlsCfg}
}

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
// that the first one accepts connections. Clients also need the
// credentials: use Kafka, which returns both.
func KafkaBrokers(tb testing.TB) []string {
	tb.Helper()
	brokers := dialBrokers(tb, "SAGA_TEST_KAFKA_BROKERS", DefaultKafkaBrokers, "Apache Kafka")
	key := strings.Join(brokers, ",")
	authMu.Lock()
	defer authMu.Unlock()
	if _, known := authKnown[key]; !known {
		secured, err := probeAuth(brokers)
		if err != nil {
			Missing(tb, "Apache Kafka at "+key, err)
		}
		authKnown[key] = secured
	}
	return brokers
}

// dialBrokers returns the broker list in the environment variable env
// (default def) after checking that the first one accepts connections;
// what names the service for Missing.
func dialBrokers(tb testing.TB, env, def, what string) []string {
	tb.Helper()
	list := os.Getenv(env)
	if list == "" {
		list = def
	}
	brokers := strings.Split(list, ",")
	conn, err := net.DialTimeout("tcp", brokers[0], 3*time.Second)
	if err != nil {
		Missing(tb, what+" at "+brokers[0], err)
	}
	conn.Close()
	return brokers
}

// KafkaSASLFor returns the credentials a test uses with brokers: the super
// user's (KafkaAdmin) when brokers are the test cluster's (as returned by
// KafkaBrokers) and it authenticates, none otherwise (an embedded broker,
// or an unauthenticated broker of an older `make up`).
func KafkaSASLFor(brokers []string) kafka.SASL {
	authMu.Lock()
	defer authMu.Unlock()
	if authKnown[strings.Join(brokers, ",")] {
		return KafkaAdmin()
	}
	return kafka.SASL{}
}

// KafkaAdmin is the test cluster's super user: SAGA_TEST_KAFKA_USER and
// SAGA_TEST_KAFKA_PASSWORD, by default make up's (DefaultKafkaUser,
// DefaultKafkaPassword).
func KafkaAdmin() kafka.SASL {
	user, pw := os.Getenv("SAGA_TEST_KAFKA_USER"), os.Getenv("SAGA_TEST_KAFKA_PASSWORD")
	if user == "" {
		user = DefaultKafkaUser
	}
	if pw == "" {
		pw = DefaultKafkaPassword
	}
	return kafka.SASL{Mechanism: kafka.MechanismSCRAMSHA512, User: user, Password: pw}
}

var (
	authMu    sync.Mutex
	authKnown = map[string]bool{} // broker list → the broker authenticates
)

// Kafka returns a client configuration for the test Kafka cluster: its
// brokers and the super user's credentials (KafkaAdmin), so the test may
// create topics and groups of its own. It checks that the cluster answers
// an authenticated request; a cluster without authentication (a broker
// started by an older `make up`) is used without credentials and the test
// logs that.
func Kafka(tb testing.TB) kafka.Config {
	tb.Helper()
	brokers := KafkaBrokers(tb)
	sasl := KafkaSASLFor(brokers)
	if !sasl.Enabled() {
		tb.Logf("the Kafka broker at %s has no authentication (started by an older make up?): run `make up` to restart it with SASL/SCRAM and ACLs", strings.Join(brokers, ","))
	}
	return kafka.Config{Brokers: brokers, SASL: sasl}
}

// KafkaSecured is Kafka for tests that prove authentication or ACLs: a
// cluster without authentication is Missing.
func KafkaSecured(tb testing.TB) kafka.Config {
	tb.Helper()
	cfg := Kafka(tb)
	if !cfg.SASL.Enabled() {
		Missing(tb, "Apache Kafka with SASL/SCRAM authentication and ACLs", errors.New("the broker at "+strings.Join(cfg.Brokers, ",")+" accepts unauthenticated clients"))
	}
	return cfg
}

// probeAuth tells whether the brokers answer the super user over SASL
// (true) or only unauthenticated clients (false).
func probeAuth(brokers []string) (bool, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Second)
	defer cancel()
	errSASL := kafka.Ping(ctx, kafka.Config{Brokers: brokers, SASL: KafkaAdmin(), Logger: quiet})
	if errSASL == nil {
		return true, nil
	}
	plainCtx, cancelPlain := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancelPlain()
	if err := kafka.Ping(plainCtx, kafka.Config{Brokers: brokers, Logger: quiet}); err == nil {
		return false, nil
	}
	return false, fmt.Errorf("no answer with the super user %s (%v) nor without credentials", KafkaAdmin().User, errSASL)
}

// quiet drops the franz-go client's logs of a probe.
var quiet = slog.New(slog.DiscardHandler)

// Name returns a name unique to this test run, for topics and consumer
// groups, e.g. Name(t, "SAGA_SERVER_TOPIC") = "SAGA_SERVER_TOPIC.t1a2b3c4".
//
// When the test ends, the topics of the test Kafka cluster named n, or n
// followed by "_" or "." (the per-participant event topics a saga-machine
// derives from it), are deleted, so that the cluster does not accumulate the
// topics of finished tests from run to run. Nothing happens when no test of
// this process reached that cluster.
func Name(tb testing.TB, base string) string {
	tb.Helper()
	n := base + ".t" + strings.ReplaceAll(uuid.NewString(), "-", "")[:12]
	tb.Cleanup(func() { dropTopics(n) })
	return n
}

// dropTopics deletes the test cluster's topics named name or starting with
// name+"_" or name+"." (best effort: a test's result never depends on it).
func dropTopics(name string) {
	list := os.Getenv("SAGA_TEST_KAFKA_BROKERS")
	if list == "" {
		list = DefaultKafkaBrokers
	}
	brokers := strings.Split(list, ",")
	authMu.Lock()
	_, reached := authKnown[strings.Join(brokers, ",")]
	authMu.Unlock()
	if !reached {
		return
	}
	adm, err := kafka.Config{Brokers: brokers, SASL: KafkaSASLFor(brokers), Logger: quiet}.NewAdmin()
	if err != nil {
		return
	}
	defer adm.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	topics, err := adm.ListTopics(ctx)
	if err != nil {
		return
	}
	var drop []string
	for _, t := range topics.Names() {
		if t == name || strings.HasPrefix(t, name+"_") || strings.HasPrefix(t, name+".") {
			drop = append(drop, t)
		}
	}
	if len(drop) > 0 {
		_, _ = adm.DeleteTopics(ctx, drop...)
	}
}
