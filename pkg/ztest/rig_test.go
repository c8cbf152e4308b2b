package ztest_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/milvus-io/milvus-sdk-go/v2/client"
	"github.com/milvus-io/milvus-sdk-go/v2/entity"
	"github.com/stretchr/testify/require"

	"github.com/zdm-io/zdm/pkg/milvusx"
	"github.com/zdm-io/zdm/pkg/ztest"
)

// TestIntegrationRigTiers proves every tier of the rig serves the calls zdm
// is built on: create a collection with a vector field, insert, flush,
// index, load and query back, on the source and the target.
func TestIntegrationRigTiers(t *testing.T) {
	ztest.Integration(t)
	for _, tier := range ztest.Tiers(t) {
		t.Run(tier.Name, func(t *testing.T) {
			p := ztest.NewPair(t, tier)
			for _, side := range []ztest.Side{p.Source, p.Target} {
				roundTrip(t, side.Client, p.Name("items"))
			}
		})
	}
}

func roundTrip(t *testing.T, c client.Client, name string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	const dim, rows = 8, 100
	schema := entity.NewSchema().WithName(name).
		WithField(entity.NewField().WithName("id").WithDataType(entity.FieldTypeInt64).WithIsPrimaryKey(true)).
		WithField(entity.NewField().WithName("label").WithDataType(entity.FieldTypeVarChar).WithMaxLength(32)).
		WithField(entity.NewField().WithName("vec").WithDataType(entity.FieldTypeFloatVector).WithDim(dim))
	require.NoError(t, c.CreateCollection(ctx, schema, 1))

	ids := make([]int64, rows)
	labels := make([]string, rows)
	vecs := make([][]float32, rows)
	for i := range rows {
		ids[i] = int64(i + 1)
		labels[i] = fmt.Sprintf("row-%d", i+1)
		vecs[i] = make([]float32, dim)
		for j := range dim {
			vecs[i][j] = float32(i*dim + j)
		}
	}
	pks, err := c.Insert(ctx, name, "",
		entity.NewColumnInt64("id", ids), entity.NewColumnVarChar("label", labels), entity.NewColumnFloatVector("vec", dim, vecs))
	require.NoError(t, err)
	require.Equal(t, rows, pks.Len())
	require.NoError(t, c.Flush(ctx, name, false))

	idx, err := entity.NewIndexFlat(entity.L2)
	require.NoError(t, err)
	require.NoError(t, c.CreateIndex(ctx, name, "vec", idx, false))
	require.NoError(t, c.LoadCollection(ctx, name, false))

	res, err := c.Query(ctx, name, nil, "id in [7, 42]", []string{"id", "label", "vec"},
		client.WithSearchQueryConsistencyLevel(entity.ClStrong))
	require.NoError(t, err)
	got := map[int64]string{}
	idCol, labelCol := res.GetColumn("id").(*entity.ColumnInt64), res.GetColumn("label").(*entity.ColumnVarChar)
	require.NotNil(t, idCol)
	require.NotNil(t, labelCol)
	for i := range idCol.Len() {
		got[idCol.Data()[i]] = labelCol.Data()[i]
	}
	require.Equal(t, map[int64]string{7: "row-7", 42: "row-42"}, got)
	vecCol := res.GetColumn("vec").(*entity.ColumnFloatVector)
	require.Len(t, vecCol.Data(), 2)
	for i, v := range vecCol.Data() {
		row := idCol.Data()[i] - 1
		require.Equal(t, float32(row*dim), v[0], "first component of row %d", row+1)
	}
}

// TestIntegrationPairCleanup proves a pair leaves nothing behind on any
// tier, including those without databases where cleanup goes by prefix.
func TestIntegrationPairCleanup(t *testing.T) {
	ztest.Integration(t)
	for _, tier := range ztest.Tiers(t) {
		t.Run(tier.Name, func(t *testing.T) {
			var p ztest.Pair
			t.Run("use", func(t *testing.T) {
				p = ztest.NewPair(t, tier)
				ctx := context.Background()
				schema := entity.NewSchema().WithName(p.Name("leftover")).
					WithField(entity.NewField().WithName("id").WithDataType(entity.FieldTypeInt64).WithIsPrimaryKey(true)).
					WithField(entity.NewField().WithName("vec").WithDataType(entity.FieldTypeFloatVector).WithDim(2))
				require.NoError(t, p.Source.Client.CreateCollection(ctx, schema, 1))
			})
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			c, err := client.NewClient(ctx, client.Config{Address: tier.Source})
			require.NoError(t, err)
			defer c.Close()
			if p.Source.Database == "default" {
				names, err := milvusx.CollectionNames(ctx, c)
				require.NoError(t, err)
				require.NotContains(t, names, p.Name("leftover"))
				return
			}
			dbs, err := c.ListDatabases(ctx)
			require.NoError(t, err)
			for _, db := range dbs {
				require.NotEqual(t, p.Source.Database, db.Name, "database left behind")
			}
		})
	}
}
