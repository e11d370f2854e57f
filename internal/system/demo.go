package system

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/shopspring/decimal"

	"github.com/portfolio-counselor/sagamachine/engine"
	"github.com/portfolio-counselor/sagamachine/internal/auth"
	"github.com/portfolio-counselor/sagamachine/participants/deals"
)

// The demo's user, portfolio and orders.
const (
	DemoUser          = "demo"
	DemoPortfolioName = "Demo portfolio"
	DemoCurrency      = "USD"
	DemoCash          = "10000.00"
)

// DemoOrder is one of the demo's MANUAL_CREATE_ORDER sagas, once final.
type DemoOrder struct {
	// Label says what the order is meant to show ("approved", "rejected").
	Label string
	// Request is what was posted to /deals.
	Request DealRequest
	// DealID and SagaID identify the deal and its saga.
	DealID, SagaID string
	// Replayed is true when the deal was created by an earlier run (the
	// demo posts with fixed Idempotency-Keys, so re-running creates nothing).
	Replayed bool
	// State and Status are the saga's final state and status.
	State  string
	Status engine.Status
	// DealStatus and Reason are the deal's status (executed or rejected)
	// and the rejection reason.
	DealStatus, Reason string
}

// DemoResult is what RunDemo did.
type DemoResult struct {
	// User is the demo user's subject; Token is a bearer token of it with
	// the saga-operator role, accepted by every service.
	User, Token string
	// PortfolioID is the demo portfolio; Created is true if this run
	// created it.
	PortfolioID string
	Created     bool
	// DepositID is the deposit of DemoCash by TreasuryUser this run made;
	// "" when the portfolio was funded by an earlier run.
	DepositID string
	// Orders are the approved and the rejected order.
	Orders []DemoOrder
	// Basket is the demo's BASKET_ORDER saga, placed after the orders.
	Basket DemoBasket
}

// DemoBasket is the demo's BASKET_ORDER saga (a buy and a sell at once,
// which the portfolio covers), once final.
type DemoBasket struct {
	// Request is what was posted to /baskets.
	Request deals.NewBasket
	// BasketID and SagaID identify the basket and its saga; Replayed is
	// true when an earlier run created it.
	BasketID, SagaID string
	Replayed         bool
	// State and Status are the saga's final state and status; BasketStatus
	// is the basket's (executed).
	State        string
	Status       engine.Status
	BasketStatus string
}

// demoBasket buys one instrument and sells some of what the approved order
// bought.
var demoBasket = struct {
	key   string
	lines []deals.BasketLine
}{"demo-basket-v1", []deals.BasketLine{
	{Side: "buy", Instrument: "BETA", Quantity: "5", Price: "40.00", Currency: DemoCurrency},
	{Side: "sell", Instrument: "ACME", Quantity: "2", Price: "155.00", Currency: DemoCurrency},
}}

// demoOrders: a buy the demo cash covers and one it does not.
var demoOrders = []struct {
	label, key string
	req        DealRequest
}{
	{"approved", "demo-order-approved-v1", DealRequest{Side: "buy", Instrument: "ACME", Quantity: "10", Price: "150.00", Currency: DemoCurrency}},
	{"rejected", "demo-order-rejected-v1", DealRequest{Side: "buy", Instrument: "ACME", Quantity: "1000", Price: "150.00", Currency: DemoCurrency}},
}

