package deals

import (
	"context"
	"encoding/json"
	"net/http"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/uuid"
	"github.com/jmoiron/sqlx"
	"github.com/pressly/goose/v3"

	"github.com/portfolio-counselor/sagamachine/engine"
	"github.com/portfolio-counselor/sagamachine/internal/testenv"
	"github.com/portfolio-counselor/sagamachine/participants/internal/dealctx"
	"github.com/portfolio-counselor/sagamachine/participants/internal/service"
	"github.com/portfolio-counselor/sagamachine/participants/internal/service/servicetest"
	"github.com/portfolio-counselor/sagamachine/participants/sdk"
	"github.com/portfolio-counselor/sagamachine/schema"
)

// failWorld is deals on one database behind its validated HTTP router,
// with alice's draft deal and the REGISTER that started its saga.
type failWorld struct {
	httpEnv
	s        *Service
	deal     Deal
	register engine.Message
}

func newFailWorld(t *testing.T, db *sqlx.DB) *failWorld {
	t.Helper()
	iss := servicetest.NewIssuer(t)
	s, p := newService(t, db, iss.Auth)
	w := &failWorld{httpEnv: httpEnv{h: servicetest.Validated(t, s.Router(), "deals.yaml"), iss: iss, p: p,
		alice: iss.Token(t, "alice"), bob: iss.Token(t, "bob")}, s: s}
	d, _, err := s.Create(context.Background(), "alice", buyRequest(), "")
	if err != nil {
		t.Fatal(err)
	}
	msgs := servicetest.Flush(t, p)
	if len(msgs) != 1 || msgs[0].Name != StartEvent {
		t.Fatalf("outbox: got %v, want REGISTER", msgs)
	}
	w.deal, w.register = d, msgs[0]
	return w
}

// stored reads the deal over HTTP as alice.
func (w *failWorld) stored(t *testing.T) Deal {
	t.Helper()
	res := servicetest.Call(t, w.h, "GET", "/deals/"+w.deal.ID, w.alice, nil)
	if res.Status != http.StatusOK {
		t.Fatalf("GET /deals/{id}: %d %s", res.Status, res.Body)
	}
	var d Deal
	res.Decode(t, &d)
	return d
}

// failed checks that out is DEAL_FAILED with the deal failed for reason.
func failedReply(t *testing.T, out sdk.Outcome, dealID, reason string) {
	t.Helper()
	if out.Reply == nil || out.Reply.Name != EventFailed || out.Err != nil {
		t.Fatalf("got reply %+v (err %v, dead letter %+v), want %s", out.Reply, out.Err, out.DeadLetter, EventFailed)
	}
	var env dealctx.Envelope
	if err := json.Unmarshal(out.Reply.Payload, &env); err != nil || env.DealContext == nil {
		t.Fatalf("DEAL_FAILED payload %s: %v", out.Reply.Payload, err)
	}
	dc := env.DealContext
	if dc.DealID != dealID || dc.Status != dealctx.StatusFailed || dc.Reason != reason || dc.Validate() != nil {
		t.Errorf("DEAL_FAILED deal_context: got %+v, want deal %s failed: %q, complete", dc, dealID, reason)
	}
}

