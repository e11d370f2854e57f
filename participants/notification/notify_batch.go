package notification

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/jmoiron/sqlx"

	"github.com/portfolio-counselor/sagamachine/engine/envelope"
	"github.com/portfolio-counselor/sagamachine/participants/sdk"
)

// handleNotifyBatch is NOTIFY's batch handler (sdk.HandleBatch): it
// answers a run of NOTIFY commands with what handleNotify, called once per
// command in order, would answer and store, in fewer statements.
//
// One command runs handleNotify itself. With several, every payload is
// parsed and every deal's text built first; an error there (a payload that
// is not a NOTIFY, a deal status NOTIFY does not expect) fails the whole
// group, so that the SDK handles each command alone and the command at
// fault is the one parked, with handleNotify's reason. Then the commands
// are taken in order: a basket's NOTIFY goes through notifyBasket, the
// per-command code, at its place; each run of deal NOTIFYs between them
// goes through notifyDeals, two statements for the whole run. A NOTIFY
// that handleNotify would refuse (its deal notified before, or earlier in
// the group, to another user or in another saga) fails the group too: the
// SDK then refuses it alone and answers the others. Every command answered
// gets NoReply, as from handleNotify.
func (s *Service) handleNotifyBatch(ctx context.Context, tx *sqlx.Tx, cmds []sdk.Command[json.RawMessage]) ([]sdk.Result, error) {
	if len(cmds) == 1 {
		r, err := s.handleNotify(ctx, tx, cmds[0])
		if err != nil {
			return nil, err
		}
		return []sdk.Result{r}, nil
	}
	items := make([]notifyItem, len(cmds))
	for i, c := range cmds {
		nt, err := parseNotify(c.Payload)
		if err != nil {
			return nil, sdk.Permanent(fmt.Errorf("%s: %w", c.Name, err))
		}
		items[i].cmd = c
		if nt.basket != nil {
			items[i].basket = nt.basket
			continue
		}
		text, status, err := Text(nt.dc, nt.rev)
		if err != nil {
			return nil, sdk.Permanent(fmt.Errorf("%s: %w", c.Name, err))
		}
		items[i].n = Notification{UserID: nt.dc.UserID, DealID: nt.dc.DealID, SagaID: c.SagaID, Status: status, Text: text}
	}
	res := make([]sdk.Result, len(cmds))
	start := 0 // the first deal NOTIFY not yet stored
	for i := 0; i <= len(items); i++ {
		if i < len(items) && items[i].basket == nil {
			continue
		}
		if start < i {
			if err := s.notifyDeals(ctx, tx, items[start:i]); err != nil {
				return nil, err
			}
			for j := start; j < i; j++ {
				res[j] = sdk.NoReply()
			}
		}
		start = i + 1
		if i < len(items) {
			r, err := s.notifyBasket(ctx, tx, items[i].cmd, *items[i].basket)
			if err != nil {
				return nil, err
			}
			res[i] = r
		}
	}
	return res, nil
}

// notifyItem is one command of a NOTIFY group, parsed: a basket's
// (basket set) or a deal's (n, without id and time yet).
type notifyItem struct {
	cmd    sdk.Command[json.RawMessage]
	basket *BasketDTO
	n      Notification
}

// recipient is who a deal was told to, in which saga.
type recipient struct{ user, saga string }

