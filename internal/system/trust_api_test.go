package system_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/google/uuid"

	"github.com/portfolio-counselor/sagamachine/engine"
	"github.com/portfolio-counselor/sagamachine/engine/httpapi"
	"github.com/portfolio-counselor/sagamachine/internal/auth"
	"github.com/portfolio-counselor/sagamachine/internal/system"
)

// post sends a JSON body with a bearer token and returns the status and
// the answer.
func post(ctx context.Context, t *testing.T, url, token, body string, hdr ...string) (int, []byte) {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+token)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("POST %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("POST %s: read answer: %v", url, err)
	}
	return resp.StatusCode, b
}

// fund deposits amount (USD) into portfolio id as a funding operator.
func fund(ctx context.Context, t *testing.T, sys *system.System, id, amount string) {
	t.Helper()
	if _, _, err := sys.Fund(ctx, id, amount, "USD", "test funding", uuid.NewString()); err != nil {
		t.Fatalf("deposit %s into %s: %v", amount, id, err)
	}
}

// The attack of issue 8 item 1, on the whole system: mallory, logged in
// with no roles (and then with every operator role), asks saga-machine to
// start MANUAL_CREATE_ORDER with alice's user_id and portfolio_id, buying
// with alice's cash. Every variant is refused with 403 naming deals and
// the bus; no saga exists for alice. Then alice places a real order
// through deals and it completes: her cash moved by her own order only.
func TestAPIStartCannotSpendAnotherUsersCash(t *testing.T) {
	for _, be := range backends {
		t.Run(be.name, func(t *testing.T) {
			sys := start(t, be.config(t))
			ctx, cancel := context.WithTimeout(context.Background(), 2*guard)
			defer cancel()
			alice, err := sys.Client("alice")
			if err != nil {
				t.Fatal(err)
			}
			if _, err := alice.Login(ctx); err != nil {
				t.Fatalf("alice logs in: %v", err)
			}
			pf, err := alice.CreatePortfolio(ctx, "Main", "USD")
			if err != nil {
				t.Fatalf("create alice's portfolio: %v", err)
			}
			fund(ctx, t, sys, pf.ID, "1000.00")
			funded, err := alice.Portfolio(ctx, pf.ID)
			if err != nil {
				t.Fatalf("read alice's portfolio: %v", err)
			}
			checkHoldings(t, "alice funded", funded.Cash, funded.Positions, "1000", nil)

			forged := `"payload":{"deal_context":{"deal_id":"` + uuid.NewString() + `","user_id":"alice","portfolio_id":"` + pf.ID +
				`","side":"buy","instrument":"ACME","quantity":"5","price":"100.00","amount":"500.00","currency":"USD"}}`
			tokens := map[string][]string{"no roles": nil, "every operator role": {auth.RoleOperator, auth.RoleViewer, auth.RoleFundingOperator}}
			for name, roles := range tokens {
				tok, err := sys.Token("mallory", roles...)
				if err != nil {
					t.Fatal(err)
				}
				for _, tc := range []struct {
					what, body string
					status     int
					code       engine.Code
					detail     string
				}{
					{"as reported", `{"saga":"MANUAL_CREATE_ORDER",` + forged + `}`, 403, engine.CodeForbidden, "participant deals"},
					{"naming REGISTER", `{"saga":"MANUAL_CREATE_ORDER","event":"REGISTER",` + forged + `}`, 403, engine.CodeForbidden, "participant deals sends it on the bus"},
					{"claiming to be deals", `{"saga":"MANUAL_CREATE_ORDER","by":"deals",` + forged + `}`, 400, engine.CodeInvalid, `unknown field "by"`},
				} {
					status, body := post(ctx, t, sys.URLs.SagaMachine+"/api/v1/sagas", tok, tc.body, "Idempotency-Key", "steal-1")
					var p httpapi.Problem
					if err := json.Unmarshal(body, &p); err != nil || status != tc.status || p.Code != string(tc.code) || !strings.Contains(p.Detail, tc.detail) {
						t.Errorf("mallory with %s, %s: %d %s; want %d %s mentioning %q", name, tc.what, status, body, tc.status, tc.code, tc.detail)
					}
				}
			}

			olga, err := sys.Client("olga", auth.RoleViewer)
			if err != nil {
				t.Fatal(err)
			}
			page, err := olga.Sagas(ctx, engine.SagaFilter{KeyName: "user_id", KeyValue: "alice"})
			if err != nil {
				t.Fatalf("list alice's sagas: %v", err)
			}
			if len(page.Sagas) != 0 {
				t.Fatalf("after the refused starts alice has %d sagas, want none: %+v", len(page.Sagas), page.Sagas)
			}

			// alice's own order goes through deals and completes; had a forged
			// APPROVE_ORDER been on its way, profile would have handled it on
			// the same topic by now. Her cash moved by her order only.
			own := place(ctx, t, sys, alice, system.DealRequest{PortfolioID: pf.ID, Side: "buy", Instrument: "ACME", Quantity: "2", Price: "100.00", Currency: "USD"})
			if own.deal.Status != "executed" {
				t.Fatalf("alice's own order: %s (%s), want executed", own.deal.Status, own.deal.Reason)
			}
			after, err := alice.Portfolio(ctx, pf.ID)
			if err != nil {
				t.Fatalf("read alice's portfolio: %v", err)
			}
			checkHoldings(t, "alice after mallory's attempts and her own order", after.Cash, after.Positions, "800", map[string]string{"ACME": "2"})
			page, err = olga.Sagas(ctx, engine.SagaFilter{KeyName: "user_id", KeyValue: "alice"})
			if err != nil {
				t.Fatalf("list alice's sagas: %v", err)
			}
			if len(page.Sagas) != 1 || page.Sagas[0].ID != own.saga.ID {
				t.Errorf("alice's sagas = %+v, want only her own %s", page.Sagas, own.saga.ID)
			}
			det, err := olga.Saga(ctx, own.saga.ID)
			if err != nil {
				t.Fatalf("timeline of alice's saga: %v", err)
			}
			if h := det.Timeline[0]; h.Event != "REGISTER" || h.By != "deals" || h.Actor != "" {
				t.Errorf("alice's saga starts with %s by %s (actor %q), want REGISTER by deals", h.Event, h.By, h.Actor)
			}
		})
	}
}

