package telemetry

import (
	"context"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	zdmpb "github.com/zdm-io/zdm/proto/zdm/v1"
)

// Attribute keys every span about a migration carries, so Jaeger finds
// them by tag.
const (
	MigrationKey  = attribute.Key("zdm.migration_id")
	DatabaseKey   = attribute.Key("zdm.database")
	CollectionKey = attribute.Key("zdm.collection")
)

// Traced is a migration as its record describes its trace.
type Traced interface {
	GetMigrationId() string
	GetTraceId() string
	GetTraceSpanId() string
}

// Root is the span that created m, parent of the spans of m that start
// outside any other of its spans. It is invalid for a migration created
// before zdm recorded traces.
func Root(m Traced) trace.SpanContext {
	tid, err := trace.TraceIDFromHex(m.GetTraceId())
	if err != nil {
		return trace.SpanContext{}
	}
	sid, err := trace.SpanIDFromHex(m.GetTraceSpanId())
	if err != nil {
		return trace.SpanContext{}
	}
	return trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid, SpanID: sid, TraceFlags: trace.FlagsSampled, Remote: true})
}

// RecordRoot writes the span of ctx into m as the migration's root.
func RecordRoot(ctx context.Context, m *zdmpb.Migration) {
	if sc := trace.SpanContextFromContext(ctx); sc.IsValid() {
		m.TraceId, m.TraceSpanId = sc.TraceID().String(), sc.SpanID().String()
	}
}

// StartMigrationSpan starts span name in m's trace, so that a migration is
// one trace whatever starts its steps. Its parent is ctx's span when that
// span is in m's trace already (a bus message from another step of m);
// otherwise it is m's root span, and ctx's span, if any (the API call or
// the caller's trace that asked for the step), becomes a link. Without a
// recorded root it is an ordinary child of ctx's span. The span carries
// m's ID and attrs.
func StartMigrationSpan(ctx context.Context, tracer trace.Tracer, m Traced, name string, attrs ...attribute.KeyValue) (context.Context, trace.Span) {
	opts := []trace.SpanStartOption{trace.WithAttributes(MigrationKey.String(m.GetMigrationId())), trace.WithAttributes(attrs...)}
	root, cur := Root(m), trace.SpanContextFromContext(ctx)
	if root.IsValid() && cur.TraceID() != root.TraceID() {
		if cur.IsValid() {
			opts = append(opts, trace.WithLinks(trace.Link{SpanContext: cur}))
		}
		ctx = trace.ContextWithRemoteSpanContext(ctx, root)
	}
	return tracer.Start(ctx, name, opts...)
}

// End ends sp, marking it failed with err when err is not nil.
func End(sp trace.Span, err error) {
	if err != nil {
		sp.RecordError(err)
		sp.SetStatus(codes.Error, err.Error())
	}
	sp.End()
}
