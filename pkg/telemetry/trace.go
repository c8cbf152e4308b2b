package telemetry

import (
	"cmp"
	"context"
	"fmt"
	"os"

	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.40.0"
)

// Propagator is the W3C trace-context and baggage propagator used on gRPC
// metadata and NATS message headers alike.
func Propagator() propagation.TextMapPropagator {
	return propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{})
}

// OTLPEnabled reports whether the standard OpenTelemetry environment names
// an OTLP endpoint for traces.
func OTLPEnabled() bool {
	return os.Getenv("OTEL_EXPORTER_OTLP_ENDPOINT") != "" || os.Getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") != ""
}

// NewResource describes one zdm service (service, such as "coordinator")
// or, with service "", the whole process to traces and metrics. Its
// service.name is "zdm-<service>" ("zdm" for the process), so Jaeger
// shows each service apart even when one process runs them all;
// OTEL_SERVICE_NAME replaces the "zdm" part, and OTEL_RESOURCE_ATTRIBUTES
// adds attributes.
func NewResource(ctx context.Context, service, version string) (*resource.Resource, error) {
	name := cmp.Or(os.Getenv("OTEL_SERVICE_NAME"), "zdm")
	if service != "" {
		name += "-" + service
	}
	res, err := resource.New(ctx, resource.WithTelemetrySDK(), resource.WithHost(), resource.WithFromEnv(),
		resource.WithAttributes(semconv.ServiceName(name), semconv.ServiceVersion(version)))
	if err != nil {
		return nil, fmt.Errorf("telemetry resource: %w", err)
	}
	return res, nil
}

// NewTracerProvider returns a tracer provider for res. Spans are always
// created, so logs carry trace IDs; they are exported over OTLP/gRPC only
// when OTLPEnabled, configured by the standard OTEL_EXPORTER_OTLP_*
// variables (for Jaeger: OTEL_EXPORTER_OTLP_ENDPOINT=http://jaeger:4317).
// The caller must call Shutdown to flush.
func NewTracerProvider(ctx context.Context, res *resource.Resource) (*sdktrace.TracerProvider, error) {
	opts := []sdktrace.TracerProviderOption{sdktrace.WithResource(res)}
	if OTLPEnabled() {
		exp, err := otlptracegrpc.New(ctx)
		if err != nil {
			return nil, fmt.Errorf("OTLP trace exporter: %w", err)
		}
		opts = append(opts, sdktrace.WithBatcher(exp))
	}
	return sdktrace.NewTracerProvider(opts...), nil
}
