package main

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/twmb/franz-go/pkg/kadm"

	"github.com/portfolio-counselor/sagamachine/engine/kafka/kafkatest"
	"github.com/portfolio-counselor/sagamachine/internal/testenv"
)

// TestDeleteKafkaRun: after a run on real brokers the bench deletes the
// run's topics (those whose names hold its infix) and its consumer groups
// (by prefix), and nothing else: a topic and a group of another run stay.
func TestDeleteKafkaRun(t *testing.T) {
	kcfg := testenv.Kafka(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	adm := kadm.NewClient(kafkatest.Client(t, kcfg))
	id := strings.ReplaceAll(uuid.NewString(), "-", "")[:10]
	other := strings.ReplaceAll(uuid.NewString(), "-", "")[:10]
	mine := []string{"DEALS_TOPIC.bench" + id, "SAGA_SERVER_TOPIC.bench" + id + "_PROFILE"}
	foreign := "DEALS_TOPIC.bench" + other
	t.Cleanup(func() { adm.DeleteTopics(context.Background(), append(mine, foreign)...) }) //nolint:errcheck // best effort
	for _, topic := range append(slices.Clone(mine), foreign) {
		if r, err := adm.CreateTopic(ctx, 1, 1, nil, topic); err != nil || r.Err != nil {
			t.Fatalf("create %s: %v %v", topic, err, r.Err)
		}
	}
	// A group exists once it has committed an offset.
	group := func(name, topic string) {
		t.Helper()
		offs := kadm.Offsets{}
		offs.Add(kadm.Offset{Topic: topic, Partition: 0, At: 0, LeaderEpoch: -1})
		if r, err := adm.CommitOffsets(ctx, name, offs); err != nil || r.Error() != nil {
			t.Fatalf("commit for group %s: %v %v", name, err, r.Error())
		}
	}
	group("bench"+id+".deals", mine[0])
	group("bench"+other+".deals", foreign)
	t.Cleanup(func() { adm.DeleteGroups(context.Background(), "bench"+other+".deals") }) //nolint:errcheck // best effort

	o := options{brokers: kcfg.Brokers, kafkaSASL: kcfg.SASL}
	if err := deleteKafkaRun(o, ".bench"+id, "bench"+id+"."); err != nil {
		t.Fatalf("deleteKafkaRun: %v", err)
	}
	topics, err := adm.ListTopics(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, topic := range mine {
		if topics.Has(topic) {
			t.Errorf("topic %s of the run is still there", topic)
		}
	}
	if !topics.Has(foreign) {
		t.Errorf("topic %s of another run was deleted", foreign)
	}
	groups, err := adm.ListGroups(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if names := groups.Groups(); slices.Contains(names, "bench"+id+".deals") || !slices.Contains(names, "bench"+other+".deals") {
		t.Errorf("groups after the cleanup: %v; want bench%s.deals gone and bench%s.deals kept", names, id, other)
	}
}
