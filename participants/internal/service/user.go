package service

import (
	"log/slog"
	"net/http"

	"github.com/portfolio-counselor/sagamachine/internal/auth"
)

// Handler is an HTTP handler of an authenticated route: it gets the caller
// and returns an error that WriteError renders.
type Handler func(w http.ResponseWriter, r *http.Request, user auth.User) error

// Authed adapts h to http.Handler behind a's middleware: requests without a
// valid token get 401 before h runs, and every object h touches is scoped
// by user.Subject.
func Authed(a *auth.Authenticator, log *slog.Logger, h Handler) http.Handler {
	inner := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u, ok := auth.UserFrom(r.Context())
		if !ok || u.Subject == "" {
			// Unreachable behind the middleware; refuse rather than serve anonymously.
			WriteProblem(w, r, NewError(http.StatusUnauthorized, ProblemTypePrefix+"unauthenticated", "no authenticated user").Problem)
			return
		}
		if err := h(w, r, u); err != nil {
			WriteError(w, r, log, err)
		}
	})
	return a.Middleware(inner)
}
