package system

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/portfolio-counselor/sagamachine/engine"
	"github.com/portfolio-counselor/sagamachine/engine/httpapi"
	"github.com/portfolio-counselor/sagamachine/participants/deals"
	"github.com/portfolio-counselor/sagamachine/participants/notification"
	"github.com/portfolio-counselor/sagamachine/participants/profile"
)

// Client calls the system's HTTP APIs with one bearer token. It is safe
// for concurrent use.
type Client struct {
	urls  URLs
	token string
	http  *http.Client
}

// NewClient returns a client of the services at urls sending token; hc
// nil means a client with a 30s timeout.
func NewClient(urls URLs, token string, hc *http.Client) *Client {
	if hc == nil {
		hc = &http.Client{Timeout: 30 * time.Second}
	}
	return &Client{urls: urls, token: token, http: hc}
}

// StatusError is a non-2xx answer.
type StatusError struct {
	Method, URL string
	Status      int
	Body        string
}

func (e *StatusError) Error() string {
	return fmt.Sprintf("%s %s: %d %s", e.Method, e.URL, e.Status, strings.TrimSpace(e.Body))
}

// do sends a JSON request and decodes a JSON answer into out (nil: ignore).
func (c *Client) do(ctx context.Context, method, u string, hdr http.Header, in, out any) (http.Header, error) {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return nil, fmt.Errorf("%s %s: encode request: %w", method, u, err)
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, body)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", method, u, err)
	}
	for k, vs := range hdr {
		req.Header[k] = vs
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json")
	req.Header.Set("Authorization", "Bearer "+c.token)
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", method, u, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return nil, fmt.Errorf("%s %s: read answer: %w", method, u, err)
	}
	if resp.StatusCode/100 != 2 {
		return resp.Header, &StatusError{Method: method, URL: u, Status: resp.StatusCode, Body: string(raw)}
	}
	if out != nil {
		if err := json.Unmarshal(raw, out); err != nil {
			return resp.Header, fmt.Errorf("%s %s: decode answer: %w", method, u, err)
		}
	}
	return resp.Header, nil
}

// Login creates or refreshes the caller's profile (GET /login on profile).
func (c *Client) Login(ctx context.Context) (profile.Profile, error) {
	var p profile.Profile
	_, err := c.do(ctx, http.MethodGet, c.urls.Profile+"/login", nil, nil, &p)
	return p, err
}

// Portfolios lists the caller's portfolios.
func (c *Client) Portfolios(ctx context.Context) ([]profile.Portfolio, error) {
	var out struct {
		Items []profile.Portfolio `json:"items"`
	}
	_, err := c.do(ctx, http.MethodGet, c.urls.Profile+"/portfolios", nil, nil, &out)
	return out.Items, err
}

// Portfolio returns one of the caller's portfolios.
func (c *Client) Portfolio(ctx context.Context, id string) (profile.Portfolio, error) {
	var p profile.Portfolio
	_, err := c.do(ctx, http.MethodGet, c.urls.Profile+"/portfolios/"+url.PathEscape(id), nil, nil, &p)
	return p, err
}

// CreatePortfolio creates a portfolio in currency. Its cash starts at 0:
// a funding operator funds it with Deposit (System.Fund).
func (c *Client) CreatePortfolio(ctx context.Context, name, currency string) (profile.Portfolio, error) {
	var p profile.Portfolio
	in := map[string]string{"name": name, "currency": currency}
	_, err := c.do(ctx, http.MethodPost, c.urls.Profile+"/portfolios", nil, in, &p)
	return p, err
}

// Deposit funds portfolio portfolioID with amount (a decimal string) in
// currency, for reason (POST /portfolios/{id}/deposits). The client's token
// must carry the funding-operator role and must not be the portfolio
// owner's. idempotencyKey is required: a repeated call with the same key
// and request returns the first deposit with replayed true.
func (c *Client) Deposit(ctx context.Context, portfolioID, amount, currency, reason, idempotencyKey string) (d profile.Deposit, replayed bool, err error) {
	hdr := http.Header{}
	hdr.Set(profile.HeaderIdempotencyKey, idempotencyKey)
	in := map[string]string{"amount": amount, "currency": currency, "reason": reason}
	h, err := c.do(ctx, http.MethodPost, c.urls.Profile+"/portfolios/"+url.PathEscape(portfolioID)+"/deposits", hdr, in, &d)
	return d, h.Get(profile.HeaderReplayed) == "true", err
}

// Deposits lists the deposits into a portfolio, newest first (one page of
// up to 100): the owner's and funding operators' view of the audit trail.
func (c *Client) Deposits(ctx context.Context, portfolioID string) ([]profile.Deposit, error) {
	var out struct {
		Items []profile.Deposit `json:"items"`
	}
	_, err := c.do(ctx, http.MethodGet, c.urls.Profile+"/portfolios/"+url.PathEscape(portfolioID)+"/deposits?limit=100", nil, nil, &out)
	return out.Items, err
}

