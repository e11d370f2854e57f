package tracing

import (
	"context"
	"errors"
	"flag"
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
	// Env reads the environment; nil: os.Getenv.
	Env func(string) string
}

// RegisterFlags registers --otlp-endpoint on fs and returns the Config it
// fills, for service; Setup it after fs.Parse.
func RegisterFlags(fs *flag.FlagSet, service string, env func(string) string) *Config {
	cfg := &Config{ServiceName: service, Env: env}
	fs.StringVar(&cfg.Endpoint, "otlp-endpoint", "", "record OpenTelemetry traces and send them over OTLP/HTTP to this URL, e.g. http://otel-collector:4318 "+
		"(default: env "+EnvTracesEndpoint+" or "+EnvEndpoint+"; none: tracing off)")
	return cfg
}

func (cfg Config) getenv(name string) string {
	if cfg.Env == nil {
		return os.Getenv(name)
	}
	return cfg.Env(name)
}

// endpoint is the traces URL cfg names: Endpoint (given a path if it has
// none), else EnvTracesEndpoint as is, else EnvEndpoint with /v1/traces
// appended; "" when none is set.
func (cfg Config) endpoint() (string, error) {
	switch {
	case cfg.Endpoint != "":
		return endpointURL(cfg.Endpoint)
	case cfg.getenv(EnvTracesEndpoint) != "":
		return checkURL(cfg.getenv(EnvTracesEndpoint))
	case cfg.getenv(EnvEndpoint) != "":
		return endpointURL(strings.TrimRight(cfg.getenv(EnvEndpoint), "/") + "/v1/traces")
	}
	return "", nil
}

// On reports whether cfg turns tracing on: an endpoint is given or set in
// the environment.
func (cfg Config) On() bool {
	return cfg.Endpoint != "" || cfg.getenv(EnvTracesEndpoint) != "" || cfg.getenv(EnvEndpoint) != ""
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
	u, err := cfg.endpoint()
	if err != nil {
		return off, fmt.Errorf("set up tracing: %w", err)
	}
	exp, err := otlptracehttp.New(ctx, otlptracehttp.WithEndpointURL(u))
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
	u, err := parseURL(raw)
	if err != nil {
		return "", err
	}
	if strings.Trim(u.Path, "/") == "" {
		u.Path = "/v1/traces"
	}
	return u.String(), nil
}

// checkURL checks a traces URL and returns it as is.
func checkURL(raw string) (string, error) {
	u, err := parseURL(raw)
	if err != nil {
		return "", err
	}
	return u.String(), nil
}

func parseURL(raw string) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, errors.New("OTLP endpoint is not a URL") // the text may hold credentials: not repeated
	}
	if u.User != nil {
		return nil, fmt.Errorf("OTLP endpoint %q: credentials in the URL are refused (set OTEL_EXPORTER_OTLP_HEADERS)", u.Redacted())
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("OTLP endpoint %q: want an http:// or https:// URL with a host (e.g. http://otel-collector:4318)", raw)
	}
	return u, nil
}
