package deals

import (
	"context"
	"reflect"
	"strings"
	"testing"

	"github.com/jmoiron/sqlx"

	"github.com/portfolio-counselor/sagamachine/participants/internal/dealctx"
	"github.com/portfolio-counselor/sagamachine/participants/sdk"
)

// settleCase is one command of a settle batch.
type settleCase struct {
	deal   Deal
	user   string // the saga context's user ("": the deal's)
	reason string // REJECT_DEAL's reason in the context
}

func settleCmds(t *testing.T, name string, cases []settleCase) []sdk.Command[dealctx.Envelope] {
	t.Helper()
	cmds := make([]sdk.Command[dealctx.Envelope], len(cases))
	for i, c := range cases {
		dc := c.deal.context()
		dc.Status, dc.Reason = "", c.reason
		if c.user != "" {
			dc.UserID = c.user
		}
		cmds[i] = sdk.Command[dealctx.Envelope]{ID: "cmd-" + string(rune('a'+i)), SagaID: c.deal.SagaID, Name: name, Payload: dealctx.Wrap(dc)}
	}
	return cmds
}

// settleRun is what a run of the settle handlers produced: the replies
// (or the error) and the deals' status and reason afterwards, read in the
// same transaction (rolled back at the end).
type settleRun struct {
	replies []sdk.Result // compared whole: event, reason and payload
	err     string
	state   map[string]string
}

func runSettle(t *testing.T, s *Service, db *sqlx.DB, ids []string, f func(ctx context.Context, tx *sqlx.Tx) ([]sdk.Result, error)) settleRun {
	t.Helper()
	ctx := context.Background()
	tx, err := db.BeginTxx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback() //nolint:errcheck
	var run settleRun
	res, err := f(ctx, tx)
	if err != nil {
		run.err = err.Error()
		if !sdk.IsPermanent(err) {
			run.err = "transient: " + run.err
		}
	}
	run.replies = res
	run.state = map[string]string{}
	for _, id := range ids {
		var st struct {
			Status string `db:"status"`
			Reason string `db:"reason"`
		}
		if err := tx.Get(&st, tx.Rebind(`SELECT status, reason FROM deals WHERE id = ?`), id); err != nil {
			t.Fatal(err)
		}
		run.state[id] = st.Status + ": " + st.Reason
	}
	return run
}

