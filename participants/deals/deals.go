package deals

import (
	"context"
	"database/sql"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/shopspring/decimal"

	"github.com/portfolio-counselor/sagamachine/internal/auth"
	"github.com/portfolio-counselor/sagamachine/internal/sqldb"
	"github.com/portfolio-counselor/sagamachine/participants/internal/service"
	"github.com/portfolio-counselor/sagamachine/participants/sdk"
)

// Name is the participant name of the service in the saga definitions.
const Name = "deals"

// Saga and event the service starts for each new deal.
const (
	SagaName       = "MANUAL_CREATE_ORDER"
	StartEvent     = "REGISTER"
	CommandApprove = "APPROVE_DEAL"
	CommandReject  = "REJECT_DEAL"
	EventUpdated   = "DEAL_UPDATED"
	// CommandFail is the compensation of REGISTER, APPROVE_DEAL and
	// REJECT_DEAL (MANUAL_CREATE_ORDER v2); EventFailed its done event.
	CommandFail = "FAIL_DEAL"
	EventFailed = "DEAL_FAILED"
	// EventCancelRequested is what deals sends the saga when the deal's
	// owner cancels a deal that is not settled yet (POST /deals/{id}/cancel,
	// MANUAL_CREATE_ORDER v3); its payload adds "cancellation" to the
	// saga's context.
	EventCancelRequested = "CANCEL_REQUESTED"
)

// Deal statuses.
const (
	StatusDraft    = "draft"
	StatusExecuted = "executed"
	StatusRejected = "rejected"
	StatusFailed   = "failed" // the deal's saga failed (FAIL_DEAL); Reason says why
	// StatusCancelled: the owner cancelled the deal before it was settled
	// and its saga undid what was done (FAIL_DEAL of a cancelled saga).
	StatusCancelled = "cancelled"
)

// Config configures a Service. DB, Participant and Auth are required.
type Config struct {
	// DB is the service's database, migrated with Migrate and sdk.Migrate.
	DB *sqlx.DB
	// Participant is the SDK participant the service starts sagas with and
	// registers its command handlers on (RegisterHandlers).
	Participant *sdk.Participant
	// Auth authenticates every HTTP route but the probes.
	Auth *auth.Authenticator
	// Logger defaults to slog.Default().
	Logger *slog.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Service is the deals service. It is safe for concurrent use.
type Service struct {
	db      *sqlx.DB
	dialect service.Dialect
	sql     *sqldb.Statements // statements of the saga paths (POST /deals, commands)
	p       *sdk.Participant
	auth    *auth.Authenticator
	log     *slog.Logger
	now     func() time.Time

	// Group commit of new deals (group.go).
	groupMu  sync.Mutex
	queue    []*pendingDeal
	flushing bool // a flushGroups is running (one at most)
}

// New validates cfg and returns the service.
func New(cfg Config) (*Service, error) {
	c, err := service.NewCore(Name, service.CoreConfig{DB: cfg.DB, Participant: cfg.Participant, Auth: cfg.Auth,
		Logger: cfg.Logger, Now: cfg.Now, RequireParticipant: true})
	if err != nil {
		return nil, err
	}
	return &Service{db: c.DB, dialect: c.Dialect, sql: c.SQL, p: c.Participant, auth: c.Auth, log: c.Log, now: c.Now}, nil
}

// Migrate applies the service's business migrations
// (schema/migrations/deals/<dialect>, version table deals_goose_db_version).
// The SDK's tables are migrated separately with sdk.Migrate.
func Migrate(ctx context.Context, db *sqlx.DB) error { return service.Migrate(ctx, db, Name) }

// Deal is one deal (order) of a client.
type Deal struct {
	Seq         int64           `json:"-" db:"seq"`
	ID          string          `json:"id" db:"id"`
	UserID      string          `json:"user_id" db:"user_id"`
	PortfolioID string          `json:"portfolio_id" db:"portfolio_id"`
	Side        string          `json:"side" db:"side"`
	Instrument  string          `json:"instrument" db:"instrument"`
	Quantity    decimal.Decimal `json:"quantity" db:"quantity"`
	Price       decimal.Decimal `json:"price" db:"price"`
	Amount      decimal.Decimal `json:"amount" db:"amount"`
	Currency    string          `json:"currency" db:"currency"`
	Status      string          `json:"status" db:"status"`
	Reason      string          `json:"reason,omitempty" db:"reason"`
	SagaID      string          `json:"saga_id" db:"saga_id"`
	CreatedAt   time.Time       `json:"created_at" db:"created_at"`
	UpdatedAt   time.Time       `json:"updated_at" db:"updated_at"`
	// CancelRequestedAt is when the owner's cancellation was accepted (the
	// deal was still a draft); the deal becomes cancelled once its saga
	// has undone what was done, or stays as its saga ends otherwise.
	CancelRequestedAt *time.Time `json:"cancel_requested_at,omitempty" db:"cancel_requested_at"`
	// BasketID names the basket the deal is a line of (POST /baskets);
	// nil for a deal of its own (POST /deals). A basket's deals are settled
	// together by the basket's saga (BASKET_ORDER), never one by one.
	BasketID *string `json:"basket_id,omitempty" db:"basket_id"`

	IdempotencyKey sql.NullString `json:"-" db:"idempotency_key"`
	RequestHash    string         `json:"-" db:"request_hash"`
}

func (d *Deal) normalize() {
	d.CreatedAt = d.CreatedAt.UTC()
	d.UpdatedAt = d.UpdatedAt.UTC()
	if d.CancelRequestedAt != nil {
		t := d.CancelRequestedAt.UTC()
		d.CancelRequestedAt = &t
	}
}

// Router returns the service's HTTP handler, behind service.Guard: a
// state-changing request from another origin (CSRF) or with a body that is
// not JSON is refused before any handler runs.
func (s *Service) Router() http.Handler { return service.Guard(s.routes()) }
