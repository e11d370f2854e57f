package notification

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/gorilla/mux"
	"github.com/jmoiron/sqlx"

	"github.com/portfolio-counselor/sagamachine/engine/envelope"
	"github.com/portfolio-counselor/sagamachine/internal/auth"
	"github.com/portfolio-counselor/sagamachine/internal/sqldb"
	"github.com/portfolio-counselor/sagamachine/participants/internal/dealctx"
	"github.com/portfolio-counselor/sagamachine/participants/internal/service"
	"github.com/portfolio-counselor/sagamachine/participants/sdk"
)

// Name is the participant name of the service in the saga definitions.
const Name = "notification"

// CommandNotify is the command handled.
const CommandNotify = "NOTIFY"

// Config configures a Service. DB and Auth are required.
type Config struct {
	// DB is the service's database, migrated with Migrate and sdk.Migrate.
	DB *sqlx.DB
	// Participant is the SDK participant the NOTIFY handler is registered
	// on (RegisterHandlers); the router serves its dead letters to
	// operators (/admin/dead-letters). Optional: without it those routes
	// answer 503.
	Participant *sdk.Participant
	// Auth authenticates every HTTP route but the probes.
	Auth *auth.Authenticator
	// Logger receives what would be sent; default slog.Default().
	Logger *slog.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Service is the notification service. It is safe for concurrent use.
type Service struct {
	db   *sqlx.DB
	sql  *sqldb.Statements // statements of the NOTIFY handler
	p    *sdk.Participant
	auth *auth.Authenticator
	log  *slog.Logger
	now  func() time.Time
}

// New validates cfg and returns the service.
func New(cfg Config) (*Service, error) {
	c, err := service.NewCore(Name, service.CoreConfig{DB: cfg.DB, Participant: cfg.Participant, Auth: cfg.Auth,
		Logger: cfg.Logger, Now: cfg.Now})
	if err != nil {
		return nil, err
	}
	return &Service{db: c.DB, sql: c.SQL, p: c.Participant, auth: c.Auth, log: c.Log, now: c.Now}, nil
}

// Migrate applies the service's business migrations
// (schema/migrations/notification/<dialect>, version table
// notification_goose_db_version). The SDK's tables are migrated separately
// with sdk.Migrate.
func Migrate(ctx context.Context, db *sqlx.DB) error { return service.Migrate(ctx, db, Name) }

// Notification is one message to a user.
type Notification struct {
	Seq    int64  `json:"-" db:"seq"`
	ID     string `json:"id" db:"id"`
	UserID string `json:"-" db:"user_id"`
	DealID string `json:"deal_id" db:"deal_id"`
	SagaID string `json:"saga_id" db:"saga_id"`
	// BasketID is set on a basket's notification (BASKET_ORDER; DealID
	// then holds the basket's id too); "" on a deal's.
	BasketID  string    `json:"basket_id,omitempty" db:"basket_id"`
	Status    string    `json:"status" db:"status"`
	Text      string    `json:"text" db:"text"`
	CreatedAt time.Time `json:"created_at" db:"created_at"`
}

// Text is the message for a deal whose saga ended, and the status it is
// stored under: executed, rejected, failed, or cancelled (the owner
// cancelled it; what profile gave back is said as for a failure). A failed deal's text says
// why (deal_context.reason, set by deals' FAIL_DEAL) and, when profile
// reverted the order (rev, the context's order_reversal, for this deal),
// that the money or the instruments came back. A NOTIFY of a failed saga
// whose deal could not be marked failed (deals' FAIL_DEAL was resolved by
// an operator: the status is still "" or approved) is a failure too. Any
// other status is an error.
func Text(dc dealctx.DealContext, rev *dealctx.Reversal) (text, status string, err error) {
	switch dc.Status {
	case dealctx.StatusExecuted:
		return "Your " + dc.Describe() + " was executed", dc.Status, nil
	case dealctx.StatusRejected:
		reason := dc.Reason
		if reason == "" {
			reason = "no reason given"
		}
		return "Your " + dc.Describe() + " was rejected: " + reason, dc.Status, nil
	case dealctx.StatusCancelled:
		// The owner cancelled it before it was settled (MANUAL_CREATE_ORDER
		// v3's CANCELLED): say what came back, as for a failure.
		return "Your " + dc.Describe() + " was cancelled at your request" + returned(dc, rev), dc.Status, nil
	case dealctx.StatusFailed, dealctx.StatusApproved, "":
		reason := dc.Reason
		if dc.Status != dealctx.StatusFailed || reason == "" {
			reason = "the deal could not be completed"
		}
		return "Your " + dc.Describe() + " failed: " + reason + returned(dc, rev), dealctx.StatusFailed, nil
	}
	return "", "", fmt.Errorf("deal %s has status %q; NOTIFY expects %q, %q, %q or %q", dc.DealID, dc.Status,
		dealctx.StatusExecuted, dealctx.StatusRejected, dealctx.StatusFailed, dealctx.StatusCancelled)
}

// returned is what a failed or cancelled deal's text adds when profile
// reverted the order (rev, the context's order_reversal, for this deal):
// that the money or the instruments came back; "" otherwise.
func returned(dc dealctx.DealContext, rev *dealctx.Reversal) string {
	if rev == nil || !rev.Reverted || rev.DealID != dc.DealID {
		return ""
	}
	switch dc.Side {
	case dealctx.Buy:
		return ". The " + dealctx.Money(dc.Amount) + " " + dc.Currency + " taken from your cash were returned"
	case dealctx.Sell:
		return ". The " + dc.Quantity.String() + " " + dc.Instrument + " sold were returned to your portfolio"
	}
	return ""
}

// RegisterHandlers registers NOTIFY on p, as a batch handler
// (handleNotifyBatch: a run of NOTIFY commands is stored with a few
// statements; one command alone runs handleNotify).
func (s *Service) RegisterHandlers(p *sdk.Participant) {
	sdk.HandleBatch(p, CommandNotify, s.handleNotifyBatch)
}

// handleNotify stores the notification a NOTIFY asks for. The payload is
// the notificationDTO (MANUAL_CREATE_ORDER v3), the whole saga context (v1
// and v2, still running) or the basketNotificationDTO (BASKET_ORDER, see
// notifyBasket): parseNotify tells them apart and anything else is parked
// with the reason. A deal is told to one user in
// one saga: a NOTIFY naming another user or saga than the deal's earlier
// notifications is parked and nobody is told.
func (s *Service) handleNotify(ctx context.Context, tx *sqlx.Tx, cmd sdk.Command[json.RawMessage]) (sdk.Result, error) {
	nt, err := parseNotify(cmd.Payload)
	if err != nil {
		return sdk.Result{}, sdk.Permanent(fmt.Errorf("%s: %w", cmd.Name, err))
	}
	if nt.basket != nil {
		return s.notifyBasket(ctx, tx, cmd, *nt.basket)
	}
	dc := nt.dc
	text, status, err := Text(dc, nt.rev)
	if err != nil {
		return sdk.Result{}, sdk.Permanent(fmt.Errorf("%s: %w", cmd.Name, err))
	}
	if err := s.checkRecipient(ctx, tx, dc.DealID, dc.UserID, cmd.SagaID); err != nil {
		return sdk.Result{}, fmt.Errorf("%s: %w", cmd.Name, err)
	}
	n := Notification{ID: envelope.NewID(), UserID: dc.UserID, DealID: dc.DealID, SagaID: cmd.SagaID,
		Status: status, Text: text, CreatedAt: s.now().UTC()}
	// One notification per deal outcome: NOTIFY arriving again under a new
	// message id is not sent twice.
	const q = `INSERT INTO notifications (id, user_id, deal_id, saga_id, status, text, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)
		ON CONFLICT (deal_id, status) DO NOTHING`
	res, err := s.sql.Exec(ctx, tx, q, n.ID, n.UserID, n.DealID, n.SagaID, n.Status, n.Text, n.CreatedAt)
	if err != nil {
		return sdk.Result{}, fmt.Errorf("%s: store notification of deal %s: %w", cmd.Name, dc.DealID, err)
	}
	if k, err := res.RowsAffected(); err != nil {
		return sdk.Result{}, fmt.Errorf("%s: store notification of deal %s: %w", cmd.Name, dc.DealID, err)
	} else if k == 0 {
		s.log.InfoContext(ctx, "notification already sent", "deal_id", dc.DealID, "status", status)
		return sdk.NoReply(), nil
	}
	// The stub gateway: a real one would send here (through its own outbox).
	s.log.InfoContext(ctx, "notification (stub gateway: would send)", "to_user", n.UserID, "notification_id", n.ID,
		"deal_id", n.DealID, "saga_id", n.SagaID, "text", n.Text)
	return sdk.NoReply(), nil
}

// checkRecipient refuses (permanently) a notification of dealID to userID
// in sagaID when the deal was notified before to another user or in
// another saga: a deal has one owner and one saga, so such a NOTIFY is
// forged or built from a corrupted context, and nobody is told. The
// service keeps no deals: the first notification of a deal cannot be
// checked against its owner here (saga-machine, the only writer of
// NOTIFICATION_TOPIC, builds it from the context deals wrote).
func (s *Service) checkRecipient(ctx context.Context, tx *sqlx.Tx, dealID, userID, sagaID string) error {
	const q = `SELECT user_id, saga_id FROM notifications WHERE deal_id = ? AND (user_id <> ? OR saga_id <> ?) LIMIT 1`
	var prev struct {
		UserID string `db:"user_id"`
		SagaID string `db:"saga_id"`
	}
	err := s.sql.Get(ctx, tx, &prev, q, dealID, userID, sagaID)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return nil
	case err != nil:
		return fmt.Errorf("check the earlier notifications of deal %s: %w", dealID, err)
	case prev.UserID != userID:
		return sdk.Permanent(fmt.Errorf("deal %s was notified to another user before; refusing to tell user %q about it", dealID, truncate(userID, 64)))
	}
	return sdk.Permanent(fmt.Errorf("deal %s was notified before in saga %s; refusing a notification from saga %s", dealID, prev.SagaID, sagaID))
}

