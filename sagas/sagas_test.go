package sagas_test

import (
	"bytes"
	"io/fs"
	"os"
	"strings"
	"testing"

	"github.com/portfolio-counselor/sagamachine/engine"
	"github.com/portfolio-counselor/sagamachine/engine/definition"
	"github.com/portfolio-counselor/sagamachine/sagas"
)

// schemaLine is the first line of every shipped definition: editors using
// the YAML language server check the file against the JSON Schema.
const schemaLine = "# yaml-language-server: $schema=../schema/saga-definition.schema.json\n"

func catalog(t *testing.T) *engine.Catalog {
	t.Helper()
	defs, problems := definition.LoadDir(sagas.FS)
	if len(problems) > 0 {
		t.Fatalf("shipped sagas: %v", problems)
	}
	cat, err := engine.NewCatalog(defs...)
	if err != nil {
		t.Fatal(err)
	}
	return cat
}

// TestShipped: the four versions of BASKET_ORDER and the four of
// MANUAL_CREATE_ORDER load (running sagas on older versions keep their
// definition), new sagas get the newest (4 and 4), and every file names
// the JSON Schema on its first line.
func TestShipped(t *testing.T) {
	cat := catalog(t)
	var got []string
	for _, m := range cat.List() {
		got = append(got, m.String())
	}
	if strings.Join(got, ", ") != "BASKET_ORDER v1, BASKET_ORDER v2, BASKET_ORDER v3, BASKET_ORDER v4, MANUAL_CREATE_ORDER v1, MANUAL_CREATE_ORDER v2, MANUAL_CREATE_ORDER v3, MANUAL_CREATE_ORDER v4" {
		t.Errorf("catalog: got %v, want BASKET_ORDER v1 to v4, MANUAL_CREATE_ORDER v1 to v4", got)
	}
	if m, err := cat.Get("BASKET_ORDER", 0); err != nil || m.Version() != 4 {
		t.Errorf("version of a new basket saga: got %v (err %v), want 4", m, err)
	}
	if m, err := cat.Get("MANUAL_CREATE_ORDER", 0); err != nil || m.Version() != 4 {
		t.Errorf("version of a new saga: got %v (err %v), want 4", m, err)
	}
	files, err := fs.Glob(sagas.FS, "*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		b, err := fs.ReadFile(sagas.FS, f)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.HasPrefix(b, []byte(schemaLine)) {
			t.Errorf("%s does not start with %q", f, schemaLine)
		}
	}
}

// row is a transition as the seed's table reads it.
func row(tr *definition.Transition) string {
	var from []string
	for _, s := range tr.From {
		from = append(from, s.Value)
	}
	r := tr.On.Value + " by " + tr.By.Value + " from [" + strings.Join(from, " ") + "] to " + tr.To.Value
	if tr.Send != nil {
		r += " send " + tr.Send.Command.Value + " to " + tr.Send.To.Value
	}
	return r
}

// TestVersion2KeepsTheTable: version 2 has the rows of version 1 one to
// one (the seed's table and the engine's rows), adding only compensations
// and the failed transitions' NOTIFY; every compensable step has one.
func TestVersion2KeepsTheTable(t *testing.T) {
	cat := catalog(t)
	v1, err := cat.Get("MANUAL_CREATE_ORDER", 1)
	if err != nil {
		t.Fatal(err)
	}
	v2, err := cat.Get("MANUAL_CREATE_ORDER", 2)
	if err != nil {
		t.Fatal(err)
	}
	t1, t2 := v1.Definition().Transitions, v2.Definition().Transitions
	if len(t1) != len(t2) {
		t.Fatalf("transitions: v1 has %d, v2 %d", len(t1), len(t2))
	}
	for i := range t1 {
		want, got := row(t1[i]), row(t2[i])
		if t1[i].Send == nil && t2[i].Send != nil && t2[i].To.Value == "FAILED" && t2[i].Send.Command.Value == "NOTIFY" {
			want += " send NOTIFY to notification"
		}
		if got != want {
			t.Errorf("row %d: v2 %q, want v1's %q", i+1, got, want)
		}
	}
	undo := map[string]string{}
	for _, tr := range t2 {
		if tr.Compensate != nil {
			undo[tr.On.Value] = tr.Compensate.Command.Value + "/" + tr.Compensate.Done.Value
		}
		if tr.Send != nil && tr.Send.Compensate != nil {
			undo[tr.Send.Command.Value] = tr.Send.Compensate.Command.Value + "/" + tr.Send.Compensate.Done.Value
		}
	}
	want := map[string]string{"REGISTER": "FAIL_DEAL/DEAL_FAILED", "APPROVE_ORDER": "REVERT_ORDER/ORDER_REVERTED",
		"APPROVE_DEAL": "FAIL_DEAL/DEAL_FAILED", "REJECT_DEAL": "FAIL_DEAL/DEAL_FAILED"}
	if len(undo) != len(want) {
		t.Errorf("compensations: got %v, want %v", undo, want)
	}
	for k, v := range want {
		if undo[k] != v {
			t.Errorf("compensation of %s: got %q, want %q", k, undo[k], v)
		}
	}
}

