package natsbus_test

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/zdm-io/zdm/pkg/natsbus"
	"github.com/zdm-io/zdm/pkg/telemetry"
	"github.com/zdm-io/zdm/pkg/ztest"
	eventspb "github.com/zdm-io/zdm/proto/zdm/events/v1"
	zdmpb "github.com/zdm-io/zdm/proto/zdm/v1"
)

func TestPublishRefusesMessageWithoutID(t *testing.T) {
	_, err := natsbus.Publish(context.Background(), nil, telemetry.Propagator(), "zdm.evt.m.stage", "", &eventspb.StageCompleted{})
	require.ErrorIs(t, err, natsbus.ErrNoMessageID)
}

func TestStreamsCoverEverySubjectSpace(t *testing.T) {
	got := map[string][]string{}
	for _, s := range natsbus.Streams(3, natsbus.ChangeLimits{}) {
		got[s.Name] = s.Subjects
		require.Equal(t, 3, s.Replicas, s.Name)
		require.Equal(t, jetstream.FileStorage, s.Storage, s.Name)
		require.Equal(t, natsbus.DuplicateWindow, s.Duplicates, s.Name)
	}
	want := map[string][]string{
		natsbus.CommandsStream: {"zdm.cmd.>"},
		natsbus.EventsStream:   {"zdm.evt.>"},
		natsbus.WorkStream:     {"zdm.work.>"},
		natsbus.ChangesStream:  {"zdm.chg.>"},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("streams (-want, +got):\n%s", diff)
	}
}

