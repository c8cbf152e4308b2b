package milvusx

import (
	"math"
	"testing"

	"github.com/milvus-io/milvus-proto/go-api/v2/schemapb"
	"github.com/stretchr/testify/require"
)

func TestRangeExpr(t *testing.T) {
	i64 := &schemapb.FieldSchema{Name: "id", DataType: schemapb.DataType_Int64}
	str := &schemapb.FieldSchema{Name: "k", DataType: schemapb.DataType_VarChar}
	k := func(v int64) *Key { return &Key{Int: v} }
	s := func(v string) *Key { return &Key{Str: v, IsStr: true} }
	for _, tc := range []struct {
		pk    *schemapb.FieldSchema
		r     Range
		after *Key
		upTo  *Key
		want  string
	}{
		{i64, Range{}, nil, nil, "id >= -9223372036854775807"},
		{str, Range{}, nil, nil, `k >= ""`},
		{i64, Range{Start: k(10), End: k(20)}, nil, nil, "id >= 10 && id < 20"},
		{i64, Range{Start: k(10), End: k(20)}, k(15), nil, "id > 15 && id < 20"},
		{i64, Range{Start: k(10), End: k(20)}, k(15), k(17), "id > 15 && id <= 17 && id < 20"},
		{i64, Range{Start: k(math.MinInt64)}, nil, nil, "id >= -9223372036854775807"},
		{i64, Range{}, k(math.MinInt64), nil, "id >= -9223372036854775807"},
		{str, Range{Start: s(`a"b\c`)}, nil, nil, `k >= "a\"b\\c"`},
	} {
		require.Equal(t, tc.want, rangeExpr(tc.pk, tc.r, tc.after, tc.upTo))
	}
}
