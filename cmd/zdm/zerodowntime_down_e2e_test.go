package main_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/zdm-io/zdm/pkg/ztest"
	lagpb "github.com/zdm-io/zdm/proto/zdm/lag/v1"
	zdmpb "github.com/zdm-io/zdm/proto/zdm/v1"
)

// TestE2EApplierTargetDown kills the target while a ZERO_DOWNTIME
// migration syncs under write load: the migration shows the target as
// down, lag rises, and writes through the gateway go on. Once the target
// is back, the applier applies what waited, lag falls under a second and
// the target equals the source before any repair: nothing was lost. The
// servers are milvus-lite 2.5, which keeps what it acknowledged across a
// crash (see TestE2EClusterDownAndBack).
func TestE2EApplierTargetDown(t *testing.T) {
	ztest.Integration(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	srcAddr, tgt := ztest.NewServer(t, "lite2"), ztest.StartServer(t, "lite2")
	seedDefault(t, ctx, srcAddr, 1000)
	gw := freeAddr(t)
	p := start(t, "-gateway-cluster", "src", "-gateway-addr", gw, "-cluster-down-timeout", "5m")
	conn := dial(t, p.addrs.GRPC)
	mig, lag := zdmpb.NewMigrationServiceClient(conn), lagpb.NewLagMonitorServiceClient(conn)
	registerPair(t, ctx, zdmpb.NewClusterServiceClient(conn), srcAddr, tgt.Addr)
	l := startLoad(t, ctx, gw, "", true)
	_, err := mig.CreateMigration(ctx, &zdmpb.CreateMigrationRequest{MigrationId: "down", Type: zdmpb.MigrationType_MIGRATION_TYPE_ZERO_DOWNTIME,
		SourceClusterId: "src", TargetClusterId: "tgt", Options: &zdmpb.MigrationOptions{WorkUnitRows: 1000}})
	require.NoError(t, err)
	m := waitMigration(t, ctx, mig, "down", 2*time.Minute, func(m *zdmpb.Migration) bool {
		return m.GetState() == zdmpb.MigrationState_MIGRATION_STATE_READY_TO_FINALIZE || terminal(m)
	}, nil)
	require.Equal(t, zdmpb.MigrationState_MIGRATION_STATE_READY_TO_FINALIZE, m.GetState(), "error: %v", m.GetError())
	getLag := func() time.Duration {
		resp, err := lag.GetLag(ctx, &lagpb.GetLagRequest{MigrationId: "down"})
		require.NoError(t, err)
		return resp.GetLag().AsDuration()
	}

	tgt.Kill()
	m = waitMigration(t, ctx, mig, "down", time.Minute, func(m *zdmpb.Migration) bool { return len(m.GetClusterProblems()) > 0 }, nil)
	require.Equal(t, zdmpb.ClusterRole_CLUSTER_ROLE_TARGET, m.GetClusterProblems()[0].GetRole())
	// Lag rises about 1s per s while the target is down: by more than 2s
	// within 3s.
	first, last := getLag(), time.Duration(0)
	ztest.Eventually(t, 3*time.Second, func() bool { last = getLag(); return last > first+2*time.Second },
		"lag does not rise while the target is down: %s, then %s", first, lazy(func() string { return last.String() }))

	tgt.Start()
	ztest.Eventually(t, time.Minute, func() bool { return getLag() < time.Second }, "lag stays up after the target came back")
	waitMigration(t, ctx, mig, "down", 30*time.Second, func(m *zdmpb.Migration) bool { return len(m.GetClusterProblems()) == 0 }, nil)
	l.end(t)
	halted := time.Now()
	waitMigration(t, ctx, mig, "down", time.Minute, func(m *zdmpb.Migration) bool {
		return m.GetLag().GetAppliedWatermark().AsTime().After(halted)
	}, nil)
	report := compareSides(t, ctx, srcAddr, tgt.Addr, "default", "items")
	require.True(t, report.Match(), "before any repair: %s", report)

	_, err = mig.StopSync(ctx, &zdmpb.StopSyncRequest{MigrationId: "down", ConfirmWritesStopped: true})
	require.NoError(t, err)
	m = waitMigration(t, ctx, mig, "down", 2*time.Minute, terminal, nil)
	require.Equal(t, zdmpb.MigrationState_MIGRATION_STATE_COMPLETED, m.GetState(), "error: %v", m.GetError())
	require.Zero(t, m.GetRepairedRanges())
}
