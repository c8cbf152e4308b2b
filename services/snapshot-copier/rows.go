package copier

import (
	"context"
	"fmt"

	"github.com/milvus-io/milvus-proto/go-api/v2/milvuspb"
	"github.com/milvus-io/milvus-proto/go-api/v2/schemapb"
	"google.golang.org/protobuf/proto"

	"github.com/zdm-io/zdm/pkg/milvusx"
)

// Page sizes. Milvus caps a query's limit at 16384 rows; inserts are
// capped at 64 MB, so pages are sized to stay well under it.
const (
	firstPageRows     = 256
	DefaultBatchBytes = 16 << 20
)

// CopyStats are the rows and bytes a copy wrote.
type CopyStats struct {
	Rows, Bytes int64
}

// Checkpoint is called after each batch is written to the target, with the
// last key written; a unit resumed from that key neither loses nor repeats
// a row. An error from it stops the copy.
type Checkpoint func(last milvusx.Key, stats CopyStats) error

// CopyRange copies the rows of r from src to tgt in pages by primary key:
// each page asks for the next keys above the last one copied, never an
// offset. When resume is set, copying starts after it, and the first page
// is written with upsert: rows past the checkpoint may have reached the
// target before a crash, and upsert replaces them instead of duplicating
// them. Every other page uses insert, which is cheaper and cannot
// duplicate: its keys are above everything written before.
func CopyRange(ctx context.Context, src, tgt milvuspb.MilvusServiceClient, t milvusx.Table, r milvusx.Range, resume *milvusx.Key, batchBytes int, cp Checkpoint) (CopyStats, error) {
	if batchBytes <= 0 {
		batchBytes = DefaultBatchBytes
	}
	var stats CopyStats
	after := resume
	upsertNext := resume != nil
	limit := firstPageRows
	for {
		page, err := milvusx.QueryPage(ctx, src, t, r, after, limit)
		if err != nil {
			return stats, err
		}
		if len(page.Keys) == 0 {
			return stats, nil
		}
		size := 0
		for _, f := range page.Fields {
			size += proto.Size(f)
		}
		if err := write(ctx, tgt, t, page.Fields, len(page.Keys), upsertNext); err != nil {
			return stats, err
		}
		upsertNext = false
		stats.Rows += int64(len(page.Keys))
		stats.Bytes += int64(size)
		last := page.Last
		after = &last
		if cp != nil {
			if err := cp(last, stats); err != nil {
				return stats, err
			}
		}
		if !page.More {
			return stats, nil
		}
		// Size the next page from this one's bytes per row.
		perRow := max(size/len(page.Keys), 1)
		limit = min(max(batchBytes/perRow, 1), milvusx.MaxQueryRows)
	}
}

func write(ctx context.Context, tgt milvuspb.MilvusServiceClient, t milvusx.Table, fields []*schemapb.FieldData, rows int, upsert bool) error {
	var (
		resp *milvuspb.MutationResult
		err  error
	)
	if upsert {
		resp, err = tgt.Upsert(ctx, &milvuspb.UpsertRequest{DbName: t.Database, CollectionName: t.Collection,
			PartitionName: t.Partition, FieldsData: fields, NumRows: uint32(rows)})
	} else {
		resp, err = tgt.Insert(ctx, &milvuspb.InsertRequest{DbName: t.Database, CollectionName: t.Collection,
			PartitionName: t.Partition, FieldsData: fields, NumRows: uint32(rows)})
	}
	if err := milvusx.Check(resp, err); err != nil {
		op := "insert"
		if upsert {
			op = "upsert"
		}
		return fmt.Errorf("%s into %s.%s: %w", op, t.Database, t.Collection, err)
	}
	return nil
}
