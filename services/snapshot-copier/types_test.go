package copier

import (
	"context"
	"encoding/binary"
	"fmt"
	"math"
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/milvus-io/milvus-sdk-go/v2/client"
	"github.com/milvus-io/milvus-sdk-go/v2/entity"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/testing/protocmp"

	"github.com/zdm-io/zdm/pkg/milvusx"
	"github.com/zdm-io/zdm/pkg/verify"
	"github.com/zdm-io/zdm/pkg/ztest"
)

// fieldKind is one field type under test: a collection of its own holds
// it beside an Int64 key (and a float vector when it is not a vector).
type fieldKind struct {
	name   string
	field  func() *entity.Field
	column func(from, n int) entity.Column
	index  func() (entity.Index, error) // for vector kinds
}

const kindDim = 16

func kinds() []fieldKind {
	f := func(name string, dt entity.FieldType) func() *entity.Field {
		return func() *entity.Field { return entity.NewField().WithName(name).WithDataType(dt) }
	}
	vals := func(from, n int, v func(id int) any) []any {
		out := make([]any, n)
		for i := range n {
			out[i] = v(from + i)
		}
		return out
	}
	halfs := func(from, n int, bits func(float32) uint16) [][]byte {
		out := make([][]byte, n)
		for i := range n {
			b := make([]byte, 2*kindDim)
			for j := range kindDim {
				binary.LittleEndian.PutUint16(b[2*j:], bits(float32(from+i)+float32(j)/kindDim))
			}
			out[i] = b
		}
		return out
	}
	bf16 := func(x float32) uint16 { return uint16(math.Float32bits(x) >> 16) }
	fp16 := func(x float32) uint16 { // exact for the small values used here
		b := math.Float32bits(x)
		exp := int((b>>23)&0xff) - 127 + 15
		if x == 0 {
			return 0
		}
		return uint16(exp<<10) | uint16((b>>13)&0x3ff)
	}
	flatL2 := func() (entity.Index, error) { return entity.NewIndexFlat(entity.L2) }
	return []fieldKind{
		{name: "bool", field: f("v", entity.FieldTypeBool), column: func(from, n int) entity.Column {
			return entity.NewColumnBool("v", typed[bool](vals(from, n, func(id int) any { return id%3 == 0 })))
		}},
		{name: "int8", field: f("v", entity.FieldTypeInt8), column: func(from, n int) entity.Column {
			return entity.NewColumnInt8("v", typed[int8](vals(from, n, func(id int) any { return int8(id % 120) })))
		}},
		{name: "int16", field: f("v", entity.FieldTypeInt16), column: func(from, n int) entity.Column {
			return entity.NewColumnInt16("v", typed[int16](vals(from, n, func(id int) any { return int16(-id) })))
		}},
		{name: "int32", field: f("v", entity.FieldTypeInt32), column: func(from, n int) entity.Column {
			return entity.NewColumnInt32("v", typed[int32](vals(from, n, func(id int) any { return int32(id * 1000) })))
		}},
		{name: "int64", field: f("v", entity.FieldTypeInt64), column: func(from, n int) entity.Column {
			return entity.NewColumnInt64("v", typed[int64](vals(from, n, func(id int) any { return int64(id) << 40 })))
		}},
		{name: "float", field: f("v", entity.FieldTypeFloat), column: func(from, n int) entity.Column {
			return entity.NewColumnFloat("v", typed[float32](vals(from, n, func(id int) any { return float32(id) / 3 })))
		}},
		{name: "double", field: f("v", entity.FieldTypeDouble), column: func(from, n int) entity.Column {
			return entity.NewColumnDouble("v", typed[float64](vals(from, n, func(id int) any { return float64(id) / 7 })))
		}},
		{name: "varchar", field: func() *entity.Field { return f("v", entity.FieldTypeVarChar)().WithMaxLength(48) }, column: func(from, n int) entity.Column {
			return entity.NewColumnVarChar("v", typed[string](vals(from, n, func(id int) any { return fmt.Sprintf("naïve café %d ✓", id) })))
		}},
		{name: "json", field: f("v", entity.FieldTypeJSON), column: func(from, n int) entity.Column {
			return entity.NewColumnJSONBytes("v", typed[[]byte](vals(from, n, func(id int) any {
				return fmt.Appendf(nil, `{"id":%d,"tags":["a","b"],"n":{"x":%g}}`, id, float64(id)/9)
			})))
		}},
		arrayKind("bool", entity.FieldTypeBool, func(id, i int) any { return (id+i)%2 == 0 }, asColumn(entity.NewColumnBoolArray)),
		arrayKind("int8", entity.FieldTypeInt8, func(id, i int) any { return int8((id + i) % 100) }, asColumn(entity.NewColumnInt8Array)),
		arrayKind("int16", entity.FieldTypeInt16, func(id, i int) any { return int16(-id - i) }, asColumn(entity.NewColumnInt16Array)),
		arrayKind("int32", entity.FieldTypeInt32, func(id, i int) any { return int32(id*1000 + i) }, asColumn(entity.NewColumnInt32Array)),
		arrayKind("int64", entity.FieldTypeInt64, func(id, i int) any { return int64(id)<<40 + int64(i) }, asColumn(entity.NewColumnInt64Array)),
		arrayKind("float", entity.FieldTypeFloat, func(id, i int) any { return float32(id) / float32(i+3) }, asColumn(entity.NewColumnFloatArray)),
		arrayKind("double", entity.FieldTypeDouble, func(id, i int) any { return float64(id) / float64(i+7) }, asColumn(entity.NewColumnDoubleArray)),
		arrayKind("varchar", entity.FieldTypeVarChar, func(id, i int) any { return fmt.Appendf(nil, "t%d-%d ✓", id, i) }, asColumn(entity.NewColumnVarCharArray)),
		{name: "binary_vector", field: func() *entity.Field { return f("v", entity.FieldTypeBinaryVector)().WithDim(kindDim * 8) },
			column: func(from, n int) entity.Column {
				return entity.NewColumnBinaryVector("v", kindDim*8, typed[[]byte](vals(from, n, func(id int) any {
					b := make([]byte, kindDim)
					binary.LittleEndian.PutUint64(b, uint64(id)*0x9e3779b97f4a7c15)
					return b
				})))
			},
			index: func() (entity.Index, error) { return entity.NewIndexBinFlat(entity.HAMMING, 16) }},
		{name: "float16_vector", field: func() *entity.Field { return f("v", entity.FieldTypeFloat16Vector)().WithDim(kindDim) },
			column: func(from, n int) entity.Column {
				return entity.NewColumnFloat16Vector("v", kindDim, halfs(from, n, fp16))
			},
			index: flatL2},
		{name: "bfloat16_vector", field: func() *entity.Field { return f("v", entity.FieldTypeBFloat16Vector)().WithDim(kindDim) },
			column: func(from, n int) entity.Column {
				return entity.NewColumnBFloat16Vector("v", kindDim, halfs(from, n, bf16))
			},
			index: flatL2},
		{name: "sparse_vector", field: f("v", entity.FieldTypeSparseVector),
			column: func(from, n int) entity.Column {
				return entity.NewColumnSparseVectors("v", typed[entity.SparseEmbedding](vals(from, n, func(id int) any {
					e, err := entity.NewSliceSparseEmbedding([]uint32{uint32(id % 50), uint32(100 + id%7)}, []float32{float32(id) / 10, 0.5})
					if err != nil {
						panic(err)
					}
					return e
				})))
			},
			index: func() (entity.Index, error) { return entity.NewIndexSparseInverted(entity.IP, 0) }},
	}
}

