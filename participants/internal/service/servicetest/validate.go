package servicetest

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers/gorillamux"

	"github.com/portfolio-counselor/sagamachine/schema"
)

// LoadSpec loads the embedded OpenAPI document specName (e.g. "deals.yaml")
// and fails the test unless it is valid OpenAPI 3.
func LoadSpec(tb testing.TB, specName string) *openapi3.T {
	tb.Helper()
	raw, err := schema.OpenAPI(specName)
	if err != nil {
		tb.Fatalf("read OpenAPI %s: %v", specName, err)
	}
	doc, err := openapi3.NewLoader().LoadFromData(raw)
	if err != nil {
		tb.Fatalf("load OpenAPI %s: %v", specName, err)
	}
	if err := doc.Validate(context.Background()); err != nil {
		tb.Fatalf("%s is not valid OpenAPI: %v", specName, err)
	}
	return doc
}

// Validated wraps h so that every response it writes is checked against
// the OpenAPI document specName (status listed, body matching the schema);
// a mismatch fails the test. Requests for paths not in the spec must get
// 404 or 405.
func Validated(tb testing.TB, h http.Handler, specName string) http.Handler {
	tb.Helper()
	doc := LoadSpec(tb, specName)
	doc.Servers = nil // match any host
	router, err := gorillamux.NewRouter(doc)
	if err != nil {
		tb.Fatalf("OpenAPI router of %s: %v", specName, err)
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, r)
		for k, v := range rec.Header() {
			w.Header()[k] = v
		}
		w.WriteHeader(rec.Code)
		_, _ = w.Write(rec.Body.Bytes()) // a recorder in tests; never fails

		route, params, err := router.FindRoute(r)
		if err != nil {
			if rec.Code != http.StatusNotFound && rec.Code != http.StatusMethodNotAllowed {
				tb.Errorf("%s %s is not in %s (%v) but was answered %d", r.Method, r.URL.Path, specName, err, rec.Code)
			}
			return
		}
		in := &openapi3filter.ResponseValidationInput{
			RequestValidationInput: &openapi3filter.RequestValidationInput{
				Request: r, PathParams: params, Route: route,
				Options: &openapi3filter.Options{AuthenticationFunc: openapi3filter.NoopAuthenticationFunc},
			},
			Status:  rec.Code,
			Header:  rec.Header(),
			Body:    io.NopCloser(bytes.NewReader(rec.Body.Bytes())),
			Options: &openapi3filter.Options{IncludeResponseStatus: true},
		}
		if err := openapi3filter.ValidateResponse(context.Background(), in); err != nil {
			tb.Errorf("%s %s: response %d does not match %s: %v\nbody: %.500s", r.Method, r.URL, rec.Code, specName, err, rec.Body.String())
		}
	})
}
