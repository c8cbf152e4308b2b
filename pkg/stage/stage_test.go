package stage_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/trace/noop"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/zdm-io/zdm/pkg/natsbus"
	"github.com/zdm-io/zdm/pkg/stage"
	"github.com/zdm-io/zdm/pkg/telemetry"
	"github.com/zdm-io/zdm/pkg/ztest"
	eventspb "github.com/zdm-io/zdm/proto/zdm/events/v1"
	zdmpb "github.com/zdm-io/zdm/proto/zdm/v1"
)

const durable = "test-stage"

// consume runs h on the prepare_target commands of bus, as a service
// would, until the returned stop is called or the test ends.
func consume(t *testing.T, bus *natsbus.Conn, h stage.Handler) (stop func()) {
	t.Helper()
	logger := ztest.Logger(t, slog.LevelInfo)
	run, cancel := context.WithCancel(context.Background())
	ctx, done := context.WithTimeout(context.Background(), 10*time.Second)
	defer done()
	cc, err := stage.Consume(ctx, run, bus.JS, telemetry.Propagator(), noop.NewTracerProvider().Tracer(""), logger, durable,
		[]zdmpb.StageKind{zdmpb.StageKind_STAGE_KIND_PREPARE_TARGET}, 30*time.Second, h)
	require.NoError(t, err)
	stopped := false
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		ctx, done := context.WithTimeout(context.Background(), 10*time.Second)
		defer done()
		natsbus.StopConsuming(ctx, cc)
	}
	t.Cleanup(stop)
	return stop
}

// command publishes a START of migration's prepare_target stage the way
// the coordinator does, on zdm.cmd.<migration>.prepare_target.
func command(t *testing.T, bus *natsbus.Conn, migration string) *eventspb.StageCommand {
	t.Helper()
	return send(t, bus, migration, zdmpb.StageKind_STAGE_KIND_PREPARE_TARGET)
}

func send(t *testing.T, bus *natsbus.Conn, migration string, kind zdmpb.StageKind) *eventspb.StageCommand {
	t.Helper()
	cmd := &eventspb.StageCommand{EventId: migration + "-t1-" + natsbus.StageToken(kind), MigrationId: migration, Stage: kind,
		Action: eventspb.StageAction_STAGE_ACTION_START, MigrationRevision: 3, Time: timestamppb.Now(),
		Type: zdmpb.MigrationType_MIGRATION_TYPE_OFFLINE, SourceClusterId: "src", TargetClusterId: "tgt"}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := natsbus.Publish(ctx, bus.JS, telemetry.Propagator(), natsbus.CommandSubject(migration, kind), cmd.GetEventId(), cmd)
	require.NoError(t, err)
	return cmd
}

// events returns what was published on zdm.evt.<migration>.<kind> so far.
func events[T proto.Message](t *testing.T, bus *natsbus.Conn, migration string, kind natsbus.EventKind, newT func() T) []T {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cons, err := bus.JS.OrderedConsumer(ctx, natsbus.EventsStream, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{natsbus.EventSubject(migration, kind)},
	})
	require.NoError(t, err)
	info, err := cons.Info(ctx)
	require.NoError(t, err)
	var out []T
	if info.NumPending == 0 {
		return out
	}
	batch, err := cons.Fetch(int(info.NumPending), jetstream.FetchMaxWait(5*time.Second))
	require.NoError(t, err)
	for msg := range batch.Messages() {
		m := newT()
		require.NoError(t, proto.Unmarshal(msg.Data(), m))
		out = append(out, m)
	}
	require.NoError(t, batch.Error())
	return out
}

func completions(t *testing.T, bus *natsbus.Conn, migration string) []*eventspb.StageCompleted {
	t.Helper()
	return events(t, bus, migration, natsbus.EventStage, func() *eventspb.StageCompleted { return &eventspb.StageCompleted{} })
}

func failures(t *testing.T, bus *natsbus.Conn, migration string) []*eventspb.WorkFailed {
	t.Helper()
	return events(t, bus, migration, natsbus.EventFailed, func() *eventspb.WorkFailed { return &eventspb.WorkFailed{} })
}

