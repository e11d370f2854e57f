package program

import (
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/portfolio-counselor/sagamachine/engine/kafka"
)

// Environment variables of the Kafka client settings (KafkaFlags).
const (
	EnvKafkaUser         = "SAGA_KAFKA_USER"
	EnvKafkaPassword     = "SAGA_KAFKA_PASSWORD"
	EnvKafkaPasswordFile = "SAGA_KAFKA_PASSWORD_FILE"
	EnvKafkaMechanism    = "SAGA_KAFKA_SASL_MECHANISM"
	EnvKafkaInstanceID   = "SAGA_KAFKA_INSTANCE_ID"
	EnvKafkaTLS          = "SAGA_KAFKA_TLS"
	EnvKafkaTLSCAFile    = "SAGA_KAFKA_TLS_CA_FILE"
)

// KafkaFlags are the Kafka authentication and group membership settings
// every command that talks to Kafka takes, as flags with environment
// fallbacks:
//
//	--kafka-user           SAGA_KAFKA_USER           SASL user (principal User:<name>)
//	--kafka-password       SAGA_KAFKA_PASSWORD       its password (prefer the file or the variable: flags show in ps)
//	--kafka-password-file  SAGA_KAFKA_PASSWORD_FILE  a file holding the password (a mounted Secret)
//	--kafka-sasl-mechanism SAGA_KAFKA_SASL_MECHANISM SCRAM-SHA-512 (default), SCRAM-SHA-256 or PLAIN
//	--kafka-instance-id    SAGA_KAFKA_INSTANCE_ID    static group membership id, stable per replica (e.g. the pod name)
//	--kafka-tls            SAGA_KAFKA_TLS            connect over TLS (a SASL_SSL listener), verified with the system's CAs
//	--kafka-tls-ca-file    SAGA_KAFKA_TLS_CA_FILE    PEM file of the CA(s) that sign the brokers' certificates (implies --kafka-tls)
//
// Flag defaults never hold a password, so -h prints none.
type KafkaFlags struct {
	env                                         func(string) string
	user, password, passwordFile, mechanism, id string
	tls                                         bool
	caFile                                      string
	tlsEnvErr                                   error // SAGA_KAFKA_TLS is not a boolean
}

// RegisterKafkaFlags adds the Kafka flags to fs; env is like os.Getenv.
func RegisterKafkaFlags(fs *flag.FlagSet, env func(string) string) *KafkaFlags {
	k := &KafkaFlags{env: env}
	fs.StringVar(&k.user, "kafka-user", env(EnvKafkaUser), "Kafka SASL user (env "+EnvKafkaUser+"; empty: no authentication, e.g. the embedded broker)")
	fs.StringVar(&k.password, "kafka-password", "", "Kafka SASL password (env "+EnvKafkaPassword+"; prefer --kafka-password-file: a flag shows in the process list)")
	fs.StringVar(&k.passwordFile, "kafka-password-file", env(EnvKafkaPasswordFile), "file holding the Kafka SASL password (env "+EnvKafkaPasswordFile+")")
	fs.StringVar(&k.mechanism, "kafka-sasl-mechanism", env(EnvKafkaMechanism), "SASL mechanism: SCRAM-SHA-512 (default), SCRAM-SHA-256 or PLAIN (env "+EnvKafkaMechanism+")")
	fs.StringVar(&k.id, "kafka-instance-id", env(EnvKafkaInstanceID), "static consumer group member id, stable per replica and unique among them (e.g. the pod name): a restarted process gets its partitions back at once (env "+EnvKafkaInstanceID+"; empty: dynamic membership)")
	tlsDefault, tlsEnvErr := envBool(EnvKafkaTLS, env(EnvKafkaTLS))
	k.tlsEnvErr = tlsEnvErr
	fs.BoolVar(&k.tls, "kafka-tls", tlsDefault, "connect to the brokers over TLS (a SASL_SSL listener), verifying their certificates with the system's CAs or --kafka-tls-ca-file (env "+EnvKafkaTLS+"=true)")
	fs.StringVar(&k.caFile, "kafka-tls-ca-file", env(EnvKafkaTLSCAFile), "PEM file of the CA certificate(s) that sign the brokers' certificates; implies --kafka-tls (env "+EnvKafkaTLSCAFile+")")
	return k
}

