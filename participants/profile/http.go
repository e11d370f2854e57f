package profile

import (
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/gorilla/mux"
	"github.com/shopspring/decimal"

	"github.com/portfolio-counselor/sagamachine/internal/auth"
	"github.com/portfolio-counselor/sagamachine/participants/internal/dealctx"
	"github.com/portfolio-counselor/sagamachine/participants/internal/service"
)

// maxNameRunes bounds portfolio names.
const maxNameRunes = 100

// HeaderIdempotencyKey makes POST /portfolios/{id}/deposits idempotent per
// funding operator (required there).
const HeaderIdempotencyKey = "Idempotency-Key"

// HeaderReplayed is set to "true" on a deposit answered from an earlier
// request with the same Idempotency-Key.
const HeaderReplayed = "Idempotent-Replayed"

// maxIdempotencyKey bounds the Idempotency-Key header.
const maxIdempotencyKey = 255

// cashReadOnly is the message of a request that tries to set cash itself.
const cashReadOnly = "cannot be set by the portfolio's owner: a portfolio starts with 0 and is funded by a funding operator (POST /portfolios/{id}/deposits) or moved by deals"

// createRequest is the body of POST /portfolios.
type createRequest struct {
	Name     string  `json:"name"`
	Currency string  `json:"currency"`
	Cash     *string `json:"cash"` // optional; only "0" is accepted (cash comes from deposits)
}

// updateRequest is the body of PUT /portfolios/{id}.
type updateRequest struct {
	Name     string  `json:"name"`
	Currency *string `json:"currency"` // optional; must equal the portfolio's
	Cash     *string `json:"cash"`     // optional; must equal the portfolio's (read-only)
}

// depositRequest is the body of POST /portfolios/{id}/deposits.
type depositRequest struct {
	Amount   string `json:"amount"`
	Currency string `json:"currency"`
	Reason   string `json:"reason"`
}