// waitAcked waits until the consumer holds no command, delivered or not:
// every command has been handled to its end.
func waitAcked(t *testing.T, bus *natsbus.Conn) {
	t.Helper()
	var ci *jetstream.ConsumerInfo
	ztest.Eventually(t, 20*time.Second, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		cons, err := bus.JS.Consumer(ctx, natsbus.CommandsStream, durable)
		require.NoError(t, err)
		ci, err = cons.Info(ctx)
		require.NoError(t, err)
		return ci.NumPending == 0 && ci.NumAckPending == 0
	}, "commands not acked: %s", lazy(func() string { return fmt.Sprintf("%d pending, %d unacked", ci.NumPending, ci.NumAckPending) }))
}

// lazy prints as what it returns when a message is formatted, so a
// failure message passed before polling shows what the last poll saw.
type lazy func() string

func (f lazy) String() string { return f() }

// calls records what a handler was given, for the test's goroutine to
// check: handlers run on the consumer's goroutines, where a test must not
// fail.
type calls struct {
	n         atomic.Int64
	noTimeout atomic.Bool
	cmds      chan *eventspb.StageCommand
}

func newCalls() *calls { return &calls{cmds: make(chan *eventspb.StageCommand, 64)} }

// record notes a call and returns its number, 1 for the first.
func (c *calls) record(ctx context.Context, cmd *eventspb.StageCommand) int64 {
	if _, ok := ctx.Deadline(); !ok {
		c.noTimeout.Store(true)
	}
	select {
	case c.cmds <- cmd:
	default: // never block a handler; next's callers read only the first few
	}
	return c.n.Add(1)
}

// next returns the command of the next call, failing after timeout.
func (c *calls) next(t *testing.T, timeout time.Duration) *eventspb.StageCommand {
	t.Helper()
	select {
	case cmd := <-c.cmds:
		require.False(t, c.noTimeout.Load(), "the handler ran without a timeout")
		return cmd
	case <-time.After(timeout):
		t.Fatalf("handler not called within %s", timeout)
		return nil
	}
}

// TestConsumeReportsSuccess: a command on one of the consumed
// stages runs the handler once, with the command as sent, and its success
// is reported as a StageCompleted; a command for another stage is not
// handled.
func TestConsumeReportsSuccess(t *testing.T) {
	bus, _ := ztest.Bus(t)
	// Not for this consumer: were it handled, the handler would see it
	// first, and twice in all.
	send(t, bus, "m1", zdmpb.StageKind_STAGE_KIND_COPY_DATA)
	c := newCalls()
	consume(t, bus, func(ctx context.Context, cmd *eventspb.StageCommand) (eventspb.StageError, error) {
		c.record(ctx, cmd)
		return eventspb.StageError_STAGE_ERROR_UNSPECIFIED, nil
	})
	sent := command(t, bus, "m1")

	got := c.next(t, 10*time.Second)
	if diff := cmp.Diff(sent, got, protocmp.Transform()); diff != "" {
		t.Errorf("command handled (-sent, +got):\n%s", diff)
	}
	var done []*eventspb.StageCompleted
	ztest.Eventually(t, 10*time.Second, func() bool {
		done = completions(t, bus, "m1")
		return len(done) > 0
	}, "no StageCompleted on zdm.evt.m1.stage")
	waitAcked(t, bus)
	require.Equal(t, int64(1), c.n.Load(), "the handler ran more than once")
	require.Len(t, completions(t, bus, "m1"), 1)
	ev := done[0]
	require.Equal(t, "done-"+sent.GetEventId(), ev.GetEventId())
	require.Equal(t, "m1", ev.GetMigrationId())
	require.Equal(t, zdmpb.StageKind_STAGE_KIND_PREPARE_TARGET, ev.GetStage())
	require.True(t, ev.GetSuccess())
	require.Equal(t, eventspb.StageError_STAGE_ERROR_UNSPECIFIED, ev.GetCode())
	require.Empty(t, ev.GetErrorMessage())
	require.NotNil(t, ev.GetTime())
}