// TestVersion3AddsTheCancellation: version 3 is version 2 (the same rows,
// in order, and the same compensations) with CANCEL_REQUESTED from deals in
// every waiting state into CANCELLED, a failed state (so that the steps
// taken are compensated) whose transition tells the client (NOTIFY).
func TestVersion3AddsTheCancellation(t *testing.T) {
	v3 := addsOneRow(t, "MANUAL_CREATE_ORDER", 2, "CANCEL_REQUESTED by deals from [DRAFT APPROVED REJECTED] to CANCELLED send NOTIFY to notification")
	if !v3.IsFailed("CANCELLED") || v3.IsFailed("NOTIFICATION") {
		t.Errorf("CANCELLED must be a failed state of v3 (its steps compensated), NOTIFICATION final")
	}
	for _, s := range []string{"DRAFT", "APPROVED", "REJECTED"} {
		if _, err := v3.Apply(s, "CANCEL_REQUESTED", "deals"); err != nil {
			t.Errorf("CANCEL_REQUESTED in %s: %v", s, err)
		}
		if _, err := v3.Apply(s, "CANCEL_REQUESTED", "profile"); err == nil {
			t.Errorf("CANCEL_REQUESTED by profile in %s: accepted, want refused", s)
		}
	}
	if _, err := v3.Apply("NOTIFICATION", "CANCEL_REQUESTED", "deals"); err == nil {
		t.Error("CANCEL_REQUESTED once settled (NOTIFICATION): accepted, want refused")
	}
}

// TestVersion4AddsTheAbort: version 4 is version 3 (the same rows, in
// order, with the same sends and compensations) with ABORT from the engine
// in every waiting state into FAILED, whose transition tells the client
// (NOTIFY, after the undo); only the engine may raise it, and not once the
// saga is settled.
func TestVersion4AddsTheAbort(t *testing.T) {
	v4 := addsOneRow(t, "MANUAL_CREATE_ORDER", 3, "ABORT by engine from [DRAFT APPROVED REJECTED] to FAILED send NOTIFY to notification")
	v3, err := catalog(t).Get("MANUAL_CREATE_ORDER", 3)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"DRAFT", "APPROVED", "REJECTED"} {
		step, err := v4.Apply(s, "ABORT", "engine")
		if err != nil || !step.Failed || step.Send == nil || step.Send.Name != "NOTIFY" {
			t.Errorf("ABORT in %s: %+v, %v; want FAILED sending NOTIFY", s, step, err)
		}
		if _, err := v4.Apply(s, "ABORT", "deals"); err == nil {
			t.Errorf("ABORT by deals in %s: accepted, want refused", s)
		}
		if _, err := v3.Apply(s, "ABORT", "engine"); err == nil {
			t.Errorf("ABORT in %s on v3: accepted, want refused (v3 has no such row)", s)
		}
	}
	if _, err := v4.Apply("NOTIFICATION", "ABORT", "engine"); err == nil {
		t.Error("ABORT once settled (NOTIFICATION): accepted, want refused")
	}
}

