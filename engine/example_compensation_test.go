package engine_test

import (
	"fmt"
	"time"

	"github.com/portfolio-counselor/sagamachine/engine"
	"github.com/portfolio-counselor/sagamachine/engine/definition"
)

// A command's deadline is the earlier of the end of its retry budget and
// its state's time limit: APPROVE_ORDER with retry {attempts: 5, backoff:
// 2s, max_backoff: 1m} into a state with a 10m limit must be applied within
// 62s of its first send; with a 30s limit, within 30s.
func ExampleCommandDeadline() {
	sent := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	retry := &definition.Retry{Attempts: 5, Backoff: 2 * time.Second, MaxBackoff: time.Minute}
	fmt.Println(engine.RetryBudget(retry))
	for _, limit := range []time.Duration{10 * time.Minute, 30 * time.Second} {
		d := engine.CommandDeadline(retry, &definition.Timeout{After: limit}, sent, sent)
		fmt.Println(d.Sub(sent))
	}
	fmt.Println(engine.CommandDeadline(nil, nil, sent, sent).IsZero()) // fire and forget: no deadline
	// Output:
	// 1m2s
	// 1m2s
	// 30s
	// true
}