// TestConsumeReportsFailure: a handler's error fails the stage
// with its code, STAGE_FAILED when it gives none, and its text.
func TestConsumeReportsFailure(t *testing.T) {
	bus, _ := ztest.Bus(t)
	codeOf := map[string]eventspb.StageError{"coded": eventspb.StageError_STAGE_ERROR_VERIFICATION_MISMATCH}
	consume(t, bus, func(_ context.Context, cmd *eventspb.StageCommand) (eventspb.StageError, error) {
		return codeOf[cmd.GetMigrationId()], errors.New("keys [100, 200) differ")
	})
	for migration, want := range map[string]eventspb.StageError{
		"coded":   eventspb.StageError_STAGE_ERROR_VERIFICATION_MISMATCH,
		"uncoded": eventspb.StageError_STAGE_ERROR_STAGE_FAILED,
	} {
		sent := command(t, bus, migration)
		var done []*eventspb.StageCompleted
		ztest.Eventually(t, 10*time.Second, func() bool {
			done = completions(t, bus, migration)
			return len(done) > 0
		}, "no StageCompleted on zdm.evt.%s.stage", migration)
		require.Len(t, done, 1, migration)
		require.Equal(t, "done-"+sent.GetEventId(), done[0].GetEventId())
		require.False(t, done[0].GetSuccess(), migration)
		require.Equal(t, want, done[0].GetCode(), migration)
		require.Equal(t, "keys [100, 200) differ", done[0].GetErrorMessage(), migration)
		require.Empty(t, failures(t, bus, migration), "a stage that failed is not an attempt to retry")
	}
	waitAcked(t, bus) // a failed stage is acked, not retried
}

// TestConsumePendingReportsNothing: a handler that returns
// ErrPending leaves the stage's end to other events: the command is acked
// and nothing is reported.
func TestConsumePendingReportsNothing(t *testing.T) {
	bus, _ := ztest.Bus(t)
	c := newCalls()
	consume(t, bus, func(ctx context.Context, cmd *eventspb.StageCommand) (eventspb.StageError, error) {
		c.record(ctx, cmd)
		return eventspb.StageError_STAGE_ERROR_UNSPECIFIED, stage.ErrPending
	})
	command(t, bus, "m1")
	c.next(t, 10*time.Second)
	waitAcked(t, bus)
	// Consume reports before it acks: once acked, no report is coming.
	require.Empty(t, completions(t, bus, "m1"))
	require.Empty(t, failures(t, bus, "m1"))
	require.Equal(t, int64(1), c.n.Load())
}

// TestConsumeRetriesUnreachableCluster: a handler that cannot
// reach a cluster fails the attempt, not the stage: a WorkFailed naming
// the cluster is reported instead of a StageCompleted, and the command is
// delivered again, here to succeed.
func TestConsumeRetriesUnreachableCluster(t *testing.T) {
	bus, _ := ztest.Bus(t)
	c := newCalls()
	release := make(chan struct{})
	consume(t, bus, func(ctx context.Context, cmd *eventspb.StageCommand) (eventspb.StageError, error) {
		if c.record(ctx, cmd) == 1 {
			return eventspb.StageError_STAGE_ERROR_TARGET_UNREACHABLE, stage.OnTarget(status.Error(codes.Unavailable, "connection refused"))
		}
		select {
		case <-release:
			return eventspb.StageError_STAGE_ERROR_UNSPECIFIED, nil
		case <-ctx.Done():
			return eventspb.StageError_STAGE_ERROR_UNSPECIFIED, ctx.Err()
		}
	})
	sent := command(t, bus, "m1")
	c.next(t, 10*time.Second)
	// The second attempt comes after the first one's backoff.
	c.next(t, 10*time.Second+stage.Backoff(1))
	// The second attempt is under way: the first one reported a failed
	// attempt and no end of the stage.
	require.Empty(t, completions(t, bus, "m1"), "an unreachable cluster ended the stage")
	failed := failures(t, bus, "m1")
	require.Len(t, failed, 1)
	f := failed[0]
	require.Equal(t, "failed-"+sent.GetEventId()+"-d1", f.GetEventId())
	require.Equal(t, "m1", f.GetMigrationId())
	require.Equal(t, zdmpb.ClusterRole_CLUSTER_ROLE_TARGET, f.GetCluster())
	require.Equal(t, zdmpb.StageKind_STAGE_KIND_PREPARE_TARGET, f.GetStage())
	require.Equal(t, durable, f.GetWorker())
	require.Equal(t, "target: rpc error: code = Unavailable desc = connection refused", f.GetErrorMessage())
	require.NotNil(t, f.GetTime())

	close(release)
	var done []*eventspb.StageCompleted
	ztest.Eventually(t, 10*time.Second, func() bool {
		done = completions(t, bus, "m1")
		return len(done) > 0
	}, "no StageCompleted after the retry")
	waitAcked(t, bus)
	require.Len(t, completions(t, bus, "m1"), 1)
	require.True(t, done[0].GetSuccess())
	require.Len(t, failures(t, bus, "m1"), 1)
	require.Equal(t, int64(2), c.n.Load(), "delivered twice: once, then once again")
}

