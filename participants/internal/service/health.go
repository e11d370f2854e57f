package service

import (
	"context"
	"net/http"
	"time"

	"github.com/gorilla/mux"
	"github.com/jmoiron/sqlx"
)

// readyTimeout bounds the database ping of /readyz.
const readyTimeout = 2 * time.Second

// AddHealth registers the unauthenticated probes on r: GET /healthz (the
// process is up) and GET /readyz (the database answers a ping).
func AddHealth(r *mux.Router, db *sqlx.DB) {
	r.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		WriteJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	}).Methods(http.MethodGet)
	r.HandleFunc("/readyz", func(w http.ResponseWriter, req *http.Request) {
		ctx, cancel := context.WithTimeout(req.Context(), readyTimeout)
		defer cancel()
		if err := db.PingContext(ctx); err != nil {
			WriteProblem(w, req, NewError(http.StatusServiceUnavailable, TypeUnavailable, "database ping failed: "+err.Error()).Problem)
			return
		}
		WriteJSON(w, http.StatusOK, map[string]string{"status": "ready"})
	}).Methods(http.MethodGet)
}

// NewRouter returns a gorilla/mux router whose unknown paths and wrong
// methods answer with problem+json, with the health probes registered.
func NewRouter(db *sqlx.DB) *mux.Router {
	r := mux.NewRouter()
	r.NotFoundHandler = NotFoundHandler()
	r.MethodNotAllowedHandler = MethodNotAllowedHandler(r)
	AddHealth(r, db)
	return r
}
