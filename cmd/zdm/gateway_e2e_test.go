package main_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/milvus-io/milvus-sdk-go/v2/client"
	"github.com/milvus-io/milvus-sdk-go/v2/entity"
	"github.com/stretchr/testify/require"

	"github.com/zdm-io/zdm/pkg/ztest"
	zdmpb "github.com/zdm-io/zdm/proto/zdm/v1"
)

// pymilvusFlow is what an application does with pymilvus, run unchanged
// against the gateway's address: connect, create a collection, insert,
// flush, index, load, search, query, delete, drop.
const pymilvusFlow = `
import sys
from pymilvus import MilvusClient, DataType
c = MilvusClient(uri="http://" + sys.argv[1])
schema = MilvusClient.create_schema(auto_id=False)
schema.add_field("id", DataType.INT64, is_primary=True)
schema.add_field("vec", DataType.FLOAT_VECTOR, dim=4)
c.create_collection("through_gateway", schema=schema)
res = c.insert("through_gateway", [{"id": i, "vec": [float(i), 1.0, 2.0, 3.0]} for i in range(1, 101)])
assert res["insert_count"] == 100, res
c.flush("through_gateway")
idx = c.prepare_index_params()
idx.add_index(field_name="vec", index_type="FLAT", metric_type="L2")
c.create_index("through_gateway", idx)
c.load_collection("through_gateway")
hits = c.search("through_gateway", data=[[5.0, 1.0, 2.0, 3.0]], limit=3, output_fields=["id"])
assert hits[0][0]["id"] == 5, hits
rows = c.query("through_gateway", filter="id in [7, 8]", output_fields=["id"])
assert sorted(r["id"] for r in rows) == [7, 8], rows
c.delete("through_gateway", ids=[7])
rows = c.query("through_gateway", filter="id in [7, 8]", output_fields=["id"], consistency_level="Strong")
assert [r["id"] for r in rows] == [8], rows
c.drop_collection("through_gateway")
print("pymilvus flow ok")
`

// pymilvusInsert inserts one row through the gateway and prints the error.
const pymilvusInsert = `
import sys
from pymilvus import MilvusClient
c = MilvusClient(uri="http://" + sys.argv[1], db_name="shop")
try:
    c.insert("items", [{"id": 999999, "title": "late", "vec": [0.0] * 16}])
    print("inserted")
except Exception as e:
    print("refused:", e)
`

// python returns the rig's Python with pymilvus installed.
func python(t *testing.T) string {
	t.Helper()
	server := os.Getenv("ZDM_TEST_LITE3_SERVER")
	if server == "" {
		ztest.Missing(t, "pymilvus (ZDM_TEST_LITE3_SERVER's venv)")
	}
	return filepath.Join(filepath.Dir(server), "python")
}

func runPython(t *testing.T, script string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, python(t), append([]string{"-c", script}, args...)...).CombinedOutput()
	require.NoError(t, err, "pymilvus through the gateway:\n%s", out)
	return string(out)
}

