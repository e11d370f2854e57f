package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/portfolio-counselor/sagamachine/internal/program"
	"github.com/portfolio-counselor/sagamachine/internal/testenv"
)

// writeCA writes a self-signed CA certificate (PEM) into dir and returns
// its path.
func writeCA(tb testing.TB, dir string) string {
	tb.Helper()
	path := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(path, testenv.CAPEM(tb, "bench test CA"), 0o600); err != nil {
		tb.Fatal(err)
	}
	return path
}

// sameTLS reports whether got and want are the same transport settings:
// both none, or both TLS 1.2+ trusting the same CAs (nil: the system's).
func sameTLS(got, want *tls.Config) bool {
	if got == nil || want == nil {
		return got == want
	}
	if got.InsecureSkipVerify || got.MinVersion < tls.VersionTLS12 || (got.RootCAs == nil) != (want.RootCAs == nil) {
		return false
	}
	return got.RootCAs == nil || got.RootCAs.Equal(want.RootCAs)
}

// Every mode takes the services' Kafka TLS settings (--kafka-tls,
// --kafka-tls-ca-file, SAGA_KAFKA_TLS, SAGA_KAFKA_TLS_CA_FILE): the saga
// bench's started system, the round trips, and both halves of compare
// (its round trips and the saga run it starts, through that run's own
// flag parsing) end up with the same transport.
func TestKafkaTLSSettingsReachEveryMode(t *testing.T) {
	dir := t.TempDir()
	ca := writeCA(t, dir)
	want, err := os.ReadFile(ca)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(want)
	withCA := &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: pool}
	systemCAs := &tls.Config{MinVersion: tls.VersionTLS12}
	sasl := map[string]string{program.EnvKafkaUser: "admin", program.EnvKafkaPassword: "pw"}
	with := func(kv ...string) map[string]string {
		m := map[string]string{}
		for k, v := range sasl {
			m[k] = v
		}
		for i := 0; i < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return m
	}
	for _, tc := range []struct {
		name          string
		args          []string
		env           map[string]string
		wantTLS       *tls.Config
		wantTransport string
	}{
		{name: "nothing", wantTransport: transportPlaintext},
		{name: "SASL only", env: sasl, wantTransport: transportSASLPlaintext},
		{name: "--kafka-tls-ca-file", args: []string{"--kafka-tls-ca-file", ca}, env: sasl, wantTLS: withCA, wantTransport: transportSASLSSL},
		{name: "SAGA_KAFKA_TLS_CA_FILE", env: with(program.EnvKafkaTLSCAFile, ca), wantTLS: withCA, wantTransport: transportSASLSSL},
		{name: "--kafka-tls, system CAs", args: []string{"--kafka-tls"}, env: sasl, wantTLS: systemCAs, wantTransport: transportSASLSSL},
		{name: "SAGA_KAFKA_TLS=true", env: with(program.EnvKafkaTLS, "true"), wantTLS: systemCAs, wantTransport: transportSASLSSL},
		{name: "TLS without SASL", args: []string{"--kafka-tls-ca-file", ca}, wantTLS: withCA, wantTransport: transportSSL},
		{name: "--kafka-tls=false over SAGA_KAFKA_TLS=true", args: []string{"--kafka-tls=false"}, env: with(program.EnvKafkaTLS, "true"), wantTransport: transportSASLPlaintext},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env := func(k string) string { return tc.env[k] }
			args := append([]string{"--brokers", "127.0.0.1:1"}, tc.args...)
			for _, loop := range [][]string{nil, {"--rate", "10", "-n", "5"}} {
				o, err := parseFlags(append(args, loop...), env, io.Discard)
				if err != nil {
					t.Fatalf("parseFlags(%q): %v", append(args, loop...), err)
				}
				if !sameTLS(o.kafkaTLS, tc.wantTLS) || kafkaTransport(o.kafkaSASL, o.kafkaTLS) != tc.wantTransport {
					t.Errorf("bench %q: TLS %+v, transport %s; want %+v, %s", loop, o.kafkaTLS, kafkaTransport(o.kafkaSASL, o.kafkaTLS), tc.wantTLS, tc.wantTransport)
				}
			}
			rt, _, err := parseRoundTripFlags(args, env, io.Discard)
			if err != nil {
				t.Fatalf("parseRoundTripFlags: %v", err)
			}
			if !sameTLS(rt.kafka.TLS, tc.wantTLS) || kafkaTransport(rt.kafka.SASL, rt.kafka.TLS) != tc.wantTransport {
				t.Errorf("kafka-roundtrip: TLS %+v, transport %s; want %+v, %s", rt.kafka.TLS, kafkaTransport(rt.kafka.SASL, rt.kafka.TLS), tc.wantTLS, tc.wantTransport)
			}
			c, err := parseCompareFlags(args, env, io.Discard)
			if err != nil {
				t.Fatalf("parseCompareFlags: %v", err)
			}
			if !sameTLS(c.rt.kafka.TLS, tc.wantTLS) || kafkaTransport(c.rt.kafka.SASL, c.rt.kafka.TLS) != tc.wantTransport {
				t.Errorf("compare's round trips: TLS %+v, transport %s; want %+v, %s", c.rt.kafka.TLS, kafkaTransport(c.rt.kafka.SASL, c.rt.kafka.TLS), tc.wantTLS, tc.wantTransport)
			}
			saga, err := parseFlags(c.sagaArgv(), c.sagaEnv(), io.Discard)
			if err != nil {
				t.Fatalf("compare's saga run: parseFlags: %v", err)
			}
			if !sameTLS(saga.kafkaTLS, tc.wantTLS) || kafkaTransport(saga.kafkaSASL, saga.kafkaTLS) != tc.wantTransport ||
				strings.Join(saga.brokers, ",") != "127.0.0.1:1" {
				t.Errorf("compare's saga run: brokers %v, TLS %+v, transport %s; want 127.0.0.1:1, %+v, %s",
					saga.brokers, saga.kafkaTLS, kafkaTransport(saga.kafkaSASL, saga.kafkaTLS), tc.wantTLS, tc.wantTransport)
			}
		})
	}

	// compare without --brokers goes to the TLS listener when TLS is on
	// (the plaintext listener's default would not answer TLS).
	for _, tc := range []struct {
		env  map[string]string
		want string
	}{
		{env: with(program.EnvKafkaTLSCAFile, ca), want: "127.0.0.1:59094"},
		{env: with(program.EnvKafkaTLSCAFile, ca, "SAGA_TEST_KAFKA_TLS_BROKERS", "127.0.0.1:7"), want: "127.0.0.1:7"},
		{env: with("SAGA_TEST_KAFKA_BROKERS", "127.0.0.1:8"), want: "127.0.0.1:8"},
	} {
		c, err := parseCompareFlags(nil, func(k string) string { return tc.env[k] }, io.Discard)
		if err != nil || strings.Join(c.brokers, ",") != tc.want || strings.Join(c.rt.kafka.Brokers, ",") != tc.want {
			t.Errorf("compare with %v and no --brokers: brokers %v, round trips %v, %v; want %s", tc.env, c.brokers, c.rt.kafka.Brokers, err, tc.want)
		}
	}
	// The embedded broker has no TLS: settings from the environment (meant
	// for --brokers) are left out, as the credentials are.
	if o, err := parseFlags(nil, func(k string) string { return with(program.EnvKafkaTLSCAFile, ca)[k] }, io.Discard); err != nil || o.kafkaTLS != nil {
		t.Errorf("no --brokers, SAGA_KAFKA_TLS_CA_FILE set: TLS %+v, %v; want none", o.kafkaTLS, err)
	}
}

