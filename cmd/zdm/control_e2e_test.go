package main_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/zdm-io/zdm/pkg/milvusx"
	"github.com/zdm-io/zdm/pkg/ztest"
	copierpb "github.com/zdm-io/zdm/proto/zdm/copier/v1"
	zdmpb "github.com/zdm-io/zdm/proto/zdm/v1"
)

// TestE2EPauseThrottleResume throttles an OFFLINE copy, watches its live
// progress (rows, throughput, ETA), pauses it and sees the copy stop,
// lifts the throttle while paused, resumes, and sees it complete and
// verify.
func TestE2EPauseThrottleResume(t *testing.T) {
	ztest.Integration(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	srcAddr, tgtAddr := ztest.NewServer(t, "lite3"), ztest.NewServer(t, "lite3")
	const rows, limit = 3000, 100
	seedShop(t, ctx, srcAddr, rows)

	p := start(t)
	conn := dial(t, p.addrs.GRPC)
	mig := zdmpb.NewMigrationServiceClient(conn)
	registerPair(t, ctx, zdmpb.NewClusterServiceClient(conn), srcAddr, tgtAddr)
	_, err := mig.CreateMigration(ctx, &zdmpb.CreateMigrationRequest{MigrationId: "ctl", Type: zdmpb.MigrationType_MIGRATION_TYPE_OFFLINE,
		SourceClusterId: "src", TargetClusterId: "tgt", Options: &zdmpb.MigrationOptions{WorkUnitRows: 1000,
			Throttle: &zdmpb.Throttle{MaxRowsPerSecond: limit}}})
	require.NoError(t, err)

	// Live progress while throttled: rows climb, and a throughput and an
	// ETA appear once the coordinator has a few seconds of samples.
	items := func(m *zdmpb.Migration) *zdmpb.CollectionProgress {
		for _, c := range m.GetCollections() {
			if c.GetDatabase() == "shop" && c.GetCollection() == "items" {
				return c
			}
		}
		return nil
	}
	m := waitMigration(t, ctx, mig, "ctl", time.Minute, func(m *zdmpb.Migration) bool {
		c := items(m)
		return c.GetRowsPerSecond() > 0 && c.GetEta() != nil && c.GetRowsCopied() > 0
	}, nil)
	c := items(m)
	require.Equal(t, zdmpb.MigrationState_MIGRATION_STATE_COPYING, m.GetState())
	require.Less(t, c.GetRowsCopied(), int64(rows), "the throttle let the whole copy through at once")
	// The rate shown is the throttled one: a page may land before it is
	// paid for, so allow for one page of 1000 rows over the window.
	require.LessOrEqual(t, c.GetRowsPerSecond(), float64(limit)*3, "throughput %.0f rows/s over a %d rows/s throttle", c.GetRowsPerSecond(), limit)
	require.Positive(t, c.GetEta().AsDuration())
	require.Equal(t, int64(rows), c.GetRowsTotal())
	// The copier shows the unit in hand.
	st, err := copierpb.NewSnapshotCopierServiceClient(conn).GetCopierStatus(ctx, &copierpb.GetCopierStatusRequest{})
	require.NoError(t, err)
	require.NotEmpty(t, st.GetCopierId())
	require.NotEmpty(t, st.GetActiveUnits(), "a throttled copy has a unit in hand")
	require.Equal(t, "ctl", st.GetActiveUnits()[0].GetMigrationId())
	require.Equal(t, "items", st.GetActiveUnits()[0].GetCollection())

	// Pause: once the page in hand is written (paid for at 100 rows/s),
	// the copier puts the unit down and nothing more is copied.
	_, err = mig.PauseMigration(ctx, &zdmpb.PauseMigrationRequest{MigrationId: "ctl", Reason: "peak hours"})
	require.NoError(t, err)
	copier := copierpb.NewSnapshotCopierServiceClient(conn)
	var before *zdmpb.Migration
	ztest.Eventually(t, 15*time.Second, func() bool {
		st, err := copier.GetCopierStatus(ctx, &copierpb.GetCopierStatusRequest{})
		require.NoError(t, err)
		m := getMigration(t, ctx, mig, "ctl")
		// Settled: the copier holds no unit and the rows shown did not
		// change since the poll before.
		settled := len(st.GetActiveUnits()) == 0 && before != nil && items(m).GetRowsCopied() == items(before).GetRowsCopied()
		before = m
		return settled
	}, "the paused copy goes on: the copier still holds a unit, or the rows copied still change (%s)",
		lazy(func() string { return fmt.Sprint(items(before).GetRowsCopied()) }))
	var after *zdmpb.Migration
	ztest.Consistently(t, 3*time.Second, func() bool {
		after = getMigration(t, ctx, mig, "ctl")
		return items(after).GetRowsCopied() == items(before).GetRowsCopied()
	}, "rows were copied while paused: %s, then %s", lazy(func() string { return fmt.Sprint(items(before).GetRowsCopied()) }),
		lazy(func() string { return fmt.Sprint(items(after).GetRowsCopied()) }))
	require.Equal(t, zdmpb.MigrationState_MIGRATION_STATE_PAUSED, after.GetState())
	require.Less(t, items(after).GetRowsCopied(), int64(rows))
	require.Zero(t, items(after).GetRowsPerSecond(), "a paused copy shows no throughput")
	require.Zero(t, items(after).GetBytesPerSecond())
	require.Nil(t, items(after).GetEta(), "a paused copy shows no ETA")

	// Lift the throttle while paused, then resume: the copy finishes.
	for _, bad := range []*zdmpb.SetThrottleRequest{
		{MigrationId: "ctl", Throttle: &zdmpb.Throttle{MaxRowsPerSecond: -1}},
		{MigrationId: "nope", Throttle: &zdmpb.Throttle{}},
	} {
		_, err := mig.SetThrottle(ctx, bad)
		require.Contains(t, []codes.Code{codes.InvalidArgument, codes.NotFound}, status.Code(err), "%v: %v", bad, err)
	}
	resp, err := mig.SetThrottle(ctx, &zdmpb.SetThrottleRequest{MigrationId: "ctl", Throttle: &zdmpb.Throttle{}})
	require.NoError(t, err)
	require.Zero(t, resp.GetMigration().GetOptions().GetThrottle().GetMaxRowsPerSecond())
	_, err = mig.ResumeMigration(ctx, &zdmpb.ResumeMigrationRequest{MigrationId: "ctl"})
	require.NoError(t, err)
	m = waitMigration(t, ctx, mig, "ctl", 2*time.Minute, terminal, nil)
	require.Equal(t, zdmpb.MigrationState_MIGRATION_STATE_COMPLETED, m.GetState(), "error: %v", m.GetError())
	require.Equal(t, int64(rows), items(m).GetRowsCopied())
	require.Zero(t, items(m).GetEta().AsDuration())
	report := compareSides(t, ctx, srcAddr, tgtAddr, "shop", "items")
	require.True(t, report.Match(), report.String())

	_, err = mig.SetThrottle(ctx, &zdmpb.SetThrottleRequest{MigrationId: "ctl", Throttle: &zdmpb.Throttle{MaxRowsPerSecond: 5}})
	require.Equal(t, codes.FailedPrecondition, status.Code(err), "%v", err)
}

func getMigration(t *testing.T, ctx context.Context, mig zdmpb.MigrationServiceClient, id string) *zdmpb.Migration {
	t.Helper()
	resp, err := mig.GetMigration(ctx, &zdmpb.GetMigrationRequest{MigrationId: id})
	require.NoError(t, err)
	return resp.GetMigration()
}

// TestE2ECancelDropsTarget cancels a copy under way: the migration ends
// CANCELLED, the target holds nothing the migration made, no unit is left
// on the queue to copy, and the clusters are unlocked.
func TestE2ECancelDropsTarget(t *testing.T) {
	ztest.Integration(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	srcAddr, tgtAddr := ztest.NewServer(t, "lite3"), ztest.NewServer(t, "lite3")
	seedShop(t, ctx, srcAddr, 3000)

	p := start(t)
	conn := dial(t, p.addrs.GRPC)
	clusters, mig := zdmpb.NewClusterServiceClient(conn), zdmpb.NewMigrationServiceClient(conn)
	registerPair(t, ctx, clusters, srcAddr, tgtAddr)
	_, err := mig.CreateMigration(ctx, &zdmpb.CreateMigrationRequest{MigrationId: "gone", Type: zdmpb.MigrationType_MIGRATION_TYPE_OFFLINE,
		SourceClusterId: "src", TargetClusterId: "tgt", Options: &zdmpb.MigrationOptions{WorkUnitRows: 1000,
			Throttle: &zdmpb.Throttle{MaxRowsPerSecond: 200}}})
	require.NoError(t, err)
	waitMigration(t, ctx, mig, "gone", time.Minute, func(m *zdmpb.Migration) bool {
		for _, c := range m.GetCollections() {
			if c.GetRowsCopied() > 0 {
				return true
			}
		}
		return false
	}, nil)

	_, err = mig.CancelMigration(ctx, &zdmpb.CancelMigrationRequest{MigrationId: "gone", Reason: "wrong target"})
	require.NoError(t, err)
	m := waitMigration(t, ctx, mig, "gone", time.Minute, terminal, nil)
	require.Equal(t, zdmpb.MigrationState_MIGRATION_STATE_CANCELLED, m.GetState(), "error: %v", m.GetError())

	tc, err := milvusx.Connect(ctx, &zdmpb.ClusterConnection{Endpoint: tgtAddr}, "")
	require.NoError(t, err)
	defer tc.Close()
	dbs, err := milvusx.Databases(ctx, tc)
	require.NoError(t, err)
	require.NotContains(t, dbs, "shop", "the migration's database is still on the target")
	colls, err := milvusx.UserCollections(ctx, tc)
	require.NoError(t, err)
	require.Empty(t, colls)
	// Nothing comes back: no copier writes into the target afterwards.
	ztest.Consistently(t, 3*time.Second, func() bool {
		colls, err = milvusx.UserCollections(ctx, tc)
		require.NoError(t, err)
		return len(colls) == 0
	}, "collections came back on the target: %v", lazy(func() string { return fmt.Sprint(colls) }))
	for _, id := range []string{"src", "tgt"} {
		c, err := clusters.GetCluster(ctx, &zdmpb.GetClusterRequest{ClusterId: id})
		require.NoError(t, err)
		require.Empty(t, c.GetCluster().GetLockedByMigrationId(), "%s still locked", id)
	}
}
