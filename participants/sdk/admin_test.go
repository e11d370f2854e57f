package sdk_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jmoiron/sqlx"

	"github.com/portfolio-counselor/sagamachine/engine/envelope"
	"github.com/portfolio-counselor/sagamachine/engine/kafka/embedded"
	"github.com/portfolio-counselor/sagamachine/internal/auth"
	"github.com/portfolio-counselor/sagamachine/internal/auth/issuer"
	"github.com/portfolio-counselor/sagamachine/internal/testenv"
	"github.com/portfolio-counselor/sagamachine/participants/internal/service/servicetest"
	"github.com/portfolio-counselor/sagamachine/participants/sdk"
)

// eachDB runs test on a migrated SQLite database and on a fresh
// PostgreSQL database (testenv: skipped locally, failed under CI, when the
// server is missing), each with an effects table.
func eachDB(t *testing.T, test func(t *testing.T, db *sqlx.DB)) {
	t.Helper()
	setup := func(t *testing.T, db *sqlx.DB) {
		t.Helper()
		if err := sdk.Migrate(context.Background(), db); err != nil {
			t.Fatalf("migrate: %v", err)
		}
		if _, err := db.Exec(`CREATE TABLE effects (saga_id TEXT NOT NULL)`); err != nil {
			t.Fatalf("create effects table: %v", err)
		}
	}
	t.Run("sqlite", func(t *testing.T) {
		db := openSQLite(t)
		setup(t, db)
		test(t, db)
	})
	t.Run("postgres", func(t *testing.T) {
		db, err := sqlx.Open("postgres", testenv.Postgres(t))
		if err != nil {
			t.Fatalf("open postgres: %v", err)
		}
		t.Cleanup(func() { db.Close() })
		setup(t, db)
		test(t, db)
	})
}

// fixable is a participant whose DO handler fails permanently while broken.
type fixable struct {
	p      *sdk.Participant
	broken atomic.Bool
	runs   atomic.Int64
}

func newFixable(t *testing.T, db *sqlx.DB, cfg sdk.Config) *fixable {
	t.Helper()
	cfg.Name, cfg.DB = "profile", db
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	p, err := sdk.New(cfg)
	if err != nil {
		t.Fatalf("new participant: %v", err)
	}
	f := &fixable{p: p}
	f.broken.Store(true)
	sdk.Handle(p, "DO", func(ctx context.Context, tx *sqlx.Tx, cmd sdk.Command[map[string]any]) (sdk.Result, error) {
		f.runs.Add(1)
		if _, err := tx.ExecContext(ctx, tx.Rebind(`INSERT INTO effects (saga_id) VALUES (?)`), cmd.SagaID); err != nil {
			return sdk.Result{}, fmt.Errorf("record effect: %w", err)
		}
		if f.broken.Load() {
			return sdk.Result{}, sdk.Permanent(errors.New("the partner's account is broken"))
		}
		return sdk.Reply("DONE", map[string]any{"saga": cmd.SagaID}), nil
	})
	return f
}

// dispatch hands rec to the participant as Run would.
func (f *fixable) dispatch(t *testing.T, rec sdk.Record) sdk.Outcome {
	t.Helper()
	out, err := f.p.Dispatch(context.Background(), rec)
	if err != nil {
		t.Fatalf("dispatch: %v", err)
	}
	return out
}

