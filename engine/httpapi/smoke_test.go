package httpapi_test

import (
	"net/http"
	"os"
	"testing"
)

func TestSmoke(t *testing.T) {
	e := newEnv(t, "", envOptions{})
	e.seed(t)
	for _, p := range []string{"/api/v1/definitions", "/api/v1/definitions/MANUAL_CREATE_ORDER", "/api/v1/sagas", "/api/v1/dead-letters", "/metrics", "/readyz"} {
		rec := e.do(t, http.MethodGet, p, "")
		t.Logf("%s -> %d\n%.1500s", p, rec.Code, rec.Body.String())
	}
	rec := e.do(t, http.MethodGet, "/api/v1/definitions/MANUAL_CREATE_ORDER/diagram.svg", "")
	if err := writeFile("/tmp/h10-diagram.svg", rec.Body.Bytes()); err != nil {
		t.Fatal(err)
	}
}

func writeFile(p string, b []byte) error { return os.WriteFile(p, b, 0o644) }
