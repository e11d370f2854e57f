package servicetest

import (
	"net/http"
	"net/http/httptest"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/gorilla/mux"
	"gopkg.in/yaml.v3"

	"github.com/portfolio-counselor/sagamachine/schema"
)

// CheckOpenAPI checks that the routes of r (path template and method) and
// the paths and operations of the embedded OpenAPI document specName
// (e.g. "deals.yaml") are the same, both ways, and that a method the spec
// does not list for a path (TRACE) is answered 405 with an Allow header
// naming exactly the spec's methods for it (RFC 9110).
func CheckOpenAPI(tb testing.TB, r *mux.Router, specName string) {
	tb.Helper()
	raw, err := schema.OpenAPI(specName)
	if err != nil {
		tb.Fatalf("read OpenAPI %s: %v", specName, err)
	}
	var doc struct {
		OpenAPI string                    `yaml:"openapi"`
		Paths   map[string]map[string]any `yaml:"paths"`
	}
	if err := yaml.Unmarshal(raw, &doc); err != nil {
		tb.Fatalf("parse OpenAPI %s: %v", specName, err)
	}
	if !strings.HasPrefix(doc.OpenAPI, "3.") {
		tb.Errorf("%s: openapi version: got %q, want 3.x", specName, doc.OpenAPI)
	}
	methods := []string{"get", "put", "post", "delete", "options", "head", "patch", "trace"}
	var inSpec []string
	for path, item := range doc.Paths {
		for m := range item {
			if slices.Contains(methods, m) {
				inSpec = append(inSpec, strings.ToUpper(m)+" "+path)
			}
		}
	}
	var served []string
	err = r.Walk(func(route *mux.Route, _ *mux.Router, _ []*mux.Route) error {
		tpl, err := route.GetPathTemplate()
		if err != nil {
			return nil // a route without a path (none here)
		}
		ms, err := route.GetMethods()
		if err != nil {
			ms = []string{"ANY"}
		}
		for _, m := range ms {
			served = append(served, m+" "+tpl)
		}
		return nil
	})
	if err != nil {
		tb.Fatalf("walk router: %v", err)
	}
	slices.Sort(inSpec)
	slices.Sort(served)
	if len(served) == 0 {
		tb.Fatalf("the router serves no routes")
	}
	for _, s := range served {
		if !slices.Contains(inSpec, s) {
			tb.Errorf("route %s is served but not in %s", s, specName)
		}
	}
	for _, s := range inSpec {
		if !slices.Contains(served, s) {
			tb.Errorf("operation %s is in %s but not served", s, specName)
		}
	}
	for path, item := range doc.Paths {
		var want []string
		for m := range item {
			if slices.Contains(methods, m) {
				want = append(want, strings.ToUpper(m))
			}
		}
		checkAllow(tb, r, specName, path, want)
	}
}

// pathParam fills the {variables} of an OpenAPI path template.
var pathParam = regexp.MustCompile(`\{[^}]+\}`)

// checkAllow sends TRACE to path (its variables filled in) and wants 405
// with an Allow header of exactly the methods want.
func checkAllow(tb testing.TB, r *mux.Router, specName, path string, want []string) {
	tb.Helper()
	target := pathParam.ReplaceAllStringFunc(path, func(v string) string {
		if v == "{date}" {
			return "2026-01-02"
		}
		return "00000000-0000-4000-8000-000000000000"
	})
	rec := httptest.NewRecorder()
	r.ServeHTTP(rec, httptest.NewRequest(http.MethodTrace, target, nil))
	if rec.Code != http.StatusMethodNotAllowed {
		tb.Errorf("TRACE %s: got %d, want 405 (%s)", target, rec.Code, specName)
		return
	}
	got := strings.Split(rec.Header().Get("Allow"), ", ")
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		tb.Errorf("TRACE %s: Allow %q, want the methods of %s in %s: %q", target, rec.Header().Get("Allow"), path, specName, strings.Join(want, ", "))
	}
}

// SchemaPattern returns the compiled pattern of the string schema
// components/schemas/<name> of the embedded OpenAPI document specName,
// failing the test if there is none.
func SchemaPattern(tb testing.TB, specName, name string) *regexp.Regexp {
	tb.Helper()
	doc := LoadSpec(tb, specName)
	ref, ok := doc.Components.Schemas[name]
	if !ok || ref.Value == nil || ref.Value.Pattern == "" {
		tb.Fatalf("%s: components/schemas/%s has no pattern", specName, name)
	}
	re, err := regexp.Compile(ref.Value.Pattern)
	if err != nil {
		tb.Fatalf("%s: pattern of %s: %v", specName, name, err)
	}
	return re
}
