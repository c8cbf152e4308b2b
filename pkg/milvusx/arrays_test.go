package milvusx

import (
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/milvus-io/milvus-proto/go-api/v2/schemapb"
	"google.golang.org/protobuf/testing/protocmp"
)

func TestTypeEmptyArrays(t *testing.T) {
	long := func(v ...int64) *schemapb.ScalarField {
		return &schemapb.ScalarField{Data: &schemapb.ScalarField_LongData{LongData: &schemapb.LongArray{Data: v}}}
	}
	arrayField := func(name string, elem schemapb.DataType, vs ...*schemapb.ScalarField) *schemapb.FieldData {
		return &schemapb.FieldData{FieldName: name, Type: schemapb.DataType_Array, Field: &schemapb.FieldData_Scalars{
			Scalars: &schemapb.ScalarField{Data: &schemapb.ScalarField_ArrayData{ArrayData: &schemapb.ArrayArray{Data: vs, ElementType: elem}}}}}
	}
	bare := func() *schemapb.ScalarField { return &schemapb.ScalarField{} }
	schema := &schemapb.CollectionSchema{Fields: []*schemapb.FieldSchema{
		{Name: "tags", DataType: schemapb.DataType_Array, ElementType: schemapb.DataType_VarChar},
	}}
	// As Milvus 2.3.5 returns them: [] is an element with no data; one
	// server leaves the array's element type out.
	got := []*schemapb.FieldData{
		arrayField("nums", schemapb.DataType_Int64, long(1, 2), bare(), nil, long()),
		arrayField("tags", schemapb.DataType_None, bare()),
		arrayField("flags", schemapb.DataType_Bool, bare()),
		arrayField("small", schemapb.DataType_Int16, bare()),
		arrayField("ratio", schemapb.DataType_Double, bare()),
	}
	TypeEmptyArrays(got, schema)
	want := []*schemapb.FieldData{
		arrayField("nums", schemapb.DataType_Int64, long(1, 2), long(), long(), long()),
		arrayField("tags", schemapb.DataType_None, &schemapb.ScalarField{Data: &schemapb.ScalarField_StringData{StringData: &schemapb.StringArray{}}}),
		arrayField("flags", schemapb.DataType_Bool, &schemapb.ScalarField{Data: &schemapb.ScalarField_BoolData{BoolData: &schemapb.BoolArray{}}}),
		arrayField("small", schemapb.DataType_Int16, &schemapb.ScalarField{Data: &schemapb.ScalarField_IntData{IntData: &schemapb.IntArray{}}}),
		arrayField("ratio", schemapb.DataType_Double, &schemapb.ScalarField{Data: &schemapb.ScalarField_DoubleData{DoubleData: &schemapb.DoubleArray{}}}),
	}
	if diff := cmp.Diff(want, got, protocmp.Transform()); diff != "" {
		t.Errorf("TypeEmptyArrays (-want, +got):\n%s", diff)
	}
}
