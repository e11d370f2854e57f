package program

import (
	"io/fs"
	"runtime/debug"
	"testing"
)

func TestGCSettings(t *testing.T) {
	const v2, v1 = "/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"
	tests := []struct {
		name  string
		env   map[string]string
		files map[string]string
		want  GCSettings
	}{
		{"no container limit", nil, nil, GCSettings{GCPercent: DefaultGCPercent}},
		{"cgroup v2 limit", nil, map[string]string{v2: "134217728\n"},
			GCSettings{GCPercent: DefaultGCPercent, MemoryLimit: 120795955}},
		{"cgroup v2 max", nil, map[string]string{v2: "max\n", v1: "134217728"}, GCSettings{GCPercent: DefaultGCPercent}},
		{"cgroup v1 limit", nil, map[string]string{v1: "268435456"},
			GCSettings{GCPercent: DefaultGCPercent, MemoryLimit: 241591910}},
		{"cgroup v1 unlimited", nil, map[string]string{v1: "9223372036854771712"}, GCSettings{GCPercent: DefaultGCPercent}},
		{"garbage in the file", nil, map[string]string{v2: "lots"}, GCSettings{GCPercent: DefaultGCPercent}},
		{"negative", nil, map[string]string{v2: "-1"}, GCSettings{GCPercent: DefaultGCPercent}},
		{"operator's GOGC wins", map[string]string{"GOGC": "100"}, map[string]string{v2: "134217728"},
			GCSettings{MemoryLimit: 120795955}},
		{"operator's GOMEMLIMIT wins", map[string]string{"GOMEMLIMIT": "100MiB"}, map[string]string{v2: "134217728"},
			GCSettings{GCPercent: DefaultGCPercent}},
		{"GOGC=off is the operator's too", map[string]string{"GOGC": "off", "GOMEMLIMIT": "1GiB"}, nil, GCSettings{}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			env := func(k string) string { return tc.env[k] }
			read := func(name string) ([]byte, error) {
				if s, ok := tc.files[name]; ok {
					return []byte(s), nil
				}
				return nil, fs.ErrNotExist
			}
			if got := gcSettings(env, read); got != tc.want {
				t.Errorf("gcSettings = %+v, want %+v", got, tc.want)
			}
		})
	}
}

// TestTuneGC checks that TuneGC sets the runtime's GC percent (and leaves
// it to an operator's GOGC).
func TestTuneGC(t *testing.T) {
	old := debug.SetGCPercent(100)
	t.Cleanup(func() { debug.SetGCPercent(old) })
	TuneGC(func(string) string { return "" })
	if got := debug.SetGCPercent(100); got != DefaultGCPercent {
		t.Errorf("GC percent after TuneGC = %d, want %d", got, DefaultGCPercent)
	}
	TuneGC(func(k string) string {
		if k == "GOGC" {
			return "100"
		}
		return ""
	})
	if got := debug.SetGCPercent(100); got != 100 {
		t.Errorf("GC percent after TuneGC with GOGC=100 = %d, want 100 (left alone)", got)
	}
}