// flush relays the outbox and returns what was published.
func (f *fixable) flush(t *testing.T) []envelope.Message {
	t.Helper()
	var got []envelope.Message
	_, err := f.p.Flush(context.Background(), func(_ context.Context, recs []sdk.Record) error {
		for _, r := range recs {
			var m envelope.Message
			if err := json.Unmarshal(r.Value, &m); err != nil {
				return fmt.Errorf("relayed record is not an envelope: %w", err)
			}
			got = append(got, m)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("flush: %v", err)
	}
	return got
}

// adminEnv is a service-like router with the admin API behind the
// operator check, every response validated against the three services'
// OpenAPI documents.
type adminEnv struct {
	h        http.Handler
	operator string
	user     string
}

func newAdminEnv(t *testing.T, p *sdk.Participant) adminEnv {
	t.Helper()
	iss := servicetest.NewIssuer(t)
	h := iss.Auth.Middleware(iss.Auth.RequireRole(auth.RoleOperator, sdk.AdminHandler(p)))
	for _, spec := range []string{"deals.yaml", "profile.yaml", "notification.yaml"} {
		h = servicetest.Validated(t, h, spec)
	}
	op, err := iss.Issuer.Token("olga", issuer.TokenOptions{Name: "olga", Roles: []string{auth.RoleOperator}})
	if err != nil {
		t.Fatalf("mint operator token: %v", err)
	}
	return adminEnv{h: h, operator: op, user: iss.Token(t, "alice")}
}

type deadLetterJSON struct {
	ID         string            `json:"id"`
	MessageID  string            `json:"message_id"`
	SagaID     string            `json:"saga_id"`
	Command    string            `json:"command"`
	Reason     string            `json:"reason"`
	Attempts   int               `json:"attempts"`
	State      string            `json:"state"`
	HandledAt  *time.Time        `json:"handled_at"`
	ReplyID    string            `json:"reply_id"`
	ReplayedAt *time.Time        `json:"replayed_at"`
	ReplayedBy string            `json:"replayed_by"`
	CreatedAt  time.Time         `json:"created_at"`
	Headers    map[string]string `json:"headers"`
	Body       *string           `json:"body"`
	BodyBase64 *string           `json:"body_base64"`
}

type listJSON struct {
	Items []deadLetterJSON `json:"items"`
}

type replayJSON struct {
	DeadLetter deadLetterJSON `json:"dead_letter"`
	Duplicate  bool           `json:"duplicate"`
	Reply      *struct {
		ID      string          `json:"id"`
		Name    string          `json:"name"`
		Payload json.RawMessage `json:"payload"`
	} `json:"reply"`
}

func (e adminEnv) list(t *testing.T, query string) []deadLetterJSON {
	t.Helper()
	res := servicetest.Call(t, e.h, http.MethodGet, "/admin/dead-letters"+query, e.operator, nil)
	if res.Status != http.StatusOK {
		t.Fatalf("GET /admin/dead-letters%s: got %d %s, want 200", query, res.Status, res.Body)
	}
	var l listJSON
	res.Decode(t, &l)
	return l.Items
}

func (e adminEnv) get(t *testing.T, id string) deadLetterJSON {
	t.Helper()
	res := servicetest.Call(t, e.h, http.MethodGet, "/admin/dead-letters/"+id, e.operator, nil)
	if res.Status != http.StatusOK {
		t.Fatalf("GET dead letter %s: got %d %s, want 200", id, res.Status, res.Body)
	}
	var d deadLetterJSON
	res.Decode(t, &d)
	return d
}

func TestAdminDeadLettersReplay(t *testing.T) {
	eachDB(t, func(t *testing.T, db *sqlx.DB) {
		f := newFixable(t, db, sdk.Config{})
		e := newAdminEnv(t, f.p)
		sagaID := uuid.NewString()
		cmd, rec := command(t, "DO", sagaID, map[string]any{"x": 1})
		if out := f.dispatch(t, rec); out.DeadLetter == nil {
			t.Fatalf("command was not parked: %+v", out)
		}

		// Listed, with its reason.
		items := e.list(t, "")
		if got, want := len(items), 1; got != want {
			t.Fatalf("dead letters listed: got %d, want %d", got, want)
		}
		dl := items[0]
		for _, c := range []struct{ field, got, want string }{
			{"message_id", dl.MessageID, cmd.ID},
			{"saga_id", dl.SagaID, sagaID},
			{"command", dl.Command, "DO"},
			{"state", dl.State, sdk.StateParked},
			{"attempts", fmt.Sprint(dl.Attempts), "1"},
		} {
			if c.got != c.want {
				t.Errorf("listed dead letter %s: got %q, want %q", c.field, c.got, c.want)
			}
		}
		if !strings.Contains(dl.Reason, "account is broken") {
			t.Errorf("reason: got %q, want it to say the account is broken", dl.Reason)
		}
		if dl.Body != nil || dl.Headers != nil {
			t.Errorf("list shows the record body or headers; want them only on GET by id")
		}
		one := e.get(t, dl.ID)
		if one.Body == nil || !strings.Contains(*one.Body, cmd.ID) {
			t.Errorf("GET by id body: got %v, want the envelope with id %s", one.Body, cmd.ID)
		}
		if got, want := one.Headers[envelope.HeaderName], "DO"; got != want {
			t.Errorf("GET by id header %s: got %q, want %q", envelope.HeaderName, got, want)
		}

		// A replay before the fix fails: 409, one more attempt, still parked.
		res := servicetest.Call(t, e.h, http.MethodPost, "/admin/dead-letters/"+dl.ID+"/replay", e.operator, nil)
		if got, want := res.Status, http.StatusConflict; got != want {
			t.Fatalf("replay while broken: got %d %s, want %d", got, res.Body, want)
		}
		if got, want := res.Problem(t).Type, sdk.ProblemReplayFailed; got != want {
			t.Errorf("replay while broken: problem type got %q, want %q", got, want)
		}
		if got := e.get(t, dl.ID); got.Attempts != 2 || got.State != sdk.StateParked || got.ReplayedAt != nil {
			t.Errorf("after failed replay: attempts %d state %q replayed_at %v, want 2 %q and none", got.Attempts, got.State, got.ReplayedAt, sdk.StateParked)
		}

		// Fixed: the replay produces the reply, and the dead letter shows handled.
		f.broken.Store(false)
		res = servicetest.Call(t, e.h, http.MethodPost, "/admin/dead-letters/"+dl.ID+"/replay", e.operator, nil)
		if res.Status != http.StatusOK {
			t.Fatalf("replay after the fix: got %d %s, want 200", res.Status, res.Body)
		}
		var rp replayJSON
		res.Decode(t, &rp)
		if rp.Reply == nil || rp.Reply.Name != "DONE" || rp.Duplicate {
			t.Fatalf("replay answer: reply %+v duplicate %v, want DONE, false", rp.Reply, rp.Duplicate)
		}
		if got, want := rp.DeadLetter.State, sdk.StateHandled; got != want {
			t.Errorf("replayed dead letter state: got %q, want %q", got, want)
		}
		if got, want := rp.DeadLetter.ReplyID, rp.Reply.ID; got != want {
			t.Errorf("replayed dead letter reply_id: got %q, want %q", got, want)
		}
		if rp.DeadLetter.HandledAt == nil {
			t.Error("replayed dead letter has no handled_at")
		}
		if got, want := rp.DeadLetter.ReplayedBy, "operator olga"; rp.DeadLetter.ReplayedAt == nil || got != want {
			t.Errorf("replayed dead letter: replayed_at %v replayed_by %q, want a time and %q", rp.DeadLetter.ReplayedAt, got, want)
		}
		published := f.flush(t)
		if len(published) != 1 || published[0].ID != rp.Reply.ID || published[0].CausationID != cmd.ID {
			t.Fatalf("published after replay: %+v, want the reply %s caused by %s", published, rp.Reply.ID, cmd.ID)
		}
		if got := e.list(t, "?state=handled"); len(got) != 1 || got[0].ID != dl.ID {
			t.Errorf("handled dead letters: got %+v, want %s", got, dl.ID)
		}
		if got := e.list(t, "?state=parked"); len(got) != 0 {
			t.Errorf("parked dead letters after replay: got %d, want 0", len(got))
		}

		// Replaying a handled command runs nothing: it re-sends the same reply.
		res = servicetest.Call(t, e.h, http.MethodPost, "/admin/dead-letters/"+dl.ID+"/replay", e.operator, nil)
		var again replayJSON
		res.Decode(t, &again)
		if res.Status != http.StatusOK || !again.Duplicate || again.Reply == nil || again.Reply.ID != rp.Reply.ID {
			t.Errorf("second replay: %d duplicate %v reply %+v, want 200, true, %s", res.Status, again.Duplicate, again.Reply, rp.Reply.ID)
		}
		if got, want := count(t, db, "effects"), 1; got != want {
			t.Errorf("effect rows: got %d, want %d (one successful run)", got, want)
		}
	})
}

func TestAdminMalformedAndErrors(t *testing.T) {
	eachDB(t, func(t *testing.T, db *sqlx.DB) {
		f := newFixable(t, db, sdk.Config{})
		e := newAdminEnv(t, f.p)
		bad := []byte{0xff, 0xfe, '{'}
		if out := f.dispatch(t, sdk.Record{Topic: "PROFILE_TOPIC", Key: "k", Value: bad}); out.DeadLetter == nil {
			t.Fatalf("malformed record was not parked: %+v", out)
		}
		_, rec := command(t, "NO_SUCH_COMMAND", uuid.NewString(), nil)
		if out := f.dispatch(t, rec); out.DeadLetter == nil {
			t.Fatalf("unknown command was not parked: %+v", out)
		}
		items := e.list(t, "")
		if got, want := len(items), 2; got != want {
			t.Fatalf("dead letters: got %d, want %d", got, want)
		}
		if got, want := items[0].Command, "NO_SUCH_COMMAND"; got != want {
			t.Errorf("newest first: first item's command got %q, want %q", got, want)
		}
		if got := e.list(t, "?limit=1"); len(got) != 1 {
			t.Errorf("limit=1: got %d items, want 1", len(got))
		}
		malformed := e.get(t, items[1].ID)
		if malformed.BodyBase64 == nil || malformed.Body != nil {
			t.Errorf("non-UTF-8 body: body %v body_base64 %v, want base64 only", malformed.Body, malformed.BodyBase64)
		}
		res := servicetest.Call(t, e.h, http.MethodPost, "/admin/dead-letters/"+items[1].ID+"/replay", e.operator, nil)
		if got, want := res.Status, http.StatusConflict; got != want {
			t.Errorf("replay of a malformed record: got %d, want %d", got, want)
		}

		tests := []struct {
			name, method, path, token string
			status                    int
			problemType               string
		}{
			{"no token", http.MethodGet, "/admin/dead-letters", "", http.StatusUnauthorized, "about:blank"},
			{"no token replay", http.MethodPost, "/admin/dead-letters/" + items[0].ID + "/replay", "", http.StatusUnauthorized, "about:blank"},
			{"not an operator", http.MethodGet, "/admin/dead-letters", e.user, http.StatusForbidden, "about:blank"},
			{"not an operator get", http.MethodGet, "/admin/dead-letters/" + items[0].ID, e.user, http.StatusForbidden, "about:blank"},
			{"not an operator replay", http.MethodPost, "/admin/dead-letters/" + items[0].ID + "/replay", e.user, http.StatusForbidden, "about:blank"},
			{"unknown id", http.MethodGet, "/admin/dead-letters/nope", e.operator, http.StatusNotFound, "urn:saga-machine:problem:not-found"},
			{"replay unknown id", http.MethodPost, "/admin/dead-letters/nope/replay", e.operator, http.StatusNotFound, "urn:saga-machine:problem:not-found"},
			{"bad limit", http.MethodGet, "/admin/dead-letters?limit=0", e.operator, http.StatusUnprocessableEntity, "urn:saga-machine:problem:validation"},
			{"bad state", http.MethodGet, "/admin/dead-letters?state=lost", e.operator, http.StatusUnprocessableEntity, "urn:saga-machine:problem:validation"},
			// Contract fuzzing: an empty state or limit is not "absent" (the spec has no empty enum or integer).
			{"empty state", http.MethodGet, "/admin/dead-letters?state=", e.operator, http.StatusUnprocessableEntity, "urn:saga-machine:problem:validation"},
			{"empty limit", http.MethodGet, "/admin/dead-letters?limit=", e.operator, http.StatusUnprocessableEntity, "urn:saga-machine:problem:validation"},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				res := servicetest.Call(t, e.h, tt.method, tt.path, tt.token, nil)
				if got, want := res.Status, tt.status; got != want {
					t.Fatalf("status: got %d %s, want %d", got, res.Body, want)
				}
				if got, want := res.Problem(t).Type, tt.problemType; got != want {
					t.Errorf("problem type: got %q, want %q", got, want)
				}
			})
		}
		// Nothing was replayed by the refused requests.
		if got := e.list(t, "?state=handled"); len(got) != 0 {
			t.Errorf("handled dead letters: got %d, want 0", len(got))
		}
	})
}

