package kafka_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"

	"github.com/portfolio-counselor/sagamachine/engine"
	"github.com/portfolio-counselor/sagamachine/engine/kafka"
	"github.com/portfolio-counselor/sagamachine/engine/kafka/kafkatest"
	"github.com/portfolio-counselor/sagamachine/internal/testenv"
)

// bus is one test's saga bus on the real, authenticated broker: unique
// topics, groups and SCRAM users, set up by kafka.ApplySetup with the super
// user, and removed when the test ends.
type bus struct {
	admin     kafka.Config
	pol       kafka.Policy
	passwords map[string]string
	// users by role: "saga-machine", "deals", "profile".
	user map[string]string
}

func newBus(t *testing.T) *bus {
	t.Helper()
	admin := testenv.KafkaSecured(t)
	b := &bus{admin: admin, passwords: map[string]string{}, user: map[string]string{}}
	base := testenv.Name(t, "EV")
	for _, role := range []string{"saga-machine", "deals", "profile"} {
		b.user[role] = testenv.Name(t, role)
		b.passwords[b.user[role]] = "pw-" + testenv.Name(t, "p")
	}
	b.pol = kafka.Policy{Orchestrator: b.user["saga-machine"], OrchestratorGroup: testenv.Name(t, "g.saga-machine")}
	for _, p := range []string{"deals", "profile"} {
		b.pol.Participants = append(b.pol.Participants, kafka.ParticipantAccess{
			Name: p, User: b.user[p], CommandTopic: testenv.Name(t, strings.ToUpper(p)+"_TOPIC"),
			EventTopic: engine.EventTopic(base, p), Group: testenv.Name(t, "g."+p),
		})
	}
	ctx := testCtx(t)
	if _, err := kafka.ApplySetup(ctx, admin, kafka.Setup{Policy: b.pol, Partitions: 2, Passwords: b.passwords}); err != nil {
		t.Fatalf("ApplySetup: %v", err)
	}
	t.Cleanup(func() { b.remove(t) })
	return b
}

// remove deletes the test's users, ACLs and topics.
func (b *bus) remove(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cl := kafkatest.Client(t, b.admin)
	adm := kadm.NewClient(cl)
	var del []kadm.DeleteSCRAM
	var principals []string
	for _, u := range b.user {
		del = append(del, kadm.DeleteSCRAM{User: u, Mechanism: kadm.ScramSha512})
		principals = append(principals, "User:"+u)
	}
	if _, err := adm.AlterUserSCRAMs(ctx, del, nil); err != nil {
		t.Logf("delete test users: %v", err)
	}
	acls := kadm.NewACLs().AnyResource().Allow(principals...).AllowHosts().Operations(kadm.OpAny).ResourcePatternType(kadm.ACLPatternAny)
	if _, err := adm.DeleteACLs(ctx, acls); err != nil {
		t.Logf("delete test ACLs: %v", err)
	}
	topics, _ := b.pol.Topics()
	if _, err := adm.DeleteTopics(ctx, topics...); err != nil {
		t.Logf("delete test topics: %v", err)
	}
}

// as is a client configuration for role's principal.
func (b *bus) as(role string) kafka.Config {
	u := b.user[role]
	return kafka.Config{Brokers: b.admin.Brokers, ClientID: "attack-" + role, DeliveryTimeout: 10 * time.Second,
		SASL: kafka.SASL{User: u, Password: b.passwords[u]}}
}

func (b *bus) participant(name string) kafka.ParticipantAccess {
	for _, p := range b.pol.Participants {
		if p.Name == name {
			return p
		}
	}
	panic("no participant " + name)
}

func testCtx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// endOffsets sums the end offsets of topic's partitions (what was ever
// written to it).
func endOffsets(t *testing.T, admin kafka.Config, topic string) int64 {
	t.Helper()
	offs, err := kadm.NewClient(kafkatest.Client(t, admin)).ListEndOffsets(testCtx(t), topic)
	if err != nil {
		t.Fatalf("ListEndOffsets(%s): %v", topic, err)
	}
	var n int64
	offs.Each(func(o kadm.ListedOffset) { n += o.Offset })
	return n
}

