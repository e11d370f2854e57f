package service

import (
	"mime"
	"net/http"
	"net/url"
	"strings"

	"github.com/gorilla/mux"

	"github.com/portfolio-counselor/sagamachine/internal/program"
	"github.com/portfolio-counselor/sagamachine/internal/tracing"
)

// TypeCrossOrigin is the problem type of a state-changing request a
// browser sent from another origin (403).
const TypeCrossOrigin = ProblemTypePrefix + "cross-origin"

// Guard wraps a service's router with the browser protections every
// service has, whatever its deployment:
//
//   - Cross-site request forgery: a state-changing request (any method but
//     GET, HEAD and OPTIONS) that a browser marks as coming from another
//     origin (Sec-Fetch-Site, else Origin against Host) is refused with 403
//     (net/http's CrossOriginProtection, as saga-machine does). Clients that
//     are not browsers send neither header and pass.
//   - A state-changing request with a body must say it is JSON
//     (Content-Type application/json or a +json type): anything else,
//     a missing Content-Type included, is refused with 415 before a handler
//     runs. An HTML form (urlencoded, multipart, text/plain) therefore never
//     reaches a handler, whichever origin sent it.
//
// Both refusals are problem+json; nothing is read or written.
//
// When tracing is on (internal/tracing), every request, refused or not,
// gets a server span named after the route next (a *mux.Router) matches.
func Guard(next http.Handler) http.Handler {
	jsonOnly := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if stateChanging(r.Method) && r.ContentLength != 0 && !IsJSONContentType(r.Header.Get("Content-Type")) {
			WriteProblem(w, r, unsupportedMedia(r.Header.Get("Content-Type")).Problem)
			return
		}
		next.ServeHTTP(w, r)
	})
	p := http.NewCrossOriginProtection()
	p.SetDenyHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		WriteProblem(w, r, NewError(http.StatusForbidden, TypeCrossOrigin,
			r.Method+" "+r.URL.Path+" from another origin ("+originOf(r)+") is refused: state-changing requests must come from the service's own origin or from a client that is not a browser").Problem)
	}))
	router, _ := next.(*mux.Router)
	return tracing.Handler(router, p.Handler(jsonOnly)) // a server span per request when tracing is on
}

// LocalOnly refuses (421 problem+json, program.LoopbackHostOnly) requests
// whose Host is not localhost or a loopback address. A service serves
// behind it when it trusts no production identity provider (--dev-header,
// or an issuer on loopback: the dev issuer), so that a web page cannot
// reach it through DNS rebinding.
func LocalOnly(name string, next http.Handler) http.Handler {
	return program.LoopbackHostOnly("the "+name+" service", next)
}

// LoopbackIssuer reports whether an OIDC issuer URL points at this machine
// (localhost or a loopback address): the dev issuer of `make run` or a
// test, never a production identity provider.
func LoopbackIssuer(issuer string) bool {
	u, err := url.Parse(issuer)
	return err == nil && u.Host != "" && program.IsLoopbackHost(u.Host)
}

// IsJSONContentType reports whether a Content-Type header value is JSON
// (application/json or a +json type, parameters allowed).
func IsJSONContentType(ct string) bool {
	if ct == "" {
		return false
	}
	mt, _, err := mime.ParseMediaType(ct)
	return err == nil && (mt == "application/json" || strings.HasSuffix(mt, "+json"))
}

func stateChanging(method string) bool {
	switch method {
	case http.MethodGet, http.MethodHead, http.MethodOptions:
		return false
	}
	return true
}

func unsupportedMedia(ct string) *Error {
	if ct == "" {
		return NewError(http.StatusUnsupportedMediaType, TypeUnsupportedMedia, "the request has a body but no Content-Type; send application/json")
	}
	return NewError(http.StatusUnsupportedMediaType, TypeUnsupportedMedia, "Content-Type "+quote(ct)+" is not supported; send application/json")
}

// originOf names where a cross-origin request came from, for the detail.
func originOf(r *http.Request) string {
	if o := r.Header.Get("Origin"); o != "" {
		return o
	}
	return "Sec-Fetch-Site: " + r.Header.Get("Sec-Fetch-Site")
}
