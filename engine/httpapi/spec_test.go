package httpapi_test

import (
	"context"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
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

var _ = openapi3filter.ValidateResponse
var _ = gorillamux.NewRouter
