package httpapi_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/portfolio-counselor/sagamachine/engine"
	"github.com/portfolio-counselor/sagamachine/engine/httpapi"
	"github.com/portfolio-counselor/sagamachine/engine/sqlstore"
	"github.com/portfolio-counselor/sagamachine/sagas"
)

// The API reads through engine.Queries: by default the orchestrator's
// store's; an orchestrator whose store has no read side (engine.Store is
// only what the orchestrator needs) is refused unless Config.Store is set.
func TestConfigStore(t *testing.T) {
	ctx := context.Background()
	st, err := sqlstore.Open(ctx, "sqlite::memory:")
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	cat, problems := engine.LoadCatalog(sagas.FS)
	if len(problems) > 0 {
		t.Fatal(problems)
	}
	writeOnly := struct{ engine.Store }{st} // the orchestrator's side only
	orch, err := engine.New(engine.Config{}, cat, writeOnly, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := httpapi.New(httpapi.Config{Orchestrator: orch}); engine.ErrorCode(err) != engine.CodeInvalid {
		t.Errorf("New without a read side: err = %v, want code %q", err, engine.CodeInvalid)
	}
	h, err := httpapi.New(httpapi.Config{Orchestrator: orch, Store: st})
	if err != nil {
		t.Fatalf("New with Config.Store: %v", err)
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/api/v1/sagas", nil))
	if w.Code != http.StatusOK {
		t.Errorf("GET /api/v1/sagas through Config.Store: status %d, want 200 (%s)", w.Code, w.Body)
	}
}
