package program

import (
	"errors"
	"flag"
	"fmt"
	"os"
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
//
// Flag defaults never hold a password, so -h prints none.
type KafkaFlags struct {
	env                                         func(string) string
	user, password, passwordFile, mechanism, id string
}

// RegisterKafkaFlags adds the Kafka flags to fs; env is like os.Getenv.
func RegisterKafkaFlags(fs *flag.FlagSet, env func(string) string) *KafkaFlags {
	k := &KafkaFlags{env: env}
	fs.StringVar(&k.user, "kafka-user", env(EnvKafkaUser), "Kafka SASL user (env "+EnvKafkaUser+"; empty: no authentication, e.g. the embedded broker)")
	fs.StringVar(&k.password, "kafka-password", "", "Kafka SASL password (env "+EnvKafkaPassword+"; prefer --kafka-password-file: a flag shows in the process list)")
	fs.StringVar(&k.passwordFile, "kafka-password-file", env(EnvKafkaPasswordFile), "file holding the Kafka SASL password (env "+EnvKafkaPasswordFile+")")
	fs.StringVar(&k.mechanism, "kafka-sasl-mechanism", env(EnvKafkaMechanism), "SASL mechanism: SCRAM-SHA-512 (default), SCRAM-SHA-256 or PLAIN (env "+EnvKafkaMechanism+")")
	fs.StringVar(&k.id, "kafka-instance-id", env(EnvKafkaInstanceID), "static consumer group member id, stable per replica and unique among them (e.g. the pod name): a restarted process gets its partitions back at once (env "+EnvKafkaInstanceID+"; empty: dynamic membership)")
	return k
}

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
