package httpapi_test

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/gorillamux"

	"github.com/portfolio-counselor/sagamachine/schema"
)

func loadSpec(tb testing.TB) *openapi3.T {
	tb.Helper()
	data, err := schema.OpenAPI("saga-machine.yaml")
	if err != nil {
		tb.Fatalf("read spec: %v", err)
	}
	doc, err := openapi3.NewLoader().LoadFromData(data)
	if err != nil {
		tb.Fatalf("load spec: %v", err)
	}
	if err := doc.Validate(context.Background()); err != nil {
		tb.Fatalf("spec is not valid OpenAPI: %v", err)
	}
	return doc
}

func TestSpecIsValid(t *testing.T) { loadSpec(t) }

func init() {
	openapi3filter.RegisterBodyDecoder("image/svg+xml", openapi3filter.FileBodyDecoder)
	openapi3filter.RegisterBodyDecoder("text/plain", openapi3filter.FileBodyDecoder)
}

// specChecker validates responses against the OpenAPI document.
type specChecker struct {
	router routers.Router
}

func newSpecChecker(tb testing.TB) *specChecker {
	tb.Helper()
	doc := loadSpec(tb)
	doc.Servers = nil // match any host
	r, err := gorillamux.NewRouter(doc)
	if err != nil {
		tb.Fatalf("spec router: %v", err)
	}
	return &specChecker{router: r}
}

// check validates one response to req against the spec's operation; a
// request for a route that is not in the spec must have got 404 or 405.
func (c *specChecker) check(tb testing.TB, req *http.Request, rec *httptest.ResponseRecorder) {
	tb.Helper()
	if req.URL.Path == "/" || strings.HasPrefix(req.URL.Path, "/console/") {
		return // the console's files are not part of the API
	}
	route, params, err := c.router.FindRoute(req)
	if err != nil {
		if rec.Code != http.StatusNotFound && rec.Code != http.StatusMethodNotAllowed {
			tb.Errorf("%s %s is not in the spec (%v) but was answered %d", req.Method, req.URL.Path, err, rec.Code)
		}
		return
	}
	in := &openapi3filter.ResponseValidationInput{
		RequestValidationInput: &openapi3filter.RequestValidationInput{
			Request: req, PathParams: params, Route: route,
			Options: &openapi3filter.Options{AuthenticationFunc: openapi3filter.NoopAuthenticationFunc},
		},
		Status:  rec.Code,
		Header:  rec.Header(),
		Body:    io.NopCloser(bytes.NewReader(rec.Body.Bytes())),
		Options: &openapi3filter.Options{IncludeResponseStatus: true},
	}
	if err := openapi3filter.ValidateResponse(context.Background(), in); err != nil {
		tb.Errorf("%s %s: response %d does not match the spec: %v\nbody: %.500s", req.Method, req.URL, rec.Code, err, rec.Body.String())
	}
}