// Reading the orchestrator is an operator's business on the running
// system too: alice (no roles) cannot list sagas, read her own saga's
// timeline or the dead letters; a saga-viewer can. alice follows her
// order on deals, where it is hers.
func TestSagaMachineReadsNeedARole(t *testing.T) {
	sys := start(t, system.Config{DataDir: t.TempDir()})
	ctx, cancel := context.WithTimeout(context.Background(), guard)
	defer cancel()
	alice, err := sys.Client("alice")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := alice.Login(ctx); err != nil {
		t.Fatalf("login: %v", err)
	}
	pf, err := alice.CreatePortfolio(ctx, "Main", "USD")
	if err != nil {
		t.Fatalf("create portfolio: %v", err)
	}
	fund(ctx, t, sys, pf.ID, "100.00")
	own := place(ctx, t, sys, alice, system.DealRequest{PortfolioID: pf.ID, Side: "buy", Instrument: "ACME", Quantity: "1", Price: "10.00", Currency: "USD"})
	forbidden := func(what string, err error) {
		t.Helper()
		var se *system.StatusError
		if !errors.As(err, &se) || se.Status != http.StatusForbidden || !strings.Contains(se.Body, "saga-viewer or saga-operator") {
			t.Errorf("%s as alice: %v, want 403 naming saga-viewer or saga-operator", what, err)
		}
	}
	_, err = alice.Sagas(ctx, engine.SagaFilter{})
	forbidden("list sagas", err)
	_, err = alice.Saga(ctx, own.saga.ID)
	forbidden("read her own saga", err)
	tok, err := sys.Token("alice")
	if err != nil {
		t.Fatal(err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, sys.URLs.SagaMachine+"/api/v1/dead-letters", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Errorf("dead letters as alice: %d, want 403", resp.StatusCode)
	}

	viewer, err := sys.Client("vera", auth.RoleViewer)
	if err != nil {
		t.Fatal(err)
	}
	det, err := viewer.Saga(ctx, own.saga.ID)
	if err != nil || det.Saga.ID != own.saga.ID || len(det.Timeline) == 0 {
		t.Errorf("saga-viewer reads the saga: %d entries, %v", len(det.Timeline), err)
	}
	deal, err := alice.Deal(ctx, own.deal.ID)
	if err != nil || deal.Status != "executed" {
		t.Errorf("alice reads her deal on deals: %+v, %v; want it executed", deal, err)
	}
}