// TestConsumeStopLeavesCommand: a service that stops while its
// handler runs reports nothing, and the command goes to the next replica.
func TestConsumeStopLeavesCommand(t *testing.T) {
	bus, _ := ztest.Bus(t)
	first := newCalls()
	stop := consume(t, bus, func(ctx context.Context, cmd *eventspb.StageCommand) (eventspb.StageError, error) {
		first.record(ctx, cmd)
		<-ctx.Done() // runs until the service stops
		return eventspb.StageError_STAGE_ERROR_UNSPECIFIED, ctx.Err()
	})
	command(t, bus, "m1")
	first.next(t, 10*time.Second)
	stop()
	require.Empty(t, completions(t, bus, "m1"), "a stopped handler reported the stage")

	second := newCalls()
	consume(t, bus, func(ctx context.Context, cmd *eventspb.StageCommand) (eventspb.StageError, error) {
		second.record(ctx, cmd)
		return eventspb.StageError_STAGE_ERROR_UNSPECIFIED, nil
	})
	// Redelivered at once when nacked; at worst after the ack wait.
	second.next(t, 20*time.Second)
	var done []*eventspb.StageCompleted
	ztest.Eventually(t, 10*time.Second, func() bool {
		done = completions(t, bus, "m1")
		return len(done) > 0
	}, "the next replica did not report the stage")
	waitAcked(t, bus)
	require.Len(t, completions(t, bus, "m1"), 1)
	require.True(t, done[0].GetSuccess())
}

