package program

import (
	"bytes"
	"os"
	"runtime/debug"
	"strconv"
)

// DefaultGCPercent is the garbage collector's target (GOGC) of every
// command unless the environment sets GOGC: a collection starts when the
// heap has grown by 400 % of what the last one kept, instead of Go's
// 100 %. Every saga allocates its messages, rows and JSON and drops them
// within milliseconds, so the live heap is small and collections were
// ~10-15 % of the Go processes' CPU at 100; measured in
// docs/operations.md ("Garbage collector").
const DefaultGCPercent = 400

// MemoryLimitFraction is the share of the container's memory limit
// (cgroup memory.max) set as the Go runtime's soft memory limit
// (GOMEMLIMIT) unless the environment sets GOMEMLIMIT: near the limit
// the collector runs as often as it must, whatever GOGC says, so the
// larger GC target cannot push a pod past its limit.
const MemoryLimitFraction = 0.9

// cgroupMemoryFiles are where the memory limit of this process's
// container is read: cgroup v2, then v1.
var cgroupMemoryFiles = []string{
	"/sys/fs/cgroup/memory.max",
	"/sys/fs/cgroup/memory/memory.limit_in_bytes",
}

// GCSettings is what TuneGC set: the GC percent (0: left as GOGC says)
// and the soft memory limit in bytes (0: left as GOMEMLIMIT says, or no
// container limit).
type GCSettings struct {
	GCPercent   int
	MemoryLimit int64
}

// TuneGC sets the process's garbage collector (Main calls it; so does
// every command with its own main): GOGC DefaultGCPercent unless env sets
// GOGC, and, unless env sets GOMEMLIMIT, a soft memory limit of
// MemoryLimitFraction of the container's memory limit when there is one.
// An operator's GOGC or GOMEMLIMIT always wins (the runtime has read them
// already).
func TuneGC(env func(string) string) GCSettings {
	s := gcSettings(env, os.ReadFile)
	if s.GCPercent > 0 {
		debug.SetGCPercent(s.GCPercent)
	}
	if s.MemoryLimit > 0 {
		debug.SetMemoryLimit(s.MemoryLimit)
	}
	return s
}

// gcSettings decides TuneGC's settings from the environment and the
// cgroup files (read with readFile).
func gcSettings(env func(string) string, readFile func(string) ([]byte, error)) GCSettings {
	var s GCSettings
	if env("GOGC") == "" {
		s.GCPercent = DefaultGCPercent
	}
	if env("GOMEMLIMIT") == "" {
		for _, f := range cgroupMemoryFiles {
			b, err := readFile(f)
			if err != nil {
				continue
			}
			if limit, ok := parseMemoryLimit(b); ok {
				s.MemoryLimit = int64(float64(limit) * MemoryLimitFraction)
			}
			break
		}
	}
	return s
}

// parseMemoryLimit reads a cgroup memory limit: a number of bytes; "max"
// (v2) or a value of 2^50 bytes or more (v1's "unlimited" is close to
// 2^63) is no limit, and so is anything unreadable.
func parseMemoryLimit(b []byte) (int64, bool) {
	n, err := strconv.ParseInt(string(bytes.TrimSpace(b)), 10, 64)
	if err != nil || n <= 0 || n >= 1<<50 {
		return 0, false
	}
	return n, true
}