// TestFailDeal compensates a deal in each state it can be in when its saga
// fails, on SQLite and PostgreSQL: it becomes failed once with the reason
// the saga context gives, the API shows it, and every repetition or late
// forward command leaves it as it is.
func TestFailDeal(t *testing.T) {
	tests := []struct {
		name       string
		settle     string // APPROVE_DEAL or REJECT_DEAL applied before, "" for none
		ctxStatus  string // deal_context.status when the saga failed
		ctxReason  string
		aborted    bool // an operator aborted the saga (the context's abort)
		wantReason string
	}{
		{name: "draft, no decision (profile unavailable)",
			wantReason: "the order could not be confirmed against your portfolio in time"},
		{name: "draft, approved (deals unavailable)", ctxStatus: dealctx.StatusApproved,
			wantReason: "the approved order could not be executed in time"},
		{name: "executed, its reply lost (deals unavailable)", settle: CommandApprove, ctxStatus: dealctx.StatusApproved,
			wantReason: "the approved order could not be executed in time"},
		{name: "rejected, its reply lost", settle: CommandReject, ctxStatus: dealctx.StatusRejected, ctxReason: "insufficient cash: need 1500.00 USD, have 200.00 USD",
			wantReason: "the order was rejected (insufficient cash: need 1500.00 USD, have 200.00 USD) and the deal could not be settled in time"},
		{name: "draft, no decision, aborted by an operator", aborted: true,
			wantReason: "the order was stopped by our staff before it was confirmed against your portfolio"},
		{name: "executed, aborted by an operator", settle: CommandApprove, ctxStatus: dealctx.StatusApproved, aborted: true,
			wantReason: "the approved order was stopped by our staff before it was executed"},
		{name: "rejected, aborted by an operator", settle: CommandReject, ctxStatus: dealctx.StatusRejected, ctxReason: "insufficient cash", aborted: true,
			wantReason: "the order was rejected (insufficient cash) and then stopped by our staff before the deal was settled"},
	}
	eachDB(t, func(t *testing.T, open opener) {
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				w := newFailWorld(t, open(t, Migrate))
				dc := w.deal.context()
				dc.Status, dc.Reason = tt.ctxStatus, tt.ctxReason
				// The compensation of the step last taken: the settle
				// command if any, else REGISTER.
				var forward engine.Message
				if tt.settle != "" {
					forward = servicetest.Command(t, w.p, tt.settle, w.deal.SagaID, dealctx.Wrap(dc))
					if out := servicetest.DispatchMessage(t, w.p, forward); out.Reply == nil || out.Reply.Name != EventUpdated {
						t.Fatalf("%s: got %+v (err %v)", tt.settle, out.Reply, out.Err)
					}
				} else {
					forward = servicetest.Command(t, w.p, CommandApprove, w.deal.SagaID, dealctx.Wrap(dc)) // sent only after its compensation
				}
				var failPayload any = dealctx.Wrap(dc)
				if tt.aborted {
					failPayload = map[string]any{"deal_context": dc, "abort": map[string]string{"at": "2026-11-26T21:00:00Z"}}
				}
				comp := servicetest.Compensation(t, w.p, CommandFail, forward, failPayload)
				out := servicetest.DispatchMessage(t, w.p, comp)
				failedReply(t, out, w.deal.ID, tt.wantReason)
				got := w.stored(t)
				if got.Status != StatusFailed || got.Reason != tt.wantReason {
					t.Errorf("GET: got %q %q, want failed %q", got.Status, got.Reason, tt.wantReason)
				}
				var list service.Page[Deal]
				servicetest.Call(t, w.h, "GET", "/deals?status=failed", w.alice, nil).Decode(t, &list)
				if len(list.Items) != 1 || list.Items[0].ID != w.deal.ID {
					t.Errorf("?status=failed: got %+v, want the deal", list.Items)
				}
				if res := servicetest.Call(t, w.h, "GET", "/deals/"+w.deal.ID, w.bob, nil); res.Status != http.StatusNotFound {
					t.Errorf("bob reading alice's failed deal: got %d, want 404", res.Status)
				}

				// Redelivery: the stored reply.
				if again := servicetest.DispatchMessage(t, w.p, comp); !again.Duplicate || again.Reply == nil || again.Reply.ID != out.Reply.ID {
					t.Errorf("redelivery: got duplicate %v reply %+v, want %s again", again.Duplicate, again.Reply, out.Reply.ID)
				}
				// REGISTER's compensation after the settle command's: the
				// same answer, the first reason kept, nothing moves.
				second := servicetest.Compensation(t, w.p, CommandFail, w.register, failPayload)
				failedReply(t, servicetest.DispatchMessage(t, w.p, second), w.deal.ID, tt.wantReason)
				// The forward command arriving after its compensation: the
				// barrier refuses it (a settle command sent before is a duplicate).
				late := servicetest.DispatchMessage(t, w.p, forward)
				if tt.settle == "" && (!late.Expired || late.Reply == nil || late.Reply.Name != engine.EventCommandExpired) {
					t.Errorf("APPROVE_DEAL after its compensation: got %+v, want COMMAND_EXPIRED", late.Reply)
				}
				// APPROVE_DEAL and REJECT_DEAL under new ids: parked, the deal stays failed.
				for _, cmd := range []string{CommandApprove, CommandReject} {
					res := servicetest.Dispatch(t, w.p, cmd, w.deal.SagaID, dealctx.Wrap(dc))
					if res.DeadLetter == nil || res.Reply != nil || !strings.Contains(res.DeadLetter.Reason, "it is already failed") {
						t.Errorf("%s on a failed deal: got reply %+v dead letter %+v, want a dead letter", cmd, res.Reply, res.DeadLetter)
					}
				}
				if after := w.stored(t); after.Status != StatusFailed || after.Reason != tt.wantReason || !after.UpdatedAt.Equal(got.UpdatedAt) {
					t.Errorf("after the repetitions: got %q %q updated %s, want failed %q updated %s", after.Status, after.Reason, after.UpdatedAt, tt.wantReason, got.UpdatedAt)
				}
			})
		}
	})
}

