package main_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/milvus-io/milvus-sdk-go/v2/client"
	"github.com/milvus-io/milvus-sdk-go/v2/entity"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/zdm-io/zdm/pkg/ztest"
	lagpb "github.com/zdm-io/zdm/proto/zdm/lag/v1"
	zdmpb "github.com/zdm-io/zdm/proto/zdm/v1"
)

// TestE2EOfflineMigration runs an OFFLINE migration through the public API
// with every service in one process: the target is prepared, every row
// copied by work units, verified, and the migration COMPLETED.
func TestE2EOfflineMigration(t *testing.T) {
	ztest.Integration(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	srcAddr, tgtAddr := ztest.NewServer(t, "lite3"), ztest.NewServer(t, "lite3")
	const rows = 2500
	seedShop(t, ctx, srcAddr, rows)

	p := start(t)
	conn := dial(t, p.addrs.GRPC)
	mig := zdmpb.NewMigrationServiceClient(conn)
	registerPair(t, ctx, zdmpb.NewClusterServiceClient(conn), srcAddr, tgtAddr)
	_, err := mig.CreateMigration(ctx, &zdmpb.CreateMigrationRequest{MigrationId: "off1", Type: zdmpb.MigrationType_MIGRATION_TYPE_OFFLINE,
		SourceClusterId: "src", TargetClusterId: "tgt", Options: &zdmpb.MigrationOptions{WorkUnitRows: 1000}})
	require.NoError(t, err)

	m := waitMigration(t, ctx, mig, "off1", 2*time.Minute, terminal, nil)
	require.Equal(t, zdmpb.MigrationState_MIGRATION_STATE_COMPLETED, m.GetState(), "error: %v", m.GetError())
	var path []string
	for _, h := range m.GetHistory() {
		path = append(path, h.GetToState().String())
	}
	require.Equal(t, []string{"MIGRATION_STATE_PREPARING_TARGET", "MIGRATION_STATE_COPYING", "MIGRATION_STATE_VERIFYING", "MIGRATION_STATE_COMPLETED"}, path)
	require.Equal(t, tgtAddr, m.GetTargetEndpoint())
	progress := map[string]*zdmpb.CollectionProgress{}
	for _, c := range m.GetCollections() {
		progress[c.GetDatabase()+"."+c.GetCollection()] = c
	}
	items := progress["shop.items"]
	require.NotNil(t, items, "progress per collection: %v", m.GetCollections())
	require.Equal(t, int64(rows), items.GetRowsTotal())
	require.Equal(t, int64(rows), items.GetRowsCopied())
	require.Equal(t, items.GetUnitsTotal(), items.GetUnitsDone())
	require.Equal(t, zdmpb.CollectionPhase_COLLECTION_PHASE_VERIFIED, items.GetPhase(), "verification passed")

	// Independently of zdm's own verification, the target equals the source.
	report := compareSides(t, ctx, srcAddr, tgtAddr, "shop", "items")
	require.True(t, report.Match(), report.String())
	require.Equal(t, int64(rows), report.TargetCount)
}

// seedShop makes database shop with collection items of n rows, two
// partitions, an index and a loaded state.
func seedShop(t *testing.T, ctx context.Context, addr string, n int) {
	t.Helper()
	admin, err := client.NewClient(ctx, client.Config{Address: addr})
	require.NoError(t, err)
	defer admin.Close()
	require.NoError(t, admin.CreateDatabase(ctx, "shop"))
	c, err := client.NewClient(ctx, client.Config{Address: addr, DBName: "shop"})
	require.NoError(t, err)
	defer c.Close()
	schema := entity.NewSchema().WithName("items").WithDynamicFieldEnabled(true).
		WithField(entity.NewField().WithName("id").WithDataType(entity.FieldTypeInt64).WithIsPrimaryKey(true)).
		WithField(entity.NewField().WithName("title").WithDataType(entity.FieldTypeVarChar).WithMaxLength(64)).
		WithField(entity.NewField().WithName("vec").WithDataType(entity.FieldTypeFloatVector).WithDim(16))
	require.NoError(t, c.CreateCollection(ctx, schema, 1))
	require.NoError(t, c.CreatePartition(ctx, "items", "archive"))
	insertItems(t, ctx, c, "", 1, n-300)
	insertItems(t, ctx, c, "archive", n-299, n)
	idx, err := entity.NewIndexFlat(entity.L2)
	require.NoError(t, err)
	require.NoError(t, c.CreateIndex(ctx, "items", "vec", idx, true))
	require.NoError(t, c.LoadCollection(ctx, "items", true))
}

// insertItems writes rows from..to (inclusive) of the items shape into
// partition part ("" for the default) of collection items.
func insertItems(t *testing.T, ctx context.Context, c client.Client, part string, from, to int) {
	t.Helper()
	var ids []int64
	var titles []string
	var vecs [][]float32
	for id := from; id <= to; id++ {
		ids, titles = append(ids, int64(id)), append(titles, fmt.Sprintf("item %d", id))
		v := make([]float32, 16)
		for j := range v {
			v[j] = float32(id) + float32(j)/16
		}
		vecs = append(vecs, v)
	}
	_, err := c.Insert(ctx, "items", part, entity.NewColumnInt64("id", ids), entity.NewColumnVarChar("title", titles),
		entity.NewColumnFloatVector("vec", 16, vecs))
	require.NoError(t, err)
}

// TestE2EOfflineMigrationFailsOnMismatch changes the target after the copy
// and before verification: the migration FAILS and names the ranges and
// keys. The lag monitor runs in a second process that joins later, so the
// change lands while the migration waits in VERIFYING; until it joins, the
// test announces the verify stage for it.
func TestE2EOfflineMigrationFailsOnMismatch(t *testing.T) {
	ztest.Integration(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	srcAddr, tgtAddr := ztest.NewServer(t, "lite3"), ztest.NewServer(t, "lite3")
	seedShop(t, ctx, srcAddr, 1200)

	p := start(t, "-target", "coordinator,snapshot-copier", "-nats-listen", "127.0.0.1:0")
	conn := dial(t, p.addrs.GRPC)
	clusters, mig := zdmpb.NewClusterServiceClient(conn), zdmpb.NewMigrationServiceClient(conn)
	registerPair(t, ctx, clusters, srcAddr, tgtAddr)
	announceStages(t, jetStream(t, p.addrs.NATS), zdmpb.StageKind_STAGE_KIND_VERIFY)
	_, err := mig.CreateMigration(ctx, &zdmpb.CreateMigrationRequest{MigrationId: "off2", Type: zdmpb.MigrationType_MIGRATION_TYPE_OFFLINE,
		SourceClusterId: "src", TargetClusterId: "tgt", Options: &zdmpb.MigrationOptions{WorkUnitRows: 1000}})
	require.NoError(t, err)
	waitMigration(t, ctx, mig, "off2", 2*time.Minute, inState(zdmpb.MigrationState_MIGRATION_STATE_VERIFYING), nil)

	tc, err := client.NewClient(ctx, client.Config{Address: tgtAddr, DBName: "shop"})
	require.NoError(t, err)
	defer tc.Close()
	require.NoError(t, tc.Delete(ctx, "items", "", "id in [7]"))
	v := make([]float32, 16)
	_, err = tc.Upsert(ctx, "items", "", entity.NewColumnInt64("id", []int64{100}), entity.NewColumnVarChar("title", []string{"tampered"}),
		entity.NewColumnFloatVector("vec", 16, [][]float32{v}))
	require.NoError(t, err)

	monitor := start(t, "-target", "lag-monitor", "-nats-url", p.addrs.NATS)
	m := waitMigration(t, ctx, mig, "off2", 2*time.Minute, inState(zdmpb.MigrationState_MIGRATION_STATE_FAILED), nil)
	require.Equal(t, "VERIFICATION_MISMATCH", m.GetError().GetCode())
	require.Equal(t, zdmpb.StageKind_STAGE_KIND_VERIFY, m.GetError().GetStage())
	for _, want := range []string{"shop.items", "e.g. 7", "100", "count 1200/1199"} {
		require.Contains(t, m.GetError().GetMessage(), want)
	}
	src, err := clusters.GetCluster(ctx, &zdmpb.GetClusterRequest{ClusterId: "src"})
	require.NoError(t, err)
	require.Equal(t, zdmpb.LockState_LOCK_STATE_UNLOCKED, src.GetCluster().GetLockState())

	// The same verification through the lag monitor's API.
	lag := lagpb.NewLagMonitorServiceClient(dial(t, monitor.addrs.GRPC))
	pair := &lagpb.VerifyRequest{MigrationId: "off2", Source: &zdmpb.ClusterConnection{Endpoint: srcAddr},
		Target: &zdmpb.ClusterConnection{Endpoint: tgtAddr}, RangeRows: 500}
	rep, err := lag.Verify(ctx, pair)
	require.NoError(t, err)
	require.False(t, rep.GetMatch())
	require.Len(t, rep.GetCollections(), 1)
	items := rep.GetCollections()[0]
	require.Equal(t, []int64{1200, 1199, 1200, 1199}, []int64{items.GetSourceCount(), items.GetTargetCount(), items.GetSourceDistinctKeys(), items.GetTargetDistinctKeys()})
	var keys []string
	for _, mm := range items.GetMismatches() {
		keys = append(keys, mm.GetSampleKeys()...)
	}
	require.Equal(t, []string{"7", "100"}, keys)
	for _, bad := range []struct {
		req  *lagpb.VerifyRequest
		code codes.Code
	}{
		{&lagpb.VerifyRequest{MigrationId: "off2"}, codes.InvalidArgument},
		{&lagpb.VerifyRequest{Source: pair.Source, Target: pair.Target, Collections: []string{"items"}}, codes.InvalidArgument},
		{&lagpb.VerifyRequest{Source: pair.Source, Target: pair.Target, Collections: []string{"shop.nope"}}, codes.NotFound},
		{&lagpb.VerifyRequest{Source: &zdmpb.ClusterConnection{Endpoint: "127.0.0.1:99999"}, Target: pair.Target}, codes.InvalidArgument},
		{&lagpb.VerifyRequest{Source: pair.Source, Target: &zdmpb.ClusterConnection{Endpoint: "host:port"}}, codes.InvalidArgument},
		{&lagpb.VerifyRequest{MigrationId: "Has Space", Source: pair.Source, Target: pair.Target}, codes.InvalidArgument},
	} {
		_, err := lag.Verify(ctx, bad.req)
		require.Equal(t, bad.code, status.Code(err), "%v: %v", bad.req, err)
	}
	// GetLag checks its ID as the public API does, before any lookup.
	for _, id := range []string{"", "has space", "*", strings.Repeat("a", 100_000)} {
		_, err := lag.GetLag(ctx, &lagpb.GetLagRequest{MigrationId: id})
		require.Equal(t, codes.InvalidArgument, status.Code(err), "%.20q: %v", id, err)
	}
}
