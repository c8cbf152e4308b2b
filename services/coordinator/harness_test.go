package coordinator

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"slices"
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
	"github.com/zdm-io/zdm/pkg/registry"
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

// servedStages says every stage is served, except the ones listed, and
// that a gateway fronts every cluster, unless unfronted.
type servedStages struct {
	except    []zdmpb.StageKind
	unfronted bool
}

func (s servedStages) Serves(_ context.Context, k zdmpb.StageKind) (bool, error) {
	return !slices.Contains(s.except, k), nil
}

func (s servedStages) Fronted(context.Context, string) (bool, error) { return !s.unfronted, nil }

// fakeProber stands in for the clusters' Milvus servers where a test
// needs only what the probes answer: it knows endpoints, each with the
// collections its cluster holds, and any other endpoint does not answer.
// Its errors are built as MilvusProber's are for the same findings. It is
// safe for concurrent use, so coordinators sharing a bus can share it.

type fakeProber struct {
	mu       sync.Mutex
	clusters map[string][]string // collections by endpoint
	n        int
}

// fakeVersion is the version every fake cluster reports.
const fakeVersion = "v2.4.0-fake"

var _ Prober = (*fakeProber)(nil)

func newFakeProber() *fakeProber { return &fakeProber{clusters: map[string][]string{}} }

// add makes a cluster holding collections ("database.collection") and
// returns its endpoint.
func (f *fakeProber) add(collections ...string) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.n++
	ep := fmt.Sprintf("milvus-%d.fake:19530", f.n)
	f.clusters[ep] = collections
	return ep
}

func (f *fakeProber) find(ep string) ([]string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	colls, ok := f.clusters[ep]
	if !ok {
		return nil, fmt.Errorf("dial %s: connection refused", ep)
	}
	return colls, nil
}

// Probe implements Prober.
func (f *fakeProber) Probe(_ context.Context, id string, conn *zdmpb.ClusterConnection) (string, error) {
	if _, err := f.find(conn.GetEndpoint()); err != nil {
		return "", unreachable(id, err)
	}
	return fakeVersion, nil
}

// TargetIsNew implements Prober.
func (f *fakeProber) TargetIsNew(_ context.Context, id string, conn *zdmpb.ClusterConnection) error {
	colls, err := f.find(conn.GetEndpoint())
	if err != nil {
		return fmt.Errorf("target: %w", unreachable(id, err))
	}
	return notNew(id, colls)
}

// harness is one coordinator on a real JetStream, served over real gRPC.
// Its clusters are real Milvus servers, or fakes when it has a fakeProber.
type harness struct {
	t        *testing.T
	bus      *natsbus.Conn
	clock    *fakeClock
	fake     *fakeProber
	coord    *Coordinator
	mig      zdmpb.MigrationServiceClient
	clusters zdmpb.ClusterServiceClient
}

// eventSeq numbers the events tests publish, unique across harnesses so
// JetStream's deduplication never drops one by accident.
var eventSeq atomic.Int64

// newHarness starts a coordinator that probes real Milvus servers: for
// integration tests.
func newHarness(t *testing.T, bus *natsbus.Conn, clock *fakeClock) *harness {
	t.Helper()
	return startHarness(t, bus, clock, nil)
}

// newUnitHarness starts a coordinator whose clusters are fake's: for unit
// tests of everything but the probes themselves.
func newUnitHarness(t *testing.T, bus *natsbus.Conn, clock *fakeClock, fake *fakeProber) *harness {
	t.Helper()
	return startHarness(t, bus, clock, fake)
}