// TestFailDealRefused: FAIL_DEAL for another saga's, user's or portfolio's
// deal, for no deal, or not as a compensation, is parked with the reason
// and the deal does not move.
func TestFailDealRefused(t *testing.T) {
	tests := []struct {
		name  string
		forge func(msg *engine.Message, dc *dealctx.DealContext)
		want  string
	}{
		{"another saga", func(msg *engine.Message, _ *dealctx.DealContext) { msg.SagaID = uuid.NewString() }, "belongs to saga"},
		{"another user", func(_ *engine.Message, dc *dealctx.DealContext) { dc.UserID = "mallory" }, `belongs to user "alice"`},
		{"another portfolio", func(_ *engine.Message, dc *dealctx.DealContext) { dc.PortfolioID = uuid.NewString() }, `belongs to user "alice", portfolio`},
		{"no such deal", func(_ *engine.Message, dc *dealctx.DealContext) { dc.DealID = uuid.NewString() }, "does not exist"},
		{"not a compensation", func(msg *engine.Message, _ *dealctx.DealContext) { msg.Compensates = "" }, "compensates is empty"},
		{"malformed context", func(_ *engine.Message, dc *dealctx.DealContext) { dc.Quantity = dc.Quantity.Neg() }, "quantity -10 is not positive"},
	}
	eachDB(t, func(t *testing.T, open opener) {
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				w := newFailWorld(t, open(t, Migrate))
				dc := w.deal.context()
				msg := servicetest.Compensation(t, w.p, CommandFail, w.register, nil)
				tt.forge(&msg, &dc)
				msg.Payload = mustJSON(t, dealctx.Wrap(dc))
				out := servicetest.DispatchMessage(t, w.p, msg)
				if out.DeadLetter == nil || out.Reply != nil || !strings.Contains(out.DeadLetter.Reason, tt.want) {
					t.Fatalf("forged FAIL_DEAL: got reply %+v dead letter %+v, want a dead letter containing %q", out.Reply, out.DeadLetter, tt.want)
				}
				if got := w.stored(t); got.Status != StatusDraft || got.Reason != "" || !got.UpdatedAt.Equal(w.deal.UpdatedAt) {
					t.Errorf("deal after the forged FAIL_DEAL: got %q %q, want the untouched draft", got.Status, got.Reason)
				}
				// The genuine compensation still applies.
				registered := w.deal.context()
				registered.Status = "" // as REGISTER put it in the saga context
				genuine := servicetest.Compensation(t, w.p, CommandFail, w.register, dealctx.Wrap(registered))
				failedReply(t, servicetest.DispatchMessage(t, w.p, genuine), w.deal.ID, "the order could not be confirmed against your portfolio in time")
			})
		}
	})
}

