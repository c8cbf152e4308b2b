package coordinator

import (
	"testing"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/zdm-io/zdm/pkg/ztest"
	zdmpb "github.com/zdm-io/zdm/proto/zdm/v1"
)

// TestCreateMigrationRefusesUnservedStages: a migration whose stages no
// live process carries out is refused, naming the stage and what to start,
// and leaves nothing behind; one whose stages are all served is created.
func TestCreateMigrationRefusesUnservedStages(t *testing.T) {
	bus, _ := ztest.Bus(t)
	h := newUnitHarness(t, bus, newClock(), newFakeProber())
	h.coord.stages = servedStages{except: []zdmpb.StageKind{zdmpb.StageKind_STAGE_KIND_SYNC_INCREMENTAL, zdmpb.StageKind_STAGE_KIND_FINALIZE}}
	ctx := ctxT(t)
	h.register("src")
	h.register("tgt")
	_, err := h.mig.CreateMigration(ctx, &zdmpb.CreateMigrationRequest{MigrationId: "zdt", Type: zdmpb.MigrationType_MIGRATION_TYPE_ZERO_DOWNTIME,
		SourceClusterId: "src", TargetClusterId: "tgt"})
	require.Equal(t, codes.FailedPrecondition, status.Code(err), "%v", err)
	require.Contains(t, status.Convert(err).Message(), "no running zdm process carries out stage STAGE_KIND_SYNC_INCREMENTAL")
	require.Contains(t, status.Convert(err).Message(), "-target=cdc-streamer")
	_, err = h.mig.GetMigration(ctx, &zdmpb.GetMigrationRequest{MigrationId: "zdt"})
	require.Equal(t, codes.NotFound, status.Code(err), "nothing was recorded")
	src, err := h.clusters.GetCluster(ctx, &zdmpb.GetClusterRequest{ClusterId: "src"})
	require.NoError(t, err)
	require.Equal(t, zdmpb.LockState_LOCK_STATE_UNLOCKED, src.GetCluster().GetLockState())

	// OFFLINE skips sync and finalize: its stages are all served.
	_, err = h.mig.CreateMigration(ctx, &zdmpb.CreateMigrationRequest{MigrationId: "off", Type: zdmpb.MigrationType_MIGRATION_TYPE_OFFLINE,
		SourceClusterId: "src", TargetClusterId: "tgt"})
	require.NoError(t, err)
}

// TestCreateMigrationRefusesUnfrontedSource: a ZERO_DOWNTIME migration
// from a cluster no live gateway stands in front of could capture nothing:
// it is refused, saying what to start, and leaves nothing behind. OFFLINE
// needs no gateway.
func TestCreateMigrationRefusesUnfrontedSource(t *testing.T) {
	bus, _ := ztest.Bus(t)
	h := newUnitHarness(t, bus, newClock(), newFakeProber())
	h.coord.stages = servedStages{unfronted: true}
	ctx := ctxT(t)
	h.register("src")
	h.register("tgt")
	_, err := h.mig.CreateMigration(ctx, &zdmpb.CreateMigrationRequest{MigrationId: "zdt", Type: zdmpb.MigrationType_MIGRATION_TYPE_ZERO_DOWNTIME,
		SourceClusterId: "src", TargetClusterId: "tgt"})
	require.Equal(t, codes.FailedPrecondition, status.Code(err), "%v", err)
	require.Contains(t, status.Convert(err).Message(), `no zdm gateway stands in front of source cluster "src"`)
	require.Contains(t, status.Convert(err).Message(), "--gateway-cluster src")
	_, err = h.mig.GetMigration(ctx, &zdmpb.GetMigrationRequest{MigrationId: "zdt"})
	require.Equal(t, codes.NotFound, status.Code(err), "nothing was recorded")
	_, err = h.mig.CreateMigration(ctx, &zdmpb.CreateMigrationRequest{MigrationId: "off", Type: zdmpb.MigrationType_MIGRATION_TYPE_OFFLINE,
		SourceClusterId: "src", TargetClusterId: "tgt"})
	require.NoError(t, err)
}
