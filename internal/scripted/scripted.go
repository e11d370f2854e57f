package scripted

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/portfolio-counselor/sagamachine/engine"
	"github.com/portfolio-counselor/sagamachine/engine/kafka"
)

// Reply is one event to answer a command with.
type Reply struct {
	Event   string
	Payload json.RawMessage // a JSON object or nil
	Reason  string
}

// Rule answers one command; no replies means "say nothing".
type Rule func(cmd engine.Message) []Reply

// Config tells a participant what to consume and how to answer.
type Config struct {
	// Kafka is where the topics are. Required.
	Kafka kafka.Config
	// Group is the consumer group. Required.
	Group string
	// Topics are the command topics to consume. Required.
	Topics []string
	// EventTopic is where replies go. Default "SAGA_SERVER_TOPIC".
	EventTopic string
	// EventTopicBase, if set, sends each reply to the event topic of the
	// participant the command was addressed to,
	// engine.EventTopic(EventTopicBase, participant), as real participants
	// do (saga-machine with engine.Config.EventTopicBase accepts nothing
	// else); EventTopic is then unused.
	EventTopicBase string
	// Rules answer commands by name. Default: ManualCreateOrder().
	Rules map[string]Rule
	// DropFirst drops the first N sends (attempts 1..N) of a command name.
	DropFirst map[string]int
	// Silent lists command names never answered.
	Silent map[string]bool
	// Duplicate sends every reply twice (same id).
	Duplicate bool
	// Logger, default discard.
	Logger *slog.Logger
}

// ManualCreateOrder is the default script for MANUAL_CREATE_ORDER:
// APPROVE_ORDER → ORDER_APPROVED (ORDER_REJECTED when the payload's
// deal_context.reject is true), APPROVE_DEAL and REJECT_DEAL → DEAL_UPDATED,
// NOTIFY → nothing, and the compensations of version 2: REVERT_ORDER →
// ORDER_REVERTED, FAIL_DEAL → DEAL_FAILED.
func ManualCreateOrder() map[string]Rule {
	return map[string]Rule{
		"APPROVE_ORDER": func(cmd engine.Message) []Reply {
			var p struct {
				DealContext struct {
					Reject bool `json:"reject"`
				} `json:"deal_context"`
			}
			if err := json.Unmarshal(cmd.Payload, &p); err != nil {
				// A payload the script cannot read is refused, never approved by default.
				return []Reply{{Event: "ORDER_REJECTED", Payload: json.RawMessage(`{"profile_decision":"rejected"}`), Reason: "unreadable payload: " + err.Error()}}
			}
			if p.DealContext.Reject {
				return []Reply{{Event: "ORDER_REJECTED", Payload: json.RawMessage(`{"profile_decision":"rejected"}`), Reason: "insufficient balance"}}
			}
			return []Reply{{Event: "ORDER_APPROVED", Payload: json.RawMessage(`{"profile_decision":"approved"}`)}}
		},
		"APPROVE_DEAL": func(engine.Message) []Reply {
			return []Reply{{Event: "DEAL_UPDATED", Payload: json.RawMessage(`{"deal_status":"executed"}`)}}
		},
		"REJECT_DEAL": func(engine.Message) []Reply {
			return []Reply{{Event: "DEAL_UPDATED", Payload: json.RawMessage(`{"deal_status":"rejected"}`)}}
		},
		"NOTIFY": func(engine.Message) []Reply { return nil },
		"REVERT_ORDER": func(engine.Message) []Reply {
			return []Reply{{Event: "ORDER_REVERTED", Payload: json.RawMessage(`{"profile_decision":"reverted"}`)}}
		},
		"FAIL_DEAL": func(engine.Message) []Reply {
			return []Reply{{Event: "DEAL_FAILED", Payload: json.RawMessage(`{"deal_status":"failed"}`)}}
		},
	}
}

// Participant is a running scripted participant.
type Participant struct {
	cfg    Config
	cons   *kafka.Consumer
	prod   *kafka.Producer
	cancel context.CancelFunc
	done   chan struct{}

	mu       sync.Mutex
	received []engine.Message
	changed  chan struct{}
}

