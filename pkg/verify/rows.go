// Package verify compares a collection on two Milvus clusters: count(*),
// the distinct primary-key count, and checksums per primary-key range over
// whole rows, vectors included. It is used after a copy and before a
// migration completes.
package verify

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"math"
	"sort"

	"github.com/milvus-io/milvus-proto/go-api/v2/schemapb"
	"google.golang.org/protobuf/proto"
)

// RowDigest returns a SHA-256 digest of row i of a query result: every
// field, by name, in a canonical encoding, so the same row read from two
// servers gives the same digest.
func RowDigest(fields []*schemapb.FieldData, i int) ([32]byte, error) {
	order := make([]int, len(fields))
	for j := range order {
		order[j] = j
	}
	sort.Slice(order, func(a, b int) bool { return fields[order[a]].GetFieldName() < fields[order[b]].GetFieldName() })
	h := sha256.New()
	var buf []byte
	for _, j := range order {
		f := fields[j]
		b, err := value(f, i)
		if err != nil {
			return [32]byte{}, fmt.Errorf("field %s: %w", f.GetFieldName(), err)
		}
		buf = binary.AppendUvarint(buf[:0], uint64(len(f.GetFieldName())))
		buf = append(buf, f.GetFieldName()...)
		buf = binary.AppendUvarint(buf, uint64(len(b)))
		h.Write(buf)
		h.Write(b)
	}
	var out [32]byte
	copy(out[:], h.Sum(nil))
	return out, nil
}

// value encodes row i of one field.
func value(f *schemapb.FieldData, i int) ([]byte, error) {
	if valid := f.GetValidData(); len(valid) > i && !valid[i] {
		return []byte{0}, nil // null
	}
	if sc := f.GetScalars(); sc != nil {
		return scalar(sc, i)
	}
	v := f.GetVectors()
	if v == nil {
		return nil, fmt.Errorf("neither scalar nor vector data")
	}
	dim := int(v.GetDim())
	switch {
	case v.GetFloatVector() != nil:
		data := v.GetFloatVector().GetData()
		if (i+1)*dim > len(data) {
			return nil, errRow(i)
		}
		out := make([]byte, 0, 4*dim)
		for _, x := range data[i*dim : (i+1)*dim] {
			out = binary.LittleEndian.AppendUint32(out, math.Float32bits(x))
		}
		return out, nil
	case v.GetBinaryVector() != nil:
		return slice(v.GetBinaryVector(), i, dim/8)
	case v.GetFloat16Vector() != nil:
		return slice(v.GetFloat16Vector(), i, dim*2)
	case v.GetBfloat16Vector() != nil:
		return slice(v.GetBfloat16Vector(), i, dim*2)
	case v.GetSparseFloatVector() != nil:
		c := v.GetSparseFloatVector().GetContents()
		if i >= len(c) {
			return nil, errRow(i)
		}
		return c[i], nil
	}
	return nil, fmt.Errorf("unsupported vector type")
}

func slice(b []byte, i, width int) ([]byte, error) {
	if (i+1)*width > len(b) {
		return nil, errRow(i)
	}
	return b[i*width : (i+1)*width], nil
}

func errRow(i int) error { return fmt.Errorf("row %d out of range", i) }

func scalar(sc *schemapb.ScalarField, i int) ([]byte, error) {
	check := func(n int) error {
		if i >= n {
			return errRow(i)
		}
		return nil
	}
	switch d := sc.GetData().(type) {
	case *schemapb.ScalarField_BoolData:
		if err := check(len(d.BoolData.GetData())); err != nil {
			return nil, err
		}
		if d.BoolData.GetData()[i] {
			return []byte{1, 1}, nil
		}
		return []byte{1, 0}, nil
	case *schemapb.ScalarField_IntData:
		if err := check(len(d.IntData.GetData())); err != nil {
			return nil, err
		}
		return binary.AppendVarint([]byte{1}, int64(d.IntData.GetData()[i])), nil
	case *schemapb.ScalarField_LongData:
		if err := check(len(d.LongData.GetData())); err != nil {
			return nil, err
		}
		return binary.AppendVarint([]byte{1}, d.LongData.GetData()[i]), nil
	case *schemapb.ScalarField_FloatData:
		if err := check(len(d.FloatData.GetData())); err != nil {
			return nil, err
		}
		return binary.LittleEndian.AppendUint32([]byte{1}, math.Float32bits(d.FloatData.GetData()[i])), nil
	case *schemapb.ScalarField_DoubleData:
		if err := check(len(d.DoubleData.GetData())); err != nil {
			return nil, err
		}
		return binary.LittleEndian.AppendUint64([]byte{1}, math.Float64bits(d.DoubleData.GetData()[i])), nil
	case *schemapb.ScalarField_StringData:
		if err := check(len(d.StringData.GetData())); err != nil {
			return nil, err
		}
		return append([]byte{1}, d.StringData.GetData()[i]...), nil
	case *schemapb.ScalarField_JsonData:
		if err := check(len(d.JsonData.GetData())); err != nil {
			return nil, err
		}
		return append([]byte{1}, d.JsonData.GetData()[i]...), nil
	case *schemapb.ScalarField_ArrayData:
		if err := check(len(d.ArrayData.GetData())); err != nil {
			return nil, err
		}
		b, err := proto.MarshalOptions{Deterministic: true}.Marshal(d.ArrayData.GetData()[i])
		return append([]byte{1}, b...), err
	}
	return nil, fmt.Errorf("unsupported scalar type %T", sc.GetData())
}
