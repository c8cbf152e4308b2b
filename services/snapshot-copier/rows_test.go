package copier

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/milvus-io/milvus-proto/go-api/v2/milvuspb"
	"github.com/milvus-io/milvus-sdk-go/v2/client"
	"github.com/milvus-io/milvus-sdk-go/v2/entity"
	"github.com/stretchr/testify/require"

	"github.com/zdm-io/zdm/pkg/milvusx"
	"github.com/zdm-io/zdm/pkg/verify"
	"github.com/zdm-io/zdm/pkg/ztest"
)

const seededRows = 3000

// fill inserts rows 1..n into items, with every field and a dynamic one.
func fill(t *testing.T, ctx context.Context, c client.Client, partition string, from, n int) {
	t.Helper()
	ids, titles, attrs, prices, colors := make([]int64, n), make([]string, n), make([][]byte, n), make([]float64, n), make([]string, n)
	vecs := make([][]float32, n)
	for i := range n {
		id := from + i
		ids[i], titles[i], prices[i], colors[i] = int64(id), fmt.Sprintf("item %d", id), float64(id)/7, []string{"red", "green", "blue"}[id%3]
		attrs[i] = fmt.Appendf(nil, `{"id":%d,"tags":["a","b"],"nested":{"x":%d}}`, id, id%11)
		vecs[i] = make([]float32, 8)
		for j := range 8 {
			vecs[i][j] = float32(id*8+j) / 1000
		}
	}
	_, err := c.Insert(ctx, "items", partition,
		entity.NewColumnInt64("id", ids), entity.NewColumnVarChar("title", titles), entity.NewColumnJSONBytes("attrs", attrs),
		entity.NewColumnDouble("price", prices), entity.NewColumnFloatVector("vec", 8, vecs), entity.NewColumnVarChar("color", colors))
	require.NoError(t, err)
}

var errCrash = errors.New("copier crashed")

// TestIntegrationCopyAndVerify copies a collection by key pages on every
// tier, crashing after a batch reached the target but before its
// checkpoint was saved (the first checkpoint, in one partition), resumes, and proves with verification that the
// target holds every row once, vectors included. Then it changes the
// target and checks verification names the ranges and keys.
func TestIntegrationCopyAndVerify(t *testing.T) {
	ztest.Integration(t)
	for _, tier := range ztest.Tiers(t) {
		t.Run(tier.Name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			srcC, tgtC, scope := sides(t, tier)
			seed(t, ctx, srcC)
			parts, err := milvusx.Partitions(ctx, mustRaw(t, srcC), dbOf(scope), "items")
			require.NoError(t, err)
			split := len(parts) > 1
			if split {
				fill(t, ctx, srcC, "", 1, seededRows-500)
				fill(t, ctx, srcC, "spring", seededRows-499, 500)
			} else {
				fill(t, ctx, srcC, "", 1, seededRows)
			}
			_, err = PrepareTarget(ctx, srcC, tgtC, PrepareOptions{Databases: scope})
			require.NoError(t, err)

			src, tgt := mustRaw(t, srcC), mustRaw(t, tgtC)
			table, err := milvusx.DescribeTable(ctx, src, dbOf(scope), "items")
			require.NoError(t, err)
			targets := []string{""}
			if split {
				targets = parts
			}
			var total CopyStats
			for i, p := range targets {
				pt := table
				pt.Partition = p
				// A crash after the third batch was written but before its
				// checkpoint: the last saved checkpoint is the second's. In
				// every other partition the crash comes before the first
				// checkpoint: nothing was saved, yet a batch is on the target.
				crashAt := []int{3, 1}[i%2]
				var saved *milvusx.Key
				calls := 0
				stats, err := CopyRange(ctx, src, tgt, pt, milvusx.Range{}, CopyOptions{BatchBytes: 8 << 10, Checkpoint: func(last milvusx.Key, _ CopyStats) error {
					calls++
					if calls == crashAt {
						return errCrash
					}
					saved = &last
					return nil
				}})
				if calls < crashAt {
					require.NoError(t, err, "partition %q", p)
				} else {
					require.ErrorIs(t, err, errCrash)
					require.Equal(t, crashAt == 1, saved == nil)
					resumed, err := CopyRange(ctx, src, tgt, pt, milvusx.Range{}, CopyOptions{Resume: saved, BatchBytes: 8 << 10})
					require.NoError(t, err)
					stats.Rows += resumed.Rows
					stats.Bytes += resumed.Bytes
				}
				total.Rows += stats.Rows
				total.Bytes += stats.Bytes
			}
			require.GreaterOrEqual(t, total.Rows, int64(seededRows), "every row copied (those of the crashed batch twice)")

			report, err := verify.Collection(ctx, src, tgt, table, 700)
			require.NoError(t, err)
			require.True(t, report.Match(), report.String())
			require.Equal(t, int64(seededRows), report.TargetCount, "no duplicate from the resumed batch")
			require.Equal(t, int64(seededRows), report.TargetDistinct)

			// Now break the target: one row gone, one changed.
			require.NoError(t, tgtC.Delete(ctx, "items", "", "id in [42]"))
			fillTarget(t, ctx, tgtC, 2500)
			report, err = verify.Collection(ctx, src, tgt, table, 700)
			require.NoError(t, err)
			require.False(t, report.Match())
			require.Equal(t, int64(seededRows-1), report.TargetDistinct)
			require.Len(t, report.Mismatches, 2, report.String())
			require.Equal(t, []string{"42"}, report.Mismatches[0].SampleKeys)
			require.Empty(t, report.Mismatches[0].Start, "first range is open below")
			require.Equal(t, []string{"2500"}, report.Mismatches[1].SampleKeys)
		})
	}
}

// fillTarget overwrites row id on the target with a different title.
func fillTarget(t *testing.T, ctx context.Context, c client.Client, id int64) {
	t.Helper()
	vec := make([]float32, 8)
	for j := range 8 {
		vec[j] = float32(int(id)*8+j) / 1000
	}
	_, err := c.Upsert(ctx, "items", "",
		entity.NewColumnInt64("id", []int64{id}), entity.NewColumnVarChar("title", []string{"tampered"}),
		entity.NewColumnJSONBytes("attrs", [][]byte{[]byte(`{}`)}), entity.NewColumnDouble("price", []float64{1}),
		entity.NewColumnFloatVector("vec", 8, [][]float32{vec}), entity.NewColumnVarChar("color", []string{"red"}))
	require.NoError(t, err)
}

func mustRaw(t *testing.T, c client.Client) milvuspb.MilvusServiceClient {
	t.Helper()
	r, err := milvusx.Raw(c)
	require.NoError(t, err)
	return r
}

func dbOf(scope []string) string {
	if len(scope) > 0 {
		return scope[0]
	}
	return milvusx.DefaultDatabase
}
