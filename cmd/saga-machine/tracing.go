package main

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/portfolio-counselor/sagamachine/internal/tracing"
)

// tracingFlushTimeout bounds the flush of buffered spans at exit.
const tracingFlushTimeout = 5 * time.Second

// startTracing turns tracing on when --otlp-endpoint or the OTLP
// environment names an endpoint (internal/tracing.Setup); the returned
// function flushes the spans still buffered.
func startTracing(ctx context.Context, cfg *tracing.Config, log *slog.Logger) (stop func(), err error) {
	shutdown, err := tracing.Setup(ctx, *cfg)
	if err != nil {
		return nil, fmt.Errorf("saga-machine: %w", err)
	}
	if cfg.On() {
		log.Info("tracing on: spans are exported over OTLP/HTTP")
	}
	return func() {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), tracingFlushTimeout)
		defer cancel()
		if err := shutdown(sctx); err != nil {
			log.Warn("tracing shutdown", "error", err)
		}
	}, nil
}
