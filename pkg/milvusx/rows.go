package milvusx

import (
	"fmt"

	"github.com/milvus-io/milvus-proto/go-api/v2/schemapb"
)

// Rows gathers chosen rows of several column sets of one layout (the
// same fields, in the same order, as the FieldsData of inserts to one
// collection) into one column set, for a single write.
type Rows struct {
	cols []*schemapb.FieldData
	n    int
}

// Len is how many rows were added.
func (r *Rows) Len() int { return r.n }

// Fields are the gathered columns.
func (r *Rows) Fields() []*schemapb.FieldData { return r.cols }

// SameLayout reports whether src has the layout of the rows gathered so
// far (always true before the first Add).
func (r *Rows) SameLayout(src []*schemapb.FieldData) bool {
	return r.cols == nil || SameLayout(r.cols, src)
}

// SameLayout reports whether two column sets have the same fields, in the
// same order, of the same types (and nullability), so their rows can be
// written together.
func SameLayout(a, b []*schemapb.FieldData) bool {
	if len(a) != len(b) {
		return false
	}
	for i, f := range b {
		c := a[i]
		if f.GetFieldName() != c.GetFieldName() || f.GetType() != c.GetType() || f.GetIsDynamic() != c.GetIsDynamic() ||
			(len(f.GetValidData()) > 0) != (len(c.GetValidData()) > 0) {
			return false
		}
	}
	return true
}

// Add appends row i of src (n rows in all). src must have the same
// layout (see SameLayout).
func (r *Rows) Add(src []*schemapb.FieldData, i, n int) error {
	if !r.SameLayout(src) {
		return fmt.Errorf("rows of another layout")
	}
	if r.cols == nil {
		r.cols = make([]*schemapb.FieldData, len(src))
		for j, f := range src {
			r.cols[j] = emptyLike(f)
		}
	}
	for j, f := range src {
		if err := appendRow(r.cols[j], f, i, n); err != nil {
			return fmt.Errorf("field %s: %w", f.GetFieldName(), err)
		}
	}
	r.n++
	return nil
}

func emptyLike(f *schemapb.FieldData) *schemapb.FieldData {
	out := &schemapb.FieldData{Type: f.GetType(), FieldName: f.GetFieldName(), FieldId: f.GetFieldId(), IsDynamic: f.GetIsDynamic()}
	switch {
	case f.GetScalars() != nil:
		out.Field = &schemapb.FieldData_Scalars{Scalars: &schemapb.ScalarField{}}
	case f.GetVectors() != nil:
		out.Field = &schemapb.FieldData_Vectors{Vectors: &schemapb.VectorField{Dim: f.GetVectors().GetDim()}}
	}
	return out
}

