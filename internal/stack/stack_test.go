package stack_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/portfolio-counselor/sagamachine/internal/stack"
)

type realmClient struct {
	ClientID                  string            `json:"clientId"`
	PublicClient              bool              `json:"publicClient"`
	Secret                    string            `json:"secret"`
	StandardFlowEnabled       bool              `json:"standardFlowEnabled"`
	ImplicitFlowEnabled       bool              `json:"implicitFlowEnabled"`
	DirectAccessGrantsEnabled bool              `json:"directAccessGrantsEnabled"`
	RedirectURIs              []string          `json:"redirectUris"`
	Attributes                map[string]string `json:"attributes"`
	ProtocolMappers           []struct {
		ProtocolMapper string            `json:"protocolMapper"`
		Config         map[string]string `json:"config"`
	} `json:"protocolMappers"`
}

func (c realmClient) audiences() []string {
	var out []string
	for _, m := range c.ProtocolMappers {
		if m.ProtocolMapper == "oidc-audience-mapper" && m.Config["access.token.claim"] == "true" {
			out = append(out, m.Config["included.client.audience"])
		}
	}
	return out
}

// containerEnv lists the environment variable names of the first
// container of Deployment name in a manifest file.
func containerEnv(t *testing.T, file, name string) []string {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	dec := yaml.NewDecoder(strings.NewReader(string(data)))
	for {
		var o struct {
			Kind     string `yaml:"kind"`
			Metadata struct {
				Name string `yaml:"name"`
			} `yaml:"metadata"`
			Spec struct {
				Template struct {
					Spec struct {
						Containers []struct {
							Env []struct {
								Name string `yaml:"name"`
							} `yaml:"env"`
						} `yaml:"containers"`
					} `yaml:"spec"`
				} `yaml:"template"`
			} `yaml:"spec"`
		}
		if err := dec.Decode(&o); err != nil {
			t.Fatalf("no Deployment %s in %s: %v", name, file, err)
		}
		if o.Kind == "Deployment" && o.Metadata.Name == name {
			var names []string
			for _, e := range o.Spec.Template.Spec.Containers[0].Env {
				names = append(names, e.Name)
			}
			return names
		}
	}
}

var placeholder = regexp.MustCompile(`\$\{([A-Za-z0-9_]+)(:-[^}]*)?\}`)

