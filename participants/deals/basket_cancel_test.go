package deals

import (
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/google/uuid"

	"github.com/portfolio-counselor/sagamachine/engine"
	"github.com/portfolio-counselor/sagamachine/participants/internal/service"
	"github.com/portfolio-counselor/sagamachine/participants/internal/service/servicetest"
)

// cancelBasket is POST /baskets/{id}/cancel as token with headers.
func (w *basketWorld) cancelBasket(t *testing.T, id, token string, headers ...string) servicetest.Response {
	t.Helper()
	return servicetest.Call(t, w.h, "POST", "/baskets/"+id+"/cancel", token, nil, headers...)
}

// cancelRequested reads the one CANCEL_REQUESTED of the outbox and its
// cancellation.
func cancelRequested(t *testing.T, w *basketWorld, b Basket) BasketCancellation {
	t.Helper()
	msgs := servicetest.Flush(t, w.p)
	if len(msgs) != 1 {
		t.Fatalf("outbox after cancel: %v, want CANCEL_REQUESTED", msgs)
	}
	m := msgs[0]
	var payload map[string]json.RawMessage
	if err := json.Unmarshal(m.Payload, &payload); err != nil {
		t.Fatal(err)
	}
	var c BasketCancellation
	if err := json.Unmarshal(payload["cancellation"], &c); err != nil {
		t.Fatalf("CANCEL_REQUESTED payload %s: %v", m.Payload, err)
	}
	if m.Name != EventCancelRequested || m.Kind != engine.KindEvent || m.SagaID != b.SagaID || m.Saga != BasketSagaName ||
		m.Participant != Name || m.CausationID != "" || len(payload) != 1 || c.BasketID != b.ID || c.RequestedAt.IsZero() {
		t.Errorf("CANCEL_REQUESTED: %+v payload %s, want only the cancellation of basket %s to saga %s", m, m.Payload, b.ID, b.SagaID)
	}
	return c
}

// TestBasketCancel cancels alice's draft basket on SQLite and PostgreSQL:
// every deal records the request and CANCEL_REQUESTED (the cancellation
// only, no causation) goes to the basket's saga once; a repeated cancel
// answers the same and sends nothing. Then the saga's undo: FAIL_BASKET
// with the context's cancellation marks the deals cancelled (also after
// a FAIL_BASKET with a mapped payload, which cannot see the cancellation,
// failed them, and when the deals were executed meanwhile), a repeat
// answers the same, and GET shows the basket cancelled.
func TestBasketCancel(t *testing.T) {
	eachDB(t, func(t *testing.T, open opener) {
		for _, executed := range []bool{false, true} {
			name := "cancelled while checking"
			if executed {
				name = "executed after the cancellation was accepted"
			}
			t.Run(name, func(t *testing.T) {
				w := newBasketWorld(t, open(t, Migrate))
				b, m := w.create(t, w.alice, basketBody(basketLines()))
				bc := registered(t, m)
				res := w.cancelBasket(t, strings.ToUpper(b.ID), w.alice, HeaderIdempotencyKey, "cancel-1")
				if res.Status != http.StatusAccepted {
					t.Fatalf("cancel: %d %s", res.Status, res.Body)
				}
				var got Basket
				res.Decode(t, &got)
				if got.Status != StatusDraft || got.CancelRequestedAt == nil || res.Header.Get(HeaderReplayed) != "" || len(got.Deals) != 2 ||
					res.Header.Get("Location") != "/baskets/"+b.ID {
					t.Errorf("cancel answer: %+v (replayed %q), want the draft basket with cancel_requested_at", got, res.Header.Get(HeaderReplayed))
				}
				c := cancelRequested(t, w, b)
				for _, r := range w.rows(t, b.ID) {
					if r.Status != StatusDraft || r.CancelRequestedAt == nil || !r.CancelRequestedAt.Equal(c.RequestedAt) {
						t.Errorf("deal %s after the cancel: %+v, want a draft with cancel_requested_at %s", r.ID, r, c.RequestedAt)
					}
				}
				for _, hdr := range [][]string{{HeaderIdempotencyKey, "cancel-1"}, {HeaderIdempotencyKey, "cancel-2"}, nil} {
					again := w.cancelBasket(t, b.ID, w.alice, hdr...)
					var b2 Basket
					again.Decode(t, &b2)
					if again.Status != http.StatusAccepted || again.Header.Get(HeaderReplayed) != "true" || b2.CancelRequestedAt == nil ||
						!b2.CancelRequestedAt.Equal(*got.CancelRequestedAt) {
						t.Errorf("repeated cancel %v: %d %s, want 202 replayed with the first time", hdr, again.Status, again.Body)
					}
				}
				if msgs := servicetest.Flush(t, w.p); len(msgs) != 0 {
					t.Errorf("outbox after repeated cancels: %v, want nothing", msgs)
				}

				ctx := map[string]any{"basket": bc, "cancellation": c}
				if executed {
					// EXECUTE_BASKET was on its way: deals executes; the saga,
					// CANCELLED, compensates it first with the mapped payload.
					cmd := servicetest.Command(t, w.p, CommandExecuteBasket, b.SagaID, map[string]any{"basket": bc})
					wantBasketReply(t, servicetest.DispatchMessage(t, w.p, cmd), EventBasketExecuted, StatusExecuted, "")
					comp := servicetest.Compensation(t, w.p, CommandFailBasket, cmd, map[string]any{"basket": bc})
					wantBasketReply(t, servicetest.DispatchMessage(t, w.p, comp), EventBasketFailed, StatusFailed,
						"the basket's saga failed: its execution could not be confirmed in time")
				}
				last := servicetest.Compensation(t, w.p, CommandFailBasket, m, ctx)
				wantBasketReply(t, servicetest.DispatchMessage(t, w.p, last), EventBasketFailed, StatusCancelled, basketCancelledReason)
				rows := w.wantRows(t, b.ID, StatusCancelled, basketCancelledReason)
				again := servicetest.Compensation(t, w.p, CommandFailBasket, m, ctx)
				wantBasketReply(t, servicetest.DispatchMessage(t, w.p, again), EventBasketFailed, StatusCancelled, basketCancelledReason)
				// A compensation without the cancellation (a mapped payload
				// arriving last) answers cancelled too and moves nothing.
				mapped := servicetest.Compensation(t, w.p, CommandFailBasket, m, map[string]any{"basket": bc})
				wantBasketReply(t, servicetest.DispatchMessage(t, w.p, mapped), EventBasketFailed, StatusCancelled, basketCancelledReason)
				w.unchanged(t, b.ID, rows)
				if g := w.get(t, b.ID); g.Status != StatusCancelled || g.Reason != basketCancelledReason || g.CancelRequestedAt == nil {
					t.Errorf("GET: basket %q %q (cancel_requested_at %v), want cancelled", g.Status, g.Reason, g.CancelRequestedAt)
				}
				servicetest.Flush(t, w.p) // the replies
				// Cancelled: a cancel answers as before (accepted once).
				if res := w.cancelBasket(t, b.ID, w.alice); res.Status != http.StatusAccepted || res.Header.Get(HeaderReplayed) != "true" {
					t.Errorf("cancel of the cancelled basket: %d %s", res.Status, res.Body)
				}
				if msgs := servicetest.Flush(t, w.p); len(msgs) != 0 {
					t.Errorf("outbox: %v, want nothing", msgs)
				}
			})
		}
	})
}