// Snapshots lists a portfolio's dated snapshots, oldest first.
func (c *Client) Snapshots(ctx context.Context, portfolioID string) ([]profile.Snapshot, error) {
	var out struct {
		Items []profile.Snapshot `json:"items"`
	}
	_, err := c.do(ctx, http.MethodGet, c.urls.Profile+"/portfolios/"+url.PathEscape(portfolioID)+"/snapshots", nil, nil, &out)
	return out.Items, err
}

// DealRequest is the body of POST /deals. Quantity and Price are decimal
// strings.
type DealRequest struct {
	PortfolioID string `json:"portfolio_id"`
	Side        string `json:"side"`
	Instrument  string `json:"instrument"`
	Quantity    string `json:"quantity"`
	Price       string `json:"price"`
	Currency    string `json:"currency"`
}

// CreateDeal registers a deal (which starts its MANUAL_CREATE_ORDER saga);
// a non-empty idempotencyKey makes a repeated call return the first deal
// with replayed true.
func (c *Client) CreateDeal(ctx context.Context, in DealRequest, idempotencyKey string) (d deals.Deal, replayed bool, err error) {
	hdr := http.Header{}
	if idempotencyKey != "" {
		hdr.Set(deals.HeaderIdempotencyKey, idempotencyKey)
	}
	h, err := c.do(ctx, http.MethodPost, c.urls.Deals+"/deals", hdr, in, &d)
	return d, h.Get(deals.HeaderReplayed) == "true", err
}

// CreateBasket registers a basket of deals (which starts its BASKET_ORDER
// saga); a non-empty idempotencyKey makes a repeated call return the first
// basket with replayed true.
func (c *Client) CreateBasket(ctx context.Context, in deals.NewBasket, idempotencyKey string) (b deals.Basket, replayed bool, err error) {
	hdr := http.Header{}
	if idempotencyKey != "" {
		hdr.Set(deals.HeaderIdempotencyKey, idempotencyKey)
	}
	h, err := c.do(ctx, http.MethodPost, c.urls.Deals+"/baskets", hdr, in, &b)
	return b, h.Get(deals.HeaderReplayed) == "true", err
}

// Basket returns one of the caller's baskets with its deals.
func (c *Client) Basket(ctx context.Context, id string) (deals.Basket, error) {
	var b deals.Basket
	_, err := c.do(ctx, http.MethodGet, c.urls.Deals+"/baskets/"+url.PathEscape(id), nil, nil, &b)
	return b, err
}

// Deals lists the caller's deals, newest first (one page of up to 100).
func (c *Client) Deals(ctx context.Context) ([]deals.Deal, error) {
	var out struct {
		Items []deals.Deal `json:"items"`
	}
	_, err := c.do(ctx, http.MethodGet, c.urls.Deals+"/deals?limit=100", nil, nil, &out)
	return out.Items, err
}

// Deal returns one of the caller's deals.
func (c *Client) Deal(ctx context.Context, id string) (deals.Deal, error) {
	var d deals.Deal
	_, err := c.do(ctx, http.MethodGet, c.urls.Deals+"/deals/"+url.PathEscape(id), nil, nil, &d)
	return d, err
}

// Notifications lists the caller's notifications, newest first (one page
// of up to 100).
func (c *Client) Notifications(ctx context.Context) ([]notification.Notification, error) {
	var out struct {
		Items []notification.Notification `json:"items"`
	}
	_, err := c.do(ctx, http.MethodGet, c.urls.Notification+"/notifications?limit=100", nil, nil, &out)
	return out.Items, err
}

// Saga returns one saga with its timeline (GET /api/v1/sagas/{id}).
func (c *Client) Saga(ctx context.Context, id string) (httpapi.SagaDetail, error) {
	var d httpapi.SagaDetail
	_, err := c.do(ctx, http.MethodGet, c.urls.SagaMachine+"/api/v1/sagas/"+url.PathEscape(id), nil, nil, &d)
	return d, err
}

// Sagas lists sagas (GET /api/v1/sagas) with the filter's query.
func (c *Client) Sagas(ctx context.Context, f engine.SagaFilter) (engine.SagaPage, error) {
	q := url.Values{}
	set := func(k, v string) {
		if v != "" {
			q.Set(k, v)
		}
	}
	set("saga", f.Saga)
	set("state", f.State)
	set("status", string(f.Status))
	if !f.From.IsZero() {
		q.Set("from", f.From.UTC().Format(time.RFC3339Nano))
	}
	if !f.To.IsZero() {
		q.Set("to", f.To.UTC().Format(time.RFC3339Nano))
	}
	if f.KeyName != "" {
		q.Set("key", f.KeyName+":"+f.KeyValue)
	}
	set("cursor", f.Cursor)
	if f.Limit > 0 {
		q.Set("limit", fmt.Sprint(f.Limit))
	}
	var p engine.SagaPage
	u := c.urls.SagaMachine + "/api/v1/sagas"
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	_, err := c.do(ctx, http.MethodGet, u, nil, nil, &p)
	return p, err
}
