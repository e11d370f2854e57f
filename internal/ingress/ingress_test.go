package ingress_test

import (
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/portfolio-counselor/sagamachine/internal/ingress"
)

// manifestPath is k8s/ingress.yaml of this repository.
func manifestPath(tb testing.TB) string {
	tb.Helper()
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		tb.Fatal("no caller")
	}
	return filepath.Join(filepath.Dir(file), "..", "..", "k8s", "ingress.yaml")
}

// localConfig maps every Service of the manifests to a loopback address.
func localConfig(prefix string, services map[string]string) ingress.Config {
	if services == nil {
		services = map[string]string{
			"auth/keycloak": "127.0.0.1:1", "auth/oauth2-proxy": "127.0.0.1:2", "default/saga-machine": "127.0.0.1:3",
			"default/deals": "127.0.0.1:4", "default/profile": "127.0.0.1:5", "default/notification": "127.0.0.1:6",
		}
	}
	return ingress.Config{Listen: "127.0.0.1:8080", Prefix: prefix,
		Hosts: map[string][]string{"arch.homework": {"127.0.0.1", "localhost"}}, Services: services}
}

func TestParseManifests(t *testing.T) {
	ings, err := ingress.ParseFile(manifestPath(t))
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]ingress.Route{}
	for _, r := range ingress.Routes(ings) {
		if r.Host != "arch.homework" {
			t.Errorf("route %s: host %q, want arch.homework", r.Path, r.Host)
		}
		got[r.Path] = r
	}
	tests := []struct {
		path, backend string
		auth          bool
		rewrite       string
	}{
		{"/auth", "auth/keycloak", false, ""},
		{"/oauth2", "auth/oauth2-proxy", false, ""},
		{"/api/v1", "default/saga-machine", true, ""},
		{"/console", "default/saga-machine", true, ""},
		{"/deals/api/v1(/|$)(.*)", "default/deals", true, "/$2"},
		{"/profile/api/v1(/|$)(.*)", "default/profile", true, "/$2"},
		{"/notification/api/v1(/|$)(.*)", "default/notification", true, "/$2"},
	}
	if len(got) != len(tests) {
		t.Errorf("routes %v, want %d", got, len(tests))
	}
	for _, tt := range tests {
		r, ok := got[tt.path]
		if !ok {
			t.Errorf("no route %s", tt.path)
			continue
		}
		if r.Backend != tt.backend || r.Authenticated != tt.auth || r.RewriteTarget != tt.rewrite {
			t.Errorf("route %s: got backend %s auth %v rewrite %q, want %s %v %q", tt.path, r.Backend, r.Authenticated, r.RewriteTarget, tt.backend, tt.auth, tt.rewrite)
		}
	}
}

const oneIngress = `apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: x
  namespace: default
  annotations:
%s
spec:
  rules:
    - host: arch.homework
      http:
        paths:
          - path: %s
            pathType: %s
            backend:
              service:
                name: deals
                port:
                  name: http
`

func manifest(annotations, path, pathType string) []byte {
	if annotations == "" {
		annotations = "    a: b"
	}
	return []byte(strings.Replace(strings.Replace(strings.Replace(oneIngress, "%s", annotations, 1), "%s", path, 1), "%s", pathType, 1))
}

func TestParseRefuses(t *testing.T) {
	tests := []struct {
		name, yaml, want string
	}{
		{"no service backend", strings.Replace(string(manifest("", "/x", "Prefix")), "service:", "resource:", 1), "no Service backend"},
		{"no port", strings.Replace(string(manifest("", "/x", "Prefix")), "name: http", "", 1), "names no port"},
		{"unknown path type", string(manifest("", "/x", "Fuzzy")), "pathType"},
		{"relative path", string(manifest("", "x", "Prefix")), "must start with /"},
		{"old apiVersion", strings.Replace(string(manifest("", "/x", "Prefix")), "networking.k8s.io/v1", "extensions/v1beta1", 1), "apiVersion"},
		{"not YAML", "kind: [", "document 1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ingress.Parse([]byte(tt.yaml))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Parse: got %v, want an error containing %q", err, tt.want)
			}
		})
	}
}

