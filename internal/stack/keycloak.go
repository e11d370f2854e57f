package stack

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// Realm is the realm of the seed's services.
const Realm = "portfolio"

// APIClient is the realm's public client for API callers (Postman, curl):
// direct access grant, the four API audiences and oauth2-proxy's.
const APIClient = "postman"

// maxBody bounds every Keycloak response read here.
const maxBody = 1 << 20

// Token is a token endpoint's answer.
type Token struct {
	AccessToken  string `json:"access_token"`
	IDToken      string `json:"id_token"`
	RefreshToken string `json:"refresh_token"`
	ExpiresIn    int    `json:"expires_in"`
	TokenType    string `json:"token_type"`
}

// httpClient returns c, or a client with a 20 s timeout.
func httpClient(c *http.Client) *http.Client {
	if c != nil {
		return c
	}
	return &http.Client{Timeout: 20 * time.Second}
}

// PasswordToken gets a token for user from realm's token endpoint
// (POST {base}/realms/{realm}/protocol/openid-connect/token) with the
// direct access grant of the public client clientID, scope openid. base
// is Keycloak's public URL including /auth, e.g. http://127.0.0.1:58080/auth.
func PasswordToken(ctx context.Context, c *http.Client, base, realm, clientID, user, password string) (Token, error) {
	form := url.Values{"grant_type": {"password"}, "client_id": {clientID}, "username": {user},
		"password": {password}, "scope": {"openid"}}
	return postToken(ctx, httpClient(c), strings.TrimSuffix(base, "/")+"/realms/"+url.PathEscape(realm)+"/protocol/openid-connect/token", form)
}

