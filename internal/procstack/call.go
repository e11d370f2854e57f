package procstack

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
)

// Caller is who a request comes from. The participant services of a Stack
// run with --dev-header on loopback, so a test may be any user with any
// role (headers X-Dev-User and X-Dev-Roles).
type Caller struct {
	// User is the subject, e.g. "alice".
	User string
	// Roles are the caller's roles, e.g. "funding-operator".
	Roles []string
}

// RoleFundingOperator is the role that may deposit into other users'
// portfolios (docs/services.md).
const RoleFundingOperator = "funding-operator"

var httpClient = &http.Client{Timeout: 10 * time.Second}

// Call sends a request to the service's HTTP API as caller: body is
// encoded as JSON (nil: no body), header is added. It returns the status
// and the response body; err is only a failure to get an answer (the
// process is down, paused past ctx or the client's 10 s timeout).
func (sv *Service) Call(ctx context.Context, method, path string, as Caller, body any, header http.Header) (int, []byte, error) {
	status, _, b, err := call(ctx, sv.Name, sv.URL, method, path, as, body, header)
	return status, b, err
}

// Call is Service.Call on this replica; it also returns the answer's
// header.
func (r *Replica) Call(ctx context.Context, method, path string, as Caller, body any, header http.Header) (int, http.Header, []byte, error) {
	return call(ctx, r.Name(), r.URL, method, path, as, body, header)
}

