package verify

import (
	"testing"

	"github.com/milvus-io/milvus-proto/go-api/v2/schemapb"
	"github.com/stretchr/testify/require"
)

func longs(name string, v ...int64) *schemapb.FieldData {
	return &schemapb.FieldData{FieldName: name, Field: &schemapb.FieldData_Scalars{Scalars: &schemapb.ScalarField{
		Data: &schemapb.ScalarField_LongData{LongData: &schemapb.LongArray{Data: v}}}}}
}

func floats(name string, dim int64, v ...float32) *schemapb.FieldData {
	return &schemapb.FieldData{FieldName: name, Field: &schemapb.FieldData_Vectors{Vectors: &schemapb.VectorField{Dim: dim,
		Data: &schemapb.VectorField_FloatVector{FloatVector: &schemapb.FloatArray{Data: v}}}}}
}

func TestRowDigest(t *testing.T) {
	a := []*schemapb.FieldData{longs("id", 1, 2), floats("vec", 2, 0.1, 0.2, 0.3, 0.4)}
	swapped := []*schemapb.FieldData{a[1], a[0]}
	d0, err := RowDigest(a, 0)
	require.NoError(t, err)
	d1, err := RowDigest(a, 1)
	require.NoError(t, err)
	require.NotEqual(t, d0, d1)
	s0, err := RowDigest(swapped, 0)
	require.NoError(t, err)
	require.Equal(t, d0, s0, "field order does not matter")

	changed := []*schemapb.FieldData{longs("id", 1, 2), floats("vec", 2, 0.1, 0.25, 0.3, 0.4)}
	c0, err := RowDigest(changed, 0)
	require.NoError(t, err)
	require.NotEqual(t, d0, c0, "a changed vector component changes the digest")
	renamed := []*schemapb.FieldData{longs("key", 1, 2), a[1]}
	r0, err := RowDigest(renamed, 0)
	require.NoError(t, err)
	require.NotEqual(t, d0, r0, "field names are part of the row")

	_, err = RowDigest(a, 2)
	require.ErrorContains(t, err, "row 2 out of range")
}
