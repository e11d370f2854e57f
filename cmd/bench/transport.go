package main

import (
	"crypto/tls"

	"github.com/portfolio-counselor/sagamachine/engine/kafka"
)

// The Kafka transports a run can use, by Kafka's security.protocol names:
// what the clients of the started system, the notification tap and the
// round-trip floor all connect with (they share one kafka.SASL and one TLS
// setting, from program.KafkaFlags), so that a comparison never sets a
// saga run over TLS beside a plaintext floor.
const (
	transportPlaintext     = "PLAINTEXT"      // no TLS, no authentication (e.g. the embedded broker)
	transportSASLPlaintext = "SASL_PLAINTEXT" // SASL authentication, no TLS (make up's 127.0.0.1:59092)
	transportSSL           = "SSL"            // TLS, no authentication
	transportSASLSSL       = "SASL_SSL"       // SASL authentication over TLS (make up's 127.0.0.1:59094)
)

// kafkaTransport names the transport of clients with authentication s and
// TLS settings t (nil: no TLS).
func kafkaTransport(s kafka.SASL, t *tls.Config) string {
	switch {
	case s.Enabled() && t != nil:
		return transportSASLSSL
	case s.Enabled():
		return transportSASLPlaintext
	case t != nil:
		return transportSSL
	}
	return transportPlaintext
}

// describeTransport is a transport name with what it means, for the
// printed results.
func describeTransport(name string) string {
	switch name {
	case transportPlaintext:
		return name + ": plaintext, no SASL"
	case transportSASLPlaintext:
		return name + ": SASL, no TLS"
	case transportSSL:
		return name + ": TLS, no SASL"
	case transportSASLSSL:
		return name + ": SASL over TLS"
	}
	return name
}
