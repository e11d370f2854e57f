package httpapi_test

import (
	"strings"
	"testing"

	"github.com/portfolio-counselor/sagamachine/engine"
	"github.com/portfolio-counselor/sagamachine/engine/httpapi"
	"github.com/portfolio-counselor/sagamachine/internal/testenv"
)

// TestOnPostgres runs the API over a real PostgreSQL database: start with
// an idempotency key (and its reuse with another body refused), search by
// business key and page, the timeline, an abort, a dead letter replayed,
// counts and metrics.
func TestOnPostgres(t *testing.T) {
	e := newEnv(t, testenv.Postgres(t), envOptions{})
	s := e.seed(t)

	body := callback("U-PG")
	first := decode[engine.Instance](t, e.do(t, "POST", "/api/v1/sagas", body, "Idempotency-Key", "pg-1"), 201)
	again := decode[engine.Instance](t, e.do(t, "POST", "/api/v1/sagas", body, "Idempotency-Key", "pg-1"), 200)
	if again.ID != first.ID {
		t.Errorf("same Idempotency-Key: saga %s, want %s", again.ID, first.ID)
	}
	problemOf(t, e.do(t, "POST", "/api/v1/sagas", callback("U-PG-2"), "Idempotency-Key", "pg-1"), 422, engine.CodeKeyReused)
	page := decode[engine.SagaPage](t, e.do(t, "GET", "/api/v1/sagas?key=user_id:U-PG", ""), 200)
	if len(page.Sagas) != 1 || page.Sagas[0].ID != first.ID {
		t.Errorf("search user_id:U-PG = %+v, want saga %s", page.Sagas, first.ID)
	}
	var paged []string
	target := "/api/v1/sagas?limit=2"
	for range 5 {
		p := decode[engine.SagaPage](t, e.do(t, "GET", target, ""), 200)
		for _, in := range p.Sagas {
			paged = append(paged, in.ID)
		}
		if p.Next == "" {
			break
		}
		target = "/api/v1/sagas?limit=2&cursor=" + p.Next
	}
	if len(paged) != 5 {
		t.Errorf("paging by 2 gave %d sagas, want 5: %v", len(paged), paged)
	}

	decode[engine.Instance](t, e.do(t, "POST", "/api/v1/sagas/"+s.waiting.ID+"/abort", `{"reason":"test on PostgreSQL"}`), 200)
	det := decode[httpapi.SagaDetail](t, e.do(t, "GET", "/api/v1/sagas/"+s.waiting.ID, ""), 200)
	if last := det.Timeline[len(det.Timeline)-1]; last.Event != "ABORT" || last.Reason != "test on PostgreSQL" {
		t.Errorf("last entry = %+v, want the ABORT", last)
	}
	res := decode[httpapi.ReplayResult](t, e.do(t, "POST", "/api/v1/dead-letters/1/replay", ""), 200)
	if res.Saga == nil || res.Saga.ID != s.outOfOrder.ID || res.Saga.State != "NOTIFICATION" {
		t.Errorf("replay result = %+v, want %s in NOTIFICATION", res.Saga, s.outOfOrder.ID)
	}
	list := decode[struct {
		Definitions []httpapi.DefinitionSummary `json:"definitions"`
	}](t, e.do(t, "GET", "/api/v1/definitions", ""), 200)
	if c := list.Definitions[0].Counts; c["DRAFT"] != 0 || c["FAILED"] != 1 || c["NOTIFICATION"] != 2 || c["APPROVED"] != 1 {
		t.Errorf("MANUAL_CREATE_ORDER counts = %v, want DRAFT 0, FAILED 1, NOTIFICATION 2, APPROVED 1", c)
	}
	if c := list.Definitions[1].Counts; list.Definitions[1].Name != "SUPPORT_CALLBACK" || c["REQUESTED"] != 1 {
		t.Errorf("%s counts = %v, want SUPPORT_CALLBACK with REQUESTED 1", list.Definitions[1].Name, c)
	}
	metrics := e.do(t, "GET", "/metrics", "").Body.String()
	if !strings.Contains(metrics, `saga_machine_instances{saga="MANUAL_CREATE_ORDER",state="FAILED",version="1"} 1`) {
		t.Error("metrics lack the FAILED instance count read from PostgreSQL")
	}
	rec := e.do(t, "GET", "/readyz", "")
	if rec.Code != 200 {
		t.Errorf("readyz on PostgreSQL = %d: %s", rec.Code, rec.Body.String())
	}
}