// addsOneRow checks that saga's version from+1 is version from (the same
// rows, in order, with the same sends and compensations) with one more
// row, newRow, at the end; it returns version from+1.
func addsOneRow(t *testing.T, saga string, from int, newRow string) *engine.Model {
	t.Helper()
	_, newer := keepsRows(t, saga, from, 1)
	tn := newer.Definition().Transitions
	if got := row(tn[len(tn)-1]); got != newRow {
		t.Errorf("the new row: %q, want %q", got, newRow)
	}
	return newer
}

// keepsRows checks that saga's version from+1 has the rows of version from
// (in order, with the same sends and compensations) and added more after
// them; it returns both versions.
func keepsRows(t *testing.T, saga string, from, added int) (older, newer *engine.Model) {
	t.Helper()
	cat := catalog(t)
	older, err := cat.Get(saga, from)
	if err != nil {
		t.Fatal(err)
	}
	newer, err = cat.Get(saga, from+1)
	if err != nil {
		t.Fatal(err)
	}
	to, tn := older.Definition().Transitions, newer.Definition().Transitions
	if len(tn) != len(to)+added {
		t.Fatalf("transitions: v%d has %d, v%d %d, want %d more", from, len(to), from+1, len(tn), added)
	}
	for i := range to {
		if got, want := row(tn[i]), row(to[i]); got != want {
			t.Errorf("row %d: v%d %q, want v%d's %q", i+1, from+1, got, from, want)
		}
		if (to[i].Compensate == nil) != (tn[i].Compensate == nil) || (to[i].Send == nil) != (tn[i].Send == nil) ||
			to[i].Send != nil && (to[i].Send.Compensate == nil) != (tn[i].Send.Compensate == nil) {
			t.Errorf("row %d: compensations differ between v%d and v%d", i+1, from, from+1)
		}
	}
	return older, newer
}

// TestBasketVersion2AddsTheAbort: BASKET_ORDER version 2 is version 1 with
// ABORT from the engine in every waiting state (the parallel step's TRADING
// included) into FAILED, whose transition tells the client.
func TestBasketVersion2AddsTheAbort(t *testing.T) {
	v2 := addsOneRow(t, "BASKET_ORDER", 1, "ABORT by engine from [CHECKING TRADING EXECUTING REJECTING] to FAILED send NOTIFY to notification")
	for _, s := range []string{"CHECKING", "TRADING", "EXECUTING", "REJECTING"} {
		if step, err := v2.Apply(s, "ABORT", "engine"); err != nil || !step.Failed || step.Send == nil || step.Send.Name != "NOTIFY" {
			t.Errorf("ABORT in %s: %+v, %v; want FAILED sending NOTIFY", s, step, err)
		}
	}
}

// TestBasketVersion3DeclaresTheCheckWithoutEffects: BASKET_ORDER version 3
// is version 2 (the same rows, sends and compensations) with CHECK_BASKET,
// and only it, declared effects: none.
func TestBasketVersion3DeclaresTheCheckWithoutEffects(t *testing.T) {
	v2, v3 := keepsRows(t, "BASKET_ORDER", 2, 0)
	t2, t3 := v2.Definition().Transitions, v3.Definition().Transitions
	for i := range t2 {
		if s := t3[i].Send; s != nil && s.NoEffects != (s.Command.Value == "CHECK_BASKET") {
			t.Errorf("row %d: %s effects: none %v, want it for CHECK_BASKET only", i+1, s.Command.Value, s.NoEffects)
		}
		if s := t2[i].Send; s != nil && s.NoEffects {
			t.Errorf("row %d: v2's %s declares effects: none", i+1, s.Command.Value)
		}
	}
	if !v3.NoEffects("profile", "CHECK_BASKET") || v2.NoEffects("profile", "CHECK_BASKET") || v3.NoEffects("profile", "APPROVE_ORDER") {
		t.Error("NoEffects: want CHECK_BASKET without effects on v3 only, APPROVE_ORDER with effects")
	}
}