func publish(ctx context.Context, cfg kafka.Config, topic, value string) error {
	p, err := kafka.NewProducer(cfg)
	if err != nil {
		return err
	}
	defer p.Close()
	return p.Publish(ctx, []kafka.Record{{Topic: topic, Key: "saga-forged", Value: []byte(value)}})
}

// fetchOne joins group on topic and returns the first record or error.
func fetchOne(ctx context.Context, cfg kafka.Config, group, topic string) ([]kafka.Record, error) {
	c, err := kafka.NewConsumer(cfg, group, topic)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	fctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	return c.Fetch(fctx, 1)
}

func isAuthz(err error) bool {
	return errors.Is(err, kerr.TopicAuthorizationFailed) || errors.Is(err, kerr.GroupAuthorizationFailed) ||
		errors.Is(err, kerr.ClusterAuthorizationFailed)
}

// TestSetupMakesExactlyThePolicy: ApplySetup's ACLs on the broker are
// exactly Policy.ACLs(); a second run creates nothing; an ACL granted by
// hand to a principal of the policy (here deals reading profile's commands)
// is removed by the next run.
func TestSetupMakesExactlyThePolicy(t *testing.T) {
	b := newBus(t)
	ctx := testCtx(t)
	want, err := b.pol.ACLs()
	if err != nil {
		t.Fatalf("ACLs: %v", err)
	}
	users, _ := b.pol.Users()
	got, err := kafka.DescribeACLs(ctx, b.admin, users...)
	if err != nil {
		t.Fatalf("DescribeACLs: %v", err)
	}
	if !slices.Equal(got, want) {
		t.Errorf("ACLs on the broker:\n%v\nwant the policy's:\n%v", got, want)
	}

	profile := b.participant("profile")
	cl := kafkatest.Client(t, b.admin)
	extra := kadm.NewACLs().Topics(profile.CommandTopic).Allow("User:" + b.user["deals"]).AllowHosts("*").
		Operations(kadm.OpRead).ResourcePatternType(kadm.ACLPatternLiteral)
	if _, err := kadm.NewClient(cl).CreateACLs(ctx, extra); err != nil {
		t.Fatalf("create a stale ACL: %v", err)
	}
	res, err := kafka.ApplySetup(ctx, b.admin, kafka.Setup{Policy: b.pol, Partitions: 2})
	if err != nil {
		t.Fatalf("second ApplySetup: %v", err)
	}
	if len(res.CreatedTopics) != 0 {
		t.Errorf("second run created topics %v, want none", res.CreatedTopics)
	}
	stale := kafka.ACL{Principal: "User:" + b.user["deals"], Resource: kafka.ResourceTopic, Name: profile.CommandTopic, Operation: kafka.OpRead}
	if len(res.Removed) != 1 || res.Removed[0] != stale {
		t.Errorf("removed %v, want [%v]", res.Removed, stale)
	}
	if got, _ = kafka.DescribeACLs(ctx, b.admin, users...); !slices.Equal(got, want) {
		t.Errorf("after the second run:\n%v\nwant:\n%v", got, want)
	}
}