// TestRealmFile checks THE realm file (the one the manifests mount and
// make stack imports): its clients, flows and audiences, no users, and
// that Keycloak's Deployment provides every placeholder it uses.
func TestRealmFile(t *testing.T) {
	root := repoRoot(t)
	data, err := stack.RealmJSON(filepath.Join(root, "k8s/auth/keycloak-realm.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var realm struct {
		Realm               string        `json:"realm"`
		BruteForceProtected bool          `json:"bruteForceProtected"`
		RegistrationAllowed bool          `json:"registrationAllowed"`
		AccessTokenLifespan int           `json:"accessTokenLifespan"`
		Users               []any         `json:"users"`
		Clients             []realmClient `json:"clients"`
	}
	if err := json.Unmarshal(data, &realm); err != nil {
		t.Fatal(err)
	}
	if !realm.BruteForceProtected || realm.RegistrationAllowed || len(realm.Users) != 0 {
		t.Errorf("realm: bruteForceProtected %v, registrationAllowed %v, %d users; want brute-force detection, no self-registration, no users (no passwords in the manifests)",
			realm.BruteForceProtected, realm.RegistrationAllowed, len(realm.Users))
	}
	if realm.AccessTokenLifespan < 300 || realm.AccessTokenLifespan > 900 {
		t.Errorf("access tokens live %d s, want 5–15 minutes", realm.AccessTokenLifespan)
	}
	clients := map[string]realmClient{}
	for _, c := range realm.Clients {
		clients[c.ClientID] = c
		if c.ImplicitFlowEnabled {
			t.Errorf("client %s enables the implicit flow", c.ClientID)
		}
	}
	apis := []string{"saga-machine", "deals", "profile", "notification"}
	for _, a := range apis {
		if c := clients[a]; c.ClientID == "" || c.StandardFlowEnabled || c.DirectAccessGrantsEnabled || c.PublicClient {
			t.Errorf("API client %s: %+v, want a confidential client without login flows", a, c)
		}
	}
	o := clients["oauth2-proxy"]
	if o.PublicClient || !o.StandardFlowEnabled || o.DirectAccessGrantsEnabled || o.Secret != "${OAUTH2_PROXY_CLIENT_SECRET}" ||
		!slices.Equal(o.RedirectURIs, []string{"${SAGA_PUBLIC_URL}/oauth2/callback"}) {
		t.Errorf("client oauth2-proxy: %+v, want confidential, code flow only, secret and redirect from the environment", o)
	}
	p := clients[stack.APIClient]
	if !p.PublicClient || p.StandardFlowEnabled || !p.DirectAccessGrantsEnabled {
		t.Errorf("client %s: %+v, want public with the direct access grant only", stack.APIClient, p)
	}
	sc := clients["saga-console"]
	if !sc.PublicClient || !sc.StandardFlowEnabled || sc.DirectAccessGrantsEnabled || sc.Attributes["pkce.code.challenge.method"] != "S256" ||
		!slices.Equal(sc.RedirectURIs, []string{"${SAGA_PUBLIC_URL}/console/*"}) {
		t.Errorf("client saga-console: %+v, want public, code flow with PKCE S256, redirects under /console/", sc)
	}
	// Every client people log in with gives its access tokens oauth2-proxy's
	// audience (the ingress checks bearer tokens against it) and the APIs'.
	for id, want := range map[string][]string{"oauth2-proxy": append(apis, "oauth2-proxy"), stack.APIClient: append(apis, "oauth2-proxy"),
		"saga-console": {"saga-machine", "oauth2-proxy"}} {
		got := clients[id].audiences()
		slices.Sort(got)
		slices.Sort(want)
		if !slices.Equal(got, want) {
			t.Errorf("client %s: access token audiences %v, want %v", id, got, want)
		}
	}
	env := containerEnv(t, filepath.Join(root, "k8s/auth/keycloak.yaml"), "keycloak")
	for _, m := range placeholder.FindAllStringSubmatch(string(data), -1) {
		if !slices.Contains(env, m[1]) {
			t.Errorf("the realm file uses ${%s}, which Keycloak's Deployment does not set (env %v)", m[1], env)
		}
	}
}

// TestOAuth2ProxySettings checks what the local stack takes from
// k8s/auth/oauth2-proxy.yaml: the alpha config hands the services the
// ACCESS token, bearer tokens pass, and the Deployment sets every
// variable the config uses.
func TestOAuth2ProxySettings(t *testing.T) {
	root := repoRoot(t)
	file := filepath.Join(root, "k8s/auth/oauth2-proxy.yaml")
	cfg, args, err := stack.OAuth2Proxy(file, "/run/alpha.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"--alpha-config=/run/alpha.yaml", "--skip-jwt-bearer-tokens=true", "--reverse-proxy=true"} {
		if !slices.Contains(args, want) {
			t.Errorf("oauth2-proxy args %q lack %s", args, want)
		}
	}
	var alpha struct {
		Providers []struct {
			Provider            string `yaml:"provider"`
			ClientID            string `yaml:"clientID"`
			CodeChallengeMethod string `yaml:"code_challenge_method"`
		} `yaml:"providers"`
		InjectResponseHeaders []struct {
			Name   string `yaml:"name"`
			Values []struct {
				ClaimSource struct {
					Claim  string `yaml:"claim"`
					Prefix string `yaml:"prefix"`
				} `yaml:"claimSource"`
			} `yaml:"values"`
		} `yaml:"injectResponseHeaders"`
	}
	if err := yaml.Unmarshal(cfg, &alpha); err != nil {
		t.Fatal(err)
	}
	if len(alpha.Providers) != 1 || alpha.Providers[0].ClientID != "oauth2-proxy" || alpha.Providers[0].CodeChallengeMethod != "S256" {
		t.Errorf("providers %+v, want the client oauth2-proxy with PKCE S256", alpha.Providers)
	}
	h := alpha.InjectResponseHeaders
	if len(h) != 1 || h[0].Name != "Authorization" || len(h[0].Values) != 1 ||
		h[0].Values[0].ClaimSource.Claim != "access_token" || h[0].Values[0].ClaimSource.Prefix != "Bearer " {
		t.Errorf("injectResponseHeaders %+v, want Authorization: Bearer <access_token> (the services refuse ID tokens)", h)
	}
	env := containerEnv(t, file, "oauth2-proxy")
	for _, m := range placeholder.FindAllStringSubmatch(string(cfg), -1) {
		if !slices.Contains(env, m[1]) {
			t.Errorf("the alpha config uses ${%s}, which the Deployment does not set (env %v)", m[1], env)
		}
	}
}

func TestManifestsRefused(t *testing.T) {
	dir := t.TempDir()
	write := func(name, s string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	cm := func(key, value string) string {
		return "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: keycloak-realm\ndata:\n  " + key + ": '" + value + "'\n"
	}
	for _, tt := range []struct{ name, file, want string }{
		{"missing file", filepath.Join(dir, "nope.yaml"), "no such file"},
		{"no ConfigMap", write("a.yaml", "kind: Secret\nmetadata:\n  name: keycloak-realm\n"), "no ConfigMap keycloak-realm"},
		{"other key", write("b.yaml", cm("realm.json", `{"realm":"portfolio"}`)), "no ConfigMap keycloak-realm"},
		{"not JSON", write("c.yaml", cm(stack.RealmKey, `{"realm":`)), "portfolio-realm.json"},
		{"another realm", write("d.yaml", cm(stack.RealmKey, `{"realm":"master"}`)), "want portfolio"},
		{"not YAML", write("e.yaml", "kind: ["), "parse"},
	} {
		t.Run("realm "+tt.name, func(t *testing.T) {
			if _, err := stack.RealmJSON(tt.file); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("got %v, want an error containing %q", err, tt.want)
			}
		})
	}
	noAlpha := write("f.yaml", "kind: ConfigMap\nmetadata:\n  name: oauth2-proxy\ndata:\n  alpha-config.yaml: 'x: 1'\n---\n"+
		"kind: Deployment\nmetadata:\n  name: oauth2-proxy\nspec:\n  template:\n    spec:\n      containers:\n        - name: p\n          args: [--email-domain=*]\n")
	if _, _, err := stack.OAuth2Proxy(noAlpha, "/x"); err == nil || !strings.Contains(err.Error(), "no --alpha-config") {
		t.Errorf("oauth2-proxy without --alpha-config: got %v", err)
	}
	noDeployment := write("g.yaml", "kind: ConfigMap\nmetadata:\n  name: oauth2-proxy\ndata:\n  alpha-config.yaml: 'x: 1'\n")
	if _, _, err := stack.OAuth2Proxy(noDeployment, "/x"); err == nil || !strings.Contains(err.Error(), "no Deployment") {
		t.Errorf("oauth2-proxy without its Deployment: got %v", err)
	}
}

func TestLoadEnv(t *testing.T) {
	dir := t.TempDir()
	pw := filepath.Join(dir, "admin")
	if err := os.WriteFile(pw, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	full := `# comment
STACK_URL=http://127.0.0.1:58080
STACK_ISSUER=http://127.0.0.1:58080/auth/realms/portfolio
STACK_KEYCLOAK_URL=http://127.0.0.1:58080/auth
STACK_KEYCLOAK_ADMIN=admin
STACK_KEYCLOAK_ADMIN_PASSWORD_FILE=` + pw + `
STACK_SAGA_MACHINE_URL=http://127.0.0.1:58084
STACK_DEALS_URL=http://127.0.0.1:58085
STACK_PROFILE_URL=http://127.0.0.1:58086
STACK_NOTIFICATION_URL=http://127.0.0.1:58087
STACK_USER_NAME=alice
STACK_USER_PASSWORD=a
STACK_OPERATOR_NAME=olga
STACK_OPERATOR_PASSWORD=o
STACK_FUNDING_NAME=fred
STACK_FUNDING_PASSWORD=f
`
	if err := os.WriteFile(filepath.Join(dir, "stack.env"), []byte(full), 0o644); err != nil {
		t.Fatal(err)
	}
	env, err := stack.LoadEnv(dir)
	if err != nil {
		t.Fatal(err)
	}
	if env.URL != "http://127.0.0.1:58080" || env.AdminPassword != "s3cret" || env.Direct["deals"] != "http://127.0.0.1:58085" ||
		env.Accounts["operator"] != [2]string{"olga", "o"} || env.Accounts["funding"] != [2]string{"fred", "f"} {
		t.Errorf("LoadEnv: %+v", env)
	}
	for _, tt := range []struct{ name, edit, want string }{
		{"missing address", strings.Replace(full, "STACK_DEALS_URL=http://127.0.0.1:58085\n", "", 1), "deals URL"},
		{"missing password", strings.Replace(full, "STACK_OPERATOR_PASSWORD=o\n", "", 1), "operator account's password"},
		{"not KEY=VALUE", full + "garbage\n", "not KEY=VALUE"},
		{"unreadable admin password", strings.Replace(full, pw, filepath.Join(dir, "nope"), 1), "admin password"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			d := t.TempDir()
			if err := os.WriteFile(filepath.Join(d, "stack.env"), []byte(tt.edit), 0o644); err != nil {
				t.Fatal(err)
			}
			if _, err := stack.LoadEnv(d); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("got %v, want an error containing %q", err, tt.want)
			}
		})
	}
	if _, err := stack.LoadEnv(t.TempDir()); err == nil || !strings.Contains(err.Error(), "make stack") {
		t.Errorf("no stack.env: got %v, want a hint to make stack", err)
	}
}