func call(ctx context.Context, name, base, method, path string, as Caller, body any, header http.Header) (int, http.Header, []byte, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return 0, nil, nil, fmt.Errorf("procstack: encode the body of %s %s: %w", method, path, err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, base+path, rd)
	if err != nil {
		return 0, nil, nil, fmt.Errorf("procstack: %s %s: %w", method, path, err)
	}
	for k, vs := range header {
		for _, v := range vs {
			req.Header.Add(k, v)
		}
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if as.User != "" {
		req.Header.Set("X-Dev-User", as.User)
	}
	if len(as.Roles) > 0 {
		req.Header.Set("X-Dev-Roles", strings.Join(as.Roles, ","))
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		return 0, nil, nil, fmt.Errorf("procstack: %s %s%s: %w", method, name, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return resp.StatusCode, resp.Header, b, fmt.Errorf("procstack: read the answer to %s %s%s: %w", method, name, path, err)
	}
	return resp.StatusCode, resp.Header, b, nil
}

// callJSON is Call expecting status want, decoding the answer into out.
func (sv *Service) callJSON(ctx context.Context, method, path string, as Caller, body any, header http.Header, want int, out any) error {
	status, b, err := sv.Call(ctx, method, path, as, body, header)
	if err != nil {
		return err
	}
	if status != want {
		return fmt.Errorf("procstack: %s %s%s as %s: status %d, want %d: %s", method, sv.Name, path, as.User, status, want, b)
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			return fmt.Errorf("procstack: decode the answer to %s %s%s: %w", method, sv.Name, path, err)
		}
	}
	return nil
}

// OpenPortfolio gives user a profile and a new portfolio in currency and
// has a funding operator of the stack deposit amount (a decimal string)
// into it through profile's HTTP API. It returns the portfolio id.
func (s *Stack) OpenPortfolio(ctx context.Context, user, currency, amount string) (string, error) {
	id, err := s.CreatePortfolio(ctx, user, currency)
	if err != nil {
		return "", err
	}
	if _, err := s.Deposit(ctx, s.Profile.Replicas[0], id, currency, amount, "procstack-fund-"+id); err != nil {
		return "", err
	}
	return id, nil
}

// CreatePortfolio gives user a profile and a new, empty portfolio in
// currency through profile's HTTP API (its first replica) and returns the
// portfolio id. It is not idempotent: a retry after an error may create a
// second portfolio.
func (s *Stack) CreatePortfolio(ctx context.Context, user, currency string) (string, error) {
	as := Caller{User: user}
	if err := s.Profile.callJSON(ctx, http.MethodGet, "/login", as, nil, nil, http.StatusOK, nil); err != nil {
		return "", err
	}
	var pf struct {
		ID string `json:"id"`
	}
	if err := s.Profile.callJSON(ctx, http.MethodPost, "/portfolios", as, map[string]string{"name": "procstack " + user, "currency": currency},
		nil, http.StatusCreated, &pf); err != nil {
		return "", err
	}
	return pf.ID, nil
}

// Deposit has a funding operator of the stack deposit amount (a decimal
// string) into a portfolio through profile replica r's HTTP API, with
// Idempotency-Key key: a retry with the same key deposits once. It returns
// whether profile answered from an earlier request with that key.
func (s *Stack) Deposit(ctx context.Context, r *Replica, portfolioID, currency, amount, key string) (replayed bool, err error) {
	funder := Caller{User: "funder." + s.ID, Roles: []string{RoleFundingOperator}}
	status, h, b, err := r.Call(ctx, http.MethodPost, "/portfolios/"+portfolioID+"/deposits", funder,
		map[string]string{"amount": amount, "currency": currency, "reason": "procstack funding"}, http.Header{"Idempotency-Key": {key}})
	if err != nil {
		return false, err
	}
	if status != http.StatusCreated && status != http.StatusOK {
		return false, &StatusError{Status: status, Body: string(b), What: "deposit into portfolio " + portfolioID + " through " + r.Name()}
	}
	return h.Get("Idempotent-Replayed") == "true", nil
}

// StatusError is an answer with a status other than the one wanted.
type StatusError struct {
	// Status is the HTTP status, Body the answer.
	Status int
	Body   string
	// What was asked.
	What string
}

func (e *StatusError) Error() string {
	return fmt.Sprintf("procstack: %s: status %d: %s", e.What, e.Status, e.Body)
}

// Deal is what PostDeal registers.
type Deal struct {
	PortfolioID string `json:"portfolio_id"`
	Side        string `json:"side"` // buy or sell
	Instrument  string `json:"instrument"`
	Quantity    string `json:"quantity"` // decimal string
	Price       string `json:"price"`    // decimal string
	Currency    string `json:"currency"`
}

// PostDealKey is PostDeal through deals replica r with Idempotency-Key
// key: a retry with the same key registers (and starts) one deal. It
// returns the deal's id and its saga's id, and whether deals answered from
// an earlier request with that key; another status than 201 is a
// *StatusError.
func (s *Stack) PostDealKey(ctx context.Context, r *Replica, user, key string, d Deal) (id, sagaID string, replayed bool, err error) {
	return postStart(ctx, r, "/deals", user, key, d)
}

// postStart posts body to path (POST /deals or /baskets, which store
// something and start its saga) through deals replica r as user with
// Idempotency-Key key, and returns the created thing's id, its saga's id
// and whether deals answered from an earlier request with that key;
// another status than 201 is a *StatusError.
func postStart(ctx context.Context, r *Replica, path, user, key string, body any) (id, sagaID string, replayed bool, err error) {
	status, h, b, err := r.Call(ctx, http.MethodPost, path, Caller{User: user}, body, http.Header{"Idempotency-Key": {key}})
	if err != nil {
		return "", "", false, err
	}
	if status != http.StatusCreated {
		return "", "", false, &StatusError{Status: status, Body: string(b), What: "POST " + path + " through " + r.Name()}
	}
	var out struct {
		ID     string `json:"id"`
		SagaID string `json:"saga_id"`
	}
	if err := json.Unmarshal(b, &out); err != nil || out.ID == "" || out.SagaID == "" {
		return "", "", false, fmt.Errorf("procstack: decode the answer to POST %s through %s (%s): %w", path, r.Name(), b, err)
	}
	return out.ID, out.SagaID, h.Get("Idempotent-Replayed") == "true", nil
}

// Line is one line of a basket (PostBasketKey): a deal of the basket's
// portfolio.
type Line struct {
	Side       string `json:"side"` // buy or sell
	Instrument string `json:"instrument"`
	Quantity   string `json:"quantity"` // decimal string
	Price      string `json:"price"`    // decimal string
	Currency   string `json:"currency"`
}

// PostBasketKey registers a basket of lines in portfolioID as user
// through deals replica r (POST /baskets, BASKET_ORDER) with
// Idempotency-Key key: a retry with the same key registers (and starts)
// one basket. It returns the basket's id and its saga's id, and whether
// deals answered from an earlier request with that key; another status
// than 201 is a *StatusError.
func (s *Stack) PostBasketKey(ctx context.Context, r *Replica, user, key, portfolioID string, lines []Line) (id, sagaID string, replayed bool, err error) {
	body := struct {
		PortfolioID string `json:"portfolio_id"`
		Lines       []Line `json:"lines"`
	}{portfolioID, lines}
	return postStart(ctx, r, "/baskets", user, key, body)
}

// CancelDeal has user, the deal's owner, cancel deal id through deals
// replica r (POST /deals/{id}/cancel). It returns the status when it is
// 202 (accepted, or accepted before) or 409 (too late: the deal is
// settled); another status is a *StatusError.
func (s *Stack) CancelDeal(ctx context.Context, r *Replica, user, id string) (int, error) {
	return postOrTooLate(ctx, r, "/deals/"+id+"/cancel", Caller{User: user}, nil, http.StatusAccepted, "cancel deal "+id)
}

// CancelBasket has user, the basket's owner, cancel basket id through
// deals replica r (POST /baskets/{id}/cancel). It returns the status when
// it is 202 (accepted, or accepted before) or 409 (too late: the basket is
// settled); another status is a *StatusError.
func (s *Stack) CancelBasket(ctx context.Context, r *Replica, user, id string) (int, error) {
	return postOrTooLate(ctx, r, "/baskets/"+id+"/cancel", Caller{User: user}, nil, http.StatusAccepted, "cancel basket "+id)
}

// AbortSaga has an operator abort saga sagaID through saga-machine
// replica r (POST /api/v1/sagas/{id}/abort; the stack's saga-machine runs
// without API authentication, on loopback). It returns the status when it
// is 200 (aborted) or 409 (too late: the saga finished, or is already
// being compensated); another status is a *StatusError.
func (s *Stack) AbortSaga(ctx context.Context, r *Replica, sagaID, reason string) (int, error) {
	return postOrTooLate(ctx, r, "/api/v1/sagas/"+sagaID+"/abort", Caller{}, map[string]string{"reason": reason}, http.StatusOK, "abort saga "+sagaID)
}

// postOrTooLate posts body to path through replica r as as, and returns
// the status when it is done or 409 (too late); another status is a
// *StatusError about what.
func postOrTooLate(ctx context.Context, r *Replica, path string, as Caller, body any, done int, what string) (int, error) {
	status, _, b, err := r.Call(ctx, http.MethodPost, path, as, body, nil)
	if err != nil {
		return 0, err
	}
	if status != done && status != http.StatusConflict {
		return 0, &StatusError{Status: status, Body: string(b), What: what + " through " + r.Name()}
	}
	return status, nil
}

// PostDeal registers a deal as user through deals' HTTP API (POST /deals),
// which starts its saga. It returns the deal id on 201; another status is
// an error with the answer.
func (s *Stack) PostDeal(ctx context.Context, user string, d Deal) (string, error) {
	var out struct {
		ID string `json:"id"`
	}
	if err := s.Deals.callJSON(ctx, http.MethodPost, "/deals", Caller{User: user}, d, nil, http.StatusCreated, &out); err != nil {
		return "", err
	}
	return out.ID, nil
}
