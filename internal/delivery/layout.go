package delivery

// Layout names one component's inbox and outbox tables and the ways the
// two layouts in use differ. Both inboxes have message_id (primary key)
// and processed_at; both outboxes have seq (ascending with insertion),
// topic, created_at, claimed_by and claimed_until.
type Layout struct {
	// Name names the layout in errors ("engine", "sdk").
	Name string
	// Inbox and Outbox are the table names.
	Inbox, Outbox string
	// Replies: the inbox also keeps, per message, its saga_id and command
	// and the reply it produced (reply_id, reply), so that a duplicate is
	// answered with the same reply. Without it an inbox row is only the id.
	Replies bool
	// Key and Value name the outbox columns of the record's key and value.
	Key, Value string
	// ValueJSON: the value column is json on PostgreSQL (its rows are
	// written as one JSON array); otherwise it is bytea.
	ValueJSON bool
	// Headers: the outbox keeps every header as a JSON object (column
	// headers) and the message's id and name (message_id, name).
	// Otherwise it keeps only the traceparent header (column traceparent);
	// the reader derives the others from the value.
	Headers bool
	// UnixMicros: on SQLite times are INTEGER unix microseconds;
	// otherwise time values (timestamptz on PostgreSQL; on SQLite the text
	// modernc.org/sqlite writes, which sorts like the times in UTC).
	UnixMicros bool
	// KeepInbox, if set, is an SQL condition on a row of the inbox
	// (referred to by its table name) under which Purge keeps it although
	// it is older than the cut-off; each ? in it is bound to the cut-off.
	KeepInbox string
}

// EngineTables is saga-machine's layout (schema/migrations/engine): inbox
// (message_id, processed_at) and outbox (topic, key, message json,
// traceparent), times as unix microseconds on SQLite.
var EngineTables = Layout{
	Name: "engine", Inbox: "inbox", Outbox: "outbox",
	Key: "key", Value: "message", ValueJSON: true, UnixMicros: true,
}

// ParticipantTables is the participant SDK's layout (schema/migrations/sdk):
// sdk_inbox with the replies, sdk_outbox with headers, message id and name;
// an inbox record a compensation recorded since the cut-off (table
// sdk_compensated) is kept, so that the compensated command is still
// refused if it comes.
var ParticipantTables = Layout{
	Name: "sdk", Inbox: "sdk_inbox", Outbox: "sdk_outbox",
	Replies: true, Key: "msg_key", Value: "body", Headers: true,
	KeepInbox: `EXISTS (SELECT 1 FROM sdk_compensated c
		WHERE c.message_id = sdk_inbox.message_id AND c.compensated_at >= ?)`,
}
