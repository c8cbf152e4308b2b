package verify

import (
	"context"
	"fmt"

	"github.com/milvus-io/milvus-proto/go-api/v2/milvuspb"

	"github.com/zdm-io/zdm/pkg/milvusx"
)

// Repair makes the target's rows in a mismatched range equal to the
// source's: every source row of the range is upserted onto the target and
// every target key the source lacks there is deleted. It is for a quiet
// source (writes stopped), where a second comparison then proves the
// range equal. It returns the rows written and deleted.
func Repair(ctx context.Context, src, tgt milvuspb.MilvusServiceClient, t milvusx.Table, m Mismatch) (int64, error) {
	t.Partition = m.Partition
	st, tt := t, t
	st.ReadTs, tt.ReadTs = 0, 0 // Strong: see everything written so far
	var done int64
	keep := map[milvusx.Key]bool{}
	var after *milvusx.Key
	for {
		page, err := milvusx.QueryPage(ctx, src, st, m.Range, after, pageRows)
		if err != nil {
			return done, fmt.Errorf("source: %w", err)
		}
		if len(page.Keys) > 0 {
			resp, err := tgt.Upsert(ctx, &milvuspb.UpsertRequest{DbName: t.Database, CollectionName: t.Collection,
				PartitionName: t.Partition, FieldsData: page.Fields, NumRows: uint32(len(page.Keys))})
			if err := milvusx.Check(resp, err); err != nil {
				return done, fmt.Errorf("target: upsert into %s.%s: %w", t.Database, t.Collection, err)
			}
			done += int64(len(page.Keys))
			for _, k := range page.Keys {
				keep[k] = true
			}
		}
		if !page.More {
			break
		}
		last := page.Last
		after = &last
	}
	after = nil
	for {
		page, err := milvusx.QueryKeys(ctx, tgt, tt, m.Range, after, pageRows)
		if err != nil {
			return done, fmt.Errorf("target: %w", err)
		}
		var extra []milvusx.Key
		for _, k := range page.Keys {
			if !keep[k] {
				extra = append(extra, k)
			}
		}
		if len(extra) > 0 {
			resp, err := tgt.Delete(ctx, &milvuspb.DeleteRequest{DbName: t.Database, CollectionName: t.Collection,
				PartitionName: t.Partition, Expr: milvusx.InFilter(t.PK.GetName(), extra)})
			if err := milvusx.Check(resp, err); err != nil {
				return done, fmt.Errorf("target: delete from %s.%s: %w", t.Database, t.Collection, err)
			}
			done += int64(len(extra))
		}
		if !page.More {
			return done, nil
		}
		last := page.Last
		after = &last
	}
}
