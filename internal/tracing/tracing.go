package tracing

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
)

// Scope is the instrumentation scope of the spans this module records.
const Scope = "github.com/portfolio-counselor/sagamachine"

// Environment variables Setup reads when Config.Endpoint is empty (the
// OpenTelemetry SDK's own names).
const (
	EnvTracesEndpoint = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
	EnvEndpoint       = "OTEL_EXPORTER_OTLP_ENDPOINT"
)

// AttributeValueLimit caps every attribute value a span keeps (Setup):
// values that come from outside (a record header, a message name) cannot
// make a span large.
const AttributeValueLimit = 256

// Config is what Setup needs.
type Config struct {
	// Endpoint is the OTLP/HTTP traces endpoint, an http or https URL
	// (e.g. http://otel-collector:4318; without a path /v1/traces is
	// used). Empty: the environment (EnvTracesEndpoint, then EnvEndpoint)
	// decides; neither set: tracing is off.
	Endpoint string
	// ServiceName is the service.name resource attribute (saga-machine,
	// deals, profile, notification).
	ServiceName string
	// Insecure sends to an https endpoint without checking its
	// certificate. Never in production.
	Insecure bool
}

// On reports whether cfg turns tracing on: an endpoint is given or set in
// the environment.
func (cfg Config) On() bool {
	return cfg.Endpoint != "" || os.Getenv(EnvTracesEndpoint) != "" || os.Getenv(EnvEndpoint) != ""
}

// state is the installed tracer; nil when tracing is off.
type state struct {
	tracer trace.Tracer
}

var current atomic.Pointer[state]

// Enabled reports whether spans are recorded (Setup found an endpoint, or
// a test called Install). Every hook checks it first: off, nothing else
// runs.
func Enabled() bool { return current.Load() != nil }

// tracer returns the installed tracer, or nil.
func tracer() trace.Tracer {
	if s := current.Load(); s != nil {
		return s.tracer
	}
	return nil
}

// Install makes tp record this process's spans (tests install a provider
// with an in-memory exporter) and returns a function that puts back what
// was installed before. A nil tp turns tracing off.
func Install(tp trace.TracerProvider) (restore func()) {
	var next *state
	if tp != nil {
		next = &state{tracer: tp.Tracer(Scope)}
	}
	prev := current.Swap(next)
	return func() { current.Store(prev) }
}

// Setup turns tracing on when cfg names an endpoint (cfg.On): a tracer
// provider with a batching OTLP/HTTP exporter, the service.name resource,
// the W3C trace-context propagator (also installed as OpenTelemetry's
// globals, for handler code that records spans of its own) and the
// sampler of OTEL_TRACES_SAMPLER (default: parent-based, always on).
// Otherwise it installs nothing and tracing stays off. shutdown flushes
// the spans still buffered and turns tracing off; call it on exit.
func Setup(ctx context.Context, cfg Config) (shutdown func(context.Context) error, err error) {
	off := func(context.Context) error { return nil }
	if !cfg.On() {
		return off, nil
	}
	if cfg.ServiceName == "" {
		return off, errors.New("set up tracing: no service name")
	}
	var opts []otlptracehttp.Option
	if cfg.Endpoint != "" {
		u, err := endpointURL(cfg.Endpoint)
		if err != nil {
			return off, fmt.Errorf("set up tracing: %w", err)
		}
		opts = append(opts, otlptracehttp.WithEndpointURL(u))
	}
	if cfg.Insecure {
		opts = append(opts, otlptracehttp.WithInsecure())
	}
	exp, err := otlptracehttp.New(ctx, opts...)
	if err != nil {
		return off, fmt.Errorf("set up tracing: OTLP exporter: %w", err)
	}
	res, err := resource.Merge(resource.Default(), resource.NewSchemaless(attribute.String("service.name", cfg.ServiceName)))
	if err != nil {
		return off, fmt.Errorf("set up tracing: resource: %w", err)
	}
	limits := sdktrace.NewSpanLimits()
	limits.AttributeValueLengthLimit = AttributeValueLimit
	tp := sdktrace.NewTracerProvider(
		sdktrace.WithBatcher(exp, sdktrace.WithBatchTimeout(2*time.Second)),
		sdktrace.WithResource(res),
		sdktrace.WithRawSpanLimits(limits),
	)
	otel.SetTracerProvider(tp)
	otel.SetTextMapPropagator(propagation.TraceContext{})
	restore := Install(tp)
	return func(ctx context.Context) error {
		restore()
		if err := tp.Shutdown(ctx); err != nil {
			return fmt.Errorf("flush traces: %w", err)
		}
		return nil
	}, nil
}

// endpointURL checks an --otlp-endpoint and gives it the traces path if it
// has none.
func endpointURL(raw string) (string, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return "", fmt.Errorf("OTLP endpoint %q: %w", raw, err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return "", fmt.Errorf("OTLP endpoint %q: want an http:// or https:// URL with a host (e.g. http://otel-collector:4318)", raw)
	}
	if u.User != nil {
		return "", fmt.Errorf("OTLP endpoint %q: credentials in the URL are refused (set OTEL_EXPORTER_OTLP_HEADERS)", u.Redacted())
	}
	if strings.Trim(u.Path, "/") == "" {
		u.Path = "/v1/traces"
	}
	return u.String(), nil
}