func TestAdminWithoutParticipant(t *testing.T) {
	res := servicetest.Call(t, sdk.AdminHandler(nil), http.MethodGet, "/admin/dead-letters", "", nil)
	if got, want := res.Status, http.StatusServiceUnavailable; got != want {
		t.Errorf("status: got %d, want %d", got, want)
	}
}

// age sets the inbox record of command id to handled long ago.
func age(t *testing.T, db *sqlx.DB, id string, ago time.Duration) {
	t.Helper()
	res, err := db.Exec(db.Rebind(`UPDATE sdk_inbox SET processed_at = ? WHERE message_id = ?`), time.Now().Add(-ago).UTC(), id)
	if err != nil {
		t.Fatalf("age inbox record %s: %v", id, err)
	}
	if n, _ := res.RowsAffected(); n != 1 {
		t.Fatalf("age inbox record %s: %d rows, want 1", id, n)
	}
}

func TestPrune(t *testing.T) {
	const week = 7 * 24 * time.Hour
	eachDB(t, func(t *testing.T, db *sqlx.DB) {
		ctx := context.Background()
		f := newFixable(t, db, sdk.Config{})
		f.broken.Store(false)
		if got, want := f.p.Config().InboxRetention, sdk.DefaultInboxRetention; got != want {
			t.Errorf("default InboxRetention: got %s, want %s", got, want)
		}
		// old: handled 8 days ago; recent: handled now; replayed: parked,
		// replayed, handled 8 days ago; parked: still parked.
		old, oldRec := command(t, "DO", uuid.NewString(), nil)
		recent, _ := command(t, "DO", uuid.NewString(), nil)
		_, recentRec := command(t, "DO", recent.SagaID, nil)
		firstReply := f.dispatch(t, oldRec).Reply
		f.dispatch(t, recentRec)
		f.broken.Store(true)
		replayed, replayedRec := command(t, "DO", uuid.NewString(), nil)
		parked := f.dispatch(t, replayedRec).DeadLetter
		_, parkedRec := command(t, "DO", uuid.NewString(), nil)
		stillParked := f.dispatch(t, parkedRec).DeadLetter
		f.broken.Store(false)
		e := newAdminEnv(t, f.p)
		if res := servicetest.Call(t, e.h, http.MethodPost, "/admin/dead-letters/"+parked.ID+"/replay", e.operator, nil); res.Status != http.StatusOK {
			t.Fatalf("replay: got %d %s, want 200", res.Status, res.Body)
		}
		age(t, db, old.ID, week+time.Hour)
		age(t, db, replayed.ID, week+time.Hour)
		f.flush(t)

		n, err := f.p.Prune(ctx)
		if err != nil {
			t.Fatalf("Prune: %v", err)
		}
		if got, want := n, (sdk.Pruned{Inbox: 2, DeadLetters: 1}); got != want {
			t.Errorf("Prune: got %+v, want %+v", got, want)
		}
		if got, want := count(t, db, "sdk_inbox"), 1; got != want {
			t.Errorf("inbox records left: got %d, want %d (the recent one)", got, want)
		}
		left := e.list(t, "")
		if len(left) != 1 || left[0].ID != stillParked.ID || left[0].State != sdk.StateParked {
			t.Errorf("dead letters left: got %+v, want only the parked %s", left, stillParked.ID)
		}
		if n, err := f.p.Prune(ctx); err != nil || n != (sdk.Pruned{}) {
			t.Errorf("Prune again: got %+v, %v; want nothing deleted", n, err)
		}

		// Documented behaviour: a command delivered again after its inbox
		// record was pruned is not known as a duplicate; it runs again and
		// sends a second reply with a new message id.
		runs := f.runs.Load()
		out := f.dispatch(t, oldRec)
		if out.Duplicate || out.Reply == nil || out.Reply.ID == firstReply.ID {
			t.Errorf("redelivery after pruning: duplicate %v reply %+v; want a fresh run with a new reply (first %s)", out.Duplicate, out.Reply, firstReply.ID)
		}
		if got, want := f.runs.Load(), runs+1; got != want {
			t.Errorf("handler runs after redelivery: got %d, want %d", got, want)
		}
		// A redelivery of the recent command is still a duplicate.
		if out := f.dispatch(t, recentRec); !out.Duplicate {
			t.Errorf("redelivery of a recent command: duplicate %v, want true", out.Duplicate)
		}
	})
}

