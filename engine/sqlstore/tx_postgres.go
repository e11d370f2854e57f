package sqlstore

import (
	"context"
	"database/sql"
	"time"

	"github.com/portfolio-counselor/sagamachine/engine"
	"github.com/portfolio-counselor/sagamachine/internal/sqldb"
)

// PostgreSQL writes whole batches with one statement each: the batch is bound
// as one array per column and expanded with unnest. JSON columns are bound as
// one JSON array of the documents (jsonArray) and expanded with
// json_array_elements: PostgreSQL parses it once, where a json[] literal is
// scanned, unescaped and then parsed per element, and nothing needs escaping
// on the way. ROWS FROM zips the columns by position.

// jsonOrNull turns a JSON null element of a jsonArray back into SQL NULL.
func jsonOrNull(col string) string {
	return "CASE WHEN json_typeof(" + col + ") = 'null' THEN NULL ELSE " + col + " END"
}

// instColumns are the arrays of a batch of instances.
type instColumns struct {
	ids, sagas, states, statuses []string
	versions, attempts           []int64
	revs                         []int64
	contexts, pendings           []*string
	timers                       []*time.Time
	traces, undos, deferreds     []*string
	joins                        []*string
	createds, updateds, entereds []time.Time
}

func pgInstColumns(rows []instRow) instColumns {
	n := len(rows)
	c := instColumns{
		ids: make([]string, n), sagas: make([]string, n), states: make([]string, n), statuses: make([]string, n),
		versions: make([]int64, n), attempts: make([]int64, n), revs: make([]int64, n),
		contexts: make([]*string, n), pendings: make([]*string, n), timers: make([]*time.Time, n), traces: make([]*string, n),
		undos: make([]*string, n), deferreds: make([]*string, n), joins: make([]*string, n),
		createds: make([]time.Time, n), updateds: make([]time.Time, n), entereds: make([]time.Time, n),
	}
	for i, r := range rows {
		in := r.in
		c.ids[i], c.sagas[i], c.states[i], c.statuses[i] = in.ID, in.Saga, in.State, string(in.Status)
		c.versions[i], c.attempts[i], c.revs[i] = int64(in.SagaVersion), int64(in.Attempts), in.Rev
		c.contexts[i], c.pendings[i], c.timers[i] = r.context, r.pending, pgNullTime(in.TimerAt)
		c.traces[i] = nullString(in.Traceparent)
		c.undos[i], c.deferreds[i], c.joins[i] = r.undo, r.deferred, r.join
		c.createds[i], c.updateds[i], c.entereds[i] = pgTime(in.CreatedAt), pgTime(in.UpdatedAt), pgTime(in.EnteredAt)
	}
	return c
}

// insertInstancesSQL inserts a batch of instances (pgInstColumns,
// insertInstancesArgs) with Rev 1.
var insertInstancesSQL = `INSERT INTO saga_instances (id, saga, saga_version, state, status, context,
			created_at, updated_at, entered_at, rev, pending, attempts, timer_at, traceparent, undo, deferred, join_state)
		SELECT id, saga, saga_version, state, status, ` + jsonOrNull("context") + `, created_at, updated_at, entered_at, 1,
			` + jsonOrNull("pending") + `, attempts, timer_at, traceparent, ` + jsonOrNull("undo") + `, ` + jsonOrNull("deferred") + `,
			` + jsonOrNull("join_state") + `
		FROM ROWS FROM (unnest($1::text[]), unnest($2::text[]), unnest($3::int[]), unnest($4::text[]), unnest($5::text[]),
			json_array_elements($6::json), unnest($7::timestamptz[]), unnest($8::timestamptz[]), unnest($9::timestamptz[]),
			json_array_elements($10::json), unnest($11::int[]), unnest($12::timestamptz[]), unnest($13::text[]),
			json_array_elements($14::json), json_array_elements($15::json), json_array_elements($16::json))
			AS v(id, saga, saga_version, state, status, context, created_at, updated_at, entered_at, pending, attempts,
				timer_at, traceparent, undo, deferred, join_state)`

func insertInstancesArgs(c instColumns) []any {
	return []any{sqldb.TextArray(c.ids), sqldb.TextArray(c.sagas), sqldb.Int64Array(c.versions), sqldb.TextArray(c.states),
		sqldb.TextArray(c.statuses), sqldb.JSONArray(c.contexts), sqldb.TimeArray(c.createds),
		sqldb.TimeArray(c.updateds), sqldb.TimeArray(c.entereds), sqldb.JSONArray(c.pendings),
		sqldb.Int64Array(c.attempts), sqldb.NullTimeArray(c.timers), sqldb.NullTextArray(c.traces),
		sqldb.JSONArray(c.undos), sqldb.JSONArray(c.deferreds), sqldb.JSONArray(c.joins)}
}

