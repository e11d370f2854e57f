package system

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"path/filepath"
	"strings"
	"time"

	"github.com/portfolio-counselor/sagamachine/engine"
	"github.com/portfolio-counselor/sagamachine/engine/kafka"
	"github.com/portfolio-counselor/sagamachine/internal/auth/issuer"
	"github.com/portfolio-counselor/sagamachine/internal/program"
	"github.com/portfolio-counselor/sagamachine/participants/sdk"
	"github.com/portfolio-counselor/sagamachine/sagas"
)

// Default addresses and names of the one-process system.
const (
	DefaultDataDir            = "./.saga-machine"
	DefaultListen             = "127.0.0.1:8080" // saga-machine API and console
	DefaultProfileListen      = "127.0.0.1:8081"
	DefaultDealsListen        = "127.0.0.1:8082"
	DefaultNotificationListen = "127.0.0.1:8083"
	DefaultIssuerListen       = "127.0.0.1:8090"
	DefaultEmbeddedKafka      = "127.0.0.1:9092"
	DefaultPartitions         = 3
	// DefaultTokenTTL is how long tokens from System.Token live.
	DefaultTokenTTL = 12 * time.Hour
	// TreasuryUser is the subject of the system's funding operator (role
	// funding-operator): System.Fund and the demo fund portfolios as it.
	TreasuryUser = "treasury"
)

// Service names: the participant names of the saga definitions, plus
// "saga" for saga-machine's own database.
const (
	Saga         = "saga"
	Deals        = "deals"
	Profile      = "profile"
	Notification = "notification"
)

// Databases are explicit database URLs per service (postgres://… or
// sqlite:PATH). An empty field is derived from Config.Postgres or
// Config.DataDir.
type Databases struct {
	Saga, Deals, Profile, Notification string
}

func (d Databases) get(name string) string {
	switch name {
	case Saga:
		return d.Saga
	case Deals:
		return d.Deals
	case Profile:
		return d.Profile
	case Notification:
		return d.Notification
	}
	return ""
}

// Topics are the Kafka topic names. Empty fields mean the names written in
// the shipped saga definitions (SAGA_SERVER_TOPIC, DEALS_TOPIC,
// PROFILE_TOPIC, NOTIFICATION_TOPIC); a test gives unique names and the
// definitions' participant topics are renamed to match.
type Topics struct {
	Events, Deals, Profile, Notification string
}

// DefaultTopics are the topic names of the shipped definitions.
var DefaultTopics = Topics{Events: "SAGA_SERVER_TOPIC", Deals: "DEALS_TOPIC", Profile: "PROFILE_TOPIC", Notification: "NOTIFICATION_TOPIC"}

func (t Topics) withDefaults() Topics {
	def := DefaultTopics
	for _, f := range []struct {
		dst *string
		d   string
	}{
		{&t.Events, def.Events}, {&t.Deals, def.Deals}, {&t.Profile, def.Profile}, {&t.Notification, def.Notification},
	} {
		if *f.dst == "" {
			*f.dst = f.d
		}
	}
	return t
}

// rename maps the shipped topic names to the configured ones.
func (t Topics) rename() map[string]string {
	return map[string]string{
		DefaultTopics.Events: t.Events, DefaultTopics.Deals: t.Deals,
		DefaultTopics.Profile: t.Profile, DefaultTopics.Notification: t.Notification,
	}
}

// Command returns the command topic of a participant service.
func (t Topics) Command(service string) string {
	switch service {
	case Deals:
		return t.Deals
	case Profile:
		return t.Profile
	case Notification:
		return t.Notification
	}
	return ""
}

// Config configures Start. Its zero value is the one-command dev run:
// SQLite files under ./.saga-machine, the embedded broker on
// 127.0.0.1:9092, saga-machine on 127.0.0.1:8080, profile, deals and
// notification on :8081, :8082 and :8083, the issuer on :8090.
type Config struct {
	// DataDir holds the SQLite files (saga.db, deals.db, profile.db,
	// notification.db) and the embedded broker's data (kafka/). Default
	// ./.saga-machine.
	DataDir string
	// Postgres is the URL of a PostgreSQL server (any database on it, e.g.
	// postgres://postgres@127.0.0.1:55432/postgres?sslmode=disable). With
	// it each service gets its own database on that server, named
	// DatabasePrefix+"saga", …+"deals", …+"profile", …+"notification",
	// created if absent.
	Postgres string
	// DatabasePrefix prefixes the database names created with Postgres.
	DatabasePrefix string
	// Databases are explicit per-service URLs; they win over Postgres and
	// DataDir.
	Databases Databases
	// Brokers are real Kafka brokers; empty means the embedded broker.
	Brokers []string
	// KafkaSASL authenticates every component to Brokers (one principal
	// for all of them: the embedded system is a development tool; with a
	// broker that enforces the per-principal ACLs give its super user).
	// Not allowed with the embedded broker, which has no authentication.
	KafkaSASL kafka.SASL
	// KafkaTLS, if set, makes every component's Kafka connections TLS
	// (kafka.Config.TLS), for a SASL_SSL listener on Brokers. nil:
	// plaintext.
	KafkaTLS *tls.Config
	// EmbeddedKafka is the embedded broker's address. Default
	// 127.0.0.1:9092 (127.0.0.1:0 with EphemeralPorts).
	EmbeddedKafka string
	// Listen is saga-machine's address (API, console, probes, metrics).
	Listen string
	// ProfileListen, DealsListen, NotificationListen and IssuerListen are
	// the other services' addresses.
	ProfileListen, DealsListen, NotificationListen, IssuerListen string
	// EphemeralPorts makes every address left empty 127.0.0.1:0 (a free
	// port), for tests and benchmarks; System's URLs tell the real ones.
	EphemeralPorts bool
	// Topics are the topic names; empty fields mean the shipped names.
	Topics Topics
	// GroupPrefix prefixes every Kafka consumer group (saga-machine,
	// deals, profile, notification), e.g. for a test's unique groups.
	GroupPrefix string
	// Partitions of the topics created at start. Default 3.
	Partitions int
	// Engine tunes the orchestrator; its Logger and Observer are set by
	// Start.
	Engine engine.Config
	// ParticipantConcurrency is the SDK's Config.Concurrency of each
	// service (0: the SDK's default).
	ParticipantConcurrency int
	// Sagas are the saga definitions saga-machine loads (*.yaml at the
	// root). Default: the shipped ones, sagas.FS.
	Sagas fs.FS
	// Paused names participant services (Deals, Profile, Notification)
	// whose Kafka consumers Start does not run: their HTTP API serves, their
	// commands wait on the bus until System.Resume starts the consumer (a
	// service that is down, for tests of what happens meanwhile).
	Paused []string
	// Participant, if set, adjusts the SDK configuration of each
	// participant service (name is Deals, Profile or Notification) before
	// it is built: e.g. a clock (sdk.Config.Now) that runs behind, for
	// tests.
	Participant func(name string, c *sdk.Config)
	// Logins are the accounts of the in-process issuer's login page, where
	// the operator console signs in. nil means DemoLogins.
	Logins []issuer.User
	// Logger receives every component's logs. Default: discard.
	Logger *slog.Logger
}

