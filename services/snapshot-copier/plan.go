package copier

import (
	"context"
	"fmt"
	"math"

	"github.com/milvus-io/milvus-proto/go-api/v2/milvuspb"

	"github.com/zdm-io/zdm/pkg/milvusx"
)

// DefaultUnitRows is the size of a work unit when none is given.
const DefaultUnitRows = 100_000

// Unit is a key range of one table with the rows it held when planned.
type Unit struct {
	Range milvusx.Range
	Rows  int64
}

// PlanUnits splits a table into key ranges of about unitRows rows each by
// reading its primary keys only, in key order. The first range is open
// below and the last open above, so rows written after planning still
// fall in some unit. An empty table is one open unit.
func PlanUnits(ctx context.Context, src milvuspb.MilvusServiceClient, t milvusx.Table, unitRows int64) ([]Unit, error) {
	if unitRows <= 0 {
		unitRows = DefaultUnitRows
	}
	if minKey, err := milvusx.HasMinInt64Key(ctx, src, t); err != nil {
		return nil, err
	} else if minKey {
		return nil, fmt.Errorf("%s.%s holds the primary key %d, which Milvus filters cannot express; delete or re-key that row before migrating",
			t.Database, t.Collection, int64(math.MinInt64))
	}
	var (
		units []Unit
		start *milvusx.Key
		after *milvusx.Key
		rows  int64
	)
	for {
		page, err := milvusx.QueryKeys(ctx, src, t, milvusx.Range{}, after, milvusx.MaxQueryRows-1)
		if err != nil {
			return nil, err
		}
		for _, k := range page.Keys {
			if rows == unitRows {
				end := k
				units = append(units, Unit{Range: milvusx.Range{Start: start, End: &end}, Rows: rows})
				start, rows = &end, 0
			}
			rows++
		}
		if !page.More {
			return append(units, Unit{Range: milvusx.Range{Start: start}, Rows: rows}), nil
		}
		last := page.Last
		after = &last
	}
}