// arrayLen is the length of row id's Array value: every third is empty
// (`[]`, which Milvus 2.3 returns in a shape its own insert cannot take),
// then one element, then a long array.
func arrayLen(id int) int { return []int{0, 1, arrayCapacity - 3}[id%3] }

const arrayCapacity = 64

// arrayKind is an Array field of elem, with values elemAt(id, i).
func arrayKind[T any](elem string, et entity.FieldType, elemAt func(id, i int) any,
	newColumn func(string, [][]T) entity.Column) fieldKind {
	return fieldKind{
		name: "array_" + elem,
		field: func() *entity.Field {
			return entity.NewField().WithName("v").WithDataType(entity.FieldTypeArray).WithElementType(et).
				WithMaxCapacity(arrayCapacity).WithMaxLength(32)
		},
		column: func(from, n int) entity.Column {
			rows := make([][]T, n)
			for r := range n {
				rows[r] = make([]T, arrayLen(from+r))
				for i := range rows[r] {
					rows[r][i] = elemAt(from+r, i).(T)
				}
			}
			return newColumn("v", rows)
		},
	}
}

// asColumn turns an SDK column constructor into one arrayKind takes.
func asColumn[T any, C entity.Column](f func(string, [][]T) C) func(string, [][]T) entity.Column {
	return func(name string, v [][]T) entity.Column { return f(name, v) }
}

func typed[T any](vs []any) []T {
	out := make([]T, len(vs))
	for i, v := range vs {
		out[i] = v.(T)
	}
	return out
}

// tierKinds is what each tier supports. Only these are tried: Milvus 2.3.5
// accepts a Float16Vector collection and its insert, then its query node
// panics and the server dies. milvus-lite 3 refuses binary and half
// vectors.
var tierKinds = map[string][]string{
	"milvus": append(scalarKinds(), "binary_vector"),
	"lite3":  append(scalarKinds(), "sparse_vector"),
	"lite2":  append(scalarKinds(), "binary_vector", "float16_vector", "bfloat16_vector", "sparse_vector"),
}