// TestBasketCancelRefused performs the attacks on POST
// /baskets/{id}/cancel and the cases that are too late, on SQLite and
// PostgreSQL: another user, an operator (no owner), no token, an unknown
// basket, a deal's id, hostile ids (an injection, 4,000 characters, the
// basket's id with a suffix), another user's cancel with an oversized body
// (the route reads no body), a bad Idempotency-Key, a foreign origin, a
// basket executed, rejected or failed. Each is refused, no deal moves and nothing
// goes to the saga.
func TestBasketCancelRefused(t *testing.T) {
	const noCash = "insufficient cash: need 1500.00 USD, have 200.00 USD"
	tests := []struct {
		name   string
		settle string // EXECUTE_BASKET, REJECT_BASKET or FAIL_BASKET applied first
		id     func(b Basket) string
		token  func(t *testing.T, w *basketWorld) string
		hdr    []string
		body   any // nil: none (the route takes no body)
		status int
		typ    string
		detail string
	}{
		{name: "another user's basket", token: func(_ *testing.T, w *basketWorld) string { return w.bob }, status: 404, typ: service.TypeNotFound},
		{name: "an operator's token is no owner", token: func(t *testing.T, w *basketWorld) string { return w.iss.TokenWithRoles(t, "olga", "saga-operator") }, status: 404, typ: service.TypeNotFound},
		{name: "no token", token: func(*testing.T, *basketWorld) string { return "" }, status: 401},
		{name: "unknown basket", id: func(Basket) string { return uuid.NewString() }, status: 404, typ: service.TypeNotFound},
		{name: "a deal's id", id: func(b Basket) string { return b.Deals[0].ID }, status: 404, typ: service.TypeNotFound},
		{name: "an injection for an id", id: func(Basket) string { return url.PathEscape("x' OR '1'='1") }, status: 404, typ: service.TypeNotFound},
		{name: "a 4,000-character id", id: func(Basket) string { return strings.Repeat("7", 4000) }, status: 404, typ: service.TypeNotFound},
		{name: "the basket's id with a suffix", id: func(b Basket) string { return b.ID + "x" }, status: 404, typ: service.TypeNotFound},
		{name: "another user's basket with an oversized body", token: func(_ *testing.T, w *basketWorld) string { return w.bob },
			body: strings.Repeat("x", 2*service.MaxBodyBytes), status: 404, typ: service.TypeNotFound},
		{name: "bad Idempotency-Key", hdr: []string{HeaderIdempotencyKey, strings.Repeat("k", 300)}, status: 422, typ: service.TypeValidation},
		{name: "foreign origin", hdr: []string{"Origin", "https://evil.example"}, status: 403, typ: service.TypeCrossOrigin},
		{name: "cross-site fetch", hdr: []string{"Sec-Fetch-Site", "cross-site", "Origin", "https://evil.example"}, status: 403, typ: service.TypeCrossOrigin},
		{name: "executed: too late", settle: CommandExecuteBasket, status: 409, typ: service.TypeConflict, detail: "too late"},
		{name: "rejected", settle: CommandRejectBasket, status: 409, typ: service.TypeConflict, detail: "already rejected"},
		{name: "failed", settle: CommandFailBasket, status: 409, typ: service.TypeConflict, detail: "already failed"},
	}
	eachDB(t, func(t *testing.T, open opener) {
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				w := newBasketWorld(t, open(t, Migrate))
				b, m := w.create(t, w.alice, basketBody(basketLines()))
				bc := registered(t, m)
				switch tt.settle {
				case CommandExecuteBasket:
					wantBasketReply(t, servicetest.Dispatch(t, w.p, tt.settle, b.SagaID, map[string]any{"basket": bc}), EventBasketExecuted, StatusExecuted, "")
				case CommandRejectBasket:
					wantBasketReply(t, servicetest.Dispatch(t, w.p, tt.settle, b.SagaID, map[string]any{"basket": bc, "reason": noCash}), EventBasketRejected, StatusRejected, noCash)
				case CommandFailBasket:
					out := servicetest.DispatchMessage(t, w.p, servicetest.Compensation(t, w.p, CommandFailBasket, m, map[string]any{"basket": bc}))
					wantBasketReply(t, out, EventBasketFailed, StatusFailed, "the basket's saga failed: it could not be completed in time")
				}
				servicetest.Flush(t, w.p)
				before := w.rows(t, b.ID)
				id, token := b.ID, w.alice
				if tt.id != nil {
					id = tt.id(b)
				}
				if tt.token != nil {
					token = tt.token(t, w)
				}
				res := servicetest.Call(t, w.h, "POST", "/baskets/"+id+"/cancel", token, tt.body, tt.hdr...)
				if res.Status != tt.status {
					t.Errorf("got %d %s, want %d", res.Status, res.Body, tt.status)
				} else if tt.typ != "" {
					if p := res.Problem(t); p.Type != tt.typ || !strings.Contains(p.Detail, tt.detail) {
						t.Errorf("got %d %s, want %s with %q", res.Status, res.Body, tt.typ, tt.detail)
					}
				}
				w.unchanged(t, b.ID, before)
				for _, r := range w.rows(t, b.ID) {
					if r.CancelRequestedAt != nil {
						t.Errorf("deal %s: cancel_requested_at set by a refused cancel", r.ID)
					}
				}
				if msgs := servicetest.Flush(t, w.p); len(msgs) != 0 {
					t.Errorf("outbox: %v, want nothing sent to the saga", msgs)
				}
			})
		}
	})
}

