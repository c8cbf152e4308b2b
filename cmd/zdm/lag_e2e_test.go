package main_test

import (
	"context"
	"syscall"
	"testing"
	"time"

	"github.com/milvus-io/milvus-sdk-go/v2/client"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"

	"github.com/zdm-io/zdm/pkg/ztest"
	lagpb "github.com/zdm-io/zdm/proto/zdm/lag/v1"
	zdmpb "github.com/zdm-io/zdm/proto/zdm/v1"
)

// syncRig is a syncing ZERO_DOWNTIME migration whose parts run as
// processes of their own on one NATS, so a test can kill and restart
// each: the coordinator with the copier, the lag monitor, the gateway
// and the applier.
type syncRig struct {
	processes
	gw, coordAddr, lagAddr        string
	coord, monitor, gate, applier *binaryProcess
	mig                           zdmpb.MigrationServiceClient
	lag                           lagpb.LagMonitorServiceClient
	app                           client.Client
}

func newSyncRig(t *testing.T, ctx context.Context) *syncRig {
	t.Helper()
	_, nats := ztest.Bus(t)
	srcAddr, tgtAddr := ztest.NewServer(t, "lite3"), ztest.NewServer(t, "lite3")
	seedShop(t, ctx, srcAddr, 1000)
	r := &syncRig{processes: processes{t, nats.ClientURL()}, gw: freeAddr(t), coordAddr: freeAddr(t), lagAddr: freeAddr(t)}
	r.startCoordinator()
	r.startMonitor()
	r.gate = r.zdm("cdc-streamer", freeAddr(t), "-apply=false", "-gateway-cluster", "src", "-gateway-addr", r.gw)
	r.applier = r.zdm("cdc-streamer", freeAddr(t))
	r.mig = zdmpb.NewMigrationServiceClient(r.dial(r.coordAddr, r.coord))
	r.lag = lagpb.NewLagMonitorServiceClient(r.dial(r.lagAddr, r.monitor))
	registerPair(t, ctx, zdmpb.NewClusterServiceClient(r.dial(r.coordAddr, r.coord)), srcAddr, tgtAddr)
	var err error
	r.app, err = client.NewClient(ctx, client.Config{Address: r.gw, DBName: "shop"})
	require.NoError(t, err)
	t.Cleanup(func() { r.app.Close() })
	createWhenServed(t, ctx, r.mig, &zdmpb.CreateMigrationRequest{MigrationId: "lag", Type: zdmpb.MigrationType_MIGRATION_TYPE_ZERO_DOWNTIME,
		SourceClusterId: "src", TargetClusterId: "tgt", Options: &zdmpb.MigrationOptions{WorkUnitRows: 1000}})
	m := waitMigration(t, ctx, r.mig, "lag", 2*time.Minute, func(m *zdmpb.Migration) bool {
		return m.GetState() == zdmpb.MigrationState_MIGRATION_STATE_READY_TO_FINALIZE || terminal(m)
	}, nil)
	require.Equal(t, zdmpb.MigrationState_MIGRATION_STATE_READY_TO_FINALIZE, m.GetState(), "error: %v", m.GetError())
	return r
}

// processes are zdm processes of a test, each running some services on
// one NATS, started and killed by the test.
type processes struct {
	t    *testing.T
	nats string
}

// zdm starts a process running target with its API on addr.
func (r processes) zdm(target, addr string, args ...string) *binaryProcess {
	return startBinary(r.t, append([]string{"-target", target, "-nats-url", r.nats, "-grpc-addr", addr, "-metrics-addr", "127.0.0.1:0"}, args...)...)
}

// kill kills p with SIGKILL and waits until it is gone.
func (r processes) kill(p *binaryProcess) {
	r.t.Helper()
	require.NoError(r.t, p.cmd.Process.Signal(syscall.SIGKILL))
	<-p.exit
}

func (r *syncRig) startCoordinator() {
	r.coord = r.zdm("coordinator,snapshot-copier", r.coordAddr, "-coordinator-event-ack-wait", "1s")
}

func (r *syncRig) startMonitor() { r.monitor = r.zdm("lag-monitor", r.lagAddr) }

func (r *syncRig) dial(addr string, p *binaryProcess) *grpc.ClientConn {
	r.t.Helper()
	waitHealthy(r.t, addr, p.logs)
	return dial(r.t, addr)
}

