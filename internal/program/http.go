package program

import (
	"encoding/json"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/portfolio-counselor/sagamachine/internal/problem"
)

// Limits of every HTTP server of the repository (NewServer). No handler
// streams: every answer is written at once, so one write deadline fits all.
const (
	// ReadHeaderTimeout bounds reading a request's headers (slowloris).
	ReadHeaderTimeout = 10 * time.Second
	// ReadTimeout bounds reading a whole request, body included (bodies
	// are small: at most a few MiB anywhere).
	ReadTimeout = 30 * time.Second
	// WriteTimeout bounds the time from the end of the request headers to
	// the end of the answer: handler and write.
	WriteTimeout = 60 * time.Second
	// IdleTimeout bounds how long a keep-alive connection waits for the
	// next request.
	IdleTimeout = 2 * time.Minute
	// MaxHeaderBytes bounds the request line and headers (a Keycloak token
	// with many roles is a few KiB).
	MaxHeaderBytes = 64 << 10
)

// NewServer returns an http.Server for h with the repository's timeouts and
// header limit (ReadHeaderTimeout, ReadTimeout, WriteTimeout, IdleTimeout,
// MaxHeaderBytes). Every server of saga-machine, the participant services,
// the dev issuer and the one-process system is built with it.
func NewServer(h http.Handler) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: ReadHeaderTimeout,
		ReadTimeout:       ReadTimeout,
		WriteTimeout:      WriteTimeout,
		IdleTimeout:       IdleTimeout,
		MaxHeaderBytes:    MaxHeaderBytes,
	}
}

// ProblemMisdirected is the RFC 9457 type of the 421 answer of
// LoopbackHostOnly.
const ProblemMisdirected = problem.TypePrefix + "misdirected"

// IsLoopbackHost reports whether host (a Host header value, with or without
// a port) names this machine's loopback: "localhost" or a loopback IP
// address (127.0.0.0/8, ::1). An empty host is not loopback.
func IsLoopbackHost(host string) bool {
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// IsLoopbackAddr reports whether a listen address (host:port) binds to
// loopback only: localhost or a loopback IP. ":8080" and "0.0.0.0:8080"
// bind every interface and are not.
func IsLoopbackAddr(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil || host == "" {
		return false
	}
	return IsLoopbackHost(host)
}

// LoopbackHostOnly refuses, with 421 Misdirected Request and a
// problem+json body, every request whose Host is not localhost or a
// loopback IP address (whatever the port). It protects servers that trust
// loopback (no production identity provider: the dev issuer, dev headers)
// from DNS rebinding: a web page on evil.example whose name is made to
// resolve to 127.0.0.1 reaches the server with Host: evil.example, and is
// refused before any handler runs. what names the server in the detail.
func LoopbackHostOnly(what string, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !IsLoopbackHost(r.Host) {
			problem.Write(w, r, problem.Problem{
				Type:   ProblemMisdirected,
				Title:  "Misdirected Request",
				Status: http.StatusMisdirectedRequest,
				Detail: what + " is a development setup (no production identity provider) and answers only requests addressed to localhost or a loopback address, not Host " + quoteHost(r.Host),
			})
			return
		}
		next.ServeHTTP(w, r)
	})
}

func quoteHost(h string) string {
	b, _ := json.Marshal(h) // a string always encodes
	return string(b)
}
