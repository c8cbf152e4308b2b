package telemetry_test

import (
	"bytes"
	"context"
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/require"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/zdm-io/zdm/pkg/telemetry"
)

func TestLoggerAddsTraceIDs(t *testing.T) {
	var buf bytes.Buffer
	logger, err := telemetry.NewLogger(&buf, "json", "info")
	require.NoError(t, err)
	ctx, span := sdktrace.NewTracerProvider().Tracer("t").Start(context.Background(), "op")
	defer span.End()

	logger.With("service", "coordinator").InfoContext(ctx, "with span")
	logger.InfoContext(context.Background(), "without span")
	logger.DebugContext(ctx, "below level")

	lines := bytes.Split(bytes.TrimSpace(buf.Bytes()), []byte("\n"))
	require.Len(t, lines, 2)
	var first, second map[string]any
	require.NoError(t, json.Unmarshal(lines[0], &first))
	require.NoError(t, json.Unmarshal(lines[1], &second))
	require.Equal(t, span.SpanContext().TraceID().String(), first["trace_id"])
	require.Equal(t, span.SpanContext().SpanID().String(), first["span_id"])
	require.Equal(t, "coordinator", first["service"])
	require.NotContains(t, second, "trace_id")
}

func TestLoggerRejectsUnknownSettings(t *testing.T) {
	_, err := telemetry.NewLogger(&bytes.Buffer{}, "xml", "info")
	require.ErrorContains(t, err, `log format "xml"`)
	_, err = telemetry.NewLogger(&bytes.Buffer{}, "text", "loud")
	require.ErrorContains(t, err, `log level "loud"`)
}
