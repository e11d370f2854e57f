package sqlstore

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/portfolio-counselor/sagamachine/engine"
	"github.com/portfolio-counselor/sagamachine/engine/envelope"
	"github.com/portfolio-counselor/sagamachine/internal/testenv"
)

// TestUpdatePlanReadsByPrimaryKey: on PostgreSQL the batch update of
// instances (updateInstancesSQL, the last part of every intake batch)
// finds its rows through the primary key, not by scanning saga_instances,
// on a table of a young system's size (1,500 sagas, freshly analyzed).
// Without the id = ANY($1) beside the join the planner hashed a
// sequential scan of the whole table there.
func TestUpdatePlanReadsByPrimaryKey(t *testing.T) {
	ctx := context.Background()
	s, err := Open(ctx, testenv.Postgres(t))
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	defer s.Close()
	now := time.Now()
	insts := make([]*engine.Instance, 1500)
	for i := range insts {
		insts[i] = &engine.Instance{ID: envelope.NewID(), Saga: "S", SagaVersion: 1, State: "A", Status: engine.StatusRunning,
			CreatedAt: now, UpdatedAt: now, EnteredAt: now}
	}
	if err := s.InTx(ctx, func(ctx context.Context, tx engine.Tx) error { return tx.Insert(ctx, insts) }); err != nil {
		t.Fatalf("insert: %v", err)
	}
	if _, err := s.w.ExecContext(ctx, "ANALYZE saga_instances"); err != nil {
		t.Fatalf("analyze: %v", err)
	}
	batch := make([]*engine.Instance, 7)
	for i := range batch {
		in := *insts[i*200]
		in.Rev, in.State = 1, "B"
		batch[i] = &in
	}
	rows, err := encodeInstances(batch)
	if err != nil {
		t.Fatal(err)
	}
	var plan []string
	if err := s.w.SelectContext(ctx, &plan, "EXPLAIN "+updateInstancesSQL, updateInstancesArgs(pgInstColumns(rows))...); err != nil {
		t.Fatalf("explain: %v", err)
	}
	text := strings.Join(plan, "\n")
	if strings.Contains(text, "Seq Scan on saga_instances") || !strings.Contains(text, "saga_instances_pkey") {
		t.Fatalf("the batch update does not read saga_instances by its primary key:\n%s", text)
	}
}