// getLag is the lag monitor's answer, retried while it restarts.
func (r *syncRig) getLag(ctx context.Context) time.Duration {
	r.t.Helper()
	var lag time.Duration
	ztest.Eventually(r.t, 30*time.Second, func() bool {
		resp, err := r.lag.GetLag(ctx, &lagpb.GetLagRequest{MigrationId: "lag"})
		if err != nil {
			return false
		}
		lag = resp.GetLag().AsDuration()
		return true
	}, "GetLag does not answer")
	return lag
}

// write inserts one row through the gateway: a change for the applier.
func (r *syncRig) write(ctx context.Context, id int) {
	r.t.Helper()
	insertItems(r.t, ctx, r.app, "", id, id)
}

// TestE2ELagRisesWhileApplierStopped: with the applier stopped and a
// change pending, lag rises about one second per second; a new applier
// picks up from the stored watermark (lag does not start again from
// zero) and brings it back under a second.
func TestE2ELagRisesWhileApplierStopped(t *testing.T) {
	ztest.Integration(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	r := newSyncRig(t, ctx)
	r.kill(r.applier)
	r.write(ctx, 50001)
	first, at := r.getLag(ctx), time.Now()
	time.Sleep(4 * time.Second)
	second := r.getLag(ctx)
	rate := float64(second-first) / float64(time.Since(at))
	t.Logf("lag %s then %s: %.2f s per s", first, second, rate)
	require.InDelta(t, 1.0, rate, 0.35, "lag rises about 1 s per s while the applier is stopped")

	r.applier = r.zdm("cdc-streamer", freeAddr(t))
	// The new applier waits for the dead one's lease to expire: meanwhile
	// lag goes on from where it was.
	require.GreaterOrEqual(t, r.getLag(ctx), second)
	ztest.Eventually(t, time.Minute, func() bool { return r.getLag(ctx) < time.Second }, "lag stays above 1s after the applier restarted")
}

// TestE2ELagIdleUnderOneSecond: caught up, with no writes, lag stays
// under a second.
func TestE2ELagIdleUnderOneSecond(t *testing.T) {
	ztest.Integration(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	r := newSyncRig(t, ctx)
	r.write(ctx, 50001)
	ztest.Eventually(t, 30*time.Second, func() bool { return r.getLag(ctx) < time.Second }, "lag not under 1s")
	var last, worst time.Duration
	ztest.Consistently(t, 5*time.Second, func() bool {
		last = r.getLag(ctx)
		worst = max(worst, last)
		return last < time.Second
	}, "idle lag %s, not under 1s", lazy(func() string { return last.String() }))
	t.Logf("worst idle lag %s", worst)
}

// TestE2ELagSurvivesRestarts: after a restart of the lag monitor or of
// the coordinator, lag shows what it showed before (here, still rising
// while the applier is stopped), not zero and not nothing.
func TestE2ELagSurvivesRestarts(t *testing.T) {
	ztest.Integration(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	r := newSyncRig(t, ctx)
	r.kill(r.applier)
	r.write(ctx, 50001)
	before, at := r.getLag(ctx), time.Now()
	r.kill(r.monitor)
	r.startMonitor()
	after := r.getLag(ctx)
	t.Logf("lag monitor restarted: %s before, %s after, %s later", before, after, time.Since(at))
	require.InDelta(t, (before + time.Since(at)).Seconds(), after.Seconds(), 1.5)

	lagOf := func() time.Duration {
		var m *zdmpb.Migration
		ztest.Eventually(t, 30*time.Second, func() bool {
			resp, err := r.mig.GetMigration(ctx, &zdmpb.GetMigrationRequest{MigrationId: "lag"})
			m = resp.GetMigration()
			return err == nil
		}, "GetMigration does not answer")
		return m.GetLag().GetLag().AsDuration()
	}
	before = lagOf()
	r.kill(r.coord)
	r.startCoordinator()
	waitHealthy(t, r.coordAddr, r.coord.logs)
	require.GreaterOrEqual(t, lagOf(), before, "the coordinator shows the lag it showed before")
	ztest.Eventually(t, 10*time.Second, func() bool { return lagOf() > before+time.Second }, "lag no longer updated after the coordinator restarted")
}
