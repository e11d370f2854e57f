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
//
// Deadlines and compensations: SendWithDeadline sends a command with a
// deadline (one already passed gives a Result with Expired set and the
// COMMAND_EXPIRED reply); Compensate sends a compensation command for an
// earlier command, or for one built with Command and sent afterwards with
// SendMessage, which the SDK then refuses.
//
//	late := kit.Command(t, "APPROVE_ORDER", deal)
//	kit.Compensate(t, "REVERT_ORDER", late, deal) // nothing to undo yet
//	res := kit.SendMessage(t, late)             // res.Expired, res.Event == "COMMAND_EXPIRED"
package sdktest