// insertKeysSQL inserts keys (keyRows).
const insertKeysSQL = `INSERT INTO saga_keys (saga_id, name, value)
		SELECT * FROM unnest($1::text[], $2::text[], $3::text[])`

func (t *tx) insertPostgres(ctx context.Context, rows []instRow) error {
	if _, err := t.exec(ctx, insertInstancesSQL, insertInstancesArgs(pgInstColumns(rows))...); err != nil {
		return err
	}
	kIDs, kNames, kValues := keyRows(rows)
	if len(kIDs) == 0 {
		return nil
	}
	_, err := t.exec(ctx, insertKeysSQL, sqldb.TextArray(kIDs), sqldb.TextArray(kNames), sqldb.TextArray(kValues))
	return err
}

// updateInstancesSQL updates a batch of instances whose stored rev is the
// given one (pgInstColumns, updateInstancesArgs) and returns the ids it
// updated.
//
// The id = ANY($1) beside the join is for the planner. It estimates the
// ROWS FROM at 100 rows whatever the batch (json_array_elements' default),
// and below a few thousand sagas it then joined by hashing a sequential
// scan of the whole table (auto_explain: 1.3 ms of a 3.3 ms batch at 2,000
// sagas; TestUpdatePlanReadsByPrimaryKey); with the ids as an array it
// reads them through the primary key.
var updateInstancesSQL = `UPDATE saga_instances AS s SET saga = v.saga, saga_version = v.saga_version,
			state = v.state, status = v.status, context = ` + jsonOrNull("v.context") + `, updated_at = v.updated_at,
			entered_at = v.entered_at, rev = s.rev + 1, pending = ` + jsonOrNull("v.pending") + `, attempts = v.attempts,
			timer_at = v.timer_at, traceparent = v.traceparent, undo = ` + jsonOrNull("v.undo") + `,
			deferred = ` + jsonOrNull("v.deferred") + `, join_state = ` + jsonOrNull("v.join_state") + `
		FROM ROWS FROM (unnest($1::text[]), unnest($2::bigint[]), unnest($3::text[]), unnest($4::int[]),
			unnest($5::text[]), unnest($6::text[]), json_array_elements($7::json), unnest($8::timestamptz[]),
			unnest($9::timestamptz[]), json_array_elements($10::json), unnest($11::int[]), unnest($12::timestamptz[]),
			unnest($13::text[]), json_array_elements($14::json), json_array_elements($15::json),
			json_array_elements($16::json))
			AS v(id, rev, saga, saga_version, state, status, context, updated_at, entered_at, pending, attempts, timer_at,
				traceparent, undo, deferred, join_state)
		WHERE s.id = ANY($1::text[]) AND s.id = v.id AND s.rev = v.rev
		RETURNING s.id`

func updateInstancesArgs(c instColumns) []any {
	return []any{sqldb.TextArray(c.ids), sqldb.Int64Array(c.revs), sqldb.TextArray(c.sagas), sqldb.Int64Array(c.versions),
		sqldb.TextArray(c.states), sqldb.TextArray(c.statuses), sqldb.JSONArray(c.contexts),
		sqldb.TimeArray(c.updateds), sqldb.TimeArray(c.entereds), sqldb.JSONArray(c.pendings),
		sqldb.Int64Array(c.attempts), sqldb.NullTimeArray(c.timers), sqldb.NullTextArray(c.traces),
		sqldb.JSONArray(c.undos), sqldb.JSONArray(c.deferreds), sqldb.JSONArray(c.joins)}
}

func (t *tx) updatePostgres(ctx context.Context, rows []instRow) (map[string]bool, error) {
	res, err := t.query(ctx, updateInstancesSQL, updateInstancesArgs(pgInstColumns(rows))...)
	if err != nil {
		return nil, err
	}
	return scanIDs(res, len(rows))
}

// scanIDs reads and closes rows of one id each.
func scanIDs(res *sql.Rows, n int) (map[string]bool, error) {
	defer res.Close()
	ids := make(map[string]bool, n)
	for res.Next() {
		var id string
		if err := res.Scan(&id); err != nil {
			return nil, err
		}
		ids[id] = true
	}
	if err := res.Err(); err != nil {
		return nil, err
	}
	return ids, nil
}