// TestFailBasketForgedCancellation: a saga context naming a cancellation
// deals never accepted (no cancel_requested_at), or, for a basket whose
// cancellation deals accepted but whose saga never took it (an abort came
// first), the cancellation of another basket, does not cancel the basket:
// FAIL_BASKET fails it as usual.
func TestFailBasketForgedCancellation(t *testing.T) {
	const why = "the basket's saga failed: it could not be completed in time"
	w := newBasketWorld(t, servicetest.SQLite(t, Migrate))
	other, _ := w.create(t, w.alice, basketBody(basketLines()))
	if res := w.cancelBasket(t, other.ID, w.alice); res.Status != http.StatusAccepted {
		t.Fatalf("cancel of the other basket: %d %s", res.Status, res.Body)
	}
	otherCancel := cancelRequested(t, w, other)
	for _, accepted := range []bool{false, true} {
		b, m := w.create(t, w.alice, basketBody(basketLines()))
		forged := BasketCancellation{BasketID: b.ID, RequestedAt: otherCancel.RequestedAt}
		if accepted {
			if res := w.cancelBasket(t, b.ID, w.alice); res.Status != http.StatusAccepted {
				t.Fatalf("cancel: %d %s", res.Status, res.Body)
			}
			cancelRequested(t, w, b)
			forged = otherCancel
		}
		ctx := map[string]any{"basket": registered(t, m), "cancellation": forged}
		out := servicetest.DispatchMessage(t, w.p, servicetest.Compensation(t, w.p, CommandFailBasket, m, ctx))
		wantBasketReply(t, out, EventBasketFailed, StatusFailed, why)
		w.wantRows(t, b.ID, StatusFailed, why)
		servicetest.Flush(t, w.p) // BASKET_FAILED
	}
}
