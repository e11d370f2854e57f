package engine

import (
	"testing"
	"time"
)

func TestProgressBehind(t *testing.T) {
	t0 := time.Date(2026, 11, 26, 8, 0, 0, 0, time.UTC)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	var p progress
	// Nothing known about profile yet: never behind (re-send as before).
	if b, _ := p.behind("profile", at(0), at(2000), at(1000)); b {
		t.Fatal("behind with nothing known: want false")
	}
	// profile answered, during second 1, commands sent at 0.2 s and 1.5 s;
	// during second 3, one sent at 2.9 s.
	p.answered("profile", at(1500), at(1100))
	p.answered("profile", at(200), at(1900))
	p.answered("profile", at(2900), at(3050))
	p.answered("deals", at(100), at(3100))
	p.answered("profile", time.Time{}, at(3100)) // no send time: ignored
	tests := []struct {
		name               string
		participant        string
		since, now, cutoff time.Time
		want               bool
		wantOldest         time.Time
	}{
		{"answered an older command during the wait", "profile", at(1000), at(3000), at(1000), true, at(200)},
		{"only commands sent after the cutoff answered", "profile", at(1000), at(3000), at(100), false, at(200)},
		{"nothing answered during the wait: maybe down", "profile", at(4000), at(6000), at(5000), false, time.Time{}},
		{"the wait covers only the later answer", "profile", at(3000), at(3500), at(2000), false, at(2900)},
		{"another participant's answers do not count", "notification", at(0), at(4000), at(4000), false, time.Time{}},
		{"a wait longer than the ring looks at its last seconds", "profile", at(-500_000), at(3000), at(1000), true, at(200)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, oldest := p.behind(tt.participant, tt.since, tt.now, tt.cutoff)
			if got != tt.want || !oldest.Equal(tt.wantOldest) {
				t.Errorf("behind(%s, %v..%v, cutoff %v) = %v (oldest %v), want %v (oldest %v)", tt.participant, tt.since, tt.now, tt.cutoff, got, oldest, tt.want, tt.wantOldest)
			}
		})
	}
	// A second ringSeconds later the bucket is reused, not mixed.
	p.answered("profile", at(9000), at(1100+ringSeconds*1000))
	if b, oldest := p.behind("profile", at(1000+ringSeconds*1000), at(1999+ringSeconds*1000), at(5000)); b || !oldest.Equal(at(9000)) {
		t.Errorf("after the ring wrapped: behind %v oldest %v, want false and %v", b, oldest, at(9000))
	}
}

func TestProgressOutboxBehind(t *testing.T) {
	t0 := time.Date(2026, 11, 26, 8, 0, 0, 0, time.UTC)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	var p progress
	if b, _ := p.outboxBehind(at(0), at(1000)); b {
		t.Fatal("outbox behind with nothing published: want false")
	}
	p.published(at(100), at(1200)) // published up to 0.1 s, at 1.2 s
	p.published(at(50), at(1100))  // an older batch does not move the marks back
	tests := []struct {
		name          string
		since, cutoff time.Time
		want          bool
	}{
		{"published only older commands during the wait", at(1000), at(500), true},
		{"published this one's time or later", at(1000), at(100), false},
		{"published nothing during the wait", at(1300), at(500), false},
	}
	for _, tt := range tests {
		if got, newest := p.outboxBehind(tt.since, tt.cutoff); got != tt.want || !newest.Equal(at(100)) {
			t.Errorf("%s: outboxBehind = %v (newest %v), want %v (newest %v)", tt.name, got, newest, tt.want, at(100))
		}
	}
}