// replaceKeysPostgres replaces the keys of rows: it drops the ones that are
// gone or changed and adds the new ones; unchanged keys are not touched.
func (t *tx) replaceKeysPostgres(ctx context.Context, rows []instRow) error {
	ids := make([]string, len(rows))
	for i, r := range rows {
		ids[i] = r.in.ID
	}
	kIDs, kNames, kValues := keyRows(rows)
	if _, err := t.exec(ctx, `DELETE FROM saga_keys AS k WHERE k.saga_id = ANY($1::text[])
		AND NOT EXISTS (SELECT 1 FROM unnest($2::text[], $3::text[], $4::text[]) AS n(saga_id, name, value)
			WHERE n.saga_id = k.saga_id AND n.name = k.name AND n.value = k.value)`,
		sqldb.TextArray(ids), sqldb.TextArray(kIDs), sqldb.TextArray(kNames), sqldb.TextArray(kValues)); err != nil {
		return err
	}
	if len(kIDs) == 0 {
		return nil
	}
	_, err := t.exec(ctx, `INSERT INTO saga_keys (saga_id, name, value)
		SELECT * FROM unnest($1::text[], $2::text[], $3::text[]) ON CONFLICT DO NOTHING`,
		sqldb.TextArray(kIDs), sqldb.TextArray(kNames), sqldb.TextArray(kValues))
	return err
}

// historySQL appends history entries (historyArgs).
var historySQL = `INSERT INTO saga_history (saga_id, at, kind, message_id, event, by_participant,
			from_state, to_state, commands, code, reason, actor)
		SELECT saga_id, at, kind, message_id, event, by_participant, from_state, to_state,
			` + jsonOrNull("commands") + `,
			code, reason, actor
		FROM ROWS FROM (unnest($1::text[]), unnest($2::timestamptz[]), unnest($3::text[]), unnest($4::text[]),
			unnest($5::text[]), unnest($6::text[]), unnest($7::text[]), unnest($8::text[]), json_array_elements($9::json),
			unnest($10::text[]), unnest($11::text[]), unnest($12::text[]))
			AS v(saga_id, at, kind, message_id, event, by_participant, from_state, to_state, commands, code, reason, actor)`

func historyArgs(rows []histRow) []any {
	n := len(rows)
	var (
		ats                                 = make([]time.Time, n)
		sagaIDs, kinds, msgIDs, events, bys = make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n)
		froms, tos, codes, reasons, actors  = make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n)
		cmds                                = make([]*string, n)
	)
	for i, r := range rows {
		e := r.e
		sagaIDs[i], ats[i], kinds[i], msgIDs[i], events[i], bys[i] = e.SagaID, pgTime(e.At), string(e.Kind), e.MessageID, e.Event, e.By
		froms[i], tos[i], codes[i], reasons[i], actors[i], cmds[i] = e.FromState, e.ToState, string(e.Code), e.Reason, e.Actor, r.commands
	}
	return []any{sqldb.TextArray(sagaIDs), sqldb.TimeArray(ats), sqldb.TextArray(kinds), sqldb.TextArray(msgIDs),
		sqldb.TextArray(events), sqldb.TextArray(bys), sqldb.TextArray(froms), sqldb.TextArray(tos),
		sqldb.JSONArray(cmds), sqldb.TextArray(codes), sqldb.TextArray(reasons), sqldb.TextArray(actors)}
}

func (t *tx) historyPostgres(ctx context.Context, rows []histRow) error {
	_, err := t.exec(ctx, historySQL, historyArgs(rows)...)
	return err
}

func (t *tx) deadLettersPostgres(ctx context.Context, dls []engine.DeadLetter, now time.Time) error {
	n := len(dls)
	var (
		msgIDs                          = make([]*string, n)
		sagaIDs, topics, codes, reasons = make([]string, n), make([]string, n), make([]string, n), make([]string, n)
		creats                          = make([]time.Time, n)
		parts, offsets                  = make([]int64, n), make([]int64, n)
		raws                            = make([][]byte, n)
	)
	for i, dl := range dls {
		created := dl.CreatedAt
		if created.IsZero() {
			created = now
		}
		msgIDs[i], sagaIDs[i], topics[i], codes[i], reasons[i], creats[i] = nullString(dl.MessageID), dl.SagaID, dl.Topic, string(dl.Code), dl.Reason, pgTime(created)
		parts[i], offsets[i] = int64(dl.Partition), dl.Offset
		raws[i] = dl.Raw
		if raws[i] == nil {
			raws[i] = []byte{}
		}
	}
	_, err := t.exec(ctx, `INSERT INTO dead_letters (message_id, saga_id, topic, kafka_partition,
			kafka_offset, raw, code, reason, created_at)
		SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::int[], $5::bigint[], $6::bytea[], $7::text[],
			$8::text[], $9::timestamptz[])
		ON CONFLICT DO NOTHING`,
		sqldb.NullTextArray(msgIDs), sqldb.TextArray(sagaIDs), sqldb.TextArray(topics), sqldb.Int64Array(parts),
		sqldb.Int64Array(offsets), sqldb.ByteaArray(raws), sqldb.TextArray(codes), sqldb.TextArray(reasons),
		sqldb.TimeArray(creats))
	return err
}