func TestPruneDisabled(t *testing.T) {
	db := openSQLite(t)
	if err := sdk.Migrate(context.Background(), db); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(`CREATE TABLE effects (saga_id TEXT NOT NULL)`); err != nil {
		t.Fatal(err)
	}
	f := newFixable(t, db, sdk.Config{InboxRetention: -1})
	f.broken.Store(false)
	cmd, rec := command(t, "DO", uuid.NewString(), nil)
	f.dispatch(t, rec)
	age(t, db, cmd.ID, 1000*24*time.Hour)
	if n, err := f.p.Prune(context.Background()); err != nil || n != (sdk.Pruned{}) {
		t.Errorf("Prune with negative retention: got %+v, %v; want nothing deleted", n, err)
	}
	if got, want := count(t, db, "sdk_inbox"), 1; got != want {
		t.Errorf("inbox records: got %d, want %d", got, want)
	}
}

// logBuffer collects log output safely across goroutines.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// Run prunes once at start and logs how many records it deleted.
func TestRunPrunesAtStart(t *testing.T) {
	b, err := embedded.Start(embedded.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	db := openSQLite(t)
	if err := sdk.Migrate(context.Background(), db); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(`CREATE TABLE effects (saga_id TEXT NOT NULL)`); err != nil {
		t.Fatal(err)
	}
	logs := &logBuffer{}
	f := newFixable(t, db, sdk.Config{
		Brokers: b.Addrs(), CommandTopic: testenv.Name(t, "PROFILE_TOPIC"), EventTopic: testenv.Name(t, "SAGA_SERVER_TOPIC"),
		Logger: slog.New(slog.NewTextHandler(logs, nil)),
	})
	f.broken.Store(false)
	cmd, rec := command(t, "DO", uuid.NewString(), nil)
	f.dispatch(t, rec)
	f.flush(t) // nothing for Run to publish
	age(t, db, cmd.ID, 8*24*time.Hour)

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.p.Run(ctx) }()
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(logs.String(), "inbox pruned") && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	var line string
	for l := range strings.Lines(logs.String()) {
		if strings.Contains(l, `msg="inbox pruned"`) {
			line = l
		}
	}
	if !strings.Contains(line, "inbox_records=1 ") {
		t.Errorf("logs: want an \"inbox pruned\" line with inbox_records=1; got:\n%s", logs.String())
	}
	if got, want := count(t, db, "sdk_inbox"), 0; got != want {
		t.Errorf("inbox records after Run: got %d, want %d", got, want)
	}
}