// TestAttackWithoutCredentials: a client without credentials and a client
// with a wrong password get nothing from the broker.
func TestAttackWithoutCredentials(t *testing.T) {
	b := newBus(t)
	ctx := testCtx(t)
	deals := b.participant("deals")
	wrong := b.as("deals")
	wrong.SASL.Password = "guessed"
	anonymous := kafka.Config{Brokers: b.admin.Brokers, DeliveryTimeout: 5 * time.Second}
	before := endOffsets(t, b.admin, deals.EventTopic)
	for name, cfg := range map[string]kafka.Config{"no credentials": anonymous, "wrong password": wrong} {
		t.Run(name, func(t *testing.T) {
			pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			defer cancel()
			if err := kafka.Ping(pctx, cfg); err == nil {
				t.Errorf("Ping = nil, want a refusal")
			}
			if err := publish(pctx, cfg, deals.EventTopic, `{"forged":true}`); err == nil {
				t.Errorf("Publish to %s = nil, want a refusal", deals.EventTopic)
			}
		})
	}
	if after := endOffsets(t, b.admin, deals.EventTopic); after != before {
		t.Errorf("%s end offsets %d -> %d: something was written", deals.EventTopic, before, after)
	}
}

// TestAttackParticipantOverstepsACLs: principal deals cannot send a forged
// command on profile's command topic (APPROVE_ORDER for a saga saga-machine
// never started), cannot read profile's commands, cannot speak on profile's
// event topic and cannot use profile's consumer group; saga-machine cannot
// send events and may not create topics. Nothing is written anywhere. Its
// own topics work (the ACLs are not simply closed).
func TestAttackParticipantOverstepsACLs(t *testing.T) {
	b := newBus(t)
	ctx := testCtx(t)
	deals, profile := b.participant("deals"), b.participant("profile")
	forgedCommand := `{"v":1,"id":"11111111-1111-1111-1111-111111111111","saga_id":"22222222-2222-2222-2222-222222222222","saga":"MANUAL_CREATE_ORDER","kind":"command","name":"APPROVE_ORDER","participant":"profile","occurred_at":"2026-01-01T00:00:00Z","payload":{"deal_context":{"user_id":"victim","amount":"1000"}}}`
	forgedEvent := `{"v":1,"id":"33333333-3333-3333-3333-333333333333","saga_id":"22222222-2222-2222-2222-222222222222","saga":"MANUAL_CREATE_ORDER","kind":"event","name":"ORDER_APPROVED","participant":"profile","occurred_at":"2026-01-01T00:00:00Z"}`
	watched := []string{profile.CommandTopic, profile.EventTopic, deals.CommandTopic}
	before := map[string]int64{}
	for _, tp := range watched {
		before[tp] = endOffsets(t, b.admin, tp)
	}

	t.Run("deals produces a forged APPROVE_ORDER to profile's command topic", func(t *testing.T) {
		if err := publish(ctx, b.as("deals"), profile.CommandTopic, forgedCommand); !isAuthz(err) {
			t.Errorf("Publish = %v, want an authorization failure", err)
		}
	})
	t.Run("deals reads profile's command topic", func(t *testing.T) {
		if recs, err := fetchOne(ctx, b.as("deals"), deals.Group, profile.CommandTopic); !isAuthz(err) {
			t.Errorf("Fetch = %d records, %v; want an authorization failure", len(recs), err)
		}
	})
	t.Run("deals writes profile's event topic", func(t *testing.T) {
		if err := publish(ctx, b.as("deals"), profile.EventTopic, forgedEvent); !isAuthz(err) {
			t.Errorf("Publish = %v, want an authorization failure", err)
		}
	})
	t.Run("deals joins profile's consumer group", func(t *testing.T) {
		if recs, err := fetchOne(ctx, b.as("deals"), profile.Group, deals.CommandTopic); !isAuthz(err) {
			t.Errorf("Fetch = %d records, %v; want an authorization failure", len(recs), err)
		}
	})
	t.Run("saga-machine writes a participant's event topic", func(t *testing.T) {
		if err := publish(ctx, b.as("saga-machine"), profile.EventTopic, forgedEvent); !isAuthz(err) {
			t.Errorf("Publish = %v, want an authorization failure", err)
		}
	})
	t.Run("saga-machine creates a topic", func(t *testing.T) {
		topic := testenv.Name(t, "NEW_TOPIC")
		err := kafka.EnsureTopics(ctx, b.as("saga-machine"), 1, topic)
		if err == nil || !strings.Contains(err.Error(), topic) {
			t.Errorf("EnsureTopics(%s) = %v, want an error naming the topic", topic, err)
		}
		// Existing topics need no CREATE: saga-machine starts without it.
		if err := kafka.EnsureTopics(ctx, b.as("saga-machine"), 2, profile.CommandTopic, profile.EventTopic); err != nil {
			t.Errorf("EnsureTopics of existing topics without CREATE: %v", err)
		}
	})
	for _, tp := range watched {
		if after := endOffsets(t, b.admin, tp); after != before[tp] {
			t.Errorf("%s end offsets %d -> %d: a refused record was written", tp, before[tp], after)
		}
	}

	// Positive controls: each principal's own rights work.
	t.Run("own rights", func(t *testing.T) {
		if err := publish(ctx, b.as("saga-machine"), profile.CommandTopic, forgedCommand); err != nil {
			t.Fatalf("saga-machine publishes a command: %v", err)
		}
		if recs, err := fetchOne(ctx, b.as("profile"), profile.Group, profile.CommandTopic); err != nil || len(recs) != 1 {
			t.Fatalf("profile reads its command: %d records, %v", len(recs), err)
		}
		if err := publish(ctx, b.as("profile"), profile.EventTopic, forgedEvent); err != nil {
			t.Fatalf("profile publishes its event: %v", err)
		}
		if recs, err := fetchOne(ctx, b.as("saga-machine"), b.pol.OrchestratorGroup, profile.EventTopic); err != nil || len(recs) != 1 {
			t.Fatalf("saga-machine reads profile's event: %d records, %v", len(recs), err)
		}
	})
}

