package program_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/portfolio-counselor/sagamachine/internal/program"
)

func TestNewServerSetsEveryLimit(t *testing.T) {
	h := http.NotFoundHandler()
	srv := program.NewServer(h)
	if srv.ReadHeaderTimeout <= 0 || srv.ReadTimeout <= 0 || srv.WriteTimeout <= 0 || srv.IdleTimeout <= 0 || srv.MaxHeaderBytes <= 0 {
		t.Errorf("server limits: got ReadHeader %v Read %v Write %v Idle %v MaxHeaderBytes %d, want all set",
			srv.ReadHeaderTimeout, srv.ReadTimeout, srv.WriteTimeout, srv.IdleTimeout, srv.MaxHeaderBytes)
	}
	if srv.ReadHeaderTimeout > srv.ReadTimeout || srv.ReadTimeout > srv.WriteTimeout {
		t.Errorf("got ReadHeader %v > Read %v or Read > Write %v, want increasing", srv.ReadHeaderTimeout, srv.ReadTimeout, srv.WriteTimeout)
	}
	if srv.Handler == nil {
		t.Errorf("handler: got nil, want the given one")
	}
}

func TestLoopbackHostOnly(t *testing.T) {
	reached := 0
	h := program.LoopbackHostOnly("the test server", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		reached++
		w.WriteHeader(http.StatusNoContent)
	}))
	tests := []struct {
		host string
		want int
	}{
		{"127.0.0.1:8080", http.StatusNoContent},
		{"127.0.0.1", http.StatusNoContent},
		{"127.9.9.9:1", http.StatusNoContent},
		{"localhost:8090", http.StatusNoContent},
		{"LOCALHOST", http.StatusNoContent},
		{"[::1]:8080", http.StatusNoContent},
		{"evil.example:8090", http.StatusMisdirectedRequest},      // DNS rebinding: a foreign name resolving to 127.0.0.1
		{"localhost.evil.example", http.StatusMisdirectedRequest}, // not the loopback name
		{"127.0.0.1.nip.io:8080", http.StatusMisdirectedRequest},
		{"10.0.0.1:8080", http.StatusMisdirectedRequest},
		{"[::ffff:10.0.0.1]:80", http.StatusMisdirectedRequest},
		{"", http.StatusMisdirectedRequest},
	}
	for _, tt := range tests {
		t.Run(tt.host, func(t *testing.T) {
			before := reached
			r := httptest.NewRequest(http.MethodPost, "/token", strings.NewReader("sub=x"))
			r.Host = tt.host
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, r)
			if rec.Code != tt.want {
				t.Fatalf("Host %q: got %d, want %d", tt.host, rec.Code, tt.want)
			}
			if tt.want != http.StatusMisdirectedRequest {
				if reached != before+1 {
					t.Errorf("Host %q: handler ran %d times, want once", tt.host, reached-before)
				}
				return
			}
			if reached != before {
				t.Errorf("Host %q: the handler ran, want it not reached", tt.host)
			}
			var p struct {
				Type   string `json:"type"`
				Status int    `json:"status"`
				Detail string `json:"detail"`
			}
			if ct := rec.Header().Get("Content-Type"); ct != "application/problem+json" {
				t.Errorf("Content-Type: got %q, want application/problem+json", ct)
			}
			if err := json.Unmarshal(rec.Body.Bytes(), &p); err != nil || p.Type != program.ProblemMisdirected || p.Status != 421 || !strings.Contains(p.Detail, "the test server") {
				t.Errorf("body: got %s (err %v), want a misdirected problem naming the server", rec.Body, err)
			}
		})
	}
}

func TestIsLoopbackAddr(t *testing.T) {
	tests := []struct {
		addr string
		want bool
	}{
		{"127.0.0.1:8080", true},
		{"localhost:0", true},
		{"[::1]:9", true},
		{":8080", false},
		{"0.0.0.0:8080", false},
		{"[::]:8080", false},
		{"192.168.1.2:8080", false},
		{"example.com:80", false},
		{"127.0.0.1", false}, // no port: not a listen address
	}
	for _, tt := range tests {
		if got := program.IsLoopbackAddr(tt.addr); got != tt.want {
			t.Errorf("IsLoopbackAddr(%q): got %v, want %v", tt.addr, got, tt.want)
		}
	}
}