// connCounter is a TCP listener standing in for a broker or a database
// server: it counts the connections it is offered and answers none.
type connCounter struct {
	ln   net.Listener
	n    atomic.Int64
	done sync.WaitGroup
}

func newConnCounter(tb testing.TB) *connCounter {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	c := &connCounter{ln: ln}
	c.done.Go(func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			c.n.Add(1)
			conn.Close()
		}
	})
	tb.Cleanup(c.close)
	return c
}

func (c *connCounter) addr() string { return c.ln.Addr().String() }

// close stops listening and returns the connections it was offered.
func (c *connCounter) close() { c.ln.Close(); c.done.Wait() }

// A Kafka TLS setting that cannot be used (a CA file that is missing,
// empty or not PEM, a SAGA_KAFKA_TLS that is not a boolean) and an attempt
// to give compare's saga run other TLS settings than its round trips are
// refused with an error that names the problem, in every mode, before
// anything runs: no connection reaches the broker or the database, nothing
// is printed.
func TestBadKafkaTLSIsRefusedBeforeAnyRun(t *testing.T) {
	dir := t.TempDir()
	ca := writeCA(t, dir)
	empty := filepath.Join(dir, "empty.pem")
	notPEM := filepath.Join(dir, "key.txt")
	for path, body := range map[string]string{empty: "", notPEM: "-----BEGIN NOTHING-----\nxx\n-----END NOTHING-----\n"} {
		if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	missing := filepath.Join(dir, "absent.pem")
	for _, bad := range []struct {
		name    string
		args    []string
		env     map[string]string
		wantErr string
		modes   []string // default: all
	}{
		{name: "missing CA file", args: []string{"--kafka-tls-ca-file", missing}, wantErr: "read the Kafka TLS CA file"},
		{name: "missing CA file from the environment", env: map[string]string{program.EnvKafkaTLSCAFile: missing}, wantErr: "read the Kafka TLS CA file"},
		{name: "empty CA file", args: []string{"--kafka-tls-ca-file", empty}, wantErr: "holds no PEM certificate"},
		{name: "CA file not PEM", args: []string{"--kafka-tls-ca-file", notPEM}, wantErr: "holds no PEM certificate"},
		{name: "CA file is a directory", args: []string{"--kafka-tls-ca-file", dir}, wantErr: "read the Kafka TLS CA file"},
		{name: "SAGA_KAFKA_TLS not a boolean", env: map[string]string{program.EnvKafkaTLS: "yes please"}, wantErr: "want true or false"},
		{name: "--saga-args with another CA", args: []string{"--saga-args", "--kafka-tls-ca-file " + ca}, wantErr: "compare sets", modes: []string{"compare"}},
		{name: "--saga-args turning TLS off", args: []string{"--kafka-tls-ca-file", ca, "--saga-args", "--kafka-tls=false"}, wantErr: "compare sets", modes: []string{"compare"}},
		{name: "--saga-args with another mechanism", args: []string{"--saga-args", "--kafka-sasl-mechanism PLAIN"}, wantErr: "compare sets", modes: []string{"compare"}},
	} {
		modes := bad.modes
		if modes == nil {
			modes = []string{"closed", "open", "kafka-roundtrip", "compare"}
		}
		for _, mode := range modes {
			t.Run(bad.name+"/"+mode, func(t *testing.T) {
				broker, pg := newConnCounter(t), newConnCounter(t)
				pgURL := "postgres://bench@" + pg.addr() + "/postgres?sslmode=disable"
				var args []string
				switch mode {
				case "closed":
					args = []string{"-n", "4", "-c", "2", "--postgres", pgURL, "--brokers", broker.addr()}
				case "open":
					args = []string{"--rate", "10", "-n", "4", "--postgres", pgURL, "--brokers", broker.addr()}
				case "kafka-roundtrip":
					args = []string{"kafka-roundtrip", "--brokers", broker.addr(), "--duration", "1s"}
				case "compare":
					args = []string{"compare", "-n", "4", "-c", "2", "--postgres", pgURL, "--brokers", broker.addr()}
				}
				env := map[string]string{program.EnvKafkaUser: "admin", program.EnvKafkaPassword: "pw"}
				for k, v := range bad.env {
					env[k] = v
				}
				ctx, cancel := context.WithTimeout(context.Background(), time.Minute) // liveness bound only
				defer cancel()
				var stdout, stderr bytes.Buffer
				err := run(ctx, append(args, bad.args...), func(k string) string { return env[k] }, &stdout, &stderr)
				broker.close()
				pg.close()
				if err == nil || !strings.Contains(err.Error(), bad.wantErr) {
					t.Errorf("run(%q) = %v, want an error containing %q", append(args, bad.args...), err, bad.wantErr)
				}
				if stdout.Len() != 0 {
					t.Errorf("printed %q, want nothing", stdout.String())
				}
				if n, m := broker.n.Load(), pg.n.Load(); n != 0 || m != 0 {
					t.Errorf("%d connections to the broker and %d to PostgreSQL, want none: the run started", n, m)
				}
			})
		}
	}
}

// kafka-roundtrip over make up's SASL_SSL listener, configured as an
// operator would (--kafka-tls-ca-file, credentials in the environment):
// round trips are made, the result names the transport, and the
// temporary topic is gone afterwards.
func TestKafkaRoundTripOverTLS(t *testing.T) {
	kcfg := testenv.KafkaTLS(t) // fails under CI=true, skips otherwise, without the listener or its CA
	env := map[string]string{program.EnvKafkaUser: kcfg.SASL.User, program.EnvKafkaPassword: kcfg.SASL.Password}
	args := []string{"kafka-roundtrip", "--brokers", strings.Join(kcfg.Brokers, ","), "--kafka-tls-ca-file", testenv.KafkaTLSCAFile(),
		"-c", "2", "--partitions", "1", "--warmup", "100ms", "--duration", "500ms", "--no-cpu", "--json"}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute) // liveness bound only
	defer cancel()
	var stdout, stderr bytes.Buffer
	if err := run(ctx, args, func(k string) string { return env[k] }, &stdout, &stderr); err != nil {
		t.Fatalf("bench %q: %v\nstderr:\n%s", args, err, stderr.String())
	}
	var res RoundTrips
	if err := json.Unmarshal(stdout.Bytes(), &res); err != nil {
		t.Fatalf("--json output %q: %v", stdout.String(), err)
	}
	if res.Transport != transportSASLSSL || res.Brokers != strings.Join(kcfg.Brokers, ",") {
		t.Errorf("transport %q brokers %q, want %s on %v", res.Transport, res.Brokers, transportSASLSSL, kcfg.Brokers)
	}
	if res.Count <= 0 || res.PerSec <= 0 || res.LatencyMs.P50 <= 0 || res.LatencyMs.Max < res.LatencyMs.P99 || res.Clients != 2 {
		t.Errorf("inconsistent result %+v", res)
	}
	wantTopicGone(ctx, t, kcfg, res.Topic)
}

