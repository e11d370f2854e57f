package service_test

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/gorilla/mux"
	"github.com/jmoiron/sqlx"

	"github.com/portfolio-counselor/sagamachine/internal/sqldb"
	"github.com/portfolio-counselor/sagamachine/participants/internal/service"
	"github.com/portfolio-counselor/sagamachine/participants/sdk"
)

func scrape(t *testing.T, r http.Handler, method string) (int, string) {
	t.Helper()
	rec := httptest.NewRecorder()
	r.ServeHTTP(rec, httptest.NewRequest(method, "/metrics", nil))
	return rec.Code, rec.Body.String()
}

// TestAddMetrics: /metrics serves the participant's stats with its name,
// store_up 0 and no made-up counts when the database is gone, only the
// runtime metrics without a participant, and answers nothing but GET.
func TestAddMetrics(t *testing.T) {
	db, err := sqlx.Open("sqlite", sqldb.SQLiteDSN(filepath.Join(t.TempDir(), "p.db"), sqldb.SQLiteOptions{}))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := sdk.Migrate(context.Background(), db); err != nil {
		t.Fatal(err)
	}
	p, err := sdk.New(sdk.Config{Name: "deals", DB: db, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	// A malformed command, parked.
	if _, err := p.Dispatch(context.Background(), sdk.Record{Topic: "DEALS_TOPIC", Key: "k", Value: []byte("{"), Offset: 1}); err != nil {
		t.Fatal(err)
	}
	// The relay: a round of an empty outbox, then one that publishes a
	// saga start.
	ctx := context.Background()
	discard := func(context.Context, []sdk.Record) error { return nil }
	if _, err := p.Flush(ctx, discard); err != nil {
		t.Fatal(err)
	}
	tx, err := db.BeginTxx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.StartSaga(ctx, tx, "MANUAL_CREATE_ORDER", "REGISTER", map[string]any{"deal_context": map[string]any{}}); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	if n, err := p.Flush(ctx, discard); err != nil || n != 1 {
		t.Fatalf("Flush = %d, %v; want the saga start", n, err)
	}
	r := mux.NewRouter()
	service.AddMetrics(r, p)

	code, body := scrape(t, r, http.MethodGet)
	if code != http.StatusOK {
		t.Fatalf("GET /metrics: %d", code)
	}
	for _, want := range []string{
		`saga_participant_dead_letters{participant="deals",state="parked"} 1`,
		`saga_participant_dead_letters{participant="deals",state="handled"} 0`,
		`saga_participant_outbox_backlog{participant="deals"} 0`,
		`saga_participant_outbox_oldest_age_seconds{participant="deals"} 0`,
		`saga_participant_store_up{participant="deals"} 1`,
		// Dispatch handles one record at a time, not a fetched batch.
		`saga_participant_batches_total{participant="deals"} 0`,
		`saga_participant_batch_commands_total{participant="deals"} 0`,
		`saga_participant_batch_seconds_total{participant="deals"} 0`,
		`saga_participant_relay_rounds_total{participant="deals",result="published"} 1`,
		`saga_participant_relay_rounds_total{participant="deals",result="empty"} 1`,
		`saga_participant_relay_published_total{participant="deals"} 1`,
		`saga_participant_relay_seconds_total{participant="deals"} `,
		`go_goroutines `,
		`process_cpu_seconds_total `,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("GET /metrics lacks %q", want)
		}
	}
	// No saga or message ids: counts only.
	if ids := regexp.MustCompile(`[0-9a-f]{8}-[0-9a-f]{4}-`).FindString(body); ids != "" {
		t.Errorf("GET /metrics shows an id: %q", ids)
	}
	for _, m := range []string{http.MethodPost, http.MethodPut, http.MethodDelete} {
		if code, _ := scrape(t, r, m); code != http.StatusMethodNotAllowed {
			t.Errorf("%s /metrics: got %d, want 405", m, code)
		}
	}

	db.Close() // the database goes away
	code, body = scrape(t, r, http.MethodGet)
	if code != http.StatusOK || !strings.Contains(body, `saga_participant_store_up{participant="deals"} 0`) {
		t.Errorf("GET /metrics without a database: %d, want 200 with store_up 0:\n%s", code, body)
	}
	if strings.Contains(body, "saga_participant_dead_letters") || strings.Contains(body, "saga_participant_outbox_backlog") {
		t.Error("GET /metrics without a database still reports counts")
	}

	bare := mux.NewRouter()
	service.AddMetrics(bare, nil)
	if code, body := scrape(t, bare, http.MethodGet); code != http.StatusOK || strings.Contains(body, "saga_participant_") || !strings.Contains(body, "go_goroutines") {
		t.Errorf("GET /metrics without a participant: %d, want only the runtime metrics:\n%s", code, body)
	}
}
