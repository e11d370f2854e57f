package embedded

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"

	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/portfolio-counselor/sagamachine/engine/kafka"
)

// DefaultAddr is the listen address used when Options.Addr is empty: a random
// free port on loopback.
const DefaultAddr = "127.0.0.1:0"

// DefaultPartitions is the partition count of auto-created topics when
// Options.Partitions is zero.
const DefaultPartitions = 3

// DefaultMaxRequestBytes is the largest request frame a client may send
// when Options.MaxRequestBytes is zero: the limit this module's clients
// write with (kafka.MaxRequestBytes).
const DefaultMaxRequestBytes = kafka.MaxRequestBytes

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
	// MaxRequestBytes caps the length a client may announce for one
	// request frame. kfake allocates the announced length before reading
	// the frame, so without a cap four connections announcing 4 GiB each
	// reserve 16 GiB; a longer frame closes the connection before anything
	// is allocated. Default DefaultMaxRequestBytes.
	MaxRequestBytes int32
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
	if opts.MaxRequestBytes < 0 {
		return nil, fmt.Errorf("start embedded kafka: MaxRequestBytes must not be negative, got %d", opts.MaxRequestBytes)
	}
	if opts.MaxRequestBytes == 0 {
		opts.MaxRequestBytes = DefaultMaxRequestBytes
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
			ln, err := net.Listen(network, opts.Addr)
			if err != nil {
				return nil, err
			}
			return capListener{ln, opts.MaxRequestBytes}, nil
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

// capListener hands out connections that refuse request frames longer than
// max (see Options.MaxRequestBytes).
type capListener struct {
	net.Listener
	max int32
}

func (l capListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &capConn{Conn: c, max: l.max}, nil
}

// errFrameTooLarge ends a connection whose client announced too long a frame.
var errFrameTooLarge = errors.New("embedded kafka: request frame longer than MaxRequestBytes")

// capConn follows the Kafka framing (a 4-byte big-endian length, then that
// many bytes) of what the broker reads, and fails the read that completes a
// length above max, before the broker sees that length.
type capConn struct {
	net.Conn
	max       int32
	hdr       [4]byte
	hdrN      int
	remaining int64
}

func (c *capConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	for i := 0; i < n; {
		if c.remaining > 0 {
			take := min(c.remaining, int64(n-i))
			c.remaining -= take
			i += int(take)
			continue
		}
		c.hdr[c.hdrN] = b[i]
		c.hdrN++
		i++
		if c.hdrN < len(c.hdr) {
			continue
		}
		c.hdrN = 0
		size := int32(binary.BigEndian.Uint32(c.hdr[:]))
		if size < 0 || size > c.max {
			c.Conn.Close()
			return 0, fmt.Errorf("%w: %d bytes announced, at most %d", errFrameTooLarge, uint32(size), c.max)
		}
		c.remaining = int64(size)
	}
	return n, err
}
