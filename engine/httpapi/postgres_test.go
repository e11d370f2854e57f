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

	// MANUAL_CREATE_ORDER v4: the abort compensates (REVERT_ORDER, then
	// FAIL_DEAL), each step stored in PostgreSQL, and then sends the
	// ABORT transition's NOTIFY.
	aborted := decode[engine.Instance](t, e.do(t, "POST", "/api/v1/sagas/"+s.waiting.ID+"/abort", `{"reason":"test on PostgreSQL"}`), 200)
	if aborted.Status != engine.StatusCompensating || len(aborted.Undo) != 2 || aborted.Undo[1].Status != engine.UndoCompensating {
		t.Fatalf("after abort: %s undo %+v, want compensating with REVERT_ORDER under way", aborted.Status, aborted.Undo)
	}
	e.answer(t, s.waiting.ID, "ORDER_REVERTED", "profile", aborted.Undo[1].CommandID)
	det := decode[httpapi.SagaDetail](t, e.do(t, "GET", "/api/v1/sagas/"+s.waiting.ID, ""), 200)
	e.answer(t, s.waiting.ID, "DEAL_FAILED", "deals", det.Saga.Undo[0].CommandID)
	det = decode[httpapi.SagaDetail](t, e.do(t, "GET", "/api/v1/sagas/"+s.waiting.ID, ""), 200)
	if det.Saga.Status != engine.StatusFailed {
		t.Errorf("after the compensations: %s, want failed", det.Saga.Status)
	}
	var timeline []string
	for _, h := range det.Timeline {
		timeline = append(timeline, string(h.Kind)+":"+h.Event)
	}
	if got, want := strings.Join(timeline, " "), "event:REGISTER operator:ABORT compensation: compensation:ORDER_REVERTED compensation: compensation:DEAL_FAILED compensation:"; got != want {
		t.Errorf("timeline = %s, want %s", got, want)
	}
	if abort := det.Timeline[1]; abort.Event != "ABORT" || abort.Reason != "test on PostgreSQL" {
		t.Errorf("abort entry = %+v, want the ABORT with its reason", abort)
	}
	res := decode[httpapi.ReplayResult](t, e.do(t, "POST", "/api/v1/dead-letters/1/replay", ""), 200)
	if res.Saga == nil || res.Saga.ID != s.outOfOrder.ID || res.Saga.State != "NOTIFICATION" {
		t.Errorf("replay result = %+v, want %s in NOTIFICATION", res.Saga, s.outOfOrder.ID)
	}
	list := decode[struct {
		Definitions []httpapi.DefinitionSummary `json:"definitions"`
	}](t, e.do(t, "GET", "/api/v1/definitions", ""), 200)
	if len(list.Definitions) != 9 {
		t.Fatalf("definitions = %+v, want BASKET_ORDER v1 to v4, MANUAL_CREATE_ORDER v1 to v4, SUPPORT_CALLBACK", list.Definitions)
	}
	if d := list.Definitions[7]; d.Version != 4 || d.Counts["DRAFT"] != 0 || d.Counts["FAILED"] != 1 || d.Counts["NOTIFICATION"] != 2 || d.Counts["APPROVED"] != 1 {
		t.Errorf("MANUAL_CREATE_ORDER v%d counts = %v, want v4 with DRAFT 0, FAILED 1, NOTIFICATION 2, APPROVED 1", d.Version, d.Counts)
	}
	for _, d := range list.Definitions[:7] {
		if d.Running+d.Completed+d.Failed != 0 {
			t.Errorf("%s v%d = %+v, want no sagas (BASKET_ORDER, old versions of MANUAL_CREATE_ORDER)", d.Name, d.Version, d)
		}
	}
	if c := list.Definitions[8].Counts; list.Definitions[8].Name != "SUPPORT_CALLBACK" || c["REQUESTED"] != 1 {
		t.Errorf("%s counts = %v, want SUPPORT_CALLBACK with REQUESTED 1", list.Definitions[8].Name, c)
	}
	metrics := e.do(t, "GET", "/metrics", "").Body.String()
	if !strings.Contains(metrics, `saga_machine_instances{saga="MANUAL_CREATE_ORDER",state="FAILED",version="4"} 1`) {
		t.Error("metrics lack the FAILED instance count read from PostgreSQL")
	}
	rec := e.do(t, "GET", "/readyz", "")
	if rec.Code != 200 {
		t.Errorf("readyz on PostgreSQL = %d: %s", rec.Code, rec.Body.String())
	}
}
