// Package sdktest unit-tests participant handlers without Kafka or a
// database server: a Kit is a participant on a temporary SQLite database
// with the SDK tables migrated, and Kit.Send dispatches a command through
// the same code path the Kafka intake uses (inbox, handler transaction,
// outbox, retries, dead letters), then relays the outbox and returns what
// was emitted.
//
//	kit := sdktest.New(t, sdk.Config{Name: "profile"}, profile.Register, profile.Migrate)
//	res := kit.Send(t, "APPROVE_ORDER", map[string]any{"deal_context": deal})
//	if res.Event != "ORDER_APPROVED" { t.Fatalf(...) }
//	again := kit.Redeliver(t) // duplicate: same reply, handler not run again
package sdktest
