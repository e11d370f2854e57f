package embedded

import (
	"errors"
	"fmt"
	"net"

	"github.com/twmb/franz-go/pkg/kfake"
)

// DefaultAddr is the listen address used when Options.Addr is empty: a random
// free port on loopback.
const DefaultAddr = "127.0.0.1:0"

// DefaultPartitions is the partition count of auto-created topics when
// Options.Partitions is zero.
const DefaultPartitions = 3

// Options configures an embedded broker. The zero value is a valid,
// in-memory broker on a random loopback port.
type Options struct {
	// Addr is the host:port to listen on, e.g. "127.0.0.1:9092". Default
	// "127.0.0.1:0" (random port; read it back with Broker.Addrs).
	Addr string
	// Partitions is the number of partitions of a topic created
	// automatically or with the broker default. Default 3.
	Partitions int32
	// Topics are created at start (with Partitions partitions) unless they
	// already exist in DataDir.
	Topics []string
	// DataDir, if set, makes the broker persist topics, records and
	// committed offsets there and reload them on the next Start. Empty
	// means in memory only.
	DataDir string
}

// Broker is a running embedded broker.
type Broker struct {
	c     *kfake.Cluster
	addrs []string
}

// Start runs a single-node kfake cluster listening on opts.Addr, with
// consumer group coordination and automatic topic creation enabled.
func Start(opts Options) (*Broker, error) {
	if opts.Addr == "" {
		opts.Addr = DefaultAddr
	}
	if _, _, err := net.SplitHostPort(opts.Addr); err != nil {
		return nil, fmt.Errorf("start embedded kafka: listen address %q: %w", opts.Addr, err)
	}
	if opts.Partitions < 0 {
		return nil, fmt.Errorf("start embedded kafka: partitions must not be negative, got %d", opts.Partitions)
	}
	if opts.Partitions == 0 {
		opts.Partitions = DefaultPartitions
	}
	for i, t := range opts.Topics {
		if t == "" {
			return nil, fmt.Errorf("start embedded kafka: topic %d is empty", i)
		}
	}
	kopts := []kfake.Opt{
		kfake.NumBrokers(1),
		// kfake asks to listen on 127.0.0.1:<port>; we listen where we were told.
		kfake.ListenFn(func(network, _ string) (net.Listener, error) {
			return net.Listen(network, opts.Addr)
		}),
		kfake.AllowAutoTopicCreation(),
		kfake.DefaultNumPartitions(int(opts.Partitions)),
		kfake.ClusterID("saga-machine-embedded"),
	}
	if len(opts.Topics) > 0 {
		kopts = append(kopts, kfake.SeedTopics(opts.Partitions, opts.Topics...))
	}
	if opts.DataDir != "" {
		kopts = append(kopts, kfake.DataDir(opts.DataDir))
	}
	c, err := kfake.NewCluster(kopts...)
	if err != nil {
		return nil, fmt.Errorf("start embedded kafka on %s: %w", opts.Addr, err)
	}
	addrs := c.ListenAddrs()
	if len(addrs) == 0 {
		c.Close()
		return nil, errors.New("start embedded kafka: cluster has no listener")
	}
	return &Broker{c: c, addrs: addrs}, nil
}

// Addrs returns the broker addresses (host:port) to use as
// kafka.Config.Brokers.
func (b *Broker) Addrs() []string { return append([]string(nil), b.addrs...) }

// Close stops the broker and, with a DataDir, flushes its state to disk.
func (b *Broker) Close() { b.c.Close() }
