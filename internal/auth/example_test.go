package auth_test

import (
	"context"
	"fmt"
	"log"
	"net/http"
	"net/http/httptest"

	"github.com/portfolio-counselor/sagamachine/internal/auth"
	"github.com/portfolio-counselor/sagamachine/internal/auth/issuer"
)

// A service verifies bearer tokens with Middleware and guards operator
// endpoints with RequireRole. Here the in-process issuer stands in for
// Keycloak; in deployment Issuer is the Keycloak realm URL.
func ExampleAuthenticator_Middleware() {
	iss, stop, err := issuer.Start("127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	defer stop()

	a, err := auth.New(context.Background(), auth.Config{Issuer: iss.URL(), Audience: "saga-machine"})
	if err != nil {
		log.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /sagas", a.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u, _ := auth.UserFrom(r.Context())
		fmt.Fprintf(w, "hello %s", u.Name)
	})))
	mux.Handle("POST /sagas/{id}/retry", a.Middleware(a.RequireRole(auth.RoleOperator, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, "retrying")
	}))))

	call := func(method, path, token string) {
		req := httptest.NewRequest(method, path, nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		rec := httptest.NewRecorder()
		mux.ServeHTTP(rec, req)
		fmt.Println(method, path, rec.Code, rec.Header().Get("Content-Type"))
	}
	analyst, _ := iss.Token("u-1", issuer.TokenOptions{Audience: "saga-machine", Name: "ann"})
	operator, _ := iss.Token("u-2", issuer.TokenOptions{Audience: "saga-machine", Name: "olga", Roles: []string{auth.RoleOperator}})

	call("GET", "/sagas", "")
	call("GET", "/sagas", analyst)
	call("POST", "/sagas/42/retry", analyst)
	call("POST", "/sagas/42/retry", operator)
	// Output:
	// GET /sagas 401 application/problem+json
	// GET /sagas 200 text/plain; charset=utf-8
	// POST /sagas/42/retry 403 application/problem+json
	// POST /sagas/42/retry 200 text/plain; charset=utf-8
}
