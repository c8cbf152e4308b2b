package copier

import (
	"context"
	"testing"
	"time"

	"github.com/milvus-io/milvus-sdk-go/v2/entity"
	"github.com/stretchr/testify/require"

	"github.com/zdm-io/zdm/pkg/milvusx"
	"github.com/zdm-io/zdm/pkg/verify"
	"github.com/zdm-io/zdm/pkg/ztest"
)

// TestIntegrationPlanUnits splits a collection into units and copies them
// one by one: together they hold every row exactly once.
func TestIntegrationPlanUnits(t *testing.T) {
	ztest.Integration(t)
	for _, tier := range ztest.Tiers(t) {
		t.Run(tier.Name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			srcC, tgtC, scope := sides(t, tier)
			seed(t, ctx, srcC)
			fill(t, ctx, srcC, "", 1, seededRows)
			_, err := PrepareTarget(ctx, srcC, tgtC, PrepareOptions{Databases: scope})
			require.NoError(t, err)
			src, tgt := mustRaw(t, srcC), mustRaw(t, tgtC)
			table, err := milvusx.DescribeTable(ctx, src, dbOf(scope), "items")
			require.NoError(t, err)

			units, err := PlanUnits(ctx, src, table, 700)
			require.NoError(t, err)
			require.Len(t, units, 5)
			require.Nil(t, units[0].Range.Start)
			require.Nil(t, units[4].Range.End)
			var rows int64
			for i, u := range units {
				rows += u.Rows
				if i > 0 {
					require.Equal(t, units[i-1].Range.End, u.Range.Start, "units are contiguous")
				}
				stats, err := CopyRange(ctx, src, tgt, table, u.Range, CopyOptions{})
				require.NoError(t, err)
				require.Equal(t, u.Rows, stats.Rows, "unit %d", i)
			}
			require.Equal(t, int64(seededRows), rows)
			report, err := verify.Collection(ctx, src, tgt, table, 0)
			require.NoError(t, err)
			require.True(t, report.Match(), report.String())

			// An empty table: "events", loaded so the standalone server
			// can query it.
			idx, err := entity.NewIndexFlat(entity.L2)
			require.NoError(t, err)
			require.NoError(t, srcC.CreateIndex(ctx, "events", "emb", idx, true))
			require.NoError(t, srcC.LoadCollection(ctx, "events", true))
			ztest.Eventually(t, 30*time.Second, func() bool {
				st, err := srcC.GetLoadState(ctx, "events", nil)
				return err == nil && st == entity.LoadStateLoaded
			}, "events not loaded on %s", tier.Name)
			empty, err := milvusx.DescribeTable(ctx, src, dbOf(scope), "events")
			require.NoError(t, err)
			units, err = PlanUnits(ctx, src, empty, 700)
			if tier.Name == "lite2" {
				// milvus-lite 2.5 rejects every filter on a partition-key
				// collection, so it cannot be paged by key: a clear
				// failure, never a partial copy.
				require.ErrorContains(t, err, "default.events")
				require.ErrorContains(t, err, "Invalid expr")
				return
			}
			require.NoError(t, err)
			require.Equal(t, []Unit{{}}, units, "an empty table is one open unit")
		})
	}
}

// TestIntegrationPagesAtMilvusQueryCap pages a table larger than Milvus's
// 16384-row query window, with pages as large as the window allows.
func TestIntegrationPagesAtMilvusQueryCap(t *testing.T) {
	ztest.Integration(t)
	tier := ztest.PrimaryTier(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	p := ztest.NewPair(t, tier)
	seed(t, ctx, p.Source.Client)
	const n = 20000
	for from := 1; from <= n; from += 5000 {
		fill(t, ctx, p.Source.Client, "", from, 5000)
	}
	src := mustRaw(t, p.Source.Client)
	table, err := milvusx.DescribeTable(ctx, src, p.Source.Database, "items")
	require.NoError(t, err)
	units, err := PlanUnits(ctx, src, table, 5000)
	require.NoError(t, err)
	require.Len(t, units, 4)
	page, err := milvusx.QueryPage(ctx, src, table, milvusx.Range{}, nil, milvusx.MaxQueryRows)
	require.NoError(t, err)
	require.Len(t, page.Keys, milvusx.MaxQueryRows-1)
	require.True(t, page.More)
}