// Start joins the group and answers commands until Stop.
func Start(cfg Config) (*Participant, error) {
	if cfg.Group == "" || len(cfg.Topics) == 0 {
		return nil, errors.New("start scripted participant: Group and Topics are required")
	}
	if cfg.EventTopic == "" {
		cfg.EventTopic = "SAGA_SERVER_TOPIC"
	}
	if cfg.Rules == nil {
		cfg.Rules = ManualCreateOrder()
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	cons, err := kafka.NewConsumer(cfg.Kafka, cfg.Group, cfg.Topics...)
	if err != nil {
		return nil, fmt.Errorf("start scripted participant: %w", err)
	}
	prod, err := kafka.NewProducer(cfg.Kafka)
	if err != nil {
		cons.Close()
		return nil, fmt.Errorf("start scripted participant: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	p := &Participant{cfg: cfg, cons: cons, prod: prod, cancel: cancel, done: make(chan struct{}), changed: make(chan struct{})}
	go p.loop(ctx)
	return p, nil
}

// Stop stops consuming and closes the clients.
func (p *Participant) Stop() {
	p.cancel()
	<-p.done
	p.cons.Close()
	p.prod.Close()
}

func (p *Participant) loop(ctx context.Context) {
	defer close(p.done)
	for ctx.Err() == nil {
		recs, err := p.cons.Fetch(ctx, 500)
		if err != nil {
			if ctx.Err() == nil {
				p.cfg.Logger.Warn("scripted fetch failed", "err", err)
				time.Sleep(100 * time.Millisecond)
			}
			continue
		}
		var out []kafka.Record
		var cmds []engine.Message
		for _, r := range recs {
			var cmd engine.Message
			if err := json.Unmarshal(r.Value, &cmd); err != nil {
				p.cfg.Logger.Warn("scripted: undecodable command", "err", err)
				continue
			}
			cmds = append(cmds, cmd)
			out = append(out, p.answer(cmd)...)
		}
		for ctx.Err() == nil {
			err := p.prod.Publish(ctx, out)
			if err == nil {
				break
			}
			p.cfg.Logger.Warn("scripted publish failed; retrying", "err", err)
			time.Sleep(100 * time.Millisecond)
		}
		if ctx.Err() != nil {
			return
		}
		if err := p.cons.Commit(ctx, recs); err != nil && ctx.Err() == nil {
			p.cfg.Logger.Warn("scripted commit failed", "err", err)
		}
		p.mu.Lock()
		p.received = append(p.received, cmds...)
		close(p.changed)
		p.changed = make(chan struct{})
		p.mu.Unlock()
	}
}

// answer builds the reply records for cmd.
func (p *Participant) answer(cmd engine.Message) []kafka.Record {
	if cmd.Kind != engine.KindCommand || p.cfg.Silent[cmd.Name] || cmd.Attempt <= p.cfg.DropFirst[cmd.Name] {
		return nil
	}
	rule := p.cfg.Rules[cmd.Name]
	if rule == nil {
		return nil
	}
	var out []kafka.Record
	for _, r := range rule(cmd) {
		ev := NewEvent(cmd.Saga, cmd.SagaID, r.Event, cmd.Participant, r.Payload)
		ev.ID = uuid.NewSHA1(uuid.NameSpaceOID, []byte(cmd.ID+"/"+r.Event)).String()
		ev.SagaVersion = cmd.SagaVersion
		ev.CausationID = cmd.ID
		ev.Reason = r.Reason
		topic := p.cfg.EventTopic
		if p.cfg.EventTopicBase != "" {
			topic = engine.EventTopic(p.cfg.EventTopicBase, cmd.Participant)
		}
		rec := Record(topic, ev)
		out = append(out, rec)
		if p.cfg.Duplicate {
			out = append(out, rec)
		}
	}
	return out
}

// Received returns every command consumed so far, in order.
func (p *Participant) Received() []engine.Message {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]engine.Message(nil), p.received...)
}

// WaitFor blocks until cond(received commands) is true or ctx ends.
func (p *Participant) WaitFor(ctx context.Context, cond func([]engine.Message) bool) error {
	for {
		p.mu.Lock()
		ok := cond(p.received)
		ch := p.changed
		p.mu.Unlock()
		if ok {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("scripted participant: condition not met: %w", ctx.Err())
		case <-ch:
		}
	}
}

// NewEvent builds an event envelope with a new id.
func NewEvent(saga, sagaID, name, by string, payload json.RawMessage) engine.Message {
	if len(bytes.TrimSpace(payload)) == 0 {
		payload = nil
	}
	return engine.Message{
		V: engine.EnvelopeVersion, ID: uuid.NewString(), SagaID: sagaID, Saga: saga, Kind: engine.KindEvent,
		Name: name, Participant: by, OccurredAt: time.Now().UTC(), Payload: payload,
	}
}

// Record encodes m as a Kafka record keyed by its saga id.
func Record(topic string, m engine.Message) kafka.Record {
	b, err := json.Marshal(m)
	if err != nil {
		panic(fmt.Sprintf("scripted: encode message: %v", err)) // Message always encodes
	}
	return kafka.Record{Topic: topic, Key: m.SagaID, Value: b, Headers: map[string]string{
		engine.HeaderKind: string(m.Kind), engine.HeaderName: m.Name,
	}}
}
