package engine_test

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/portfolio-counselor/sagamachine/engine"
	"github.com/portfolio-counselor/sagamachine/engine/definition"
	"github.com/portfolio-counselor/sagamachine/engine/sqlstore"
	"github.com/portfolio-counselor/sagamachine/sagas"
)

// ExampleOrchestrator_Migrate moves a running MANUAL_CREATE_ORDER v2 saga
// to version 3 with the shipped migration: a dry run changes nothing, the
// apply stores the new version with a MIGRATE entry in the timeline, and
// the same apply again is refused.
func ExampleOrchestrator_Migrate() {
	ctx := context.Background()
	st, err := sqlstore.Open(ctx, "sqlite::memory:")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer st.Close()
	defs, _ := definition.LoadDir(sagas.FS)
	migs, problems := definition.LoadMigrations(sagas.Migrations(), defs)
	if len(problems) > 0 {
		fmt.Println(problems)
		return
	}
	cat, _ := engine.NewCatalog(defs...)
	if cat, err = cat.WithMigrations(migs...); err != nil {
		fmt.Println(err)
		return
	}
	o, err := engine.New(engine.Config{}, cat, st, nil)
	if err != nil {
		fmt.Println(err)
		return
	}
	inst, _, err := o.Start(ctx, engine.StartRequest{Saga: "MANUAL_CREATE_ORDER", Version: 2,
		Payload: json.RawMessage(`{"deal_context":{"deal_id":"D-1","user_id":"U-7"}}`)})
	if err != nil {
		fmt.Println(err)
		return
	}
	req := engine.MigrateRequest{SagaID: inst.ID, To: 3, Actor: "olga", Reason: "let the client cancel"}
	dry, _ := o.Migrate(ctx, req)
	stored, _ := st.GetInstance(ctx, inst.ID)
	fmt.Println("dry run:", dry.Migration, dry.After.SagaVersion, dry.Applied, "stored on", stored.SagaVersion)

	req.Apply = true
	res, _ := o.Migrate(ctx, req)
	stored, _ = st.GetInstance(ctx, inst.ID)
	h, _ := st.History(ctx, inst.ID)
	last := h[len(h)-1]
	fmt.Println("applied:", res.Applied, "stored on", stored.SagaVersion, stored.State)
	fmt.Println(last.Event, last.Actor, last.Reason)

	_, err = o.Migrate(ctx, req)
	fmt.Println(engine.ErrorCode(err))
	// Output:
	// dry run: manual_create_order.2-3.yaml 3 false stored on 2
	// applied: true stored on 3 DRAFT
	// MIGRATE olga migrated MANUAL_CREATE_ORDER from version 2 to 3 by manual_create_order.2-3.yaml: DRAFT → DRAFT; let the client cancel
	// conflict
}
