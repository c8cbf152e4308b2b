package telemetry_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/zdm-io/zdm/pkg/telemetry"
	zdmpb "github.com/zdm-io/zdm/proto/zdm/v1"
)

// TestMigrationSpans: whatever starts a step of a migration (a message
// from another step, an API call in the caller's trace, nothing at all),
// its span is in the migration's trace; a caller's span becomes a link.
func TestMigrationSpans(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	tracer := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec)).Tracer("t")

	cctx, create := tracer.Start(context.Background(), "create migration")
	m := &zdmpb.Migration{MigrationId: "m1"}
	telemetry.RecordRoot(cctx, m)
	create.End()
	require.Equal(t, create.SpanContext().TraceID().String(), m.GetTraceId())
	root := telemetry.Root(m)
	require.True(t, root.IsValid())

	// A step of the migration already: an ordinary child.
	_, step := telemetry.StartMigrationSpan(cctx, tracer, m, "step")
	step.End()
	// An API call in another trace: a child of the root, linked to the call.
	actx, call := tracer.Start(context.Background(), "api call")
	_, fromAPI := telemetry.StartMigrationSpan(actx, tracer, m, "from api")
	fromAPI.End()
	call.End()
	// A timer, with no span at all: a child of the root, no link.
	_, fromTimer := telemetry.StartMigrationSpan(context.Background(), tracer, m, "from timer")
	fromTimer.End()
	// A migration from before traces: a child of whatever ctx has.
	_, old := telemetry.StartMigrationSpan(actx, tracer, &zdmpb.Migration{MigrationId: "old"}, "old")
	old.End()

	spans := map[string]sdktrace.ReadOnlySpan{}
	for _, s := range rec.Ended() {
		spans[s.Name()] = s
	}
	tid := create.SpanContext().TraceID()
	require.Equal(t, create.SpanContext().SpanID(), spans["step"].Parent().SpanID())
	for _, name := range []string{"step", "from api", "from timer"} {
		require.Equal(t, tid, spans[name].SpanContext().TraceID(), name)
		require.Contains(t, spans[name].Attributes(), telemetry.MigrationKey.String("m1"), name)
	}
	require.Equal(t, root.SpanID(), spans["from api"].Parent().SpanID())
	require.Len(t, spans["from api"].Links(), 1)
	require.Equal(t, call.SpanContext().SpanID(), spans["from api"].Links()[0].SpanContext.SpanID())
	require.Equal(t, root.SpanID(), spans["from timer"].Parent().SpanID())
	require.Empty(t, spans["from timer"].Links())
	require.Equal(t, call.SpanContext().TraceID(), spans["old"].SpanContext().TraceID())
	require.Equal(t, trace.SpanContext{}, telemetry.Root(&zdmpb.Migration{TraceId: "zz"}))
}