// appendRow appends row i of src (n rows) to dst. Values of a nullable
// column are either one per row or, compacted, one per valid row.
func appendRow(dst, src *schemapb.FieldData, i, n int) error {
	k := i
	if valid := src.GetValidData(); len(valid) > 0 {
		dst.ValidData = append(dst.ValidData, valid[i])
		if values(src) < n { // compacted: only valid rows have a value
			if !valid[i] {
				return nil
			}
			k = 0
			for _, v := range valid[:i] {
				if v {
					k++
				}
			}
		}
	}
	if s := src.GetScalars(); s != nil {
		d := dst.GetScalars()
		switch {
		case s.GetBoolData() != nil:
			a := d.GetBoolData()
			if a == nil {
				a = &schemapb.BoolArray{}
				d.Data = &schemapb.ScalarField_BoolData{BoolData: a}
			}
			a.Data = append(a.Data, s.GetBoolData().GetData()[k])
		case s.GetIntData() != nil:
			a := d.GetIntData()
			if a == nil {
				a = &schemapb.IntArray{}
				d.Data = &schemapb.ScalarField_IntData{IntData: a}
			}
			a.Data = append(a.Data, s.GetIntData().GetData()[k])
		case s.GetLongData() != nil:
			a := d.GetLongData()
			if a == nil {
				a = &schemapb.LongArray{}
				d.Data = &schemapb.ScalarField_LongData{LongData: a}
			}
			a.Data = append(a.Data, s.GetLongData().GetData()[k])
		case s.GetFloatData() != nil:
			a := d.GetFloatData()
			if a == nil {
				a = &schemapb.FloatArray{}
				d.Data = &schemapb.ScalarField_FloatData{FloatData: a}
			}
			a.Data = append(a.Data, s.GetFloatData().GetData()[k])
		case s.GetDoubleData() != nil:
			a := d.GetDoubleData()
			if a == nil {
				a = &schemapb.DoubleArray{}
				d.Data = &schemapb.ScalarField_DoubleData{DoubleData: a}
			}
			a.Data = append(a.Data, s.GetDoubleData().GetData()[k])
		case s.GetStringData() != nil:
			a := d.GetStringData()
			if a == nil {
				a = &schemapb.StringArray{}
				d.Data = &schemapb.ScalarField_StringData{StringData: a}
			}
			a.Data = append(a.Data, s.GetStringData().GetData()[k])
		case s.GetJsonData() != nil:
			a := d.GetJsonData()
			if a == nil {
				a = &schemapb.JSONArray{}
				d.Data = &schemapb.ScalarField_JsonData{JsonData: a}
			}
			a.Data = append(a.Data, s.GetJsonData().GetData()[k])
		case s.GetArrayData() != nil:
			a := d.GetArrayData()
			if a == nil {
				a = &schemapb.ArrayArray{ElementType: s.GetArrayData().GetElementType()}
				d.Data = &schemapb.ScalarField_ArrayData{ArrayData: a}
			}
			a.Data = append(a.Data, s.GetArrayData().GetData()[k])
		case s.GetBytesData() != nil:
			a := d.GetBytesData()
			if a == nil {
				a = &schemapb.BytesArray{}
				d.Data = &schemapb.ScalarField_BytesData{BytesData: a}
			}
			a.Data = append(a.Data, s.GetBytesData().GetData()[k])
		default:
			return fmt.Errorf("scalar type %s is not supported", src.GetType())
		}
		return nil
	}
	v, d := src.GetVectors(), dst.GetVectors()
	if v == nil {
		return fmt.Errorf("type %s is not supported", src.GetType())
	}
	dim := int(v.GetDim())
	switch {
	case v.GetFloatVector() != nil:
		a := d.GetFloatVector()
		if a == nil {
			a = &schemapb.FloatArray{}
			d.Data = &schemapb.VectorField_FloatVector{FloatVector: a}
		}
		a.Data = append(a.Data, v.GetFloatVector().GetData()[k*dim:(k+1)*dim]...)
	case v.GetBinaryVector() != nil:
		d.Data = &schemapb.VectorField_BinaryVector{BinaryVector: append(d.GetBinaryVector(), v.GetBinaryVector()[k*dim/8:(k+1)*dim/8]...)}
	case v.GetFloat16Vector() != nil:
		d.Data = &schemapb.VectorField_Float16Vector{Float16Vector: append(d.GetFloat16Vector(), v.GetFloat16Vector()[k*dim*2:(k+1)*dim*2]...)}
	case v.GetBfloat16Vector() != nil:
		d.Data = &schemapb.VectorField_Bfloat16Vector{Bfloat16Vector: append(d.GetBfloat16Vector(), v.GetBfloat16Vector()[k*dim*2:(k+1)*dim*2]...)}
	case v.GetSparseFloatVector() != nil:
		a := d.GetSparseFloatVector()
		if a == nil {
			a = &schemapb.SparseFloatArray{}
			d.Data = &schemapb.VectorField_SparseFloatVector{SparseFloatVector: a}
		}
		a.Contents = append(a.Contents, v.GetSparseFloatVector().GetContents()[k])
		a.Dim = max(a.Dim, v.GetSparseFloatVector().GetDim())
		d.Dim = max(d.Dim, a.Dim)
	default:
		return fmt.Errorf("vector type %s is not supported", src.GetType())
	}
	return nil
}

// values is how many values a column holds.
func values(f *schemapb.FieldData) int {
	if s := f.GetScalars(); s != nil {
		switch {
		case s.GetBoolData() != nil:
			return len(s.GetBoolData().GetData())
		case s.GetIntData() != nil:
			return len(s.GetIntData().GetData())
		case s.GetLongData() != nil:
			return len(s.GetLongData().GetData())
		case s.GetFloatData() != nil:
			return len(s.GetFloatData().GetData())
		case s.GetDoubleData() != nil:
			return len(s.GetDoubleData().GetData())
		case s.GetStringData() != nil:
			return len(s.GetStringData().GetData())
		case s.GetJsonData() != nil:
			return len(s.GetJsonData().GetData())
		case s.GetArrayData() != nil:
			return len(s.GetArrayData().GetData())
		case s.GetBytesData() != nil:
			return len(s.GetBytesData().GetData())
		}
	}
	return 0
}
