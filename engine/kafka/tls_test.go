package kafka_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"strings"
	"testing"
	"time"

	"github.com/portfolio-counselor/sagamachine/engine/kafka"
	"github.com/portfolio-counselor/sagamachine/engine/kafka/kafkatest"
	"github.com/portfolio-counselor/sagamachine/internal/testenv"
)

// TestConformanceOverTLS runs the whole conformance suite (publish, fetch,
// commit, groups, admin) against the test broker's SASL_SSL listener:
// Config.TLS reaches every client the package makes.
func TestConformanceOverTLS(t *testing.T) {
	kafkatest.Run(t, func(t *testing.T) kafka.Config { return testenv.KafkaTLS(t) })
}

// TestTLSRefusals: what an attacker in the path, or a misconfigured client,
// gets from the SASL_SSL listener and the plaintext one. A client that
// does not trust the test CA (the system's roots, or another CA), one that
// expects another server name, one that speaks plaintext to the TLS port,
// and one that speaks TLS to the plaintext port all fail to connect; a
// configuration that would trust any certificate is refused before it
// dials. The client that trusts the CA, with the right name, connects.
func TestTLSRefusals(t *testing.T) {
	good := testenv.KafkaTLS(t)
	plain := testenv.Kafka(t)
	ping := func(cfg kafka.Config) error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		cfg.DialTimeout = 2 * time.Second
		return kafka.Ping(ctx, cfg)
	}
	if err := ping(good); err != nil {
		t.Fatalf("TLS with the test CA: %v", err)
	}
	other := good
	other.TLS = &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: otherCA(t)}
	systemRoots := good
	systemRoots.TLS = &tls.Config{MinVersion: tls.VersionTLS12}
	wrongName := good
	wrongName.TLS = good.TLS.Clone()
	wrongName.TLS.ServerName = "broker.example.com"
	plainToTLS := good
	plainToTLS.TLS = nil
	tlsToPlain := plain
	tlsToPlain.TLS = good.TLS
	for _, tc := range []struct {
		name string
		cfg  kafka.Config
	}{
		{"another CA", other},
		{"the system's CAs only", systemRoots},
		{"another server name", wrongName},
		{"plaintext to the TLS listener", plainToTLS},
		{"TLS to the plaintext listener", tlsToPlain},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := ping(tc.cfg); err == nil {
				t.Errorf("Ping = nil, want a failed connection")
			}
		})
	}
	t.Run("any certificate", func(t *testing.T) {
		insecure := good
		insecure.TLS = &tls.Config{InsecureSkipVerify: true} //nolint:gosec // the configuration under test, refused
		err := insecure.Validate()
		if err == nil || !strings.Contains(err.Error(), "InsecureSkipVerify") {
			t.Errorf("Validate = %v, want InsecureSkipVerify refused", err)
		}
		if p, err := kafka.NewProducer(insecure); err == nil {
			p.Close()
			t.Error("NewProducer with InsecureSkipVerify = nil error, want one")
		}
	})
}

// otherCA is a pool with one self-signed CA that signed nothing of the
// broker's.
func otherCA(t *testing.T) *x509.CertPool {
	t.Helper()
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(testenv.CAPEM(t, "another CA")) {
		t.Fatal("the generated CA is not PEM")
	}
	return pool
}
