package deals

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/google/uuid"

	"github.com/portfolio-counselor/sagamachine/engine"
	"github.com/portfolio-counselor/sagamachine/participants/internal/dealctx"
	"github.com/portfolio-counselor/sagamachine/participants/internal/service"
	"github.com/portfolio-counselor/sagamachine/participants/internal/service/servicetest"
)

// cancelCall is POST /deals/{id}/cancel as token with headers.
func (w *failWorld) cancelCall(t *testing.T, id, token string, headers ...string) servicetest.Response {
	t.Helper()
	return servicetest.Call(t, w.h, "POST", "/deals/"+id+"/cancel", token, nil, headers...)
}

// row reads the deal from the database (not through the API).
func (w *failWorld) row(t *testing.T) Deal {
	t.Helper()
	var d Deal
	if err := w.s.db.Get(&d, w.s.db.Rebind(`SELECT `+dealColumns+` FROM deals WHERE id = ?`), w.deal.ID); err != nil {
		t.Fatal(err)
	}
	d.normalize()
	return d
}

// TestCancel cancels alice's draft deal on SQLite and PostgreSQL: the
// request is recorded and CANCEL_REQUESTED (with cancellation, no
// causation) goes to the saga once; a repeated cancel answers the same
// and sends nothing; the saga's FAIL_DEAL then marks the deal cancelled,
// a repeated FAIL_DEAL answers the same, and the list finds it.
func TestCancel(t *testing.T) {
	eachDB(t, func(t *testing.T, open opener) {
		w := newFailWorld(t, open(t, Migrate))
		res := w.cancelCall(t, strings.ToUpper(w.deal.ID), w.alice, HeaderIdempotencyKey, "cancel-1")
		if res.Status != http.StatusAccepted {
			t.Fatalf("cancel: %d %s", res.Status, res.Body)
		}
		var d Deal
		res.Decode(t, &d)
		if d.Status != StatusDraft || d.CancelRequestedAt == nil || res.Header.Get(HeaderReplayed) != "" {
			t.Errorf("cancel answer: %+v (replayed %q), want the draft with cancel_requested_at", d, res.Header.Get(HeaderReplayed))
		}
		msgs := servicetest.Flush(t, w.p)
		if len(msgs) != 1 {
			t.Fatalf("outbox after cancel: %v, want CANCEL_REQUESTED", msgs)
		}
		m := msgs[0]
		var payload struct {
			Cancellation Cancellation `json:"cancellation"`
		}
		if err := json.Unmarshal(m.Payload, &payload); err != nil {
			t.Fatal(err)
		}
		if m.Name != EventCancelRequested || m.Kind != engine.KindEvent || m.SagaID != w.deal.SagaID || m.Saga != SagaName || m.Participant != Name ||
			m.CausationID != "" || payload.Cancellation.DealID != w.deal.ID {
			t.Errorf("CANCEL_REQUESTED: %+v payload %s", m, m.Payload)
		}
		if strings.Contains(string(m.Payload), "deal_context") {
			t.Errorf("CANCEL_REQUESTED payload %s would replace deal_context", m.Payload)
		}

		// Again (a retry, another key, no key): the same answer, nothing sent.
		for _, hdr := range [][]string{{HeaderIdempotencyKey, "cancel-1"}, {HeaderIdempotencyKey, "cancel-2"}, nil} {
			again := w.cancelCall(t, w.deal.ID, w.alice, hdr...)
			var d2 Deal
			again.Decode(t, &d2)
			if again.Status != http.StatusAccepted || again.Header.Get(HeaderReplayed) != "true" || !d2.CancelRequestedAt.Equal(*d.CancelRequestedAt) {
				t.Errorf("repeated cancel %v: %d %s, want 202 replayed with the first time", hdr, again.Status, again.Body)
			}
		}
		if msgs := servicetest.Flush(t, w.p); len(msgs) != 0 {
			t.Errorf("outbox after repeated cancels: %v, want nothing", msgs)
		}

		// The saga compensates REGISTER: the deal is cancelled.
		dc := w.deal.context()
		ctx := map[string]any{"deal_context": dc, "cancellation": payload.Cancellation}
		comp := servicetest.Compensation(t, w.p, CommandFail, w.register, ctx)
		out := servicetest.DispatchMessage(t, w.p, comp)
		if out.Reply == nil || out.Reply.Name != EventFailed {
			t.Fatalf("FAIL_DEAL of the cancelled saga: %+v (err %v, dead letter %+v)", out.Reply, out.Err, out.DeadLetter)
		}
		var env dealctx.Envelope
		if err := json.Unmarshal(out.Reply.Payload, &env); err != nil || env.DealContext == nil ||
			env.DealContext.Status != dealctx.StatusCancelled || env.DealContext.Reason != "cancelled at your request" {
			t.Errorf("DEAL_FAILED payload %s, want deal_context cancelled at your request", out.Reply.Payload)
		}
		if got := w.stored(t); got.Status != StatusCancelled || got.Reason != "cancelled at your request" {
			t.Errorf("GET after FAIL_DEAL: %q %q, want cancelled", got.Status, got.Reason)
		}
		second := servicetest.Compensation(t, w.p, CommandFail, w.register, ctx)
		if out := servicetest.DispatchMessage(t, w.p, second); out.Reply == nil || !strings.Contains(string(out.Reply.Payload), `"status":"cancelled"`) {
			t.Errorf("FAIL_DEAL again: %+v, want the same answer", out.Reply)
		}
		servicetest.Flush(t, w.p) // the two DEAL_FAILED replies
		var list service.Page[Deal]
		servicetest.Call(t, w.h, "GET", "/deals?status=cancelled", w.alice, nil).Decode(t, &list)
		if len(list.Items) != 1 || list.Items[0].ID != w.deal.ID {
			t.Errorf("?status=cancelled: %+v, want the deal", list.Items)
		}
		// Cancelled: a cancel answers as before (accepted once), nothing sent.
		if res := w.cancelCall(t, w.deal.ID, w.alice); res.Status != http.StatusAccepted || res.Header.Get(HeaderReplayed) != "true" {
			t.Errorf("cancel of the cancelled deal: %d %s", res.Status, res.Body)
		}
		if msgs := servicetest.Flush(t, w.p); len(msgs) != 0 {
			t.Errorf("outbox: %v, want nothing", msgs)
		}
	})
}