func postToken(ctx context.Context, c *http.Client, endpoint string, form url.Values) (Token, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, endpoint, strings.NewReader(form.Encode()))
	if err != nil {
		return Token{}, fmt.Errorf("stack: token from %s: %w", endpoint, err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := c.Do(req)
	if err != nil {
		return Token{}, fmt.Errorf("stack: token from %s: %w", endpoint, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, maxBody))
	if resp.StatusCode != http.StatusOK {
		return Token{}, fmt.Errorf("stack: token from %s for %s: %s: %s", endpoint, form.Get("username"), resp.Status, body)
	}
	var t Token
	if err := json.Unmarshal(body, &t); err != nil || t.AccessToken == "" {
		return Token{}, fmt.Errorf("stack: token from %s: no access token in %q (%v)", endpoint, body, err)
	}
	return t, nil
}

// Admin calls Keycloak's admin REST API with a token of the master
// realm's administrator (client admin-cli), as Postman would (seed 2.2).
type Admin struct {
	base, user, password string
	c                    *http.Client
	token                string
}

// User is a user to register.
type User struct {
	// Username is the login name.
	Username string
	// Password is set as a permanent password.
	Password string
	// Email, FirstName and LastName fill the profile Keycloak asks for
	// (without them the first login stops at "update your account").
	Email, FirstName, LastName string
	// Roles are realm roles granted to her.
	Roles []string
}

// NewAdmin logs in as the master realm's administrator. base is Keycloak's
// public URL including /auth. The administrator's tokens are short (a
// minute): Admin logs in again when the admin API answers 401.
func NewAdmin(ctx context.Context, c *http.Client, base, user, password string) (*Admin, error) {
	a := &Admin{base: strings.TrimSuffix(base, "/"), user: user, password: password, c: httpClient(c)}
	if err := a.login(ctx); err != nil {
		return nil, err
	}
	return a, nil
}

func (a *Admin) login(ctx context.Context) error {
	form := url.Values{"grant_type": {"password"}, "client_id": {"admin-cli"}, "username": {a.user}, "password": {a.password}}
	t, err := postToken(ctx, a.c, a.base+"/realms/master/protocol/openid-connect/token", form)
	if err != nil {
		return fmt.Errorf("stack: Keycloak admin login: %w", err)
	}
	a.token = t.AccessToken
	return nil
}

// do sends a JSON request to the admin API and decodes a JSON answer into
// out (when not nil). It returns the response's status and Location.
func (a *Admin) do(ctx context.Context, method, path string, in, out any) (int, string, error) {
	status, loc, err := a.once(ctx, method, path, in, out)
	if status == http.StatusUnauthorized {
		if err := a.login(ctx); err != nil {
			return status, "", err
		}
		status, loc, err = a.once(ctx, method, path, in, out)
	}
	return status, loc, err
}

func (a *Admin) once(ctx context.Context, method, path string, in, out any) (int, string, error) {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return 0, "", fmt.Errorf("stack: %s %s: %w", method, path, err)
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, a.base+"/admin/realms/"+path, body)
	if err != nil {
		return 0, "", fmt.Errorf("stack: %s %s: %w", method, path, err)
	}
	req.Header.Set("Authorization", "Bearer "+a.token)
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := a.c.Do(req)
	if err != nil {
		return 0, "", fmt.Errorf("stack: %s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(io.LimitReader(resp.Body, maxBody))
	if resp.StatusCode >= 300 && resp.StatusCode != http.StatusConflict {
		return resp.StatusCode, "", fmt.Errorf("stack: %s %s: %s: %s", method, path, resp.Status, raw)
	}
	if out != nil && resp.StatusCode < 300 {
		if err := json.Unmarshal(raw, out); err != nil {
			return resp.StatusCode, "", fmt.Errorf("stack: %s %s: decode %q: %w", method, path, raw, err)
		}
	}
	return resp.StatusCode, resp.Header.Get("Location"), nil
}

// UserID returns the id of realm's user username, "" when there is none.
func (a *Admin) UserID(ctx context.Context, realm, username string) (string, error) {
	var found []struct {
		ID       string `json:"id"`
		Username string `json:"username"`
	}
	q := url.Values{"username": {username}, "exact": {"true"}}
	if _, _, err := a.do(ctx, http.MethodGet, url.PathEscape(realm)+"/users?"+q.Encode(), nil, &found); err != nil {
		return "", err
	}
	for _, u := range found {
		if strings.EqualFold(u.Username, username) {
			return u.ID, nil
		}
	}
	return "", nil
}

// CreateUser registers u in realm (POST /admin/realms/{realm}/users, the
// seed's 2.2) with her password and realm roles and returns her id. A user
// of that name already there is an error.
func (a *Admin) CreateUser(ctx context.Context, realm string, u User) (string, error) {
	rep := map[string]any{
		"username": u.Username, "email": u.Email, "firstName": u.FirstName, "lastName": u.LastName,
		"enabled": true, "emailVerified": true,
		"credentials": []map[string]any{{"type": "password", "value": u.Password, "temporary": false}},
	}
	status, loc, err := a.do(ctx, http.MethodPost, url.PathEscape(realm)+"/users", rep, nil)
	if err != nil {
		return "", err
	}
	if status == http.StatusConflict {
		return "", fmt.Errorf("stack: user %s already exists in realm %s", u.Username, realm)
	}
	id := loc[strings.LastIndex(loc, "/")+1:]
	if id == "" {
		return "", fmt.Errorf("stack: Keycloak created %s without a Location", u.Username)
	}
	return id, a.grant(ctx, realm, id, u.Roles)
}

// EnsureUser makes realm's user u exist with u's password, profile and at
// least u's realm roles (idempotent: creates her, or resets her password
// and grants the missing roles).
func (a *Admin) EnsureUser(ctx context.Context, realm string, u User) (string, error) {
	id, err := a.UserID(ctx, realm, u.Username)
	if err != nil {
		return "", err
	}
	if id == "" {
		return a.CreateUser(ctx, realm, u)
	}
	rep := map[string]any{"email": u.Email, "firstName": u.FirstName, "lastName": u.LastName, "enabled": true, "emailVerified": true}
	if _, _, err := a.do(ctx, http.MethodPut, url.PathEscape(realm)+"/users/"+url.PathEscape(id), rep, nil); err != nil {
		return "", err
	}
	cred := map[string]any{"type": "password", "value": u.Password, "temporary": false}
	if _, _, err := a.do(ctx, http.MethodPut, url.PathEscape(realm)+"/users/"+url.PathEscape(id)+"/reset-password", cred, nil); err != nil {
		return "", err
	}
	return id, a.grant(ctx, realm, id, u.Roles)
}

// grant adds realm roles to user id.
func (a *Admin) grant(ctx context.Context, realm, id string, roles []string) error {
	if len(roles) == 0 {
		return nil
	}
	var reps []map[string]any
	for _, r := range roles {
		var role map[string]any
		if _, _, err := a.do(ctx, http.MethodGet, url.PathEscape(realm)+"/roles/"+url.PathEscape(r), nil, &role); err != nil {
			return fmt.Errorf("stack: realm role %s: %w", r, err)
		}
		reps = append(reps, role)
	}
	_, _, err := a.do(ctx, http.MethodPost, url.PathEscape(realm)+"/users/"+url.PathEscape(id)+"/role-mappings/realm", reps, nil)
	return err
}

// DeleteUser removes realm's user id.
func (a *Admin) DeleteUser(ctx context.Context, realm, id string) error {
	_, _, err := a.do(ctx, http.MethodDelete, url.PathEscape(realm)+"/users/"+url.PathEscape(id), nil, nil)
	return err
}

// CreateClient registers a client in realm from its representation
// (Keycloak's ClientRepresentation as a map) and returns its internal id.
func (a *Admin) CreateClient(ctx context.Context, realm string, rep map[string]any) (string, error) {
	status, loc, err := a.do(ctx, http.MethodPost, url.PathEscape(realm)+"/clients", rep, nil)
	if err != nil {
		return "", err
	}
	if status == http.StatusConflict {
		return "", fmt.Errorf("stack: client %v already exists in realm %s", rep["clientId"], realm)
	}
	return loc[strings.LastIndex(loc, "/")+1:], nil
}

// DeleteClient removes realm's client by its internal id.
func (a *Admin) DeleteClient(ctx context.Context, realm, id string) error {
	_, _, err := a.do(ctx, http.MethodDelete, url.PathEscape(realm)+"/clients/"+url.PathEscape(id), nil, nil)
	return err
}

// ClientSessionUsers lists the user names with a session at realm's client
// clientID (GET /admin/realms/{realm}/clients/{id}/user-sessions): who has
// signed in through that client.
func (a *Admin) ClientSessionUsers(ctx context.Context, realm, clientID string) ([]string, error) {
	var clients []struct {
		ID string `json:"id"`
	}
	q := url.Values{"clientId": {clientID}}
	if _, _, err := a.do(ctx, http.MethodGet, url.PathEscape(realm)+"/clients?"+q.Encode(), nil, &clients); err != nil {
		return nil, err
	}
	if len(clients) != 1 {
		return nil, fmt.Errorf("stack: realm %s has %d clients %q", realm, len(clients), clientID)
	}
	var sessions []struct {
		Username string `json:"username"`
	}
	if _, _, err := a.do(ctx, http.MethodGet, url.PathEscape(realm)+"/clients/"+url.PathEscape(clients[0].ID)+"/user-sessions", nil, &sessions); err != nil {
		return nil, err
	}
	var out []string
	for _, s := range sessions {
		out = append(out, s.Username)
	}
	return out, nil
}
