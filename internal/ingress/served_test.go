package ingress_test

import (
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/portfolio-counselor/sagamachine/internal/ingress"
	"github.com/portfolio-counselor/sagamachine/internal/testenv"
)

// seen is what a backend received.
type seen struct {
	Service, Method, Path, Authorization, Host, ForwardedProto, Cookie string
}

// recorder is a stand-in backend Service: it answers every request with
// what it received and counts them.
type recorder struct {
	name string
	mu   sync.Mutex
	hits []seen
	srv  *httptest.Server
}

func newRecorder(tb testing.TB, name string) *recorder {
	r := &recorder{name: name}
	r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		s := seen{Service: name, Method: req.Method, Path: req.URL.RequestURI(), Authorization: req.Header.Get("Authorization"),
			Host: req.Host, ForwardedProto: req.Header.Get("X-Forwarded-Proto"), Cookie: req.Header.Get("Cookie")}
		r.mu.Lock()
		r.hits = append(r.hits, s)
		r.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(s)
	}))
	tb.Cleanup(r.srv.Close)
	return r
}

func (r *recorder) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.hits)
}

// sessionToken is what the stand-in oauth2-proxy hands upstream for a
// session: the access token of the session.
const sessionToken = "Bearer access-token-of-the-session"

// authStandIn plays oauth2-proxy's part for the routing test (the real one
// runs in internal/stack's TestFrontDoor): /oauth2/auth is 202 with the
// session's token for the cookie "session=ok" or the bearer "ok", 401
// otherwise; the rest of /oauth2/ answers like a backend.
func authStandIn(tb testing.TB, rec *recorder) *httptest.Server {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if req.URL.Path != "/oauth2/auth" {
			rec.srv.Config.Handler.ServeHTTP(w, req)
			return
		}
		if req.ContentLength > 0 {
			http.Error(w, "the auth request carries a body", http.StatusBadRequest)
			return
		}
		c, _ := req.Cookie("session")
		switch {
		case c != nil && c.Value == "ok":
			w.Header().Set("Authorization", sessionToken)
		case req.Header.Get("Authorization") == "Bearer ok":
			w.Header().Set("Authorization", "Bearer ok")
		default:
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		if req.Header.Get("X-Original-URL") == "" || req.Header.Get("X-Auth-Request-Redirect") == "" {
			http.Error(w, "no X-Original-URL / X-Auth-Request-Redirect", http.StatusBadRequest)
			return
		}
		w.WriteHeader(http.StatusAccepted)
	}))
	tb.Cleanup(srv.Close)
	return srv
}

