package verify_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/zdm-io/zdm/pkg/milvusx"
	"github.com/zdm-io/zdm/pkg/verify"
	"github.com/zdm-io/zdm/pkg/ztest"
	zdmpb "github.com/zdm-io/zdm/proto/zdm/v1"
)

// TestIntegrationVerifyReadsEveryKeyAndRepairsSafely is the stop-sync
// repair that deleted good rows, on the primary tier: a source of 20,000
// keys, 12 of them held twice (count(*) 20,012), and a target that lacks
// every key from 12,664 up and holds one key the source lacks.
// Verification must read both sides whole, name every missing key, report
// the keys held twice as a finding and not a difference; the repair must
// write exactly the missing rows and delete exactly the extra key; a
// repair that would delete more than its share of a range deletes
// nothing.
func TestIntegrationVerifyReadsEveryKeyAndRepairsSafely(t *testing.T) {
	ztest.Integration(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	p := ztest.NewPair(t, ztest.PrimaryTier(t))
	name := p.Name("lh")
	const cut = 12664
	twice := []int64{3, 4095, 4096, 8190, 8191, 9000, 12000, 12663, 12664, 15000, 19998, 19999}
	ztest.KeyedCollection(t, ctx, p.Source.Client, name)
	ztest.InsertKeys(t, ctx, p.Source.Client, name, ztest.Keys(0, 20000), 0)
	require.NoError(t, p.Source.Client.Flush(ctx, name, false))
	ztest.InsertKeys(t, ctx, p.Source.Client, name, twice, 1)
	ztest.KeyedCollection(t, ctx, p.Target.Client, name)
	ztest.InsertKeys(t, ctx, p.Target.Client, name, ztest.Keys(0, cut), 0)
	ztest.InsertKeys(t, ctx, p.Target.Client, name, []int64{30000}, 0)

	src, err := milvusx.Open(ctx, &zdmpb.ClusterConnection{Endpoint: p.Source.Addr}, "")
	require.NoError(t, err)
	defer src.Close()
	tgt, err := milvusx.Open(ctx, &zdmpb.ClusterConnection{Endpoint: p.Target.Addr}, "")
	require.NoError(t, err)
	defer tgt.Close()
	table, err := milvusx.DescribeTable(ctx, src.Raw, p.Source.Database, name)
	require.NoError(t, err)

	r, err := verify.Collection(ctx, src.Raw, tgt.Raw, table, 0)
	require.NoError(t, err)
	t.Log(r.String())
	require.False(t, r.Match())
	require.Equal(t, int64(20000+len(twice)), r.SourceCount)
	require.Equal(t, int64(20000), r.SourceDistinct, "every source key, above any page or result window")
	require.Equal(t, int64(cut+1), r.TargetDistinct)
	require.Equal(t, int64(len(twice)), r.SourceDuplicateKeys)
	require.Equal(t, int64(len(twice)), r.SourceExtraRows, "one extra row per key held twice")
	require.Equal(t, []string{"3", "4095", "4096", "8190", "8191", "9000", "12000", "12663", "12664", "15000"}, r.SourceDuplicates)
	var differ []int64
	for _, m := range r.Mismatches {
		for _, k := range m.Keys {
			differ = append(differ, k.Int)
		}
	}
	require.Equal(t, append(ztest.Keys(cut, 20000), 30000), differ, "every missing key and the extra one, and no key held twice that the target has")

	var upserted, deleted int64
	for _, m := range r.Mismatches {
		done, err := verify.Repair(ctx, src.Raw, tgt.Raw, table, m, verify.DefaultMaxDeleteShare)
		require.NoError(t, err)
		t.Logf("repaired [%s, %s): %d written (%v), %d deleted (%v)", m.Start, m.End, done.Upserted, done.UpsertedSample, done.Deleted, done.DeletedSample)
		upserted, deleted = upserted+done.Upserted, deleted+done.Deleted
	}
	require.Equal(t, int64(20000-cut), upserted, "only the missing rows are written")
	require.Equal(t, int64(1), deleted, "only the key the source lacks is deleted")

	r, err = verify.Collection(ctx, src.Raw, tgt.Raw, table, 0)
	require.NoError(t, err)
	require.True(t, r.Match(), r.String())
	require.Equal(t, int64(20000), r.TargetCount)
	require.Equal(t, int64(len(twice)), r.SourceDuplicateKeys, "keys held twice stay a finding")

	// 200 keys the source lacks, in a range of about 7,500: more than 1 %.
	extra := ztest.Keys(40000, 40200)
	ztest.InsertKeys(t, ctx, p.Target.Client, name, extra, 0)
	r, err = verify.Collection(ctx, src.Raw, tgt.Raw, table, 0)
	require.NoError(t, err)
	require.Len(t, r.Mismatches, 1)
	_, err = verify.Repair(ctx, src.Raw, tgt.Raw, table, r.Mismatches[0], verify.DefaultMaxDeleteShare)
	require.ErrorIs(t, err, verify.ErrTooManyDeletes)
	require.ErrorContains(t, err, "the source lacks 200 of the target's")
	require.ErrorContains(t, err, "nothing was deleted")
	tt := table
	tt.Database = p.Target.Database
	held, err := milvusx.CountRows(ctx, tgt.Raw, tt, "id >= 40000")
	require.NoError(t, err)
	require.Equal(t, int64(len(extra)), held, "a refused repair deletes nothing")
	// A larger share lets it through.
	done, err := verify.Repair(ctx, src.Raw, tgt.Raw, table, r.Mismatches[0], 0.05)
	require.NoError(t, err)
	require.Equal(t, int64(len(extra)), done.Deleted)
	require.Equal(t, []string{"40000", "40001", "40002", "40003", "40004", "40005", "40006", "40007", "40008", "40009"}, done.DeletedSample)
}