// TestIntegrationPublishConsume: a stage event crosses real JetStream with
// its trace context, is delivered once to a durable consumer with explicit
// acks, and a republish with the same ID is dropped as a duplicate.
func TestIntegrationPublishConsume(t *testing.T) {
	ztest.Integration(t)
	bus, _ := ztest.Bus(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	tp := sdktrace.NewTracerProvider()
	ctx, span := tp.Tracer("test").Start(ctx, "publish")
	defer span.End()
	prop := telemetry.Propagator()

	want := &eventspb.StageCompleted{
		EventId: "ev-1", MigrationId: "m1", Stage: zdmpb.StageKind_STAGE_KIND_COPY_DATA,
		Success: true, Time: timestamppb.New(time.Unix(1700000000, 0)), ArmTimestamp: 42,
	}
	ack, err := natsbus.Publish(ctx, bus.JS, prop, "zdm.evt.m1.stage", want.EventId, want)
	require.NoError(t, err)
	require.False(t, ack.Duplicate)
	ack, err = natsbus.Publish(ctx, bus.JS, prop, "zdm.evt.m1.stage", want.EventId, want)
	require.NoError(t, err)
	require.True(t, ack.Duplicate, "same message ID must be dropped")

	cons, err := bus.JS.CreateOrUpdateConsumer(ctx, natsbus.EventsStream, jetstream.ConsumerConfig{
		Durable: "test-coordinator", AckPolicy: jetstream.AckExplicitPolicy, FilterSubject: "zdm.evt.>",
	})
	require.NoError(t, err)
	batch, err := cons.Fetch(10, jetstream.FetchMaxWait(2*time.Second))
	require.NoError(t, err)
	var got []*eventspb.StageCompleted
	for msg := range batch.Messages() {
		var ev eventspb.StageCompleted
		mctx, err := natsbus.Decode(context.Background(), prop, msg, &ev)
		require.NoError(t, err)
		require.Equal(t, span.SpanContext().TraceID(), trace.SpanContextFromContext(mctx).TraceID(), "trace context in headers")
		require.NoError(t, msg.DoubleAck(ctx))
		got = append(got, &ev)
	}
	require.NoError(t, batch.Error())
	if diff := cmp.Diff([]*eventspb.StageCompleted{want}, got, protocmp.Transform()); diff != "" {
		t.Errorf("consumed events (-want, +got):\n%s", diff)
	}
	info, err := cons.Info(ctx)
	require.NoError(t, err)
	require.Zero(t, info.NumPending)
	require.Zero(t, info.NumAckPending)
}

// TestIntegrationWorkQueue: a work unit goes to exactly one of two
// competing copiers and leaves the queue once acked.
func TestIntegrationWorkQueue(t *testing.T) {
	ztest.Integration(t)
	bus, _ := ztest.Bus(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	prop := telemetry.Propagator()
	for _, id := range []string{"u1", "u2", "u3", "u4"} {
		_, err := natsbus.Publish(ctx, bus.JS, prop, "zdm.work.m1", id, &eventspb.WorkUnit{UnitId: id, MigrationId: "m1"})
		require.NoError(t, err)
	}
	cons, err := bus.JS.CreateOrUpdateConsumer(ctx, natsbus.WorkStream, jetstream.ConsumerConfig{
		Durable: "copiers", AckPolicy: jetstream.AckExplicitPolicy, AckWait: 30 * time.Second,
	})
	require.NoError(t, err)
	seen := map[string]int{}
	for range 2 { // two copiers pulling from the same durable consumer
		batch, err := cons.Fetch(2, jetstream.FetchMaxWait(2*time.Second))
		require.NoError(t, err)
		for msg := range batch.Messages() {
			var u eventspb.WorkUnit
			_, err := natsbus.Decode(ctx, prop, msg, &u)
			require.NoError(t, err)
			seen[u.UnitId]++
			require.NoError(t, msg.DoubleAck(ctx))
		}
	}
	require.Equal(t, map[string]int{"u1": 1, "u2": 1, "u3": 1, "u4": 1}, seen)
	stream, err := bus.JS.Stream(ctx, natsbus.WorkStream)
	require.NoError(t, err)
	info, err := stream.Info(ctx)
	require.NoError(t, err)
	require.Zero(t, info.State.Msgs, "acked units leave the work queue")
}

// TestIntegrationEmbeddedKeepsAcknowledgedWrites: what JetStream
// acknowledged is still there after the embedded server restarts on the
// same directory.
func TestIntegrationEmbeddedKeepsAcknowledgedWrites(t *testing.T) {
	ztest.Integration(t)
	dir := t.TempDir()
	logger := slog.New(slog.DiscardHandler)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	start := func() (*natsbus.Embedded, *natsbus.Conn) {
		e, err := natsbus.StartEmbedded(natsbus.EmbeddedConfig{StoreDir: dir}, logger)
		require.NoError(t, err)
		c, err := natsbus.Connect("", e.InProcess(), "test", logger)
		require.NoError(t, err)
		return e, c
	}
	e, c := start()
	require.Empty(t, e.ClientURL(), "no listener without Listen")
	require.NoError(t, natsbus.EnsureStreams(ctx, c.JS, 1, natsbus.ChangeLimits{}))
	_, err := natsbus.Publish(ctx, c.JS, telemetry.Propagator(), "zdm.chg.db.coll", "g1-1", &eventspb.ChangeEvent{EventId: "g1-1", Sequence: 1})
	require.NoError(t, err)
	require.NoError(t, c.Close(ctx))
	e.Shutdown()

	e, c = start()
	defer e.Shutdown()
	defer func() { require.NoError(t, c.Close(ctx)) }()
	msg, err := c.JS.Stream(ctx, natsbus.ChangesStream)
	require.NoError(t, err)
	raw, err := msg.GetLastMsgForSubject(ctx, "zdm.chg.db.coll")
	require.NoError(t, err)
	require.Equal(t, "g1-1", raw.Header.Get(jetstream.MsgIDHeader))
}

func TestStartEmbeddedRequiresStoreDir(t *testing.T) {
	_, err := natsbus.StartEmbedded(natsbus.EmbeddedConfig{}, slog.New(slog.DiscardHandler))
	require.Error(t, err)
	require.Contains(t, err.Error(), "store directory")
}

func TestKeyToken(t *testing.T) {
	require.Equal(t, "host_example-12_3=x_", natsbus.KeyToken("host.example-12/3=x*"))
	require.Equal(t, "copier-a", natsbus.KeyToken("copier-a"))
}