// TestStaticMemberLeavesOnClose: a consumer with an InstanceID leaves its
// group when closed, so another member gets the partitions at once (a
// rolling update does not wait for the session timeout), and a restarted
// consumer with the same id rejoins.
func TestStaticMemberLeavesOnClose(t *testing.T) {
	admin := testenv.Kafka(t)
	ctx := testCtx(t)
	topic, group := testenv.Name(t, "kt.static"), testenv.Name(t, "g")
	if err := kafka.EnsureTopics(ctx, admin, 1, topic); err != nil {
		t.Fatalf("EnsureTopics: %v", err)
	}
	cfg := admin
	cfg.InstanceID = "replica-0"
	cfg.SessionTimeout = 60 * time.Second // a leave, not the timeout, must hand over
	a, err := kafka.NewConsumer(cfg, group, topic)
	if err != nil {
		t.Fatalf("NewConsumer: %v", err)
	}
	if err := publish(ctx, admin, topic, "1"); err != nil {
		t.Fatalf("Publish: %v", err)
	}
	recs, err := a.Fetch(ctx, 1)
	if err != nil || len(recs) != 1 {
		t.Fatalf("first member Fetch: %d, %v", len(recs), err)
	}
	if err := a.Commit(ctx, recs); err != nil {
		t.Fatalf("Commit: %v", err)
	}
	a.Close()
	described, err := kadm.NewClient(kafkatest.Client(t, admin)).DescribeGroups(ctx, group)
	if err != nil {
		t.Fatalf("DescribeGroups: %v", err)
	}
	if n := len(described[group].Members); n != 0 {
		t.Errorf("after Close the group has %d members, want 0 (the static member left)", n)
	}
	cfg.InstanceID = "replica-1"
	b, err := kafka.NewConsumer(cfg, group, topic)
	if err != nil {
		t.Fatalf("NewConsumer: %v", err)
	}
	defer b.Close()
	if err := publish(ctx, admin, topic, "2"); err != nil {
		t.Fatalf("Publish: %v", err)
	}
	recs, err = b.Fetch(ctx, 1)
	if err != nil || len(recs) != 1 || string(recs[0].Value) != "2" {
		t.Fatalf("second member Fetch: %v, %v; want record 2", recs, err)
	}
}