func startHarness(t *testing.T, bus *natsbus.Conn, clock *fakeClock, fake *fakeProber) *harness {
	t.Helper()
	logger := ztest.Logger(t, slog.LevelWarn)
	cfg := DefaultConfig()
	cfg.Now = clock.Now
	cfg.SweepInterval = time.Hour // tests call sweep themselves
	cfg.ProbeTimeout = 5 * time.Second
	if fake != nil {
		cfg.Prober = fake
	}
	// These tests play every stage themselves, with events on the bus.
	cfg.Stages = servedStages{}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	reg, err := registry.Open(ctx, bus.JS, 1, nil)
	require.NoError(t, err)
	deps := service.Deps{Logger: logger, Bus: bus, TracerProvider: sdktrace.NewTracerProvider(),
		Propagator: telemetry.Propagator(), Metrics: prometheus.NewRegistry(), Registry: reg}
	coord, err := New(cfg, deps)
	require.NoError(t, err)
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
	return &harness{t: t, bus: bus, clock: clock, fake: fake, coord: coord,
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

// register registers a fresh, empty cluster as id: a Milvus server of
// its own, or a fake one.
func (h *harness) register(id string) *zdmpb.Cluster {
	h.t.Helper()
	var addr string
	if h.fake != nil {
		addr = h.fake.add()
	} else {
		addr = ztest.NewServer(h.t, "lite2")
	}
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

// stageDone publishes a stage's end the way the services will; code is a
// StageError without its prefix ("" for none), as the migration shows it.
func (h *harness) stageDone(id string, stage zdmpb.StageKind, success bool, code, msg string) {
	h.t.Helper()
	var stageErr eventspb.StageError
	if code != "" {
		v, ok := eventspb.StageError_value["STAGE_ERROR_"+code]
		require.True(h.t, ok, "no StageError %s", code)
		stageErr = eventspb.StageError(v)
	}
	n := eventSeq.Add(1)
	h.publishStage(&eventspb.StageCompleted{EventId: fmt.Sprintf("%s-test-%d", id, n), MigrationId: id, Stage: stage,
		Success: success, Code: stageErr, ErrorMessage: msg})
}

// publishStage publishes ev, timed now by the harness's clock.
func (h *harness) publishStage(ev *eventspb.StageCompleted) {
	h.t.Helper()
	ev.Time = timestamppb.New(h.clock.Now())
	_, err := natsbus.Publish(ctxT(h.t), h.bus.JS, telemetry.Propagator(), natsbus.EventSubject(ev.GetMigrationId(), natsbus.EventStage), ev.EventId, ev)
	require.NoError(h.t, err)
}

// get returns the migration as stored.
func (h *harness) get(id string) *zdmpb.Migration {
	h.t.Helper()
	resp, err := h.mig.GetMigration(ctxT(h.t), &zdmpb.GetMigrationRequest{MigrationId: id})
	require.NoError(h.t, err)
	return resp.GetMigration()
}

// lag publishes a lag report.
func (h *harness) lag(id string, lag time.Duration, reached bool) {
	h.t.Helper()
	n := eventSeq.Add(1)
	now := h.clock.Now()
	ev := &eventspb.LagReport{EventId: fmt.Sprintf("%s-lag-%d", id, n), MigrationId: id, Lag: durationpb.New(lag),
		AppliedWatermark: timestamppb.New(now.Add(-lag)), ThresholdReached: reached, Time: timestamppb.New(now)}
	_, err := natsbus.Publish(ctxT(h.t), h.bus.JS, telemetry.Propagator(), natsbus.EventSubject(id, natsbus.EventLag), ev.EventId, ev)
	require.NoError(h.t, err)
}

// eventsHandled waits until the coordinator has acked every event on the
// bus.
func (h *harness) eventsHandled() {
	h.t.Helper()
	var ci *jetstream.ConsumerInfo
	ztest.Eventually(h.t, 20*time.Second, func() bool {
		cons, err := h.bus.JS.Consumer(ctxT(h.t), natsbus.EventsStream, natsbus.EventsDurable)
		require.NoError(h.t, err)
		ci, err = cons.Info(ctxT(h.t))
		require.NoError(h.t, err)
		return ci.NumPending == 0 && ci.NumAckPending == 0
	}, "events still pending: %s", lazy(func() string { return fmt.Sprintf("%d, unacked: %d", ci.NumPending, ci.NumAckPending) }))
}

// waitState polls until the migration is in want and every event is
// handled, failing after 20s.
func (h *harness) waitState(id string, want zdmpb.MigrationState) *zdmpb.Migration {
	h.t.Helper()
	var last *zdmpb.Migration
	ztest.Eventually(h.t, 20*time.Second, func() bool {
		resp, err := h.mig.GetMigration(ctxT(h.t), &zdmpb.GetMigrationRequest{MigrationId: id})
		require.NoError(h.t, err)
		last = resp.GetMigration()
		return last.GetState() == want
	}, "migration %s: want %s, still %s", id, stateName(want), lazy(func() string { return stateName(last.GetState()) }))
	// The transition's side effects run after its write: wait until the
	// handler that made it has finished.
	h.eventsHandled()
	return last
}

// lazy prints as what it returns when a message is formatted, so a
// failure message passed before polling shows what the last poll saw.
type lazy func() string

func (f lazy) String() string { return f() }

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
		FilterSubjects: []string{natsbus.MigrationCommands(id)},
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
