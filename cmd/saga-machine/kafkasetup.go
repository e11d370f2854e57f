package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/portfolio-counselor/sagamachine/engine"
	"github.com/portfolio-counselor/sagamachine/engine/kafka"
	"github.com/portfolio-counselor/sagamachine/internal/program"
)

// kafkaPolicy is the access policy of the saga bus for the definitions in
// cat: every participant p is principal p, reads its command topic, writes
// engine.EventTopic(base, p) and consumes in group p (the SDK's default);
// saga-machine is principal orchestrator in group group.
func kafkaPolicy(cat *engine.Catalog, base, orchestrator, group string) kafka.Policy {
	pol := kafka.Policy{Orchestrator: orchestrator, OrchestratorGroup: group}
	seen := map[string]bool{}
	for _, m := range cat.List() {
		for _, p := range m.Participants() {
			if seen[p] {
				continue
			}
			seen[p] = true
			pol.Participants = append(pol.Participants, kafka.ParticipantAccess{
				Name: p, CommandTopic: m.Topic(p), EventTopic: engine.EventTopic(base, p),
			})
		}
	}
	return pol
}

// runKafkaSetup is `saga-machine kafka-setup`: with an administrator's
// credentials it creates the topics of the loaded definitions, sets the
// SCRAM credentials of saga-machine and of every participant, and makes
// their ACLs exactly the policy (kafkaPolicy). The k8s topics Job and
// `make up` run it; it is idempotent.
func runKafkaSetup(ctx context.Context, args []string, env func(string) string, stdout, stderr io.Writer) error {
	fset := flag.NewFlagSet("saga-machine kafka-setup", flag.ContinueOnError)
	fset.SetOutput(stderr)
	sagasDir := fset.String("sagas", env("SAGA_SAGAS_DIR"), "directory of saga definitions (env SAGA_SAGAS_DIR; default: the built-in definitions)")
	brokers := fset.String("brokers", env("SAGA_KAFKA_BROKERS"), "Kafka brokers, comma-separated (env SAGA_KAFKA_BROKERS; required)")
	topic := fset.String("topic", envOr(env, "SAGA_SERVER_TOPIC", defaultTopic), "base name of the participants' event topics (env SAGA_SERVER_TOPIC)")
	group := fset.String("group", envOr(env, "SAGA_GROUP", defaultGroup), "saga-machine's consumer group (env SAGA_GROUP)")
	orchestrator := fset.String("orchestrator-user", envOr(env, "SAGA_KAFKA_ORCHESTRATOR_USER", kafka.DefaultOrchestratorUser), "saga-machine's Kafka user (env SAGA_KAFKA_ORCHESTRATOR_USER)")
	parts := fset.String("partitions", envOr(env, "SAGA_PARTITIONS", strconv.Itoa(defaultPartitions)), "partitions of the topics created (env SAGA_PARTITIONS)")
	rf := fset.Int("replication-factor", -1, "replication factor of the topics created (-1: the broker's default)")
	usersDir := fset.String("users-dir", env("SAGA_KAFKA_USERS_DIR"), "directory with one file per user, named after it, holding its password (a mounted Secret); a user without a file keeps its credentials (env SAGA_KAFKA_USERS_DIR)")
	dryRun := fset.Bool("dry-run", false, "print the topics and ACLs and change nothing")
	kf := program.RegisterKafkaFlags(fset, env)
	if err := fset.Parse(args); err != nil {
		return err
	}
	if fset.NArg() > 0 {
		return fmt.Errorf("kafka-setup: unexpected arguments %q", fset.Args())
	}
	n, err := strconv.Atoi(*parts)
	if err != nil || n <= 0 {
		return fmt.Errorf("kafka-setup: --partitions %q: want a positive number", *parts)
	}
	if *rf == 0 || *rf < -1 || *rf > 32767 {
		return fmt.Errorf("kafka-setup: --replication-factor %d: want -1 or a positive number", *rf)
	}
	cat, err := loadCatalog(*sagasDir, stderr)
	if err != nil {
		return err
	}
	pol := kafkaPolicy(cat, *topic, *orchestrator, *group)
	acls, err := pol.ACLs()
	if err != nil {
		return fmt.Errorf("kafka-setup: %w", err)
	}
	topics, _ := pol.Topics()
	if *dryRun {
		fmt.Fprintf(stdout, "topics: %s\n", strings.Join(topics, " "))
		for _, a := range acls {
			fmt.Fprintf(stdout, "allow %s\n", a)
		}
		return nil
	}
	var seeds []string
	for _, b := range strings.Split(*brokers, ",") {
		if b = strings.TrimSpace(b); b != "" {
			seeds = append(seeds, b)
		}
	}
	if len(seeds) == 0 {
		return errors.New("kafka-setup: --brokers (SAGA_KAFKA_BROKERS) is required")
	}
	admin, err := kf.SASL()
	if err != nil {
		return fmt.Errorf("kafka-setup: %w", err)
	}
	tlsCfg, err := kf.TLS()
	if err != nil {
		return fmt.Errorf("kafka-setup: %w", err)
	}
	users, _ := pol.Users()
	passwords, err := readPasswords(*usersDir, users)
	if err != nil {
		return fmt.Errorf("kafka-setup: %w", err)
	}
	res, err := kafka.ApplySetup(ctx, kafka.Config{Brokers: seeds, ClientID: "saga-machine-kafka-setup", SASL: admin, TLS: tlsCfg},
		kafka.Setup{Policy: pol, Partitions: int32(n), ReplicationFactor: int16(*rf), Passwords: passwords})
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "kafka-setup: %d topics (%d created: %s), %d ACLs, credentials set for %s, %d stale ACLs removed\n",
		len(topics), len(res.CreatedTopics), orNone(res.CreatedTopics), len(res.ACLs), orNone(res.Users), len(res.Removed))
	for _, a := range res.Removed {
		fmt.Fprintf(stdout, "kafka-setup: removed %s\n", a)
	}
	var kept []string
	for _, u := range users {
		if _, ok := passwords[u]; !ok {
			kept = append(kept, u)
		}
	}
	if len(kept) > 0 {
		fmt.Fprintf(stdout, "kafka-setup: no password file for %s in --users-dir: their credentials were left as they are\n", strings.Join(kept, ", "))
	}
	return nil
}

func orNone(s []string) string {
	if len(s) == 0 {
		return "none"
	}
	return strings.Join(s, " ")
}

// readPasswords reads dir/<user> for every user that has a file there.
func readPasswords(dir string, users []string) (map[string]string, error) {
	out := map[string]string{}
	if dir == "" {
		return out, nil
	}
	var secrets []program.Secret
	for _, u := range users {
		path := filepath.Join(dir, u)
		b, err := os.ReadFile(path)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("read the password of %s: %w", u, err)
		}
		pw := strings.TrimRight(string(b), "\r\n")
		if pw == "" {
			return nil, fmt.Errorf("the password file %s is empty", path)
		}
		secrets = append(secrets, program.Secret{Name: path, Value: pw})
		out[u] = pw
	}
	if err := program.RefusePlaceholders(secrets...); err != nil {
		return nil, err
	}
	return out, nil
}