// List returns a page of userID's notifications, newest first.
func (s *Service) List(ctx context.Context, userID string, page service.PageRequest) (service.Page[Notification], error) {
	q := `SELECT seq, id, user_id, deal_id, saga_id, basket_id, status, text, created_at FROM notifications WHERE user_id = ?`
	args := []any{userID}
	if page.Before > 0 {
		q += ` AND seq < ?`
		args = append(args, page.Before)
	}
	q += ` ORDER BY seq DESC LIMIT ?`
	args = append(args, page.Limit+1)
	var rows []Notification
	if err := s.db.SelectContext(ctx, &rows, s.db.Rebind(q), args...); err != nil {
		return service.Page[Notification]{}, fmt.Errorf("list notifications of %s: %w", userID, err)
	}
	for i := range rows {
		rows[i].CreatedAt = rows[i].CreatedAt.UTC()
	}
	return service.NewPage(rows, page.Limit, func(n Notification) int64 { return n.Seq }), nil
}

// Router returns the service's HTTP handler, behind service.Guard: a
// state-changing request from another origin (CSRF) or with a body that is
// not JSON is refused before any handler runs.
func (s *Service) Router() http.Handler { return service.Guard(s.routes()) }

func (s *Service) routes() *mux.Router {
	r := service.NewRouter(s.db)
	r.Handle("/notifications", service.Authed(s.auth, s.log, s.handleList)).Methods(http.MethodGet)
	// The SDK's dead letters (GET/POST /admin/dead-letters...), operators only.
	service.MountAdmin(r, s.p, s.operatorsOnly)
	// Prometheus metrics (dead letters, outbox, consumer lag), unauthenticated.
	service.AddMetrics(r, s.p)
	return r
}

// operatorsOnly lets through only authenticated callers with the
// saga-operator role (401 without a valid token, 403 without the role).
func (s *Service) operatorsOnly(h http.Handler) http.Handler {
	return s.auth.Middleware(s.auth.RequireRole(auth.RoleOperator, h))
}

func (s *Service) handleList(w http.ResponseWriter, r *http.Request, u auth.User) error {
	page, err := service.ParsePage(r)
	if err != nil {
		return err
	}
	p, err := s.List(r.Context(), u.Subject, page)
	if err != nil {
		return err
	}
	service.WriteJSON(w, http.StatusOK, p)
	return nil
}
