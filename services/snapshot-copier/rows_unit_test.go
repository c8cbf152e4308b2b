package copier

import (
	"testing"

	"github.com/milvus-io/milvus-proto/go-api/v2/commonpb"
	"github.com/milvus-io/milvus-proto/go-api/v2/schemapb"
	"github.com/stretchr/testify/require"

	"github.com/zdm-io/zdm/pkg/milvusx"
)

// TestFirstPageRows sizes the first page from the largest row a schema
// allows.
func TestFirstPageRows(t *testing.T) {
	field := func(dt schemapb.DataType, params ...string) *schemapb.FieldSchema {
		f := &schemapb.FieldSchema{DataType: dt}
		for i := 0; i+1 < len(params); i += 2 {
			f.TypeParams = append(f.TypeParams, &commonpb.KeyValuePair{Key: params[i], Value: params[i+1]})
		}
		return f
	}
	schema := func(dynamic bool, fs ...*schemapb.FieldSchema) *schemapb.CollectionSchema {
		return &schemapb.CollectionSchema{Fields: fs, EnableDynamicField: dynamic}
	}
	pk := field(schemapb.DataType_Int64)
	for _, tc := range []struct {
		name   string
		schema *schemapb.CollectionSchema
		batch  int
		want   int
	}{
		{"768 floats and a key", schema(false, pk, field(schemapb.DataType_FloatVector, "dim", "768")), 8 << 20, (8 << 20) / (8 + 3072)},
		{"varchar counts its max length", schema(false, pk, field(schemapb.DataType_VarChar, "max_length", "1000"), field(schemapb.DataType_BinaryVector, "dim", "64")), 1 << 20, (1 << 20) / (8 + 1004 + 8)},
		{"JSON and dynamic fields count 64 KiB each", schema(true, pk, field(schemapb.DataType_JSON), field(schemapb.DataType_FloatVector, "dim", "4")), 8 << 20, (8 << 20) / (8 + 2*(64<<10) + 16)},
		{"capped at Milvus's query limit", schema(false, pk, field(schemapb.DataType_Bool)), 8 << 20, milvusx.MaxQueryRows},
		{"at least one row", schema(false, pk, field(schemapb.DataType_Array)), 1 << 10, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			require.Equal(t, tc.want, firstPageRows(tc.schema, tc.batch))
		})
	}
}