// TestBasketVersion4AddsTheCancellation: BASKET_ORDER version 4 is version
// 3 (the same rows, in order, with the same sends and compensations) with
// CANCEL_REQUESTED from deals in every waiting state (the parallel step's
// TRADING included) into CANCELLED, a failed state (so that the steps taken
// are compensated) whose transition tells the client; refused from anyone
// else, once settled, and on version 3.
func TestBasketVersion4AddsTheCancellation(t *testing.T) {
	v4 := addsOneRow(t, "BASKET_ORDER", 3, "CANCEL_REQUESTED by deals from [CHECKING TRADING EXECUTING REJECTING] to CANCELLED send NOTIFY to notification")
	v3, err := catalog(t).Get("BASKET_ORDER", 3)
	if err != nil {
		t.Fatal(err)
	}
	if !v4.IsFailed("CANCELLED") || v4.IsFailed("EXECUTED") || v4.IsFailed("REJECTED") {
		t.Errorf("CANCELLED must be a failed state of v4 (its steps compensated), EXECUTED and REJECTED final")
	}
	for _, s := range []string{"CHECKING", "TRADING", "EXECUTING", "REJECTING"} {
		step, err := v4.Apply(s, "CANCEL_REQUESTED", "deals")
		if err != nil || !step.Failed || step.Send == nil || step.Send.Name != "NOTIFY" {
			t.Errorf("CANCEL_REQUESTED in %s: %+v, %v; want CANCELLED sending NOTIFY", s, step, err)
		}
		for _, by := range []string{"profile", "notification", "engine"} {
			if _, err := v4.Apply(s, "CANCEL_REQUESTED", by); err == nil {
				t.Errorf("CANCEL_REQUESTED by %s in %s: accepted, want refused", by, s)
			}
		}
		if _, err := v3.Apply(s, "CANCEL_REQUESTED", "deals"); err == nil {
			t.Errorf("CANCEL_REQUESTED in %s on v3: accepted, want refused (v3 has no such row)", s)
		}
	}
	for _, s := range []string{"EXECUTED", "REJECTED", "FAILED", "CANCELLED"} {
		if _, err := v4.Apply(s, "CANCEL_REQUESTED", "deals"); err == nil {
			t.Errorf("CANCEL_REQUESTED once ended (%s): accepted, want refused", s)
		}
	}
}

// TestDocShowsTheYAML: docs/manual-create-order.md pastes the shipped
// definition as it is.
func TestDocShowsTheYAML(t *testing.T) {
	doc, err := os.ReadFile("../docs/manual-create-order.md")
	if err != nil {
		t.Fatal(err)
	}
	yaml, err := fs.ReadFile(sagas.FS, "manual_create_order.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(doc, []byte("```yaml\n"+string(yaml)+"```\n")) {
		t.Errorf("docs/manual-create-order.md does not show sagas/manual_create_order.yaml as it is: paste it under \"## The YAML\"")
	}
}

// TestShippedMigrations: every migration under migrations/ fits the
// shipped definitions, names the migration schema on its first line, and
// the catalog takes them.
func TestShippedMigrations(t *testing.T) {
	defs, problems := definition.LoadDir(sagas.FS)
	if len(problems) > 0 {
		t.Fatalf("shipped sagas: %v", problems)
	}
	migs, problems := definition.LoadMigrations(sagas.Migrations(), defs)
	if len(problems) > 0 {
		t.Fatalf("shipped migrations: %v", problems)
	}
	if len(migs) == 0 {
		t.Fatal("no shipped migration")
	}
	cat, err := catalog(t).WithMigrations(migs...)
	if err != nil {
		t.Fatalf("WithMigrations: %v", err)
	}
	for _, m := range migs {
		if got, ok := cat.Migration(m.Saga, m.From, m.To); !ok || got != m {
			t.Errorf("catalog: migration %s %d → %d not found", m.Saga, m.From, m.To)
		}
		b, err := fs.ReadFile(sagas.Migrations(), m.File)
		if err != nil {
			t.Fatal(err)
		}
		if want := "# yaml-language-server: $schema=../../schema/saga-migration.schema.json\n"; !bytes.HasPrefix(b, []byte(want)) {
			t.Errorf("%s does not start with %q", m.File, want)
		}
	}
	if _, err := cat.WithMigrations(migs[0]); err == nil {
		t.Error("WithMigrations took a migration twice")
	}
	if _, ok := cat.Migration("MANUAL_CREATE_ORDER", 2, 1); ok {
		t.Error("catalog has a migration back from 2 to 1, which is not shipped")
	}
}