// Services serve the admin API behind their operator check; here the guard
// is a stand-in for auth.Authenticator.Middleware +
// RequireRole(auth.RoleOperator, ...), and the standard library's ServeMux
// serves it (the participant services register each of sdk.AdminRoutes on
// their own router).
func ExampleAdminHandler() {
	dir, err := os.MkdirTemp("", "sdk-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	db := sqlx.MustOpen("sqlite", filepath.Join(dir, "p.db"))
	defer db.Close()
	ctx := context.Background()
	if err := sdk.Migrate(ctx, db); err != nil {
		log.Fatal(err)
	}
	p, err := sdk.New(sdk.Config{Name: "profile", DB: db, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		log.Fatal(err)
	}
	// A record that is not an envelope is parked at once.
	if _, err := p.Dispatch(ctx, sdk.Record{Topic: "PROFILE_TOPIC", Key: "k", Value: []byte("not json")}); err != nil {
		log.Fatal(err)
	}

	operatorsOnly := func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Header.Get("X-Example-Role") != auth.RoleOperator {
				http.Error(w, "forbidden", http.StatusForbidden)
				return
			}
			h.ServeHTTP(w, r)
		})
	}
	r := http.NewServeMux()
	r.Handle("/admin/", operatorsOnly(sdk.AdminHandler(p)))

	req := httptest.NewRequest(http.MethodGet, "/admin/dead-letters", nil)
	req.Header.Set("X-Example-Role", auth.RoleOperator)
	rec := httptest.NewRecorder()
	r.ServeHTTP(rec, req)
	var list struct {
		Items []struct {
			State  string `json:"state"`
			Reason string `json:"reason"`
		} `json:"items"`
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &list); err != nil {
		log.Fatal(err)
	}
	fmt.Println(rec.Code, len(list.Items), list.Items[0].State)
	// Output: 200 1 parked
}