// TestCancelRefused performs the attacks on POST /deals/{id}/cancel and
// the cases that are too late, on SQLite and PostgreSQL: another user,
// an unknown deal, a bad Idempotency-Key, a foreign origin, an executed,
// a rejected and a failed deal. Each is refused, the deal row does not
// move and nothing goes to the saga.
func TestCancelRefused(t *testing.T) {
	tests := []struct {
		name   string
		settle string // APPROVE_DEAL, REJECT_DEAL or FAIL_DEAL applied first
		id     func(w *failWorld) string
		token  func(t *testing.T, w *failWorld) string
		hdr    []string
		status int
		typ    string
		detail string
	}{
		{name: "another user's deal", token: func(_ *testing.T, w *failWorld) string { return w.bob }, status: 404, typ: service.TypeNotFound},
		{name: "an operator's token is no owner", token: func(t *testing.T, w *failWorld) string { return w.iss.TokenWithRoles(t, "olga", "saga-operator") }, status: 404, typ: service.TypeNotFound},
		{name: "unknown deal", id: func(*failWorld) string { return uuid.NewString() }, status: 404, typ: service.TypeNotFound},
		{name: "bad Idempotency-Key", hdr: []string{HeaderIdempotencyKey, strings.Repeat("k", 300)}, status: 422, typ: service.TypeValidation},
		{name: "foreign origin", hdr: []string{"Origin", "https://evil.example"}, status: 403, typ: service.TypeCrossOrigin},
		{name: "cross-site fetch", hdr: []string{"Sec-Fetch-Site", "cross-site", "Origin", "https://evil.example"}, status: 403, typ: service.TypeCrossOrigin},
		{name: "executed: too late", settle: CommandApprove, status: 409, typ: service.TypeConflict, detail: "too late"},
		{name: "rejected", settle: CommandReject, status: 409, typ: service.TypeConflict, detail: "already rejected"},
		{name: "failed", settle: CommandFail, status: 409, typ: service.TypeConflict, detail: "already failed"},
	}
	eachDB(t, func(t *testing.T, open opener) {
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				w := newFailWorld(t, open(t, Migrate))
				dc := w.deal.context()
				switch tt.settle {
				case CommandApprove, CommandReject:
					if out := servicetest.Dispatch(t, w.p, tt.settle, w.deal.SagaID, dealctx.Wrap(dc)); out.Reply == nil {
						t.Fatalf("%s: %+v", tt.settle, out)
					}
				case CommandFail:
					if out := servicetest.DispatchMessage(t, w.p, servicetest.Compensation(t, w.p, CommandFail, w.register, dealctx.Wrap(dc))); out.Reply == nil {
						t.Fatalf("%s: %+v", tt.settle, out)
					}
				}
				servicetest.Flush(t, w.p)
				before := w.row(t)
				id, token := w.deal.ID, w.alice
				if tt.id != nil {
					id = tt.id(w)
				}
				if tt.token != nil {
					token = tt.token(t, w)
				}
				res := w.cancelCall(t, id, token, tt.hdr...)
				if p := res.Problem(t); res.Status != tt.status || p.Type != tt.typ || !strings.Contains(p.Detail, tt.detail) {
					t.Errorf("got %d %s, want %d %s with %q", res.Status, res.Body, tt.status, tt.typ, tt.detail)
				}
				after := w.row(t)
				if after.Status != before.Status || after.CancelRequestedAt != nil || !after.UpdatedAt.Equal(before.UpdatedAt) {
					t.Errorf("the deal moved: before %+v, after %+v", before, after)
				}
				if msgs := servicetest.Flush(t, w.p); len(msgs) != 0 {
					t.Errorf("outbox: %v, want nothing sent to the saga", msgs)
				}
			})
		}
	})
}

// TestFailDealForgedCancellation: a saga context naming a cancellation
// that deals never accepted (no cancel_requested_at) does not cancel the
// deal: FAIL_DEAL marks it failed as usual.
func TestFailDealForgedCancellation(t *testing.T) {
	w := newFailWorld(t, servicetest.SQLite(t, Migrate))
	ctx := map[string]any{"deal_context": w.deal.context(), "cancellation": Cancellation{DealID: w.deal.ID}}
	out := servicetest.DispatchMessage(t, w.p, servicetest.Compensation(t, w.p, CommandFail, w.register, ctx))
	if out.Reply == nil {
		t.Fatalf("FAIL_DEAL: %+v", out)
	}
	if got := w.row(t); got.Status != StatusFailed {
		t.Errorf("deal after FAIL_DEAL with a forged cancellation: %s, want failed", got.Status)
	}
}
