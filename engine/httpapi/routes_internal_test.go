package httpapi

import (
	"context"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/gorilla/mux"

	"github.com/portfolio-counselor/sagamachine/engine"
	"github.com/portfolio-counselor/sagamachine/engine/sqlstore"
	"github.com/portfolio-counselor/sagamachine/sagas"
	"github.com/portfolio-counselor/sagamachine/schema"
)

// TestRoutesMatchSpec checks that the router serves exactly the paths and
// methods of schema/openapi/saga-machine.yaml (the console's routes aside).
func TestRoutesMatchSpec(t *testing.T) {
	ctx := context.Background()
	st, err := sqlstore.Open(ctx, "sqlite::memory:")
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	defer st.Close()
	cat, problems := engine.LoadCatalog(sagas.FS)
	if len(problems) > 0 {
		t.Fatalf("load sagas: %v", problems)
	}
	orch, err := engine.New(engine.Config{}, cat, st, nil)
	if err != nil {
		t.Fatalf("engine.New: %v", err)
	}
	s, err := newServer(Config{Orchestrator: orch})
	if err != nil {
		t.Fatalf("newServer: %v", err)
	}
	served := map[string]bool{}
	err = s.router.Walk(func(route *mux.Route, _ *mux.Router, _ []*mux.Route) error {
		tpl, err := route.GetPathTemplate()
		if err != nil {
			return nil // a subrouter's prefix route without its own path
		}
		methods, err := route.GetMethods()
		if err != nil {
			return nil // the /api/v1 prefix itself
		}
		if tpl == "/" || strings.HasPrefix(tpl, "/console") {
			return nil // the console's HTML, not part of the API
		}
		for _, m := range methods {
			served[m+" "+tpl] = true
		}
		return nil
	})
	if err != nil {
		t.Fatalf("walk routes: %v", err)
	}
	data, err := schema.OpenAPI("saga-machine.yaml")
	if err != nil {
		t.Fatalf("read spec: %v", err)
	}
	doc, err := openapi3.NewLoader().LoadFromData(data)
	if err != nil {
		t.Fatalf("load spec: %v", err)
	}
	specified := map[string]bool{}
	for path, item := range doc.Paths.Map() {
		for method := range item.Operations() {
			specified[method+" "+path] = true
		}
	}
	var missing, extra []string
	for k := range specified {
		if !served[k] {
			missing = append(missing, k)
		}
	}
	for k := range served {
		if !specified[k] {
			extra = append(extra, k)
		}
	}
	sort.Strings(missing)
	sort.Strings(extra)
	if len(missing) > 0 {
		t.Errorf("in the spec but not served: %v", missing)
	}
	if len(extra) > 0 {
		t.Errorf("served but not in the spec: %v", extra)
	}
	if len(served) < 10 {
		t.Errorf("walked only %d routes: %v", len(served), served)
	}

	// Every /api/v1 operation names the roles it needs in x-roles, and the
	// router asks exactly those.
	for path, item := range doc.Paths.Map() {
		for method, op := range item.Operations() {
			k := method + " " + path
			need, guarded := s.access[k]
			raw, documented := op.Extensions["x-roles"]
			if !strings.HasPrefix(path, "/api/v1/") {
				if guarded || documented {
					t.Errorf("%s: outside /api/v1 but guarded %v, x-roles %v", k, guarded, raw)
				}
				continue
			}
			if !guarded || !documented {
				t.Errorf("%s: guarded %v, x-roles documented %v; want both", k, guarded, documented)
				continue
			}
			var spec []string
			if list, ok := raw.([]any); ok {
				for _, r := range list {
					spec = append(spec, fmt.Sprint(r))
				}
			}
			if got, want := strings.Join(need.roles(), ","), strings.Join(spec, ","); got != want {
				t.Errorf("%s: the router asks for roles [%s], the spec's x-roles says [%s]", k, got, want)
			}
		}
	}
}

// TestEveryCodeHasAStatus checks the problem table covers every engine code.
func TestEveryCodeHasAStatus(t *testing.T) {
	codes := []engine.Code{engine.CodeInvalid, engine.CodeNotFound, engine.CodeUnknownSaga, engine.CodeUnknownEvent,
		engine.CodeIllegal, engine.CodeWrongParticipant, engine.CodeFinished, engine.CodeConflict,
		engine.CodeForbidden, engine.CodeKeyReused, engine.CodeUnavailable, engine.CodeInternal}
	for _, c := range codes {
		k, ok := problemKinds[c]
		if !ok {
			t.Errorf("code %s has no row in the problem table", c)
			continue
		}
		if k.status < 400 || k.title == "" {
			t.Errorf("code %s: status %d, title %q; want an error status and a title", c, k.status, k.title)
		}
	}
	if got, want := StatusOf("no-such-code"), http.StatusInternalServerError; got != want {
		t.Errorf("StatusOf(unknown) = %d, want %d", got, want)
	}
}