// TestReport: Report publishes one StageCompleted per command,
// however often it is called, and nothing for ErrPending.
func TestReport(t *testing.T) {
	bus, _ := ztest.Bus(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	prop := telemetry.Propagator()
	cmd := &eventspb.StageCommand{EventId: "m1-t4-STAGE_ACTION_START", MigrationId: "m1", Stage: zdmpb.StageKind_STAGE_KIND_VERIFY}

	require.NoError(t, stage.Report(ctx, bus.JS, prop, cmd, eventspb.StageError_STAGE_ERROR_UNSPECIFIED, stage.ErrPending))
	require.Empty(t, completions(t, bus, "m1"), "a pending stage's end is reported by other events")

	for range 2 { // a replica that reports again after a crash
		require.NoError(t, stage.Report(ctx, bus.JS, prop, cmd, eventspb.StageError_STAGE_ERROR_VERIFICATION_MISMATCH, errors.New("count 10/9")))
	}
	done := completions(t, bus, "m1")
	require.Len(t, done, 1, "the repeat is dropped")
	want := &eventspb.StageCompleted{EventId: "done-m1-t4-STAGE_ACTION_START", MigrationId: "m1", Stage: zdmpb.StageKind_STAGE_KIND_VERIFY,
		Code: eventspb.StageError_STAGE_ERROR_VERIFICATION_MISMATCH, ErrorMessage: "count 10/9"}
	if diff := cmp.Diff(want, done[0], protocmp.Transform(), protocmp.IgnoreFields(&eventspb.StageCompleted{}, "time")); diff != "" {
		t.Errorf("reported (-want, +got):\n%s", diff)
	}

	other := &eventspb.StageCommand{EventId: "m2-t1-STAGE_ACTION_START", MigrationId: "m2", Stage: zdmpb.StageKind_STAGE_KIND_FINALIZE}
	require.NoError(t, stage.Report(ctx, bus.JS, prop, other, eventspb.StageError_STAGE_ERROR_UNSPECIFIED, nil))
	done = completions(t, bus, "m2")
	require.Len(t, done, 1)
	require.True(t, done[0].GetSuccess())
	require.Equal(t, eventspb.StageError_STAGE_ERROR_UNSPECIFIED, done[0].GetCode())
}

func TestStarts(t *testing.T) {
	for action, want := range map[eventspb.StageAction]bool{
		eventspb.StageAction_STAGE_ACTION_START:          true,
		eventspb.StageAction_STAGE_ACTION_RESUME:         true,
		eventspb.StageAction_STAGE_ACTION_PAUSE:          false,
		eventspb.StageAction_STAGE_ACTION_CANCEL:         false,
		eventspb.StageAction_STAGE_ACTION_UPDATE_OPTIONS: false,
		eventspb.StageAction_STAGE_ACTION_UNSPECIFIED:    false,
	} {
		require.Equal(t, want, stage.Starts(&eventspb.StageCommand{Action: action}), action.String())
	}
}

// TestConnectRefusesMissingOrUnreachableSource needs no Milvus: the
// source is not registered, or nothing listens where it should be.
func TestConnectRefusesMissingOrUnreachableSource(t *testing.T) {
	bus, _ := ztest.Bus(t)
	reg := ztest.Registry(t, bus, map[string]string{"down": "127.0.0.1:1", "tgt": "127.0.0.1:1"})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, _, code, err := stage.Connect(ctx, reg, &eventspb.StageCommand{SourceClusterId: "nope", TargetClusterId: "tgt"})
	require.Equal(t, eventspb.StageError_STAGE_ERROR_CLUSTER_MISSING, code)
	require.ErrorContains(t, err, "source: ")
	require.Equal(t, zdmpb.ClusterRole_CLUSTER_ROLE_UNSPECIFIED, stage.Unreachable(err), "a cluster not registered is not retried")

	// The connect gives up at ctx's end, well before its own 10s.
	short, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	_, _, code, err = stage.Connect(short, reg, &eventspb.StageCommand{SourceClusterId: "down", TargetClusterId: "tgt"})
	require.Equal(t, eventspb.StageError_STAGE_ERROR_SOURCE_UNREACHABLE, code)
	require.ErrorContains(t, err, "source: ")
	require.Equal(t, zdmpb.ClusterRole_CLUSTER_ROLE_SOURCE, stage.Unreachable(err))
}

// TestIntegrationConnect connects to the primary tier's servers, then to a
// target that does not answer.
func TestIntegrationConnect(t *testing.T) {
	ztest.Integration(t)
	tier := ztest.PrimaryTier(t)
	bus, _ := ztest.Bus(t)
	reg := ztest.Registry(t, bus, map[string]string{"src": tier.Source, "tgt": tier.Target, "down": "127.0.0.1:1"})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	src, tgt, code, err := stage.Connect(ctx, reg, &eventspb.StageCommand{SourceClusterId: "src", TargetClusterId: "tgt"})
	require.NoError(t, err)
	require.Equal(t, eventspb.StageError_STAGE_ERROR_UNSPECIFIED, code)
	defer src.Close()
	defer tgt.Close()
	_, err = src.ListCollections(ctx)
	require.NoError(t, err, "source client")
	_, err = tgt.ListCollections(ctx)
	require.NoError(t, err, "target client")

	short, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	_, _, code, err = stage.Connect(short, reg, &eventspb.StageCommand{SourceClusterId: "src", TargetClusterId: "down"})
	require.Equal(t, eventspb.StageError_STAGE_ERROR_TARGET_UNREACHABLE, code)
	require.ErrorContains(t, err, "target: ")
	require.Equal(t, zdmpb.ClusterRole_CLUSTER_ROLE_TARGET, stage.Unreachable(err))
}
