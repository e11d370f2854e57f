package engine

import (
	"encoding/json"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/portfolio-counselor/sagamachine/engine/definition"
)

func parseMigration(tb testing.TB, src string) *definition.Migration {
	tb.Helper()
	m, problems := definition.ParseMigration("migration.yaml", []byte(src))
	if len(problems) > 0 {
		tb.Fatalf("ParseMigration: %v", problems)
	}
	return m
}

const mco12 = "definition/testdata/migrations/good/manual_create_order.1-2.yaml"

func TestPlanMigration(t *testing.T) {
	v1 := mustCompile(t, parsedDef(t, shippedSagaV1))
	v2 := mustCompile(t, parsedDef(t, shippedSagaV2))
	data, err := os.ReadFile(mco12)
	if err != nil {
		t.Fatal(err)
	}
	mig := parseMigration(t, string(data))
	entered := time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC)
	armed := entered.Add(6 * time.Second)
	base := Instance{
		ID: "s-1", Saga: "MANUAL_CREATE_ORDER", SagaVersion: 1, State: "APPROVED", Status: StatusRunning,
		Context:   json.RawMessage(`{"deal_context": {"deal_id": "d-1", "user_id": "u-1"}}`),
		Keys:      map[string]string{"deal_id": "d-1", "user_id": "u-1"},
		EnteredAt: entered, UpdatedAt: entered, Rev: 7,
		Pending:  &Message{ID: "c-1", Name: "APPROVE_DEAL", Participant: "deals"},
		Attempts: 2, TimerAt: &armed,
	}
	got, err := PlanMigration(v1, v2, mig, base)
	if err != nil {
		t.Fatalf("PlanMigration: %v", err)
	}
	if got.SagaVersion != 2 || got.State != "APPROVED" || got.Status != StatusRunning || got.Rev != 7 || got.Attempts != 2 || got.Pending.ID != "c-1" {
		t.Errorf("migrated: %+v", got)
	}
	if got.TimerAt == nil || !got.TimerAt.Equal(armed) {
		t.Errorf("timer: got %v, want the armed re-send %v (version 2 re-sends APPROVE_DEAL too)", got.TimerAt, armed)
	}
	if string(got.Context) != string(base.Context) || got.Keys["deal_id"] != "d-1" {
		t.Errorf("context %s, keys %v: want them kept", got.Context, got.Keys)
	}
	if base.SagaVersion != 1 || base.State != "APPROVED" {
		t.Errorf("PlanMigration changed its input")
	}
	// In DRAFT the new state's time limit counts from when the saga
	// entered DRAFT, and the re-send comes earlier.
	draft := base
	draft.State = "DRAFT"
	draft.Pending = &Message{ID: "c-0", Name: "APPROVE_ORDER", Participant: "profile"}
	late := entered.Add(time.Hour)
	draft.TimerAt = &late
	if got, err := PlanMigration(v1, v2, mig, draft); err != nil || !got.TimerAt.Equal(entered.Add(10*time.Minute)) {
		t.Errorf("DRAFT: timer %v, %v; want entered + 10m", got.TimerAt, err)
	}

	refusals := []struct {
		name string
		edit func(i *Instance)
		code Code
		want string
	}{
		{"finished", func(i *Instance) { i.State, i.Status = "NOTIFICATION", StatusCompleted }, CodeConflict, "only running sagas migrate"},
		{"compensating", func(i *Instance) { i.State, i.Status = "FAILED", StatusCompensating }, CodeConflict, "only running sagas migrate"},
		{"other version", func(i *Instance) { i.SagaVersion = 2 }, CodeConflict, "not a MANUAL_CREATE_ORDER v1"},
		{"other saga", func(i *Instance) { i.Saga = "OTHER" }, CodeConflict, "not a MANUAL_CREATE_ORDER v1"},
		{"held back", func(i *Instance) { i.Deferred = &Message{Name: "NOTIFY"} }, CodeConflict, "holds back NOTIFY"},
		{"unknown state", func(i *Instance) { i.State = "LIMBO" }, CodeConflict, "maps no state for LIMBO"},
	}
	for _, tt := range refusals {
		t.Run(tt.name, func(t *testing.T) {
			inst := base
			tt.edit(&inst)
			_, err := PlanMigration(v1, v2, mig, inst)
			if ErrorCode(err) != tt.code || err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("got %v, want %s containing %q", err, tt.code, tt.want)
			}
		})
	}
	// The models must be the migration's.
	if _, err := PlanMigration(v2, v1, mig, base); ErrorCode(err) != CodeInvalid {
		t.Errorf("swapped models: got %v, want CodeInvalid", err)
	}
	// Back from version 2 to 1: a compensable step v1 cannot undo.
	back := parseMigration(t, "migration: MANUAL_CREATE_ORDER\nfrom: 2\nto: 1\nstates: {DRAFT: DRAFT, APPROVED: APPROVED, REJECTED: REJECTED}\n")
	withUndo := base
	withUndo.SagaVersion = 2
	withUndo.Undo = []UndoEntry{{Participant: "deals", Command: "FAIL_DEAL", Done: "DEAL_FAILED", Of: "e-1", OfKind: KindEvent, Status: UndoReplied}}
	if _, err := PlanMigration(v2, v1, back, withUndo); ErrorCode(err) != CodeConflict || !strings.Contains(err.Error(), "FAIL_DEAL") {
		t.Errorf("undo entry unknown to v1: got %v", err)
	}
}

