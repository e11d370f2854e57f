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
