// Command kafkaprobe checks that a Kafka cluster really works, for
// scripts/up.sh: it waits until a metadata request succeeds and, with
// -roundtrip, creates a topic, produces a record, consumes it back through a
// consumer group, commits the offset and deletes the topic. With -user it
// authenticates with SASL/SCRAM-SHA-512, the password taken from
// $SAGA_KAFKA_PASSWORD (never from the command line).
//
//	SAGA_KAFKA_PASSWORD=... go run ./scripts/kafkaprobe -brokers 127.0.0.1:59092 -user admin -roundtrip
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl/scram"
)

func main() {
	brokers := flag.String("brokers", "127.0.0.1:59092", "comma-separated seed brokers")
	timeout := flag.Duration("timeout", 60*time.Second, "give up after this long")
	roundtrip := flag.Bool("roundtrip", false, "also produce and consume a record through a consumer group")
	user := flag.String("user", "", "SASL/SCRAM-SHA-512 user (password from $SAGA_KAFKA_PASSWORD); empty: no authentication")
	flag.Parse()
	if *user != "" {
		pw := os.Getenv("SAGA_KAFKA_PASSWORD")
		if pw == "" {
			fmt.Fprintln(os.Stderr, "kafkaprobe: -user needs the password in $SAGA_KAFKA_PASSWORD")
			os.Exit(2)
		}
		auth = []kgo.Opt{kgo.SASL(scram.Auth{User: *user, Pass: pw}.AsSha512Mechanism())}
	}

	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	seeds := strings.Split(*brokers, ",")
	if err := run(ctx, seeds, *roundtrip); err != nil {
		fmt.Fprintf(os.Stderr, "kafkaprobe: %v\n", err)
		os.Exit(1)
	}
}

// auth are the SASL options of every client (none without -user).
var auth []kgo.Opt

// opts are the options of a client: the seeds, auth and extra.
func opts(seeds []string, extra ...kgo.Opt) []kgo.Opt {
	return append(append([]kgo.Opt{kgo.SeedBrokers(seeds...)}, auth...), extra...)
}

func run(ctx context.Context, seeds []string, roundtrip bool) error {
	cl, err := kgo.NewClient(opts(seeds)...)
	if err != nil {
		return fmt.Errorf("create client for %v: %w", seeds, err)
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)

	start := time.Now()
	meta, err := waitMetadata(ctx, adm)
	if err != nil {
		return err
	}
	fmt.Printf("kafkaprobe: metadata ok after %s: cluster %s, %d broker(s), controller %d\n",
		time.Since(start).Round(time.Millisecond), meta.Cluster, len(meta.Brokers), meta.Controller)
	if !roundtrip {
		return nil
	}
	start = time.Now()
	if err := roundTrip(ctx, seeds, adm); err != nil {
		return err
	}
	fmt.Printf("kafkaprobe: produce/consume round trip ok in %s\n", time.Since(start).Round(time.Millisecond))
	return nil
}

// waitMetadata retries a metadata request until it lists a broker and a
// controller, or ctx ends.
func waitMetadata(ctx context.Context, adm *kadm.Client) (kadm.Metadata, error) {
	var last error
	var refusedSince time.Time
	for {
		meta, err := adm.BrokerMetadata(ctx)
		if !errors.Is(err, kerr.SaslAuthenticationFailed) {
			refusedSince = time.Time{}
		} else if refusedSince.IsZero() {
			refusedSince = time.Now()
		} else if time.Since(refusedSince) >= credentialsRefusedAfter {
			return kadm.Metadata{}, errCredentialsRefused(err)
		}
		switch {
		case err != nil:
			last = err
		case len(meta.Brokers) == 0:
			last = errors.New("metadata lists no brokers")
		case meta.Controller < 0:
			last = errors.New("metadata names no active controller")
		default:
			return meta, nil
		}
		select {
		case <-ctx.Done():
			return kadm.Metadata{}, fmt.Errorf("wait for cluster metadata: %w (last error: %v)", ctx.Err(), last)
		case <-time.After(300 * time.Millisecond):
		}
	}
}

