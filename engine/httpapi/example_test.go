package httpapi_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"strings"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/portfolio-counselor/sagamachine/engine"
	"github.com/portfolio-counselor/sagamachine/engine/httpapi"
	"github.com/portfolio-counselor/sagamachine/engine/sqlstore"
	"github.com/portfolio-counselor/sagamachine/sagas"
)

// ExampleNew wires the API the way cmd/saga-machine does: the metrics
// observer goes into the orchestrator, the registry into the API. (Auth is
// nil here, which only tests and the explicit dev mode may do: every call
// is allowed, except a start the definition keeps for a participant.)
func ExampleNew() {
	ctx := context.Background()
	st, err := sqlstore.Open(ctx, "sqlite::memory:")
	if err != nil {
		panic(err)
	}
	defer st.Close()
	cat, problems := engine.LoadCatalog(sagas.FS)
	if len(problems) > 0 {
		panic(problems)
	}
	reg := prometheus.NewRegistry()
	metrics, err := httpapi.NewMetrics(reg)
	if err != nil {
		panic(err)
	}
	orch, err := engine.New(engine.Config{Observer: metrics}, cat, st, nil)
	if err != nil {
		panic(err)
	}
	api, err := httpapi.New(httpapi.Config{Orchestrator: orch, Registry: reg})
	if err != nil {
		panic(err)
	}

	// MANUAL_CREATE_ORDER opens no start to the API: deals starts it on
	// the bus, after it has stored the deal. An HTTP caller is refused.
	start := httptest.NewRequest("POST", "/api/v1/sagas",
		strings.NewReader(`{"saga":"MANUAL_CREATE_ORDER","payload":{"deal_context":{"deal_id":"42"}}}`))
	start.Header.Set("Idempotency-Key", "deal-42")
	rec := httptest.NewRecorder()
	api.ServeHTTP(rec, start)
	fmt.Println("start over HTTP:", rec.Code, rec.Header().Get("Content-Type"))

	// The start deals sends on the bus, here applied in-process.
	if _, _, err := orch.Start(ctx, engine.StartRequest{Saga: "MANUAL_CREATE_ORDER",
		Payload: json.RawMessage(`{"deal_context":{"deal_id":"42"}}`)}); err != nil {
		panic(err)
	}

	rec = httptest.NewRecorder()
	api.ServeHTTP(rec, httptest.NewRequest("GET", "/api/v1/sagas?key=deal_id:42&limit=5", nil))
	fmt.Println("search:", rec.Code, strings.Contains(rec.Body.String(), `"state":"DRAFT"`))

	rec = httptest.NewRecorder()
	api.ServeHTTP(rec, httptest.NewRequest("GET", "/api/v1/sagas/nope", nil))
	fmt.Println("missing:", rec.Code, rec.Header().Get("Content-Type"))

	rec = httptest.NewRecorder()
	api.ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	for _, line := range strings.Split(rec.Body.String(), "\n") {
		if strings.HasPrefix(line, "saga_machine_sagas_started_total") || strings.HasPrefix(line, "saga_machine_instances{") {
			fmt.Println(line)
		}
	}
	// Output:
	// start over HTTP: 403 application/problem+json
	// search: 200 true
	// missing: 404 application/problem+json
	// saga_machine_instances{saga="MANUAL_CREATE_ORDER",state="DRAFT",version="4"} 1
	// saga_machine_sagas_started_total{saga="MANUAL_CREATE_ORDER",version="4"} 1
}