// withDefaults validates c and fills its defaults.
func (c Config) withDefaults() (Config, error) {
	if c.DataDir == "" {
		c.DataDir = DefaultDataDir
	}
	if c.Partitions < 0 {
		return c, fmt.Errorf("system config: Partitions %d is negative", c.Partitions)
	}
	if c.Partitions == 0 {
		c.Partitions = DefaultPartitions
	}
	if c.ParticipantConcurrency < 0 {
		return c, fmt.Errorf("system config: ParticipantConcurrency %d is negative", c.ParticipantConcurrency)
	}
	for _, name := range c.Paused {
		if name != Deals && name != Profile && name != Notification {
			return c, fmt.Errorf("system config: Paused names %q, not a participant service (%s, %s or %s)", name, Deals, Profile, Notification)
		}
	}
	if c.Sagas == nil {
		c.Sagas = sagas.FS
	}
	for i, b := range c.Brokers {
		if strings.TrimSpace(b) == "" {
			return c, fmt.Errorf("system config: broker %d is empty", i)
		}
	}
	if c.KafkaSASL.Enabled() && len(c.Brokers) == 0 {
		return c, fmt.Errorf("system config: KafkaSASL (%s) needs Brokers: the embedded broker has no authentication", c.KafkaSASL)
	}
	if c.KafkaTLS != nil && len(c.Brokers) == 0 {
		return c, errors.New("system config: KafkaTLS needs Brokers: the embedded broker has no TLS")
	}
	if c.Postgres != "" && !isPostgres(c.Postgres) {
		return c, fmt.Errorf("system config: Postgres %q is not a postgres:// URL", redact(c.Postgres))
	}
	if c.DatabasePrefix != "" && !validIdent(c.DatabasePrefix) {
		return c, fmt.Errorf("system config: DatabasePrefix %q: want lower-case letters, digits and underscores", c.DatabasePrefix)
	}
	addr := func(dst *string, def string) {
		if *dst != "" {
			return
		}
		if c.EphemeralPorts {
			*dst = "127.0.0.1:0"
		} else {
			*dst = def
		}
	}
	addr(&c.EmbeddedKafka, DefaultEmbeddedKafka)
	addr(&c.Listen, DefaultListen)
	addr(&c.ProfileListen, DefaultProfileListen)
	addr(&c.DealsListen, DefaultDealsListen)
	addr(&c.NotificationListen, DefaultNotificationListen)
	addr(&c.IssuerListen, DefaultIssuerListen)
	seen := map[string]string{}
	for _, a := range []struct{ name, addr string }{
		{"Listen", c.Listen}, {"ProfileListen", c.ProfileListen}, {"DealsListen", c.DealsListen},
		{"NotificationListen", c.NotificationListen}, {"IssuerListen", c.IssuerListen},
	} {
		if !program.IsLoopbackAddr(a.addr) {
			return c, fmt.Errorf("system config: %s %q is not a loopback address: the one-process system trusts its in-process dev issuer, which mints any token for anyone, so it serves on 127.0.0.1, ::1 or localhost only", a.name, a.addr)
		}
		if strings.HasSuffix(a.addr, ":0") {
			continue
		}
		if prev, dup := seen[a.addr]; dup {
			return c, fmt.Errorf("system config: %s and %s are both %s", prev, a.name, a.addr)
		}
		seen[a.addr] = a.name
	}
	c.Topics = c.Topics.withDefaults()
	if c.Logger == nil {
		c.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return c, nil
}

// databaseURL is the URL of service's database and, with Postgres, the
// database name to create.
func (c Config) databaseURL(service string) (url, create string, err error) {
	if u := c.Databases.get(service); u != "" {
		return u, "", nil
	}
	if c.Postgres != "" {
		name := c.DatabasePrefix + service
		u, err := withDatabase(c.Postgres, name)
		return u, name, err
	}
	return "sqlite:" + filepath.Join(c.DataDir, service+".db"), "", nil
}

func validIdent(s string) bool {
	for _, r := range s {
		if !(r == '_' || r >= 'a' && r <= 'z' || r >= '0' && r <= '9') {
			return false
		}
	}
	return s != ""
}
