package deals

import (
	"net/http"
	"strings"

	"github.com/gorilla/mux"

	"github.com/portfolio-counselor/sagamachine/internal/auth"
	"github.com/portfolio-counselor/sagamachine/participants/internal/service"
)

// HeaderIdempotencyKey makes POST /deals idempotent per user.
const HeaderIdempotencyKey = "Idempotency-Key"

// HeaderReplayed is set to "true" on a POST /deals answered from an earlier
// request with the same Idempotency-Key.
const HeaderReplayed = "Idempotent-Replayed"

// maxIdempotencyKey bounds the Idempotency-Key header.
const maxIdempotencyKey = 255

// createRequest is the body of POST /deals.
type createRequest struct {
	PortfolioID string `json:"portfolio_id"`
	Side        string `json:"side"`
	Instrument  string `json:"instrument"`
	Quantity    string `json:"quantity"`
	Price       string `json:"price"`
	Currency    string `json:"currency"`
}

func (s *Service) routes() *mux.Router {
	r := service.NewRouter(s.db)
	r.Handle("/deals", service.Authed(s.auth, s.log, s.handleCreate)).Methods(http.MethodPost)
	r.Handle("/deals", service.Authed(s.auth, s.log, s.handleList)).Methods(http.MethodGet)
	r.Handle("/deals/{id}", service.Authed(s.auth, s.log, s.handleGet)).Methods(http.MethodGet)
	r.Handle("/deals/{id}/cancel", service.Authed(s.auth, s.log, s.handleCancel)).Methods(http.MethodPost)
	r.Handle("/baskets", service.Authed(s.auth, s.log, s.handleCreateBasket)).Methods(http.MethodPost)
	r.Handle("/baskets", service.Authed(s.auth, s.log, s.handleListBaskets)).Methods(http.MethodGet)
	r.Handle("/baskets/{id}", service.Authed(s.auth, s.log, s.handleGetBasket)).Methods(http.MethodGet)
	r.Handle("/baskets/{id}/cancel", service.Authed(s.auth, s.log, s.handleCancelBasket)).Methods(http.MethodPost)
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

func (s *Service) handleCreate(w http.ResponseWriter, r *http.Request, u auth.User) error {
	key, err := idempotencyKey(r)
	if err != nil {
		return err
	}
	var req createRequest
	if err := service.DecodeJSON(w, r, &req); err != nil {
		return err
	}
	d, replayed, err := s.Create(r.Context(), u.Subject, NewDeal(req), key)
	if err != nil {
		return err
	}
	writeAt(w, http.StatusCreated, "/deals/"+d.ID, replayed, d)
	return nil
}

// idempotencyKey returns the request's Idempotency-Key ("" when it sent
// none); one sent but not 1 to 255 printable ASCII characters is refused
// (422).
func idempotencyKey(r *http.Request) (string, error) {
	key := r.Header.Get(HeaderIdempotencyKey)
	if _, sent := r.Header[http.CanonicalHeaderKey(HeaderIdempotencyKey)]; sent && !validKey(key) {
		return "", service.Invalid(service.FieldError{Field: HeaderIdempotencyKey,
			Message: "must be 1 to 255 printable ASCII characters (e.g. a UUID)"})
	}
	return key, nil
}

// writeAt answers status with body, its Location, and Idempotent-Replayed
// when the answer repeats an earlier one.
func writeAt(w http.ResponseWriter, status int, location string, replayed bool, body any) {
	w.Header().Set("Location", location)
	if replayed {
		w.Header().Set(HeaderReplayed, "true")
	}
	service.WriteJSON(w, status, body)
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

func (s *Service) handleList(w http.ResponseWriter, r *http.Request, u auth.User) error {
	page, err := service.ParsePage(r)
	if err != nil {
		return err
	}
	status := r.URL.Query().Get("status")
	switch {
	case status == "" && !r.URL.Query().Has("status"):
	case status == StatusDraft, status == StatusExecuted, status == StatusRejected, status == StatusFailed, status == StatusCancelled:
	default: // an empty ?status= included: the spec has no empty status
		return service.Invalid(service.FieldError{Field: "status",
			Message: "must be one of " + strings.Join([]string{StatusDraft, StatusExecuted, StatusRejected, StatusFailed, StatusCancelled}, ", ") + `, got "` + status + `"`})
	}
	p, err := s.List(r.Context(), u.Subject, status, page)
	if err != nil {
		return err
	}
	service.WriteJSON(w, http.StatusOK, p)
	return nil
}

func (s *Service) handleGet(w http.ResponseWriter, r *http.Request, u auth.User) error {
	d, err := s.Get(r.Context(), u.Subject, mux.Vars(r)["id"])
	if err != nil {
		return err
	}
	service.WriteJSON(w, http.StatusOK, d)
	return nil
}