func freePort(tb testing.TB) string {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// startNginx runs Debian's nginx with conf until the test ends.
func startNginx(tb testing.TB, conf []byte, prefix, listen string) {
	tb.Helper()
	bin, err := exec.LookPath("nginx")
	if err != nil {
		testenv.Missing(tb, "nginx (apt-get install nginx libnginx-mod-http-set-misc; make stack installs it)", err)
	}
	if _, err := os.Stat("/usr/lib/nginx/modules/ngx_http_set_misc_module.so"); err != nil {
		testenv.Missing(tb, "nginx's set-misc module (apt-get install libnginx-mod-http-set-misc)", err)
	}
	if err := os.MkdirAll(filepath.Join(prefix, "tmp"), 0o755); err != nil {
		tb.Fatal(err)
	}
	path := filepath.Join(prefix, "nginx.conf")
	if err := os.WriteFile(path, conf, 0o644); err != nil {
		tb.Fatal(err)
	}
	errLog := filepath.Join(prefix, "error.log")
	if out, err := exec.Command(bin, "-t", "-q", "-c", path, "-e", errLog).CombinedOutput(); err != nil {
		tb.Fatalf("nginx -t: %v\n%s\n%s", err, out, conf)
	}
	cmd := exec.Command(bin, "-c", path, "-e", errLog, "-g", "daemon off;")
	// Its own process group, killed whole: a master killed alone would
	// leave its workers listening.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM) // nginx: fast shutdown of master and workers
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
		}
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) // and any worker left behind
		<-done
		if tb.Failed() {
			b, _ := os.ReadFile(errLog)
			tb.Logf("nginx error log:\n%s", b)
		}
	})
	for i := 0; i < 100; i++ {
		if c, err := net.Dial("tcp", listen); err == nil {
			c.Close()
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	tb.Fatalf("nginx does not listen on %s", listen)
}

// probe is the request path that exercises a route and the path its
// backend must receive.
func probe(tb testing.TB, r ingress.Route) (request, backend string) {
	tb.Helper()
	switch {
	case r.Regex && strings.HasSuffix(r.Path, "(/|$)(.*)") && r.RewriteTarget == "/$2":
		base := strings.TrimSuffix(r.Path, "(/|$)(.*)")
		return base + "/probe/a?x=1&y=2", "/probe/a?x=1&y=2"
	case !r.Regex && r.Type == ingress.PathPrefix && r.RewriteTarget == "":
		return r.Path + "/probe/a?x=1&y=2", r.Path + "/probe/a?x=1&y=2"
	}
	tb.Fatalf("route %s (%s, regex %v, rewrite %q): no probe for this shape; add one", r.Path, r.Type, r.Regex, r.RewriteTarget)
	return "", ""
}

// TestServedByNginx generates the configuration from k8s/ingress.yaml,
// runs it in Debian's nginx with a recording backend per Service and a
// stand-in for oauth2-proxy, and checks that every Ingress path is served:
// by its Service, with the rewritten path, after the auth check where the
// Ingress asks for one (the session's token handed upstream, a client's
// own Authorization replaced), and that a request without credentials is
// sent to the sign-in without reaching the Service.
func TestServedByNginx(t *testing.T) {
	ings, err := ingress.ParseFile(manifestPath(t))
	if err != nil {
		t.Fatal(err)
	}
	backends := map[string]*recorder{}
	services := map[string]string{}
	for _, name := range []string{"auth/keycloak", "auth/oauth2-proxy", "default/saga-machine", "default/deals", "default/profile", "default/notification"} {
		backends[name] = newRecorder(t, name)
		services[name] = strings.TrimPrefix(backends[name].srv.URL, "http://")
	}
	services["auth/oauth2-proxy"] = strings.TrimPrefix(authStandIn(t, backends["auth/oauth2-proxy"]).URL, "http://")
	listen := freePort(t)
	prefix := t.TempDir()
	cfg := localConfig(prefix, services)
	cfg.Listen = listen
	conf, err := ingress.Render(ings, cfg)
	if err != nil {
		t.Fatal(err)
	}
	startNginx(t, conf, prefix, listen)
	base := "http://" + listen
	noRedirect := &http.Client{Timeout: 10 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	get := func(method, path string, hdr map[string]string) (*http.Response, seen) {
		t.Helper()
		req, err := http.NewRequest(method, base+path, strings.NewReader(`{"a":1}`))
		if err != nil {
			t.Fatal(err)
		}
		for k, v := range hdr {
			if k == "Host" {
				req.Host = v
			} else {
				req.Header.Set(k, v)
			}
		}
		resp, err := noRedirect.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		var s seen
		_ = json.Unmarshal(b, &s)
		return resp, s
	}

	routes := ingress.Routes(ings)
	if len(routes) == 0 {
		t.Fatal("no routes in k8s/ingress.yaml")
	}
	for _, r := range routes {
		t.Run(r.Path, func(t *testing.T) {
			reqPath, wantPath := probe(t, r)
			rec := backends[r.Backend]
			for _, method := range []string{"GET", "POST"} {
				// With a session (and a forged Authorization the ingress must replace).
				resp, s := get(method, reqPath, map[string]string{"Cookie": "session=ok", "Authorization": "Bearer forged"})
				if resp.StatusCode != http.StatusOK || s.Service != r.Backend || s.Path != wantPath || s.Method != method {
					t.Fatalf("%s %s: got %d from %+v, want %s to get %s %s", method, reqPath, resp.StatusCode, s, r.Backend, method, wantPath)
				}
				if s.Host != listen || s.ForwardedProto != "http" {
					t.Errorf("%s %s: backend saw Host %q, X-Forwarded-Proto %q; want %q, http", method, reqPath, s.Host, s.ForwardedProto, listen)
				}
				wantAuth := "Bearer forged"
				if r.Authenticated {
					wantAuth = sessionToken
				}
				if s.Authorization != wantAuth {
					t.Errorf("%s %s: backend got Authorization %q, want %q", method, reqPath, s.Authorization, wantAuth)
				}
				// A client's own valid bearer token passes the check and reaches the Service.
				if _, s := get(method, reqPath, map[string]string{"Authorization": "Bearer ok"}); s.Service != r.Backend || s.Authorization != "Bearer ok" {
					t.Errorf("%s %s with its own bearer token: backend saw %+v", method, reqPath, s)
				}
				// Without credentials: the sign-in, and the Service never sees it.
				before := rec.count()
				resp, s = get(method, reqPath, nil)
				if r.Authenticated {
					wantLoc := base + "/oauth2/start?rd=" + strings.NewReplacer("/", "%2F", "?", "%3F", "=", "%3D", "&", "%26").Replace(reqPath)
					if resp.StatusCode != http.StatusFound || resp.Header.Get("Location") != wantLoc {
						t.Errorf("%s %s without credentials: got %d Location %q, want 302 %s", method, reqPath, resp.StatusCode, resp.Header.Get("Location"), wantLoc)
					}
					if n := rec.count(); n != before {
						t.Errorf("%s %s without credentials reached %s", method, reqPath, r.Backend)
					}
				} else if resp.StatusCode != http.StatusOK || s.Service != r.Backend {
					t.Errorf("%s %s without credentials: got %d from %+v, want %s (no auth on this route)", method, reqPath, resp.StatusCode, s, r.Backend)
				}
			}
		})
	}

	t.Run("refusals", func(t *testing.T) {
		total := func() int {
			n := 0
			for _, b := range backends {
				n += b.count()
			}
			return n
		}
		before := total()
		for _, tt := range []struct {
			name, path string
			hdr        map[string]string
			want       int
		}{
			{"foreign host", "/deals/api/v1/deals", map[string]string{"Host": "evil.example", "Cookie": "session=ok"}, http.StatusNotFound},
			{"cluster host name", "/deals/api/v1/deals", map[string]string{"Host": "arch.homework", "Cookie": "session=ok"}, http.StatusNotFound},
			{"unrouted path", "/metrics", map[string]string{"Cookie": "session=ok"}, http.StatusNotFound},
			{"health of a service", "/healthz", map[string]string{"Cookie": "session=ok"}, http.StatusNotFound},
			{"internal auth location", "/_external-auth-default-participants", map[string]string{"Cookie": "session=ok"}, http.StatusNotFound},
			{"prefix look-alike", "/authx", nil, http.StatusNotFound},
			{"api look-alike", "/api/v10/sagas", map[string]string{"Cookie": "session=ok"}, http.StatusNotFound},
		} {
			if resp, _ := get("POST", tt.path, tt.hdr); resp.StatusCode != tt.want {
				t.Errorf("%s: POST %s got %d, want %d", tt.name, tt.path, resp.StatusCode, tt.want)
			}
		}
		if n := total(); n != before {
			t.Errorf("refused requests reached a backend (%d hits)", n-before)
		}
	})
	if t.Failed() {
		t.Logf("configuration:\n%s", conf)
	}
}
