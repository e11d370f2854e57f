package service

import (
	"net/http"

	"github.com/gorilla/mux"

	"github.com/portfolio-counselor/sagamachine/participants/sdk"
)

// MountAdmin registers every route of the SDK's dead-letter API
// (sdk.AdminRoutes, served by sdk.AdminHandler(p)) on r, each wrapped by
// guard, which must authenticate the caller and let only operators through
// (auth.Authenticator.Middleware + RequireRole). Each route is registered
// on its own, so that the service's OpenAPI check sees it. It panics if
// guard is nil: the dead letters hold business data and replays change it.
func MountAdmin(r *mux.Router, p *sdk.Participant, guard func(http.Handler) http.Handler) {
	if guard == nil {
		panic("service.MountAdmin: nil guard; the admin API must be behind authentication")
	}
	h := guard(sdk.AdminHandler(p))
	for _, rt := range sdk.AdminRoutes() {
		r.Handle(rt.Path, h).Methods(rt.Method)
	}
}