// scalarKinds are the kinds every tier has: each scalar type, JSON, and an
// Array of each element type.
func scalarKinds() []string {
	out := []string{"json"}
	for _, t := range []string{"bool", "int8", "int16", "int32", "int64", "float", "double", "varchar"} {
		out = append(out, t, "array_"+t)
	}
	return out
}

// TestIntegrationEveryFieldType creates a collection per field type the
// tier supports, copies it and checks that verification passes and that
// the schema, indexes and load state are the same on both sides.
func TestIntegrationEveryFieldType(t *testing.T) {
	ztest.Integration(t)
	const rows = 600
	for _, tier := range ztest.Tiers(t) {
		t.Run(tier.Name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
			defer cancel()
			srcC, tgtC, scope := sides(t, tier)
			db := dbOf(scope)
			var made []string
			for _, k := range kinds() {
				if slices.Contains(tierKinds[tier.Name], k.name) {
					makeKind(t, ctx, srcC, k, rows)
					made = append(made, k.name)
				}
			}
			require.NotEmpty(t, made, "no field types listed for tier %s", tier.Name)

			_, err := PrepareTarget(ctx, srcC, tgtC, PrepareOptions{Databases: scope})
			require.NoError(t, err)
			src, tgt := mustRaw(t, srcC), mustRaw(t, tgtC)
			for _, name := range made {
				coll := "k_" + name
				table, err := milvusx.DescribeTable(ctx, src, db, coll)
				require.NoError(t, err)
				stats, err := CopyRange(ctx, src, tgt, table, milvusx.Range{}, CopyOptions{BatchBytes: 16 << 10})
				require.NoError(t, err, coll)
				require.Equal(t, int64(rows), stats.Rows, coll)
				report, err := verify.Collection(ctx, src, tgt, table, 250)
				require.NoError(t, err, coll)
				require.True(t, report.Match(), report.String())
				require.Equal(t, int64(rows), report.TargetCount, coll)
				if diff := cmp.Diff(describe(t, ctx, srcC, db, coll), describe(t, ctx, tgtC, db, coll), protocmp.Transform()); diff != "" {
					t.Errorf("%s differs (-source, +target):\n%s", coll, diff)
				}
			}
		})
	}
}

// makeKind creates and fills k's collection, indexed and loaded.
func makeKind(t *testing.T, ctx context.Context, c client.Client, k fieldKind, rows int) {
	t.Helper()
	coll := "k_" + k.name
	schema := entity.NewSchema().WithName(coll).
		WithField(entity.NewField().WithName("id").WithDataType(entity.FieldTypeInt64).WithIsPrimaryKey(true)).
		WithField(k.field())
	vecField, index := "v", k.index
	if index == nil {
		vecField, index = "vec", func() (entity.Index, error) { return entity.NewIndexFlat(entity.L2) }
		schema.WithField(entity.NewField().WithName("vec").WithDataType(entity.FieldTypeFloatVector).WithDim(4))
	}
	require.NoError(t, c.CreateCollection(ctx, schema, 1), coll)
	for from := 1; from <= rows; from += 200 {
		n := min(200, rows-from+1)
		ids := make([]int64, n)
		vecs := make([][]float32, n)
		for i := range n {
			ids[i] = int64(from + i)
			vecs[i] = []float32{float32(from + i), 1, 2, 3}
		}
		cols := []entity.Column{entity.NewColumnInt64("id", ids), k.column(from, n)}
		if vecField == "vec" {
			cols = append(cols, entity.NewColumnFloatVector("vec", 4, vecs))
		}
		_, err := c.Insert(ctx, coll, "", cols...)
		require.NoError(t, err, coll)
	}
	idx, err := index()
	require.NoError(t, err)
	require.NoError(t, c.CreateIndex(ctx, coll, vecField, idx, true), coll)
	require.NoError(t, c.LoadCollection(ctx, coll, true), coll)
	waitLoaded(t, ctx, c, coll)
}

// waitLoaded waits, until ctx's deadline (a minute without one), for an
// asynchronous load to finish.
func waitLoaded(t *testing.T, ctx context.Context, c client.Client, coll string) {
	t.Helper()
	timeout := time.Minute
	if deadline, ok := ctx.Deadline(); ok {
		timeout = time.Until(deadline)
	}
	ztest.Eventually(t, timeout, func() bool {
		st, err := c.GetLoadState(ctx, coll, nil)
		require.NoError(t, err)
		return st == entity.LoadStateLoaded
	}, "%s never loaded", coll)
}