// TestE2EGateway runs pymilvus and milvus-sdk-go, unchanged, against the
// gateway in front of a registered source: every call reaches the source.
// During an OFFLINE migration from that source, writes through the gateway
// are refused with FAILED_PRECONDITION naming the migration while reads go
// on; once the migration ends, writes pass again.
func TestE2EGateway(t *testing.T) {
	ztest.Integration(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	srcAddr, tgtAddr := ztest.NewServer(t, "lite3"), ztest.NewServer(t, "lite3")
	seedShop(t, ctx, srcAddr, 12000)
	gw := freeAddr(t)
	p := start(t, "-gateway-cluster", "src", "-gateway-addr", gw)
	conn := dial(t, p.addrs.GRPC)
	mig := zdmpb.NewMigrationServiceClient(conn)
	registerPair(t, ctx, zdmpb.NewClusterServiceClient(conn), srcAddr, tgtAddr)

	require.Contains(t, runPython(t, pymilvusFlow, gw), "pymilvus flow ok")

	sdk, err := client.NewClient(ctx, client.Config{Address: gw, DBName: "shop"})
	require.NoError(t, err)
	defer sdk.Close()
	insertItems(t, ctx, sdk, "", 20001, 20010)
	count := func() int64 {
		res, err := sdk.Query(ctx, "items", nil, "", []string{"count(*)"}, client.WithSearchQueryConsistencyLevel(entity.ClStrong))
		require.NoError(t, err)
		return res.GetColumn("count(*)").(*entity.ColumnInt64).Data()[0]
	}
	require.Equal(t, int64(12010), count(), "the rows went to the source")

	// A copy slow enough to outlast the checks below.
	_, err = mig.CreateMigration(ctx, &zdmpb.CreateMigrationRequest{MigrationId: "gw-off", Type: zdmpb.MigrationType_MIGRATION_TYPE_OFFLINE,
		SourceClusterId: "src", TargetClusterId: "tgt", Options: &zdmpb.MigrationOptions{WorkUnitRows: 2000,
			Throttle: &zdmpb.Throttle{MaxRowsPerSecond: 100}}})
	require.NoError(t, err)
	copyingWithRows(t, ctx, mig, "gw-off")
	_, err = sdk.Insert(ctx, "items", "", entity.NewColumnInt64("id", []int64{30001}), entity.NewColumnVarChar("title", []string{"late"}),
		entity.NewColumnFloatVector("vec", 16, [][]float32{make([]float32, 16)}))
	require.ErrorContains(t, err, `Insert refused: cluster "src" is the source of OFFLINE migration "gw-off"`)
	require.ErrorContains(t, sdk.DropCollection(ctx, "items"), `DropCollection refused`)
	out := runPython(t, pymilvusInsert, gw)
	require.Contains(t, out, "refused:", "migration: %v", getMigration(t, ctx, mig, "gw-off").GetState())
	require.Contains(t, out, `migration "gw-off"`)
	require.Equal(t, int64(12010), count(), "reads go on; nothing was written")

	_, err = mig.CancelMigration(ctx, &zdmpb.CancelMigrationRequest{MigrationId: "gw-off"})
	require.NoError(t, err)
	waitMigration(t, ctx, mig, "gw-off", time.Minute, terminal, nil)
	ztest.Eventually(t, 10*time.Second, func() bool {
		_, err = sdk.Insert(ctx, "items", "", entity.NewColumnInt64("id", []int64{30001}), entity.NewColumnVarChar("title", []string{"late"}),
			entity.NewColumnFloatVector("vec", 16, [][]float32{make([]float32, 16)}))
		return err == nil
	}, "writes still refused after the migration ended: %v", lazy(func() string { return err.Error() }))
	require.Equal(t, int64(12011), count())
}

// TestE2EGatewayPrimaryTier writes and reads through the gateway in front
// of the standalone Milvus: Milvus 2.3 serves gRPC and HTTP on one port and
// routes a connection by its content type, so the gateway must speak
// exactly as an SDK does.
func TestE2EGatewayPrimaryTier(t *testing.T) {
	ztest.Integration(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	tier := ztest.PrimaryTier(t)
	pair := ztest.NewPair(t, tier)
	gw := freeAddr(t)
	p := start(t, "-gateway-cluster", "prim", "-gateway-addr", gw)
	_, err := zdmpb.NewClusterServiceClient(dial(t, p.addrs.GRPC)).RegisterCluster(ctx, &zdmpb.RegisterClusterRequest{
		ClusterId: "prim", Connection: &zdmpb.ClusterConnection{Endpoint: tier.Source}})
	require.NoError(t, err)

	c, err := client.NewClient(ctx, client.Config{Address: gw, DBName: pair.Source.Database})
	require.NoError(t, err)
	defer c.Close()
	schema := entity.NewSchema().WithName("items").
		WithField(entity.NewField().WithName("id").WithDataType(entity.FieldTypeInt64).WithIsPrimaryKey(true)).
		WithField(entity.NewField().WithName("title").WithDataType(entity.FieldTypeVarChar).WithMaxLength(64)).
		WithField(entity.NewField().WithName("vec").WithDataType(entity.FieldTypeFloatVector).WithDim(16))
	require.NoError(t, c.CreateCollection(ctx, schema, 1))
	insertItems(t, ctx, c, "", 1, 500)
	idx, err := entity.NewIndexFlat(entity.L2)
	require.NoError(t, err)
	require.NoError(t, c.CreateIndex(ctx, "items", "vec", idx, false))
	require.NoError(t, c.LoadCollection(ctx, "items", false))
	res, err := c.Query(ctx, "items", nil, "", []string{"count(*)"}, client.WithSearchQueryConsistencyLevel(entity.ClStrong))
	require.NoError(t, err)
	require.Equal(t, int64(500), res.GetColumn("count(*)").(*entity.ColumnInt64).Data()[0])

	// The rows are on the source itself.
	direct, err := pair.Source.Client.Query(ctx, "items", nil, "id in [1, 500]", []string{"id"}, client.WithSearchQueryConsistencyLevel(entity.ClStrong))
	require.NoError(t, err)
	require.Equal(t, 2, direct.GetColumn("id").Len())
}
