package main

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestRunConsoleSignIn: the one-command run needs nothing pasted. With
// the accounts it prints, the console's sign-in (authorization code +
// PKCE at the in-process issuer, as the console's JavaScript does it)
// gives tokens the API takes: demo operates, viewer reads, guest gets no
// access; a wrong password gets no code. The redirect URI is registered
// for both 127.0.0.1 and localhost.
func TestRunConsoleSignIn(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	out, logs := &syncBuf{}, &syncBuf{}
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"--db-dir", t.TempDir(), "--free-ports", "--no-demo"}, envMap(nil), out, logs)
	}()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("run after Ctrl-C = %v", err)
		}
	}()
	for deadline := time.Now().Add(60 * time.Second); !strings.Contains(out.String(), "Serving until Ctrl-C"); time.Sleep(20 * time.Millisecond) {
		select {
		case err := <-done:
			t.Fatalf("run returned early: %v\n%s\n%s", err, out, logs)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("not serving:\n%s\n%s", out, logs)
		}
	}
	text := out.String()
	m := regexp.MustCompile(`Console: open (http://127\.0\.0\.1:\d+)/console/ and sign in`).FindStringSubmatch(text)
	if m == nil {
		t.Fatalf("stdout does not say where to sign in:\n%s", text)
	}
	base := m[1]
	logins := map[string]string{}
	for _, l := range regexp.MustCompile(`(?m)^  user (\S+)\s+password (\S+)\s+\((.*)\)$`).FindAllStringSubmatch(text, -1) {
		logins[l[1]] = l[2]
	}
	if len(logins) != 3 || logins["demo"] == "" {
		t.Fatalf("printed logins = %v, want demo, viewer and guest:\n%s", logins, text)
	}

	var cfg struct {
		Auth string `json:"auth"`
		OIDC struct {
			ClientID              string `json:"client_id"`
			Scope                 string `json:"scope"`
			AuthorizationEndpoint string `json:"authorization_endpoint"`
			TokenEndpoint         string `json:"token_endpoint"`
		} `json:"oidc"`
	}
	getJSON(t, base+"/console/config.json", "", &cfg)
	if cfg.Auth != "oidc" {
		t.Fatalf("console config = %+v, want oidc", cfg)
	}

	// signIn does what the console's JavaScript does, from console origin
	// origin; it returns the access token ("" if no code came back).
	signIn := func(t *testing.T, origin, user, password string) string {
		t.Helper()
		jar, _ := cookiejar.New(nil)
		c := &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
		raw := make([]byte, 32)
		_, _ = rand.Read(raw)
		verifier := base64.RawURLEncoding.EncodeToString(raw)
		sum := sha256.Sum256([]byte(verifier))
		redirect := origin + "/console/"
		q := url.Values{"response_type": {"code"}, "client_id": {cfg.OIDC.ClientID}, "redirect_uri": {redirect},
			"scope": {cfg.OIDC.Scope}, "state": {"s"}, "code_challenge": {base64.RawURLEncoding.EncodeToString(sum[:])},
			"code_challenge_method": {"S256"}}
		resp, err := c.Get(cfg.OIDC.AuthorizationEndpoint + "?" + q.Encode())
		if err != nil {
			t.Fatal(err)
		}
		page, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		form := url.Values{"username": {user}, "password": {password}}
		for _, f := range regexp.MustCompile(`name="(request|csrf)" value="([^"]*)"`).FindAllStringSubmatch(string(page), -1) {
			form.Set(f[1], f[2])
		}
		if resp.StatusCode != http.StatusOK || form.Get("request") == "" {
			t.Fatalf("authorize for %s = %d, want the login page:\n%s", redirect, resp.StatusCode, page)
		}
		issuerURL, _ := url.Parse(cfg.OIDC.AuthorizationEndpoint)
		req, _ := http.NewRequest(http.MethodPost, issuerURL.Scheme+"://"+issuerURL.Host+"/login", strings.NewReader(form.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Header.Set("Origin", issuerURL.Scheme+"://"+issuerURL.Host)
		resp, err = c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		loc, _ := url.Parse(resp.Header.Get("Location"))
		if loc == nil || loc.Query().Get("code") == "" {
			return ""
		}
		if !strings.HasPrefix(loc.String(), redirect+"?") || loc.Query().Get("state") != "s" {
			t.Fatalf("callback %s, want %s with state s", loc, redirect)
		}
		tf := url.Values{"grant_type": {"authorization_code"}, "code": {loc.Query().Get("code")}, "redirect_uri": {redirect},
			"client_id": {cfg.OIDC.ClientID}, "code_verifier": {verifier}}
		req, _ = http.NewRequest(http.MethodPost, cfg.OIDC.TokenEndpoint, strings.NewReader(tf.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Header.Set("Origin", origin)
		resp, err = http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var tok struct {
			AccessToken string `json:"access_token"`
		}
		if err := json.NewDecoder(resp.Body).Decode(&tok); err != nil || resp.StatusCode != http.StatusOK || resp.Header.Get("Access-Control-Allow-Origin") != origin {
			t.Fatalf("token exchange from %s = %d ACAO %q (%v)", origin, resp.StatusCode, resp.Header.Get("Access-Control-Allow-Origin"), err)
		}
		return tok.AccessToken
	}

	localhost := strings.Replace(base, "127.0.0.1", "localhost", 1)
	for _, tt := range []struct {
		user, origin          string
		wantRead, wantOperate bool
	}{
		{"demo", base, true, true},
		{"demo", localhost, true, true},
		{"viewer", base, true, false},
		{"guest", base, false, false},
	} {
		t.Run(tt.user+" from "+tt.origin, func(t *testing.T) {
			tok := signIn(t, tt.origin, tt.user, logins[tt.user])
			if tok == "" {
				t.Fatalf("no code for %s with the printed password", tt.user)
			}
			var me struct {
				Subject    string `json:"subject"`
				MayRead    bool   `json:"may_read"`
				MayOperate bool   `json:"may_operate"`
			}
			getJSON(t, base+"/api/v1/me", tok, &me)
			if me.Subject != tt.user || me.MayRead != tt.wantRead || me.MayOperate != tt.wantOperate {
				t.Errorf("me = %+v, want %s read %v operate %v", me, tt.user, tt.wantRead, tt.wantOperate)
			}
		})
	}
	if tok := signIn(t, base, "demo", "not-the-password"); tok != "" {
		t.Errorf("a wrong password got a token")
	}
}

func getJSON(t *testing.T, u, token string, v any) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, u, nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("GET %s = %d %s", u, resp.StatusCode, b)
	}
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		t.Fatalf("GET %s: %v", u, err)
	}
}
