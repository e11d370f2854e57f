package engine

import (
	"testing"
	"time"
)

// The delivery knobs default as documented, and their former names still
// work where the new ones are not set.
func TestConfigKnobs(t *testing.T) {
	c, err := Config{}.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	if c.BatchSize != DefaultBatchSize || c.RelayBatch != DefaultRelayBatch || c.TimerPoll != DefaultTimerPoll ||
		c.TimerBatch != DefaultTimerBatch || c.ConflictRetries != DefaultConflictRetry || c.Owner == "" || c.Logger == nil || c.Clock == nil {
		t.Errorf("defaults not applied: %+v", c)
	}
	for _, d := range []struct {
		name      string
		got, want time.Duration
	}{
		{"RelayPoll", c.RelayPoll, DefaultRelayPoll}, {"RelayLease", c.RelayLease, DefaultRelayLease},
		{"ShutdownTimeout", c.ShutdownTimeout, DefaultShutdownTimeout}, {"PruneEvery", c.PruneEvery, DefaultPruneEvery},
		{"InboxRetention", c.InboxRetention, DefaultInboxRetention},
	} {
		if d.got != d.want {
			t.Errorf("default %s = %v, want %v", d.name, d.got, d.want)
		}
	}
	old, err := Config{DrainTimeout: 3 * time.Second, InboxPurgeEvery: time.Minute}.withDefaults()
	if err != nil || old.ShutdownTimeout != 3*time.Second || old.PruneEvery != time.Minute {
		t.Errorf("former names: ShutdownTimeout %v, PruneEvery %v (err %v); want 3s, 1m", old.ShutdownTimeout, old.PruneEvery, err)
	}
	both, err := Config{ShutdownTimeout: 5 * time.Second, DrainTimeout: 3 * time.Second, PruneEvery: 2 * time.Minute, InboxPurgeEvery: time.Minute}.withDefaults()
	if err != nil || both.ShutdownTimeout != 5*time.Second || both.PruneEvery != 2*time.Minute {
		t.Errorf("new names beside the former: ShutdownTimeout %v, PruneEvery %v (err %v); want 5s, 2m", both.ShutdownTimeout, both.PruneEvery, err)
	}
	for _, bad := range []Config{{ShutdownTimeout: -1}, {PruneEvery: -1}, {RelayLease: -1}, {DrainTimeout: -1}} {
		if _, err := bad.withDefaults(); ErrorCode(err) != CodeInvalid {
			t.Errorf("%+v: err = %v, want invalid", bad, err)
		}
	}
}