// envBool reads the boolean environment value v of name: 1, t, true (any
// case) and the like are true, empty is false, and anything
// strconv.ParseBool refuses is an error (TLS reports it).
func envBool(name, v string) (bool, error) {
	if v = strings.TrimSpace(v); v == "" {
		return false, nil
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		return false, fmt.Errorf("%s=%q: want true or false", name, v)
	}
	return b, nil
}

// TLS resolves the transport settings: nil (plaintext) unless --kafka-tls
// or --kafka-tls-ca-file is given; then a TLS 1.2+ configuration that
// verifies the brokers against the CA file's certificates (all of them:
// a rotation may list the old and the new CA) or, without a file, the
// system's. A CA file that cannot be read or holds no certificate, and a
// SAGA_KAFKA_TLS that is not a boolean, are refused.
func (k *KafkaFlags) TLS() (*tls.Config, error) {
	if k.tlsEnvErr != nil {
		return nil, k.tlsEnvErr
	}
	if k.caFile == "" {
		if !k.tls {
			return nil, nil
		}
		return &tls.Config{MinVersion: tls.VersionTLS12}, nil
	}
	return kafka.TLSWithCAFile(k.caFile)
}

// TLSCAFile is the CA file TLS reads ("" when the brokers are verified
// against the system's CAs, or TLS is off): a program that starts another
// with the same settings passes it on.
func (k *KafkaFlags) TLSCAFile() string { return k.caFile }

// SASL resolves the authentication settings: the password comes from
// --kafka-password, else SAGA_KAFKA_PASSWORD, else the password file (its
// trailing line break removed). A password without a user, a user without
// a password, two password sources at once, and a password that is or
// contains the placeholder CHANGE_ME are refused.
func (k *KafkaFlags) SASL() (kafka.SASL, error) {
	pw, source := k.password, "--kafka-password"
	if pw == "" {
		pw, source = k.env(EnvKafkaPassword), EnvKafkaPassword
	}
	if k.passwordFile != "" {
		if pw != "" {
			return kafka.SASL{}, fmt.Errorf("the Kafka password is given twice (%s and --kafka-password-file): give one", source)
		}
		b, err := os.ReadFile(k.passwordFile)
		if err != nil {
			return kafka.SASL{}, fmt.Errorf("read the Kafka password file: %w", err)
		}
		pw, source = strings.TrimRight(string(b), "\r\n"), "--kafka-password-file "+k.passwordFile
		if pw == "" {
			return kafka.SASL{}, fmt.Errorf("the Kafka password file %s is empty", k.passwordFile)
		}
	}
	if err := RefusePlaceholders(Secret{Name: source, Value: pw}); err != nil {
		return kafka.SASL{}, err
	}
	switch {
	case k.user == "" && pw != "":
		return kafka.SASL{}, errors.New("a Kafka password is given but no --kafka-user (" + EnvKafkaUser + ")")
	case k.user != "" && pw == "":
		return kafka.SASL{}, fmt.Errorf("--kafka-user %s needs a password: --kafka-password-file, %s or --kafka-password", k.user, EnvKafkaPassword)
	}
	s := kafka.SASL{Mechanism: k.mechanism, User: k.user, Password: pw}
	if err := (kafka.Config{Brokers: []string{"-"}, SASL: s}).Validate(); err != nil {
		return kafka.SASL{}, err
	}
	return s, nil
}

// InstanceID is --kafka-instance-id.
func (k *KafkaFlags) InstanceID() string { return strings.TrimSpace(k.id) }
