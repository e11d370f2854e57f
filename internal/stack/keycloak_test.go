package stack_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/portfolio-counselor/sagamachine/internal/stack"
)

// fakeKeycloak plays the two endpoints Admin's unit logic depends on: the
// master realm's token endpoint (each login gets a new token) and the
// users of the admin API, which accept only the newest token (the admin's
// tokens expire after a minute). TestFrontDoor uses the real Keycloak.
func fakeKeycloak(t *testing.T, create func(w http.ResponseWriter)) (*httptest.Server, *atomic.Int32) {
	var logins atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.URL.Path == "/auth/realms/master/protocol/openid-connect/token":
			if r.FormValue("client_id") != "admin-cli" || r.FormValue("password") != "pw" {
				http.Error(w, `{"error":"invalid_grant"}`, http.StatusUnauthorized)
				return
			}
			n := logins.Add(1)
			fmt.Fprintf(w, `{"access_token":"t%d","expires_in":60}`, n)
		case r.Header.Get("Authorization") != fmt.Sprintf("Bearer t%d", logins.Load()):
			http.Error(w, `{"error":"HTTP 401 Unauthorized"}`, http.StatusUnauthorized)
		case r.Method == http.MethodGet && r.URL.Path == "/auth/admin/realms/portfolio/users":
			fmt.Fprintf(w, `[{"id":"u1","username":%q}]`, r.URL.Query().Get("username"))
		case r.Method == http.MethodPost && r.URL.Path == "/auth/admin/realms/portfolio/users":
			create(w)
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(srv.Close)
	return srv, &logins
}

func TestAdminLogsInAgainWhenItsTokenExpired(t *testing.T) {
	srv, logins := fakeKeycloak(t, nil)
	ctx := context.Background()
	if _, err := stack.NewAdmin(ctx, nil, srv.URL+"/auth", "admin", "wrong"); err == nil || !strings.Contains(err.Error(), "invalid_grant") {
		t.Fatalf("login with a wrong password: got %v, want invalid_grant", err)
	}
	a, err := stack.NewAdmin(ctx, nil, srv.URL+"/auth/", "admin", "pw")
	if err != nil {
		t.Fatal(err)
	}
	logins.Add(1) // the token Admin holds is no longer accepted
	id, err := a.UserID(ctx, stack.Realm, "alice")
	if err != nil || id != "u1" {
		t.Fatalf("UserID after the token expired: %q, %v; want u1", id, err)
	}
	if got := logins.Load(); got != 3 {
		t.Errorf("%d logins, want 3 (NewAdmin's, the one that made its token stale, the retry)", got)
	}
}

func TestCreateUserRefusals(t *testing.T) {
	ctx := context.Background()
	for _, tt := range []struct {
		name   string
		answer func(w http.ResponseWriter)
		want   string
	}{
		{"exists", func(w http.ResponseWriter) { http.Error(w, `{"errorMessage":"User exists"}`, http.StatusConflict) }, "already exists"},
		{"no Location", func(w http.ResponseWriter) { w.WriteHeader(http.StatusCreated) }, "without a Location"},
		{"refused", func(w http.ResponseWriter) { http.Error(w, `{"error":"bad"}`, http.StatusBadRequest) }, "400"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			srv, _ := fakeKeycloak(t, tt.answer)
			a, err := stack.NewAdmin(ctx, nil, srv.URL+"/auth", "admin", "pw")
			if err != nil {
				t.Fatal(err)
			}
			if _, err := a.CreateUser(ctx, stack.Realm, stack.User{Username: "x", Password: "y"}); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("got %v, want an error containing %q", err, tt.want)
			}
		})
	}
}
