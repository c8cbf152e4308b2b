package coordinator

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/metric/noop"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/zdm-io/zdm/pkg/grpcserver"
	"github.com/zdm-io/zdm/pkg/natsbus"
	"github.com/zdm-io/zdm/pkg/service"
	"github.com/zdm-io/zdm/pkg/telemetry"
	"github.com/zdm-io/zdm/pkg/ztest"
	eventspb "github.com/zdm-io/zdm/proto/zdm/events/v1"
	zdmpb "github.com/zdm-io/zdm/proto/zdm/v1"
)

// fakeClock is the injectable clock: tests move it by days in no time.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (f *fakeClock) Now() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.now
}

func (f *fakeClock) Advance(d time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.now = f.now.Add(d)
}

// harness is one coordinator on a real JetStream, served over real gRPC.
type harness struct {
	t        *testing.T
	bus      *natsbus.Conn
	clock    *fakeClock
	coord    *Coordinator
	mig      zdmpb.MigrationServiceClient
	clusters zdmpb.ClusterServiceClient
}

// eventSeq numbers the events tests publish, unique across harnesses so
// JetStream's deduplication never drops one by accident.
var eventSeq atomic.Int64

func newHarness(t *testing.T, bus *natsbus.Conn, clock *fakeClock) *harness {
	t.Helper()
	logger := slog.New(slog.NewTextHandler(testLog{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	cfg := DefaultConfig()
	cfg.Now = clock.Now
	cfg.SweepInterval = time.Hour // tests call sweep themselves
	cfg.ProbeTimeout = 5 * time.Second
	deps := service.Deps{Logger: logger, Bus: bus, TracerProvider: sdktrace.NewTracerProvider(),
		Propagator: telemetry.Propagator(), Metrics: prometheus.NewRegistry()}
	coord, err := New(cfg, deps)
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	require.NoError(t, coord.Start(ctx))

	srv := grpcserver.New(grpcserver.Deps{Logger: logger, TracerProvider: deps.TracerProvider,
		MeterProvider: noop.NewMeterProvider(), Propagator: deps.Propagator})
	coord.Register(srv.Registrar())
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	go func() { _ = srv.Serve(lis) }()
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	t.Cleanup(func() {
		conn.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
		require.NoError(t, coord.Stop(ctx))
	})
	return &harness{t: t, bus: bus, clock: clock, coord: coord,
		mig: zdmpb.NewMigrationServiceClient(conn), clusters: zdmpb.NewClusterServiceClient(conn)}
}

func newClock() *fakeClock {
	return &fakeClock{now: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)}
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// register registers a fresh, empty Milvus server as cluster id.
func (h *harness) register(id string) *zdmpb.Cluster {
	h.t.Helper()
	addr := ztest.NewServer(h.t, "lite2")
	resp, err := h.clusters.RegisterCluster(ctxT(h.t), &zdmpb.RegisterClusterRequest{
		ClusterId: id, Connection: &zdmpb.ClusterConnection{Endpoint: addr},
	})
	require.NoError(h.t, err)
	return resp.GetCluster()
}

// create starts a migration between freshly registered clusters.
func (h *harness) create(id string, typ zdmpb.MigrationType) *zdmpb.Migration {
	h.t.Helper()
	h.register(id + "-src")
	h.register(id + "-tgt")
	resp, err := h.mig.CreateMigration(ctxT(h.t), &zdmpb.CreateMigrationRequest{
		MigrationId: id, Type: typ, SourceClusterId: id + "-src", TargetClusterId: id + "-tgt",
		Options: &zdmpb.MigrationOptions{LagThreshold: durationpb.New(5 * time.Second)},
	})
	require.NoError(h.t, err)
	require.Equal(h.t, preparing, resp.GetMigration().GetState())
	return resp.GetMigration()
}

// stageDone publishes a stage's end the way the services will.
func (h *harness) stageDone(id string, stage zdmpb.StageKind, success bool, code, msg string) {
	h.t.Helper()
	n := eventSeq.Add(1)
	ev := &eventspb.StageCompleted{EventId: fmt.Sprintf("%s-test-%d", id, n), MigrationId: id, Stage: stage,
		Success: success, ErrorCode: code, ErrorMessage: msg, Time: timestamppb.New(h.clock.Now())}
	_, err := natsbus.Publish(ctxT(h.t), h.bus.JS, telemetry.Propagator(), "zdm.evt."+id+".stage", ev.EventId, ev)
	require.NoError(h.t, err)
}

// lag publishes a lag report.
func (h *harness) lag(id string, lag time.Duration, reached bool) {
	h.t.Helper()
	n := eventSeq.Add(1)
	now := h.clock.Now()
	ev := &eventspb.LagReport{EventId: fmt.Sprintf("%s-lag-%d", id, n), MigrationId: id, Lag: durationpb.New(lag),
		AppliedWatermark: timestamppb.New(now.Add(-lag)), ThresholdReached: reached, Time: timestamppb.New(now)}
	_, err := natsbus.Publish(ctxT(h.t), h.bus.JS, telemetry.Propagator(), "zdm.evt."+id+".lag", ev.EventId, ev)
	require.NoError(h.t, err)
}

// eventsHandled waits until the coordinator has acked every event on the
// bus.
func (h *harness) eventsHandled() {
	h.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		info, err := h.bus.JS.Consumer(ctxT(h.t), natsbus.EventsStream, eventsConsumer)
		require.NoError(h.t, err)
		ci, err := info.Info(ctxT(h.t))
		require.NoError(h.t, err)
		if ci.NumPending == 0 && ci.NumAckPending == 0 {
			return
		}
		require.True(h.t, time.Now().Before(deadline), "events still pending: %d, unacked: %d", ci.NumPending, ci.NumAckPending)
		time.Sleep(10 * time.Millisecond)
	}
}

// waitState polls until the migration is in want and every event is
// handled, failing after 20s.
func (h *harness) waitState(id string, want zdmpb.MigrationState) *zdmpb.Migration {
	h.t.Helper()
	var last *zdmpb.Migration
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		resp, err := h.mig.GetMigration(ctxT(h.t), &zdmpb.GetMigrationRequest{MigrationId: id})
		require.NoError(h.t, err)
		last = resp.GetMigration()
		if last.GetState() == want {
			// The transition's side effects run after its write: wait
			// until the handler that made it has finished.
			h.eventsHandled()
			return last
		}
		time.Sleep(20 * time.Millisecond)
	}
	h.t.Fatalf("migration %s: want %s, still %s", id, stateName(want), stateName(last.GetState()))
	return nil
}

// drive moves a new migration to state want through the events and calls
// that lead there.
func (h *harness) drive(id string, want zdmpb.MigrationState) *zdmpb.Migration {
	h.t.Helper()
	ctx := ctxT(h.t)
	steps := map[zdmpb.MigrationState]func(){
		copying: func() { h.stageDone(id, zdmpb.StageKind_STAGE_KIND_PREPARE_TARGET, true, "", "") },
		syncing: func() { h.stageDone(id, zdmpb.StageKind_STAGE_KIND_COPY_DATA, true, "", "") },
		ready:   func() { h.lag(id, 2*time.Second, true) },
		stoppingSync: func() {
			_, err := h.mig.StopSync(ctx, &zdmpb.StopSyncRequest{MigrationId: id, ConfirmWritesStopped: true})
			require.NoError(h.t, err)
		},
		verifying: func() { h.stageDone(id, zdmpb.StageKind_STAGE_KIND_FINALIZE, true, "", "") },
	}
	path := map[zdmpb.MigrationState][]zdmpb.MigrationState{
		preparing:     nil,
		copying:       {copying},
		syncing:       {copying, syncing},
		ready:         {copying, syncing, ready},
		stoppingSync:  {copying, syncing, ready, stoppingSync},
		verifying:     {copying, syncing, ready, stoppingSync, verifying},
		switchingOver: {copying, syncing, ready},
		paused:        {copying},
	}
	var m *zdmpb.Migration
	for _, s := range path[want] {
		steps[s]()
		m = h.waitState(id, s)
	}
	switch want {
	case switchingOver:
		resp, err := h.mig.Switchover(ctx, &zdmpb.SwitchoverRequest{MigrationId: id})
		require.NoError(h.t, err)
		m = resp.GetMigration()
	case paused:
		resp, err := h.mig.PauseMigration(ctx, &zdmpb.PauseMigrationRequest{MigrationId: id, Reason: "maintenance"})
		require.NoError(h.t, err)
		m = resp.GetMigration()
	case preparing:
		m = h.waitState(id, preparing)
	}
	require.Equal(h.t, want, m.GetState())
	return m
}

// commands returns the stage commands sent for migration id so far.
func (h *harness) commands(id string) []*eventspb.StageCommand {
	h.t.Helper()
	ctx := ctxT(h.t)
	cons, err := h.bus.JS.OrderedConsumer(ctx, natsbus.CommandsStream, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{"zdm.cmd." + id + ".>"},
	})
	require.NoError(h.t, err)
	info, err := cons.Info(ctx)
	require.NoError(h.t, err)
	var out []*eventspb.StageCommand
	if info.NumPending == 0 {
		return out
	}
	batch, err := cons.Fetch(int(info.NumPending), jetstream.FetchMaxWait(5*time.Second))
	require.NoError(h.t, err)
	for msg := range batch.Messages() {
		var cmd eventspb.StageCommand
		_, err := natsbus.Decode(ctx, telemetry.Propagator(), msg, &cmd)
		require.NoError(h.t, err)
		out = append(out, &cmd)
	}
	return out
}

type testLog struct{ t *testing.T }

func (w testLog) Write(p []byte) (int, error) {
	w.t.Log(string(p))
	return len(p), nil
}