func (s *Service) routes() *mux.Router {
	r := service.NewRouter(s.db)
	h := func(f service.Handler) http.Handler { return service.Authed(s.auth, s.log, f) }
	r.Handle("/login", h(s.handleLogin)).Methods(http.MethodGet)
	r.Handle("/portfolios", h(s.handleList)).Methods(http.MethodGet)
	r.Handle("/portfolios", h(s.handleCreate)).Methods(http.MethodPost)
	r.Handle("/portfolios/{id}", h(s.handleGet)).Methods(http.MethodGet)
	r.Handle("/portfolios/{id}", h(s.handleUpdate)).Methods(http.MethodPut)
	r.Handle("/portfolios/{id}/deposits", h(s.handleDeposit)).Methods(http.MethodPost)
	r.Handle("/portfolios/{id}/deposits", h(s.handleDeposits)).Methods(http.MethodGet)
	r.Handle("/portfolios/{id}/snapshots", h(s.handleSnapshots)).Methods(http.MethodGet)
	r.Handle("/portfolios/{id}/snapshots/{date}", h(s.handleSnapshotAt)).Methods(http.MethodGet)
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

func (s *Service) handleLogin(w http.ResponseWriter, r *http.Request, u auth.User) error {
	p, err := s.Login(r.Context(), u)
	if err != nil {
		return err
	}
	service.WriteJSON(w, http.StatusOK, p)
	return nil
}

func (s *Service) handleList(w http.ResponseWriter, r *http.Request, u auth.User) error {
	pfs, err := s.Portfolios(r.Context(), u.Subject)
	if err != nil {
		return err
	}
	service.WriteJSON(w, http.StatusOK, map[string]any{"items": pfs})
	return nil
}

func (s *Service) handleCreate(w http.ResponseWriter, r *http.Request, u auth.User) error {
	var req createRequest
	if err := service.DecodeJSON(w, r, &req); err != nil {
		return err
	}
	var errs []service.FieldError
	in := NewPortfolio{Name: strings.TrimSpace(req.Name), Currency: req.Currency}
	errs = checkName(errs, req.Name, in.Name)
	if req.Currency == "" {
		errs = append(errs, service.FieldError{Field: "currency", Message: "is required (ISO 4217, e.g. USD)"})
	} else if err := dealctx.CheckCurrency(req.Currency); err != nil {
		errs = append(errs, service.FieldError{Field: "currency", Message: err.Error()})
	}
	if req.Cash != nil {
		var cash decimal.Decimal
		if errs = parseCash(errs, *req.Cash, &cash); len(errs) == 0 && !cash.IsZero() {
			errs = append(errs, service.FieldError{Field: "cash", Message: cashReadOnly + "; omit it or send \"0\""})
		}
	}
	if len(errs) > 0 {
		return service.Invalid(errs...)
	}
	pf, err := s.CreatePortfolio(r.Context(), u.Subject, in)
	if err != nil {
		return err
	}
	w.Header().Set("Location", "/portfolios/"+pf.ID)
	service.WriteJSON(w, http.StatusCreated, pf)
	return nil
}

func (s *Service) handleGet(w http.ResponseWriter, r *http.Request, u auth.User) error {
	pf, err := s.Portfolio(r.Context(), u.Subject, mux.Vars(r)["id"])
	if err != nil {
		return err
	}
	service.WriteJSON(w, http.StatusOK, pf)
	return nil
}

func (s *Service) handleUpdate(w http.ResponseWriter, r *http.Request, u auth.User) error {
	id := mux.Vars(r)["id"]
	var req updateRequest
	if err := service.DecodeJSON(w, r, &req); err != nil {
		return err
	}
	in := PortfolioUpdate{Name: strings.TrimSpace(req.Name)}
	errs := checkName(nil, req.Name, in.Name)
	var cash decimal.Decimal
	if req.Cash != nil {
		errs = parseCash(errs, *req.Cash, &cash)
	}
	if req.Currency != nil || req.Cash != nil {
		// Checked against the stored portfolio (after the 404 check): they
		// may be sent back unchanged, never changed.
		cur, err := s.Portfolio(r.Context(), u.Subject, id)
		if err != nil {
			return err
		}
		if req.Currency != nil && *req.Currency != cur.Currency {
			errs = append(errs, service.FieldError{Field: "currency",
				Message: "cannot be changed (the portfolio holds " + cur.Currency + "); omit it or send " + cur.Currency})
		}
		if req.Cash != nil && len(errs) == 0 && !cash.Equal(cur.Cash) {
			errs = append(errs, service.FieldError{Field: "cash", Message: cashReadOnly + "; omit it"})
		}
	}
	if len(errs) > 0 {
		return service.Invalid(errs...)
	}
	pf, err := s.UpdatePortfolio(r.Context(), u.Subject, id, in)
	if err != nil {
		return err
	}
	service.WriteJSON(w, http.StatusOK, pf)
	return nil
}

func (s *Service) handleDeposit(w http.ResponseWriter, r *http.Request, u auth.User) error {
	// The role first: a caller without it learns nothing about the portfolio.
	if !u.HasRole(auth.RoleFundingOperator) {
		return service.NewError(http.StatusForbidden, service.TypeForbidden,
			fmt.Sprintf("user %q lacks the role %q: only funding operators deposit cash", u.Subject, auth.RoleFundingOperator))
	}
	key := r.Header.Get(HeaderIdempotencyKey)
	var errs []service.FieldError
	if !validKey(key) {
		errs = append(errs, service.FieldError{Field: HeaderIdempotencyKey,
			Message: "is required: 1 to 255 printable ASCII characters (e.g. a UUID), so that a retried deposit does not fund twice"})
	}
	var req depositRequest
	if err := service.DecodeJSON(w, r, &req); err != nil {
		return err
	}
	in := NewDeposit{Currency: req.Currency, Reason: req.Reason}
	switch {
	case req.Amount == "":
		errs = append(errs, service.FieldError{Field: "amount", Message: `is required: a positive decimal string such as "1000.00"`})
	default:
		v, err := dealctx.ParseAmount(req.Amount)
		if err != nil {
			errs = append(errs, service.FieldError{Field: "amount", Message: err.Error()})
		}
		in.Amount = v
	}
	if req.Currency == "" {
		errs = append(errs, service.FieldError{Field: "currency", Message: "is required (the portfolio's currency, e.g. USD)"})
	}
	if len(errs) > 0 {
		return service.Invalid(errs...)
	}
	dep, replayed, err := s.Deposit(r.Context(), u, mux.Vars(r)["id"], in, key)
	if err != nil {
		return err
	}
	w.Header().Set("Location", "/portfolios/"+dep.PortfolioID+"/deposits")
	if replayed {
		w.Header().Set(HeaderReplayed, "true")
	}
	service.WriteJSON(w, http.StatusCreated, dep)
	return nil
}

func (s *Service) handleDeposits(w http.ResponseWriter, r *http.Request, u auth.User) error {
	page, err := service.ParsePage(r)
	if err != nil {
		return err
	}
	p, err := s.Deposits(r.Context(), u, mux.Vars(r)["id"], page)
	if err != nil {
		return err
	}
	service.WriteJSON(w, http.StatusOK, p)
	return nil
}

func validKey(k string) bool {
	if k == "" || len(k) > maxIdempotencyKey {
		return false
	}
	for i := 0; i < len(k); i++ {
		if k[i] < 0x21 || k[i] > 0x7e {
			return false
		}
	}
	return true
}

func (s *Service) handleSnapshots(w http.ResponseWriter, r *http.Request, u auth.User) error {
	q := r.URL.Query()
	var errs []service.FieldError
	for _, f := range []string{"from", "to"} {
		if v := q.Get(f); (v != "" || q.Has(f)) && !validDate(v) {
			errs = append(errs, service.FieldError{Field: f, Message: "must be a date YYYY-MM-DD, got " + quote(v)})
		}
	}
	if len(errs) > 0 {
		return service.Invalid(errs...)
	}
	snaps, err := s.Snapshots(r.Context(), u.Subject, mux.Vars(r)["id"], q.Get("from"), q.Get("to"))
	if err != nil {
		return err
	}
	service.WriteJSON(w, http.StatusOK, map[string]any{"items": snaps})
	return nil
}

func (s *Service) handleSnapshotAt(w http.ResponseWriter, r *http.Request, u auth.User) error {
	date := mux.Vars(r)["date"]
	if !validDate(date) {
		return service.Invalid(service.FieldError{Field: "date", Message: "must be a date YYYY-MM-DD, got " + quote(date)})
	}
	snap, err := s.SnapshotAt(r.Context(), u.Subject, mux.Vars(r)["id"], date)
	if err != nil {
		return err
	}
	service.WriteJSON(w, http.StatusOK, snap)
	return nil
}

// checkName checks a portfolio name as sent (raw) and as stored (name,
// raw without its surrounding spaces): 1 to 100 characters as sent, not
// only spaces, no control characters (NUL, newlines, C1 controls), as the
// spec's NewPortfolio.name says.
func checkName(errs []service.FieldError, raw, name string) []service.FieldError {
	switch {
	case name == "":
		return append(errs, service.FieldError{Field: "name", Message: "is required and must not be only spaces (e.g. \"Retirement\")"})
	case utf8.RuneCountInString(raw) > maxNameRunes:
		return append(errs, service.FieldError{Field: "name", Message: "must be at most 100 characters"})
	case strings.IndexFunc(raw, unicode.IsControl) >= 0:
		return append(errs, service.FieldError{Field: "name", Message: "must not contain control characters (NUL, tab, newline, ...)"})
	}
	return errs
}

func parseCash(errs []service.FieldError, raw string, dst *decimal.Decimal) []service.FieldError {
	v, err := dealctx.ParseDecimal(raw)
	switch {
	case err != nil:
		return append(errs, service.FieldError{Field: "cash", Message: err.Error()})
	case v.IsNegative():
		return append(errs, service.FieldError{Field: "cash", Message: "must not be negative, got " + quote(raw)})
	}
	*dst = v
	return errs
}

func validDate(s string) bool {
	t, err := time.Parse(DateLayout, s)
	return err == nil && t.Format(DateLayout) == s
}

func quote(s string) string { return strconv.Quote(s) }