func TestPlanMigrationContext(t *testing.T) {
	v1 := mustCompile(t, parsedDef(t, shippedSagaV1))
	v2 := mustCompile(t, parsedDef(t, shippedSagaV2))
	mig := parseMigration(t, `migration: MANUAL_CREATE_ORDER
from: 1
to: 2
states: {DRAFT: DRAFT, APPROVED: APPROVED, REJECTED: REJECTED}
context: '{"deal_context": {"deal_id": context.deal.id, "user_id": context.deal.user}, "migrated": saga.version}'
`)
	inst := Instance{ID: "s-2", Saga: "MANUAL_CREATE_ORDER", SagaVersion: 1, State: "REJECTED", Status: StatusRunning,
		Context: json.RawMessage(`{"deal": {"id": "d-2", "user": "u-2"}}`)}
	got, err := PlanMigration(v1, v2, mig, inst)
	if err != nil {
		t.Fatalf("PlanMigration: %v", err)
	}
	if want := `{"deal_context":{"deal_id":"d-2","user_id":"u-2"},"migrated":1}`; string(got.Context) != want {
		t.Errorf("context: got %s, want %s", got.Context, want)
	}
	if got.Keys["deal_id"] != "d-2" || got.Keys["user_id"] != "u-2" {
		t.Errorf("keys from the new context: %v", got.Keys)
	}
	inst.Context = json.RawMessage(`{"other": 1}`)
	if _, err := PlanMigration(v1, v2, mig, inst); ErrorCode(err) != CodeConflict || !strings.Contains(err.Error(), "context transform") {
		t.Errorf("transform on a context without its keys: got %v", err)
	}
}

// TestPlanMigrationJoin: a saga waiting for a parallel step's join does
// not migrate.
func TestPlanMigrationJoin(t *testing.T) {
	read := func(version int) *Model {
		data, err := os.ReadFile(rebalanceFile)
		if err != nil {
			t.Fatal(err)
		}
		def, problems := definition.ParseWith(rebalanceFile, data, definition.Options{Files: os.DirFS("definition/testdata/good")})
		if len(problems) > 0 {
			t.Fatal(problems)
		}
		def.Version = version
		return mustCompile(t, def)
	}
	v1, v2 := read(1), read(2)
	mig := parseMigration(t, "migration: REBALANCE_PORTFOLIO\nfrom: 1\nto: 2\nstates: {CHECKING_RISK: CHECKING_RISK, AWAITING_APPROVAL: AWAITING_APPROVAL, TRADING: TRADING}\n")
	inst := Instance{ID: "s-3", Saga: "REBALANCE_PORTFOLIO", SagaVersion: 1, State: "TRADING", Status: StatusRunning, Context: json.RawMessage(`{}`)}
	if _, err := PlanMigration(v1, v2, mig, inst); ErrorCode(err) != CodeConflict || !strings.Contains(err.Error(), "join") {
		t.Errorf("in a join: got %v", err)
	}
	inst.State = "CHECKING_RISK"
	if got, err := PlanMigration(v1, v2, mig, inst); err != nil || got.State != "CHECKING_RISK" || got.SagaVersion != 2 {
		t.Errorf("outside a join: %+v, %v", got, err)
	}
}
