package milvusx_test

import (
	"testing"

	"github.com/milvus-io/milvus-proto/go-api/v2/schemapb"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"

	"github.com/zdm-io/zdm/pkg/milvusx"
)

func longs(name string, v ...int64) *schemapb.FieldData {
	return &schemapb.FieldData{FieldName: name, Type: schemapb.DataType_Int64,
		Field: &schemapb.FieldData_Scalars{Scalars: &schemapb.ScalarField{Data: &schemapb.ScalarField_LongData{LongData: &schemapb.LongArray{Data: v}}}}}
}

func strs(name string, v ...string) *schemapb.FieldData {
	return &schemapb.FieldData{FieldName: name, Type: schemapb.DataType_VarChar,
		Field: &schemapb.FieldData_Scalars{Scalars: &schemapb.ScalarField{Data: &schemapb.ScalarField_StringData{StringData: &schemapb.StringArray{Data: v}}}}}
}

func floats(name string, dim int64, v ...float32) *schemapb.FieldData {
	return &schemapb.FieldData{FieldName: name, Type: schemapb.DataType_FloatVector,
		Field: &schemapb.FieldData_Vectors{Vectors: &schemapb.VectorField{Dim: dim, Data: &schemapb.VectorField_FloatVector{FloatVector: &schemapb.FloatArray{Data: v}}}}}
}

func binary(name string, dim int64, v ...byte) *schemapb.FieldData {
	return &schemapb.FieldData{FieldName: name, Type: schemapb.DataType_BinaryVector,
		Field: &schemapb.FieldData_Vectors{Vectors: &schemapb.VectorField{Dim: dim, Data: &schemapb.VectorField_BinaryVector{BinaryVector: v}}}}
}

// TestRowsGathersChosenRows picks rows out of two inserts of one layout,
// vectors included, into one column set.
func TestRowsGathersChosenRows(t *testing.T) {
	a := []*schemapb.FieldData{longs("id", 1, 2, 3), strs("title", "a", "b", "c"), floats("vec", 2, 1, 1, 2, 2, 3, 3), binary("bin", 16, 1, 1, 2, 2, 3, 3)}
	b := []*schemapb.FieldData{longs("id", 9), strs("title", "z"), floats("vec", 2, 9, 9), binary("bin", 16, 9, 9)}
	var r milvusx.Rows
	require.NoError(t, r.Add(a, 2, 3))
	require.NoError(t, r.Add(b, 0, 1))
	require.NoError(t, r.Add(a, 0, 3))
	want := []*schemapb.FieldData{longs("id", 3, 9, 1), strs("title", "c", "z", "a"), floats("vec", 2, 3, 3, 9, 9, 1, 1), binary("bin", 16, 3, 3, 9, 9, 1, 1)}
	require.Equal(t, 3, r.Len())
	for i := range want {
		require.True(t, proto.Equal(want[i], r.Fields()[i]), "%v\n%v", want[i], r.Fields()[i])
	}
	require.False(t, r.SameLayout(a[:2]), "fewer columns")
	require.False(t, r.SameLayout([]*schemapb.FieldData{longs("id", 1), longs("title", 1), a[2], a[3]}), "another type")
	require.Error(t, r.Add(a[:3], 0, 3))
}

// TestRowsNullable keeps the validity of each row, whether the column
// holds a value for every row or only for valid ones.
func TestRowsNullable(t *testing.T) {
	full := longs("n", 10, 0, 30)
	full.ValidData = []bool{true, false, true}
	compact := longs("n", 10, 30)
	compact.ValidData = []bool{true, false, true}
	for _, col := range []*schemapb.FieldData{full, compact} {
		var r milvusx.Rows
		for _, i := range []int{2, 1} {
			require.NoError(t, r.Add([]*schemapb.FieldData{col}, i, 3))
		}
		got := r.Fields()[0]
		require.Equal(t, []bool{true, false}, got.GetValidData())
		require.Equal(t, int64(30), got.GetScalars().GetLongData().GetData()[0])
	}
}
