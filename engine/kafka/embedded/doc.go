// Package embedded runs an in-process Kafka-protocol broker (franz-go's kfake)
// for the one-command run of saga-machine and for tests. Clients talk to it
// exactly as to real Apache Kafka, through package kafka: pass
// [Broker.Addrs] as kafka.Config.Brokers.
//
// The broker supports what saga-machine uses: produce with acks=all and
// idempotence, consumer groups with offset commits, topic creation (explicit
// and on first metadata request), and optional persistence to a directory
// (Options.DataDir) so a restarted process keeps its messages and offsets.
// It is a single process, not a replicated cluster: use real Kafka in
// production.
package embedded