// TestFailedStatusMigration migrates a deals database holding deals of
// the first schema to the one that allows status failed: rows, their seq
// (the list cursor), the Idempotency-Key index and the status CHECK are
// kept, seq goes on growing, and a deal can then fail.
func TestFailedStatusMigration(t *testing.T) {
	ctx := context.Background()
	for _, dbName := range []string{"sqlite", "postgres"} {
		t.Run(dbName, func(t *testing.T) {
			url := filepath.Join(t.TempDir(), "deals.db")
			if dbName == "postgres" {
				url = testenv.Postgres(t)
			}
			db, err := service.OpenDB(ctx, url)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { db.Close() })
			if err := sdk.Migrate(ctx, db); err != nil {
				t.Fatal(err)
			}
			d, err := service.DialectOf(db)
			if err != nil {
				t.Fatal(err)
			}
			fsys, err := schema.Migrations("deals/" + string(d))
			if err != nil {
				t.Fatal(err)
			}
			gd := goose.DialectSQLite3
			if d == service.Postgres {
				gd = goose.DialectPostgres
			}
			prov, err := goose.NewProvider(gd, db.DB, fsys, goose.WithTableName(service.VersionTable(Name)), goose.WithDisableGlobalRegistry(true))
			if err != nil {
				t.Fatal(err)
			}
			if _, err := prov.UpTo(ctx, 1); err != nil {
				t.Fatal(err)
			}
			s, _ := newService(t, db, devAuth(t))
			var old []Deal
			for _, key := range []string{"key-1", ""} {
				d, _, err := s.Create(ctx, "alice", buyRequest(), key)
				if err != nil {
					t.Fatal(err)
				}
				// With its seq (read by hand: Get reads columns of later schemas).
				if err := db.Get(&d.Seq, db.Rebind(`SELECT seq FROM deals WHERE id = ?`), d.ID); err != nil {
					t.Fatal(err)
				}
				old = append(old, d)
			}
			old1, old2 := old[0], old[1]
			if _, err := db.Exec(db.Rebind(`UPDATE deals SET status = ? WHERE id = ?`), StatusFailed, old2.ID); err == nil {
				t.Fatalf("status failed before the migration: got no error, want the old CHECK to refuse it")
			}
			if err := Migrate(ctx, db); err != nil {
				t.Fatalf("migrate: %v", err)
			}
			for _, want := range []Deal{old1, old2} {
				got, err := s.Get(ctx, "alice", want.ID)
				if err != nil || got.Seq != want.Seq || got.Status != StatusDraft || !got.Amount.Equal(want.Amount) || got.SagaID != want.SagaID {
					t.Errorf("deal %s after the migration: got %+v (err %v), want %+v", want.ID, got, err, want)
				}
			}
			third, _, err := s.Create(ctx, "alice", buyRequest(), "")
			if err == nil {
				third, err = s.Get(ctx, "alice", third.ID)
			}
			if err != nil {
				t.Fatal(err)
			}
			if third.Seq <= old2.Seq {
				t.Errorf("seq after the migration: got %d after %d, want it to grow", third.Seq, old2.Seq)
			}
			if again, replayed, err := s.Create(ctx, "alice", buyRequest(), "key-1"); err != nil || !replayed || again.ID != old1.ID {
				t.Errorf("Idempotency-Key of a deal made before the migration: got %s replayed %v (err %v), want deal %s", again.ID, replayed, err, old1.ID)
			}
			if _, err := db.Exec(db.Rebind(`UPDATE deals SET status = ? WHERE id = ?`), StatusFailed, old2.ID); err != nil {
				t.Errorf("status failed after the migration: %v", err)
			}
			if _, err := db.Exec(db.Rebind(`UPDATE deals SET status = ? WHERE id = ?`), "lost", old1.ID); err == nil {
				t.Errorf("status lost: got no error, want the CHECK constraint to refuse it")
			}
		})
	}
}

// opener opens a fresh migrated database (servicetest.SQLite or
// servicetest.Postgres).
type opener func(testing.TB, func(context.Context, *sqlx.DB) error) *sqlx.DB

// eachDB runs test once per database kind, as subtests "sqlite" and
// "postgres"; test opens a fresh database per case with open.
func eachDB(t *testing.T, test func(t *testing.T, open opener)) {
	t.Helper()
	t.Run("sqlite", func(t *testing.T) { test(t, servicetest.SQLite) })
	t.Run("postgres", func(t *testing.T) { test(t, servicetest.Postgres) })
}

func mustJSON(t *testing.T, v any) json.RawMessage {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