// credentialsRefusedAfter is how long the broker may refuse the
// credentials before the probe stops waiting: a starting broker may refuse
// them for a moment while it loads its metadata, one whose data was set up
// with other credentials refuses them for ever.
const credentialsRefusedAfter = 10 * time.Second

// errCredentialsRefused says what a broker that keeps refusing the
// credentials most likely means, and what to do, instead of a timeout.
func errCredentialsRefused(err error) error {
	return fmt.Errorf("the broker keeps refusing these credentials (%v): its data directory was most likely "+
		"set up with other ones. Give the password it was set up with ($SAGA_TEST_KAFKA_PASSWORD), or wipe the "+
		"test services' data with `make clean-services` and run `make up` again", err)
}

func roundTrip(ctx context.Context, seeds []string, adm *kadm.Client) error {
	suffix := strings.ReplaceAll(uuid.NewString(), "-", "")[:12]
	topic, group := "kafkaprobe."+suffix, "kafkaprobe."+suffix
	resp, err := adm.CreateTopic(ctx, 1, 1, nil, topic)
	if err == nil {
		err = resp.Err
	}
	if err != nil {
		return fmt.Errorf("create topic %s: %w", topic, err)
	}
	defer func() {
		dctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if _, err := adm.DeleteTopic(dctx, topic); err != nil {
			fmt.Fprintf(os.Stderr, "kafkaprobe: delete topic %s: %v\n", topic, err)
		}
	}()

	want := "probe-" + suffix
	// A broker that restarts on existing data may answer CreateTopics
	// before it hosts the new partition: the producer waits for the topic
	// (no limit on unknown-topic retries but ctx) instead of failing after
	// its default four metadata refreshes.
	prod, err := kgo.NewClient(opts(seeds, kgo.RequiredAcks(kgo.AllISRAcks()), kgo.UnknownTopicRetries(-1))...)
	if err != nil {
		return fmt.Errorf("create producer: %w", err)
	}
	defer prod.Close()
	if err := produce(ctx, prod, &kgo.Record{Topic: topic, Key: []byte(suffix), Value: []byte(want)}); err != nil {
		return fmt.Errorf("produce to %s: %w", topic, err)
	}

	cons, err := kgo.NewClient(opts(seeds, kgo.ConsumeTopics(topic), kgo.ConsumerGroup(group),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.DisableAutoCommit())...)
	if err != nil {
		return fmt.Errorf("create consumer: %w", err)
	}
	defer cons.Close()
	for {
		fetches := cons.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("consume from %s in group %s: %w", topic, group, err)
		}
		if errs := fetches.Errors(); len(errs) > 0 {
			return fmt.Errorf("consume from %s: %w", topic, errs[0].Err)
		}
		var got string
		fetches.EachRecord(func(r *kgo.Record) { got = string(r.Value) })
		if got == "" {
			continue
		}
		if got != want {
			return fmt.Errorf("consumed %q from %s, want %q", got, topic, want)
		}
		if err := cons.CommitUncommittedOffsets(ctx); err != nil {
			return fmt.Errorf("commit offset of group %s: %w", group, err)
		}
		return nil
	}
}

// produce sends r, trying again while the broker answers with a retriable
// error (a partition not hosted yet, a leader elsewhere), until ctx ends.
func produce(ctx context.Context, prod *kgo.Client, r *kgo.Record) error {
	for {
		err := prod.ProduceSync(ctx, r).FirstErr()
		if err == nil || !kerr.IsRetriable(err) {
			return err
		}
		fmt.Fprintf(os.Stderr, "kafkaprobe: produce: %v (trying again)\n", err)
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (last error: %v)", ctx.Err(), err)
		case <-time.After(300 * time.Millisecond):
		}
	}
}