func TestRenderRefuses(t *testing.T) {
	const auth = "    nginx.ingress.kubernetes.io/auth-url: http://oauth2-proxy.auth.svc.cluster.local:4180/oauth2/auth\n"
	tests := []struct {
		name        string
		annotations string
		path, typ   string
		edit        func(*ingress.Config)
		want        string
	}{
		{"unknown annotation", "    nginx.ingress.kubernetes.io/configuration-snippet: deny all;", "/x", "Prefix", nil, "not supported"},
		{"annotation value with a semicolon", "    nginx.ingress.kubernetes.io/auth-url: http://a.b/x;evil", "/x", "Prefix", nil, "does not copy"},
		{"auth-signin without auth-url", "    nginx.ingress.kubernetes.io/auth-signin: http://$host/oauth2/start", "/x", "Prefix", nil, "without auth-url"},
		{"auth-url outside the cluster", "    nginx.ingress.kubernetes.io/auth-url: http://auth.example.com/check", "/x", "Prefix", nil, "not a cluster Service"},
		{"auth-url to an unknown service", "    nginx.ingress.kubernetes.io/auth-url: http://nobody.auth:4180/x", "/x", "Prefix", nil, "no local address"},
		{"auth-signin elsewhere", auth + "    nginx.ingress.kubernetes.io/auth-signin: https://login.example/x", "/x", "Prefix", nil, "does not start with"},
		{"rewrite without use-regex", "    nginx.ingress.kubernetes.io/rewrite-target: /$2", "/x", "Prefix", nil, "needs use-regex"},
		{"regex without use-regex", "", "/x(/|$)(.*)", "ImplementationSpecific", nil, "needs use-regex"},
		{"bad buffer size", "    nginx.ingress.kubernetes.io/proxy-buffer-size: lots", "/x", "Prefix", nil, "not a size"},
		{"bad use-regex", "    nginx.ingress.kubernetes.io/use-regex: yes", "/x", "Prefix", nil, "want true or false"},
		{"path that breaks out of its quotes", "", `/x";deny`, "Prefix", nil, "characters"},
		{"path with a brace", "", "/x{", "Prefix", nil, "characters"},
		{"response header that is not a name", auth + "    nginx.ingress.kubernetes.io/auth-response-headers: \"X-A;b\"", "/x", "Prefix", nil, "not a header name"},
		{"public listen address", "", "/x", "Prefix", func(c *ingress.Config) { c.Listen = "0.0.0.0:8080" }, "not a loopback"},
		{"listen host name", "", "/x", "Prefix", func(c *ingress.Config) { c.Listen = "localhost:8080" }, "not a loopback"},
		{"relative prefix", "", "/x", "Prefix", func(c *ingress.Config) { c.Prefix = "run" }, "absolute"},
		{"host without local names", "", "/x", "Prefix", func(c *ingress.Config) { c.Hosts = nil }, "no local server name"},
		{"service without local address", "", "/x", "Prefix", func(c *ingress.Config) { delete(c.Services, "default/deals") }, "no local address for Service default/deals"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ings, err := ingress.Parse(manifest(tt.annotations, tt.path, tt.typ))
			if err == nil {
				cfg := localConfig("/run/x", nil)
				if tt.edit != nil {
					tt.edit(&cfg)
				}
				_, err = ingress.Render(ings, cfg)
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("got %v, want an error containing %q", err, tt.want)
			}
		})
	}
}

// TestRenderManifests checks the shape of the configuration generated from
// k8s/ingress.yaml; TestServedByNginx runs it.
func TestRenderManifests(t *testing.T) {
	ings, err := ingress.ParseFile(manifestPath(t))
	if err != nil {
		t.Fatal(err)
	}
	conf, err := ingress.Render(ings, localConfig("/run/stack/nginx", nil))
	if err != nil {
		t.Fatal(err)
	}
	s := string(conf)
	for _, want := range []string{
		"load_module /usr/lib/nginx/modules/ngx_http_set_misc_module.so;",
		"listen 127.0.0.1:8080 default_server;",
		"server_name 127.0.0.1 localhost;",
		`location ~* "^/deals/api/v1(/|$)(.*)" {`,
		`rewrite "(?i)^/deals/api/v1(/|$)(.*)" /$2 break;`,
		"auth_request /_external-auth-default-participants;",
		"proxy_set_header Authorization $auth_response_header_0;",
		"proxy_pass http://127.0.0.1:2/oauth2/auth;",
		"set_escape_uri $escaped_request_uri $request_uri;",
		`return 302 "$scheme://$http_host/oauth2/start?rd=$escaped_request_uri";`,
		`location = "/auth" {`, `location "/auth/" {`,
		"proxy_buffer_size 16k;",
	} {
		if !strings.Contains(s, want) {
			t.Errorf("generated configuration lacks %q", want)
		}
	}
	// Keycloak and oauth2-proxy are served without the auth check.
	for _, loc := range []string{`location "/oauth2/" {`, `location "/auth/" {`} {
		i := strings.Index(s, loc)
		block := s[i : i+strings.Index(s[i:], "\n\t\t}")]
		if strings.Contains(block, "auth_request") {
			t.Errorf("%s asks oauth2-proxy:\n%s", loc, block)
		}
	}
	if strings.Contains(s, "0.0.0.0") || strings.Contains(s, "arch.homework;") {
		t.Errorf("the local configuration listens beyond loopback or serves the cluster host name:\n%s", s)
	}
}