// The printed results say which transport the Kafka clients used.
func TestPrintedResultsNameTheTransport(t *testing.T) {
	for _, tc := range []struct {
		name  string
		print func(io.Writer)
		want  string
	}{
		{"bench", func(w io.Writer) {
			printResult(w, Result{Mode: "postgres+kafka", PGDriver: "pgx", KafkaTransport: transportSASLSSL})
		}, "postgres+kafka (driver pgx, Kafka SASL_SSL: SASL over TLS): "},
		{"bench --remote", func(w io.Writer) { printResult(w, Result{Mode: "remote http://x"}) }, "remote http://x: "},
		{"kafka-roundtrip", func(w io.Writer) {
			printRoundTrips(w, RoundTrips{Brokers: "127.0.0.1:59094", Transport: transportSASLSSL})
		}, "kafka 127.0.0.1:59094 (SASL_SSL: SASL over TLS): "},
		{"compare", func(w io.Writer) {
			printComparison(w, Comparison{KafkaTransport: transportSASLPlaintext})
		}, "Kafka transport SASL_PLAINTEXT: SASL, no TLS"},
	} {
		var b bytes.Buffer
		tc.print(&b)
		if !strings.Contains(b.String(), tc.want) {
			t.Errorf("%s printed %q, want it to contain %q", tc.name, b.String(), tc.want)
		}
	}
}
