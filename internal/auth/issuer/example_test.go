package issuer_test

import (
	"encoding/json"
	"fmt"
	"log"
	"net/http"
	"net/url"

	"github.com/portfolio-counselor/sagamachine/internal/auth/issuer"
)

// Start serves a dev issuer; a demo client gets a token from its /token
// endpoint (tests usually call Issuer.Token directly instead).
func ExampleStart() {
	iss, stop, err := issuer.Start("127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	defer stop()

	resp, err := http.PostForm(iss.URL()+"/token", url.Values{
		"sub":   {"olga"},
		"roles": {"saga-operator"},
	})
	if err != nil {
		log.Fatal(err)
	}
	defer resp.Body.Close()
	var tok struct {
		AccessToken string `json:"access_token"`
		TokenType   string `json:"token_type"`
		ExpiresIn   int    `json:"expires_in"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&tok); err != nil {
		log.Fatal(err)
	}
	fmt.Println(resp.StatusCode, tok.TokenType, tok.ExpiresIn, tok.AccessToken != "")
	// Output: 200 Bearer 3600 true
}

// RegisterClient and AddUser prepare the sign-in of a browser application
// (the operator console): the client's exact redirect URI, PKCE S256, and
// the accounts of the login page at /authorize.
func ExampleIssuer_RegisterClient() {
	iss, stop, err := issuer.Start("127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	defer stop()
	if err := iss.RegisterClient(issuer.Client{
		ID:                     "saga-console",
		RedirectURIs:           []string{"http://127.0.0.1:8080/console/"},
		PostLogoutRedirectURIs: []string{"http://127.0.0.1:8080/console/signed-out.html"},
		WebOrigins:             []string{"http://127.0.0.1:8080"},
	}); err != nil {
		log.Fatal(err)
	}
	if err := iss.AddUser(issuer.User{Username: "demo", Password: "demo", Roles: []string{"saga-operator"}}); err != nil {
		log.Fatal(err)
	}
	// An authorization request for another redirect URI gets an error page,
	// never a redirect.
	q := url.Values{"response_type": {"code"}, "client_id": {"saga-console"}, "redirect_uri": {"http://evil.example/"},
		"scope": {"openid"}, "state": {"s"}, "code_challenge_method": {"S256"},
		"code_challenge": {"E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"}}
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := client.Get(iss.URL() + "/authorize?" + q.Encode())
	if err != nil {
		log.Fatal(err)
	}
	resp.Body.Close()
	fmt.Println(resp.StatusCode, resp.Header.Get("Location") == "")
	// Output: 400 true
}