// TestSettleBatchLikeOneByOne: the batch handlers of APPROVE_DEAL and
// REJECT_DEAL answer every command and leave every deal exactly as settle
// called once per command in order would (drafts, a deal named twice, a
// deal settled already, each with its own reason), and a batch holding a
// command that settle refuses (another user's deal, a basket's line, the
// other final status, a missing deal) fails as a whole with that
// command's permanent error, so that the SDK handles each command alone.
func TestSettleBatchLikeOneByOne(t *testing.T) {
	eachDB(t, func(t *testing.T, open opener) {
		db := open(t, Migrate)
		s, _ := newService(t, db, devAuth(t))
		ctx := context.Background()
		var deals []Deal
		for range 5 {
			d, _, err := s.Create(ctx, "alice", buyRequest(), "")
			if err != nil {
				t.Fatal(err)
			}
			deals = append(deals, d)
		}
		if _, err := db.Exec(db.Rebind(`UPDATE deals SET status = ? WHERE id = ?`), StatusExecuted, deals[3].ID); err != nil {
			t.Fatal(err)
		}
		if _, err := db.Exec(db.Rebind(`UPDATE deals SET status = ?, reason = ? WHERE id = ?`), StatusRejected, "earlier", deals[4].ID); err != nil {
			t.Fatal(err)
		}
		basket, _, err := s.CreateBasket(ctx, "alice", NewBasket{PortfolioID: portfolioID, Lines: []BasketLine{
			{Side: "buy", Instrument: "AAPL", Quantity: "1", Price: "10", Currency: "USD"},
		}}, "")
		if err != nil {
			t.Fatal(err)
		}
		line := basket.Deals[0]
		missing := deals[0]
		missing.ID = "0b6f3f7e-2c1d-4e55-9d3a-0f6a1d2b3c4d"
		ids := []string{deals[0].ID, deals[1].ID, deals[2].ID, deals[3].ID, deals[4].ID, line.ID}

		tests := []struct {
			name    string
			command string
			cases   []settleCase
			wantErr string // "" for none; else part of the permanent error
		}{
			{"drafts", CommandApprove, []settleCase{{deal: deals[0]}, {deal: deals[1]}, {deal: deals[2]}}, ""},
			{"a deal twice, one settled already", CommandApprove, []settleCase{{deal: deals[0]}, {deal: deals[3]}, {deal: deals[0]}, {deal: deals[1]}}, ""},
			{"rejections with their own reasons", CommandReject, []settleCase{{deal: deals[0], reason: "cash"}, {deal: deals[1]}, {deal: deals[2], reason: "limits"}, {deal: deals[4], reason: "again"}}, ""},
			{"another user's deal", CommandApprove, []settleCase{{deal: deals[0]}, {deal: deals[1], user: "mallory"}, {deal: deals[2]}}, `belongs to user "alice"`},
			{"a basket's line", CommandApprove, []settleCase{{deal: deals[0]}, {deal: line}}, "is a line of basket"},
			{"the other final status", CommandApprove, []settleCase{{deal: deals[0]}, {deal: deals[4]}}, "cannot become executed: it is already rejected (earlier)"},
			{"a missing deal", CommandReject, []settleCase{{deal: deals[0]}, {deal: missing}}, "does not exist"},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				status := StatusExecuted
				if tt.command == CommandReject {
					status = StatusRejected
				}
				cmds := settleCmds(t, tt.command, tt.cases)
				batch := runSettle(t, s, db, ids, func(ctx context.Context, tx *sqlx.Tx) ([]sdk.Result, error) {
					return s.settleBatch(ctx, tx, cmds, status)
				})
				if tt.wantErr != "" {
					if batch.err == "" || strings.HasPrefix(batch.err, "transient") || !strings.Contains(batch.err, tt.wantErr) {
						t.Errorf("batch error = %q, want a permanent error with %q", batch.err, tt.wantErr)
					}
					if batch.replies != nil {
						t.Errorf("batch replies = %v with an error, want none", batch.replies)
					}
					// Alone (as the SDK then handles them), each command gets
					// what settle gives it.
					for _, c := range cmds {
						one := runSettle(t, s, db, ids, func(ctx context.Context, tx *sqlx.Tx) ([]sdk.Result, error) {
							return s.settleBatch(ctx, tx, []sdk.Command[dealctx.Envelope]{c}, status)
						})
						single := runSettle(t, s, db, ids, func(ctx context.Context, tx *sqlx.Tx) ([]sdk.Result, error) {
							r, err := s.settle(ctx, tx, c, status)
							if err != nil {
								return nil, err
							}
							return []sdk.Result{r}, nil
						})
						if !reflect.DeepEqual(one, single) {
							t.Errorf("command %s alone: batch handler %+v, settle %+v", c.ID, one, single)
						}
					}
					return
				}
				seq := runSettle(t, s, db, ids, func(ctx context.Context, tx *sqlx.Tx) ([]sdk.Result, error) {
					var out []sdk.Result
					for _, c := range cmds {
						r, err := s.settle(ctx, tx, c, status)
						if err != nil {
							return nil, err
						}
						out = append(out, r)
					}
					return out, nil
				})
				if batch.err != "" || seq.err != "" {
					t.Fatalf("errors: batch %q, one by one %q", batch.err, seq.err)
				}
				if !reflect.DeepEqual(batch, seq) {
					t.Errorf("batch:\n%+v\none by one:\n%+v", batch, seq)
				}
				if len(batch.replies) != len(cmds) {
					t.Errorf("replies = %d, want %d", len(batch.replies), len(cmds))
				}
				for _, c := range tt.cases {
					if got := batch.state[c.deal.ID]; !strings.HasPrefix(got, status) && !strings.HasPrefix(got, StatusExecuted) && !strings.HasPrefix(got, StatusRejected) {
						t.Errorf("deal %s after the batch: %s, want settled", c.deal.ID, got)
					}
				}
			})
		}
	})
}
