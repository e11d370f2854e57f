package profile

import (
	"context"
	"log/slog"
	"net/http"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/shopspring/decimal"

	"github.com/portfolio-counselor/sagamachine/internal/auth"
	"github.com/portfolio-counselor/sagamachine/internal/sqldb"
	"github.com/portfolio-counselor/sagamachine/participants/internal/service"
	"github.com/portfolio-counselor/sagamachine/participants/sdk"
)

// Name is the participant name of the service in the saga definitions.
const Name = "profile"

// Command and events of the MANUAL_CREATE_ORDER saga handled here.
const (
	CommandApproveOrder = "APPROVE_ORDER"
	EventOrderApproved  = "ORDER_APPROVED"
	EventOrderRejected  = "ORDER_REJECTED"
)

// DateLayout is the layout of snapshot dates (UTC days).
const DateLayout = "2006-01-02"

// Config configures a Service. DB and Auth are required.
type Config struct {
	// DB is the service's database, migrated with Migrate and sdk.Migrate.
	DB *sqlx.DB
	// Participant is the SDK participant the service's command handler is
	// registered on (RegisterHandlers); the router serves its dead letters
	// to operators (/admin/dead-letters). Optional: without it those routes
	// answer 503.
	Participant *sdk.Participant
	// Auth authenticates every HTTP route but the probes.
	Auth *auth.Authenticator
	// Logger defaults to slog.Default().
	Logger *slog.Logger
	// Now is the clock (snapshot days are its UTC dates); nil means time.Now.
	Now func() time.Time
}

// Service is the profile service. It is safe for concurrent use.
type Service struct {
	db      *sqlx.DB
	dialect service.Dialect
	sql     *sqldb.Statements // statements of the command handler and the writes
	p       *sdk.Participant
	auth    *auth.Authenticator
	log     *slog.Logger
	now     func() time.Time

	lockPortfolioSQL string
	loadOrderSQL     string
}

// New validates cfg and returns the service.
func New(cfg Config) (*Service, error) {
	c, err := service.NewCore(Name, service.CoreConfig{DB: cfg.DB, Participant: cfg.Participant, Auth: cfg.Auth,
		Logger: cfg.Logger, Now: cfg.Now})
	if err != nil {
		return nil, err
	}
	return &Service{db: c.DB, dialect: c.Dialect, sql: c.SQL, p: c.Participant, auth: c.Auth, log: c.Log, now: c.Now,
		lockPortfolioSQL: `SELECT ` + portfolioColumns + ` FROM portfolios WHERE id = ?` + c.Dialect.ForUpdate(),
		loadOrderSQL:     orderViewSQL(c.Dialect == service.Postgres)}, nil
}

// Migrate applies the service's business migrations
// (schema/migrations/profile/<dialect>, version table
// profile_goose_db_version). The SDK's tables are migrated separately with
// sdk.Migrate.
func Migrate(ctx context.Context, db *sqlx.DB) error { return service.Migrate(ctx, db, Name) }

// Router returns the service's HTTP handler, behind service.Guard: a
// state-changing request from another origin (CSRF) or with a body that is
// not JSON is refused before any handler runs.
func (s *Service) Router() http.Handler { return service.Guard(s.routes()) }

// Profile is a client's profile.
type Profile struct {
	UserID    string    `json:"user_id" db:"user_id"`
	Name      string    `json:"name" db:"name"`
	Email     string    `json:"email" db:"email"`
	Roles     []string  `json:"roles" db:"-"`
	CreatedAt time.Time `json:"created_at" db:"created_at"`
	UpdatedAt time.Time `json:"updated_at" db:"updated_at"`
}

// Positions maps instruments to the quantity held.
type Positions map[string]decimal.Decimal

// Portfolio is an investment portfolio: cash in its currency and positions.
type Portfolio struct {
	Seq       int64           `json:"-" db:"seq"`
	ID        string          `json:"id" db:"id"`
	UserID    string          `json:"-" db:"user_id"`
	Name      string          `json:"name" db:"name"`
	Currency  string          `json:"currency" db:"currency"`
	Cash      decimal.Decimal `json:"cash" db:"cash"`
	Positions Positions       `json:"positions" db:"-"`
	CreatedAt time.Time       `json:"created_at" db:"created_at"`
	UpdatedAt time.Time       `json:"updated_at" db:"updated_at"`
}

// Snapshot is a portfolio's position at the end of one day (UTC).
type Snapshot struct {
	PortfolioID string          `json:"portfolio_id"`
	Date        string          `json:"date"`
	Currency    string          `json:"currency"`
	Cash        decimal.Decimal `json:"cash"`
	Positions   Positions       `json:"positions"`
	TakenAt     time.Time       `json:"taken_at"`
}

// SnapshotAsOf is the position of a portfolio as of a date: the latest
// snapshot on or before it.
type SnapshotAsOf struct {
	// AsOf is the date asked for; Date (of the snapshot) is on or before it.
	AsOf string `json:"as_of"`
	Snapshot
}
