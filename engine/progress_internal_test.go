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
	if b, _ := p.behind("profile", at(100), at(100)); b {
		t.Fatal("behind with nothing known: want false")
	}
	// profile answered, at 300, a command sent at 0.
	p.answered("profile", at(0), at(300))
	// An older answer does not move the mark back.
	p.answered("profile", at(-50), at(200))
	tests := []struct {
		name        string
		participant string
		sent, since time.Time
		want        bool
	}{
		{"sent after the newest answered command, answer during the wait", "profile", at(100), at(100), true},
		{"the wait began after the last answer: maybe down", "profile", at(100), at(400), false},
		{"since before sent counts from sent", "profile", at(100), at(-1000), true},
		{"the answered command was sent as late as ours: it got that far", "profile", at(0), at(-10), false},
		{"sent after the last answer came: no sign of life since", "profile", at(350), at(350), false},
		{"another participant", "deals", at(100), at(100), false},
		{"no send time", "profile", time.Time{}, at(100), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, mark := p.behind(tt.participant, tt.sent, tt.since)
			if got != tt.want {
				t.Errorf("behind(%s, %v, %v) = %v (mark %+v), want %v", tt.participant, tt.sent, tt.since, got, mark, tt.want)
			}
		})
	}
	// A later command answered: profile passed ours, which is re-sent.
	p.answered("profile", at(150), at(500))
	if b, _ := p.behind("profile", at(100), at(100)); b {
		t.Error("behind after a later command was answered: want false")
	}
}