// notifyDeals stores the notifications of a run of deal NOTIFYs (items,
// in command order, none a basket's) as handleNotify would one after the
// other, in two statements: one SELECT of the recipients of every deal
// named (checkRecipient for all of them, the run's own earlier commands
// taken into account in Go), one multi-row INSERT ... ON CONFLICT
// (deal_id, status) DO NOTHING RETURNING deal_id, status, which tells the
// notifications stored now from those sent before. A deal outcome named
// twice in the run is stored once, with the first command's text, as
// sequential handling would. A command that checkRecipient would refuse
// is an error for the whole run (see handleNotifyBatch).
func (s *Service) notifyDeals(ctx context.Context, tx *sqlx.Tx, items []notifyItem) error {
	name := items[0].cmd.Name
	ids := make([]any, 0, len(items))
	named := make(map[string]bool, len(items))
	for _, it := range items {
		if !named[it.n.DealID] {
			named[it.n.DealID] = true
			ids = append(ids, it.n.DealID)
		}
	}
	var prev []struct {
		DealID string `db:"deal_id"`
		UserID string `db:"user_id"`
		SagaID string `db:"saga_id"`
	}
	q := `SELECT DISTINCT deal_id, user_id, saga_id FROM notifications WHERE deal_id IN (?` + strings.Repeat(", ?", len(ids)-1) + `)`
	if err := s.sql.Select(ctx, tx, &prev, q, ids...); err != nil {
		return fmt.Errorf("%s: check the earlier notifications of %d deals: %w", name, len(ids), err)
	}
	told := make(map[string][]recipient, len(prev)) // deal id -> its recipients so far
	for _, p := range prev {
		told[p.DealID] = append(told[p.DealID], recipient{p.UserID, p.SagaID})
	}
	// checkRecipient per command, in order: a command that passes leaves
	// its deal told to its user in its saga (stored now or before).
	type outcome struct{ deal, status string }
	first := make(map[outcome]int, len(items)) // deal outcome -> the first command naming it
	rows := make([]Notification, 0, len(items))
	now := s.now().UTC()
	for i, it := range items {
		me := recipient{it.n.UserID, it.n.SagaID}
		for _, r := range told[it.n.DealID] {
			if r != me {
				return sdk.Permanent(fmt.Errorf("%s: deal %s was notified before, or earlier in this group, to another user or in another saga; "+
					"refusing to tell user %q about it in saga %s (the group's commands are handled one by one)",
					name, it.n.DealID, truncate(it.n.UserID, 64), it.n.SagaID))
			}
		}
		told[it.n.DealID] = []recipient{me}
		key := outcome{it.n.DealID, it.n.Status}
		if _, dup := first[key]; dup {
			continue
		}
		first[key] = i
		n := it.n
		n.ID, n.CreatedAt = envelope.NewID(), now
		rows = append(rows, n)
	}
	var ins strings.Builder
	args := make([]any, 0, 7*len(rows))
	ins.WriteString(`INSERT INTO notifications (id, user_id, deal_id, saga_id, status, text, created_at) VALUES `)
	for i, n := range rows {
		if i > 0 {
			ins.WriteString(", ")
		}
		ins.WriteString("(?, ?, ?, ?, ?, ?, ?)")
		args = append(args, n.ID, n.UserID, n.DealID, n.SagaID, n.Status, n.Text, n.CreatedAt)
	}
	// One notification per deal outcome: NOTIFY arriving again under a new
	// message id is not sent twice.
	ins.WriteString(` ON CONFLICT (deal_id, status) DO NOTHING RETURNING deal_id, status`)
	var stored []struct {
		DealID string `db:"deal_id"`
		Status string `db:"status"`
	}
	if err := s.sql.Select(ctx, tx, &stored, ins.String(), args...); err != nil {
		return fmt.Errorf("%s: store the notifications of %d deals: %w", name, len(ids), err)
	}
	isNew := make(map[outcome]bool, len(stored))
	for _, r := range stored {
		isNew[outcome{r.DealID, r.Status}] = true
	}
	sent := make(map[outcome]Notification, len(rows))
	for _, n := range rows {
		sent[outcome{n.DealID, n.Status}] = n
	}
	for i, it := range items {
		key := outcome{it.n.DealID, it.n.Status}
		if !isNew[key] || first[key] != i {
			s.log.InfoContext(ctx, "notification already sent", "deal_id", it.n.DealID, "status", it.n.Status)
			continue
		}
		n := sent[key]
		// The stub gateway: a real one would send here (through its own outbox).
		s.log.InfoContext(ctx, "notification (stub gateway: would send)", "to_user", n.UserID, "notification_id", n.ID,
			"deal_id", n.DealID, "saga_id", n.SagaID, "text", n.Text)
	}
	return nil
}
