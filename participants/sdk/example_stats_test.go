package sdk_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/jmoiron/sqlx"

	"github.com/portfolio-counselor/sagamachine/internal/sqldb"
	"github.com/portfolio-counselor/sagamachine/participants/sdk"
)

// A participant's Stats: what its database holds for operators (the
// services serve them at /metrics).
func ExampleParticipant_Stats() {
	dir, _ := os.MkdirTemp("", "stats")
	defer os.RemoveAll(dir)
	db, _ := sqlx.Open("sqlite", sqldb.SQLiteDSN(filepath.Join(dir, "p.db"), sqldb.SQLiteOptions{}))
	defer db.Close()
	ctx := context.Background()
	if err := sdk.Migrate(ctx, db); err != nil {
		fmt.Println(err)
		return
	}
	p, _ := sdk.New(sdk.Config{Name: "deals", DB: db, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	// A command that is not an envelope is parked at once.
	_, _ = p.Dispatch(ctx, sdk.Record{Topic: "DEALS_TOPIC", Key: "k", Value: []byte("not json"), Offset: 7})

	st, err := p.Stats(ctx)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Printf("parked %d, handled %d, outbox %d, oldest set %v\n",
		st.DeadLettersParked, st.DeadLettersHandled, st.OutboxBacklog, !st.OldestOutbox.IsZero())
	// Output: parked 1, handled 0, outbox 0, oldest set false
}
