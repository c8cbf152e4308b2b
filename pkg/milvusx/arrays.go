package milvusx

import "github.com/milvus-io/milvus-proto/go-api/v2/schemapb"

// TypeEmptyArrays gives every empty value of an Array field the typed
// empty list of its element type, in place. Milvus 2.3 returns an empty
// Array value (`[]`) from a query as an element with no data at all, and
// its own insert path dereferences that element's data without a check:
// inserting the value as read panics the receiving proxy and takes the
// whole server down. With a typed empty list the same insert is accepted
// and stores `[]`. Elements of a nullable field's null rows get the same
// treatment; their validity is carried separately and is not touched.
// The element type comes from the value itself or, where the server left
// it out, from schema (which may be nil).
func TypeEmptyArrays(fields []*schemapb.FieldData, schema *schemapb.CollectionSchema) {
	for _, f := range fields {
		arr := f.GetScalars().GetArrayData()
		if arr == nil {
			continue
		}
		elem := arr.GetElementType()
		for _, fs := range schema.GetFields() {
			if elem == schemapb.DataType_None && fs.GetName() == f.GetFieldName() {
				elem = fs.GetElementType()
			}
		}
		for i, v := range arr.GetData() {
			if v.GetData() != nil {
				continue
			}
			if v == nil {
				v = &schemapb.ScalarField{}
				arr.Data[i] = v
			}
			setEmpty(v, elem)
		}
	}
}

// setEmpty makes v the typed empty list of an Array's element type; a
// type an Array cannot hold leaves it as it is.
func setEmpty(v *schemapb.ScalarField, elem schemapb.DataType) {
	switch elem {
	case schemapb.DataType_Bool:
		v.Data = &schemapb.ScalarField_BoolData{BoolData: &schemapb.BoolArray{}}
	case schemapb.DataType_Int8, schemapb.DataType_Int16, schemapb.DataType_Int32:
		v.Data = &schemapb.ScalarField_IntData{IntData: &schemapb.IntArray{}}
	case schemapb.DataType_Int64:
		v.Data = &schemapb.ScalarField_LongData{LongData: &schemapb.LongArray{}}
	case schemapb.DataType_Float:
		v.Data = &schemapb.ScalarField_FloatData{FloatData: &schemapb.FloatArray{}}
	case schemapb.DataType_Double:
		v.Data = &schemapb.ScalarField_DoubleData{DoubleData: &schemapb.DoubleArray{}}
	case schemapb.DataType_VarChar, schemapb.DataType_String:
		v.Data = &schemapb.ScalarField_StringData{StringData: &schemapb.StringArray{}}
	}
}
