package engine

import (
	"context"
	"time"
)

// StateAge tells how long the live instances of one definition, version,
// state and status have been waiting: when the longest-waiting of them
// entered its state.
type StateAge struct {
	Saga        string
	SagaVersion int
	State       string
	Status      Status
	// OldestEnteredAt is the earliest Instance.EnteredAt among them.
	OldestEnteredAt time.Time
}

// AgeReporter is implemented by stores that can tell how long work has
// been waiting (engine/sqlstore does). saga-machine's metrics read it at
// scrape time, for the alerts on stuck sagas and on a stalled outbox. It
// is not part of Store, so that other Store implementations (test fakes)
// need not provide it; the metrics leave its gauges out for a store
// without it.
type AgeReporter interface {
	// LiveStateAges returns one StateAge per definition, version, state and
	// status of the instances that are not done (Status.Done is false:
	// running, compensating, compensation_failed).
	LiveStateAges(ctx context.Context) ([]StateAge, error)
	// OldestOutbox returns when the oldest unpublished outbox record was
	// created; ok is false when the outbox is empty.
	OldestOutbox(ctx context.Context) (created time.Time, ok bool, err error)
}