// RunDemo makes sure the demo user (with the saga-operator role) and its
// portfolio exist, has TreasuryUser (funding-operator) fund the portfolio
// with DemoCash through the deposits API, places one buy the cash covers
// and one it does not through the deals API, waits until both sagas are
// final, then places a basket (BASKET_ORDER: a buy and a sell of what the
// first order bought) and waits for it too. It is idempotent: the portfolio is found by name, the deposit
// and the orders carry fixed Idempotency-Keys, so a second run creates
// nothing and reports the same sagas.
func (s *System) RunDemo(ctx context.Context) (DemoResult, error) {
	res := DemoResult{User: DemoUser}
	tok, err := s.Token(DemoUser, auth.RoleOperator)
	if err != nil {
		return res, fmt.Errorf("demo: issue a token: %w", err)
	}
	res.Token = tok
	c := NewClient(s.URLs, tok, nil)
	if _, err := c.Login(ctx); err != nil {
		return res, fmt.Errorf("demo: log in: %w", err)
	}
	pfs, err := c.Portfolios(ctx)
	if err != nil {
		return res, fmt.Errorf("demo: list portfolios: %w", err)
	}
	for _, pf := range pfs {
		if pf.Name == DemoPortfolioName {
			res.PortfolioID = pf.ID
			break
		}
	}
	var cash decimal.Decimal
	if res.PortfolioID == "" {
		pf, err := c.CreatePortfolio(ctx, DemoPortfolioName, DemoCurrency)
		if err != nil {
			return res, fmt.Errorf("demo: create the portfolio: %w", err)
		}
		res.PortfolioID, res.Created, cash = pf.ID, true, pf.Cash
	} else {
		for _, pf := range pfs {
			if pf.ID == res.PortfolioID {
				cash = pf.Cash
			}
		}
	}
	// The demo user cannot fund her own portfolio: the system's funding
	// operator deposits, once (a fixed key per portfolio; an earlier run
	// that stopped before funding is completed here).
	if cash.IsZero() {
		dep, _, err := s.Fund(ctx, res.PortfolioID, DemoCash, DemoCurrency, "demo funding", "demo-funding-v1-"+res.PortfolioID)
		if err != nil {
			return res, fmt.Errorf("demo: fund the portfolio: %w", err)
		}
		res.DepositID = dep.ID
	}
	for _, o := range demoOrders {
		req := o.req
		req.PortfolioID = res.PortfolioID
		d, replayed, err := c.CreateDeal(ctx, req, o.key)
		if err != nil {
			return res, fmt.Errorf("demo: place the %s order: %w", o.label, err)
		}
		res.Orders = append(res.Orders, DemoOrder{Label: o.label, Request: req, DealID: d.ID, SagaID: d.SagaID, Replayed: replayed})
	}
	for i := range res.Orders {
		o := &res.Orders[i]
		inst, err := s.WaitFinal(ctx, o.SagaID)
		if err != nil {
			return res, fmt.Errorf("demo: %s order: %w", o.Label, err)
		}
		o.State, o.Status = inst.State, inst.Status
		d, err := c.Deal(ctx, o.DealID)
		if err != nil {
			return res, fmt.Errorf("demo: read the %s deal: %w", o.Label, err)
		}
		o.DealStatus, o.Reason = d.Status, d.Reason
	}
	// The basket sells ACME the approved order bought: placed once the
	// orders are final.
	req := deals.NewBasket{PortfolioID: res.PortfolioID, Lines: demoBasket.lines}
	b, replayed, err := c.CreateBasket(ctx, req, demoBasket.key+"-"+res.PortfolioID)
	if err != nil {
		return res, fmt.Errorf("demo: place the basket: %w", err)
	}
	res.Basket = DemoBasket{Request: req, BasketID: b.ID, SagaID: b.SagaID, Replayed: replayed}
	inst, err := s.WaitFinal(ctx, b.SagaID)
	if err != nil {
		return res, fmt.Errorf("demo: basket: %w", err)
	}
	res.Basket.State, res.Basket.Status = inst.State, inst.Status
	if b, err = c.Basket(ctx, b.ID); err != nil {
		return res, fmt.Errorf("demo: read the basket: %w", err)
	}
	res.Basket.BasketStatus = b.Status
	return res, nil
}

// WaitFinal polls saga-machine's store until saga id is settled —
// completed, failed (its compensations done), or compensation_failed (a
// compensation stopped for an operator) — or ctx ends. A saga still
// compensating is not settled.
func (s *System) WaitFinal(ctx context.Context, id string) (engine.Instance, error) {
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for {
		inst, err := s.SagaMachine.Store.GetInstance(ctx, id)
		var ee *engine.Error
		switch {
		case err == nil && inst.Status != engine.StatusRunning && inst.Status != engine.StatusCompensating:
			// completed, failed, or compensation_failed (stopped for an operator)
			return inst, nil
		case err != nil && !(errors.As(err, &ee) && ee.Code == engine.CodeNotFound):
			return inst, fmt.Errorf("wait for saga %s: %w", id, err)
		}
		select {
		case <-ctx.Done():
			return inst, fmt.Errorf("wait for saga %s to finish (state %q): %w", id, inst.State, ctx.Err())
		case <-t.C:
		}
	}
}
