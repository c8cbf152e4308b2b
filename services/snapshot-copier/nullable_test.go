package copier

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/milvus-io/milvus-proto/go-api/v2/commonpb"
	"github.com/milvus-io/milvus-proto/go-api/v2/milvuspb"
	"github.com/milvus-io/milvus-proto/go-api/v2/schemapb"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"

	"github.com/zdm-io/zdm/pkg/milvusx"
	"github.com/zdm-io/zdm/pkg/verify"
	"github.com/zdm-io/zdm/pkg/ztest"
)

// nullableTiers are the tiers whose servers have nullable fields and
// default values: Milvus 2.3 has neither, milvus-lite 2.5 refuses
// nullable fields.
var nullableTiers = []string{"lite3"}

// TestIntegrationNullableAndDefault copies a collection with a nullable
// field, one with a default value, a nullable Array, and rows where they
// are null or the array is empty: the schema and every row, nulls and
// empty arrays included, arrive as they were.
func TestIntegrationNullableAndDefault(t *testing.T) {
	ztest.Integration(t)
	for _, tier := range ztest.Tiers(t) {
		if !slices.Contains(nullableTiers, tier.Name) {
			continue
		}
		t.Run(tier.Name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			srcC, tgtC, scope := sides(t, tier)
			db := dbOf(scope)
			src, tgt := mustRaw(t, srcC), mustRaw(t, tgtC)
			schema := &schemapb.CollectionSchema{Name: "nulls", Fields: []*schemapb.FieldSchema{
				{Name: "id", DataType: schemapb.DataType_Int64, IsPrimaryKey: true},
				{Name: "maybe", DataType: schemapb.DataType_Int64, Nullable: true},
				{Name: "label", DataType: schemapb.DataType_VarChar, Nullable: true,
					TypeParams:   []*commonpb.KeyValuePair{{Key: "max_length", Value: "32"}},
					DefaultValue: &schemapb.ValueField{Data: &schemapb.ValueField_StringData{StringData: "none"}}},
				{Name: "tags", DataType: schemapb.DataType_Array, ElementType: schemapb.DataType_Int64, Nullable: true,
					TypeParams: []*commonpb.KeyValuePair{{Key: "max_capacity", Value: "8"}}},
				{Name: "vec", DataType: schemapb.DataType_FloatVector, TypeParams: []*commonpb.KeyValuePair{{Key: "dim", Value: "4"}}},
			}}
			data, err := proto.Marshal(schema)
			require.NoError(t, err)
			require.NoError(t, milvusx.CheckStatus(src.CreateCollection(ctx, &milvuspb.CreateCollectionRequest{DbName: db,
				CollectionName: "nulls", Schema: data, ShardsNum: 1})))

			// Rows 1..300; every third "maybe", every fifth "label" and
			// every seventh "tags" is null, and the "tags" after each null
			// one is empty. Nullable columns carry values for valid rows
			// only.
			const rows = 300
			var ids, maybes []int64
			var labels []string
			var maybeValid, labelValid, tagsValid []bool
			var tags []*schemapb.ScalarField
			var vecs []float32
			for id := int64(1); id <= rows; id++ {
				ids = append(ids, id)
				vecs = append(vecs, float32(id), 1, 2, 3)
				maybeValid = append(maybeValid, id%3 != 0)
				if id%3 != 0 {
					maybes = append(maybes, id*10)
				}
				tagsValid = append(tagsValid, id%7 != 0)
				switch id % 7 {
				case 0:
				case 1:
					tags = append(tags, &schemapb.ScalarField{Data: &schemapb.ScalarField_LongData{LongData: &schemapb.LongArray{}}})
				default:
					tags = append(tags, &schemapb.ScalarField{Data: &schemapb.ScalarField_LongData{LongData: &schemapb.LongArray{Data: []int64{id, -id}}}})
				}
				labelValid = append(labelValid, id%5 != 0)
				if id%5 != 0 {
					labels = append(labels, "l"+string(rune('a'+id%26)))
				}
			}
			long := func(name string, v []int64, valid []bool) *schemapb.FieldData {
				return &schemapb.FieldData{FieldName: name, Type: schemapb.DataType_Int64, ValidData: valid,
					Field: &schemapb.FieldData_Scalars{Scalars: &schemapb.ScalarField{Data: &schemapb.ScalarField_LongData{LongData: &schemapb.LongArray{Data: v}}}}}
			}
			ins, err := src.Insert(ctx, &milvuspb.InsertRequest{DbName: db, CollectionName: "nulls", NumRows: rows, FieldsData: []*schemapb.FieldData{
				long("id", ids, nil), long("maybe", maybes, maybeValid),
				{FieldName: "label", Type: schemapb.DataType_VarChar, ValidData: labelValid,
					Field: &schemapb.FieldData_Scalars{Scalars: &schemapb.ScalarField{Data: &schemapb.ScalarField_StringData{StringData: &schemapb.StringArray{Data: labels}}}}},
				{FieldName: "tags", Type: schemapb.DataType_Array, ValidData: tagsValid,
					Field: &schemapb.FieldData_Scalars{Scalars: &schemapb.ScalarField{Data: &schemapb.ScalarField_ArrayData{
						ArrayData: &schemapb.ArrayArray{ElementType: schemapb.DataType_Int64, Data: tags}}}}},
				{FieldName: "vec", Type: schemapb.DataType_FloatVector,
					Field: &schemapb.FieldData_Vectors{Vectors: &schemapb.VectorField{Dim: 4, Data: &schemapb.VectorField_FloatVector{FloatVector: &schemapb.FloatArray{Data: vecs}}}}},
			}})
			require.NoError(t, milvusx.Check(ins, err))
			require.NoError(t, milvusx.CheckStatus(src.CreateIndex(ctx, &milvuspb.CreateIndexRequest{DbName: db, CollectionName: "nulls", FieldName: "vec",
				ExtraParams: []*commonpb.KeyValuePair{{Key: "index_type", Value: "FLAT"}, {Key: "metric_type", Value: "L2"}}})))
			require.NoError(t, milvusx.CheckStatus(src.LoadCollection(ctx, &milvuspb.LoadCollectionRequest{DbName: db, CollectionName: "nulls"})))
			waitLoaded(t, ctx, srcC, "nulls")

			_, err = PrepareTarget(ctx, srcC, tgtC, PrepareOptions{Databases: scope})
			require.NoError(t, err)
			table, err := milvusx.DescribeTable(ctx, src, db, "nulls")
			require.NoError(t, err)
			stats, err := CopyRange(ctx, src, tgt, table, milvusx.Range{}, CopyOptions{BatchBytes: 4 << 10})
			require.NoError(t, err)
			require.Equal(t, int64(rows), stats.Rows)
			report, err := verify.Collection(ctx, src, tgt, table, 100)
			require.NoError(t, err)
			require.True(t, report.Match(), report.String())
			if diff := cmp.Diff(describe(t, ctx, srcC, db, "nulls"), describe(t, ctx, tgtC, db, "nulls"), protocmp.Transform()); diff != "" {
				t.Errorf("nulls differs (-source, +target):\n%s", diff)
			}

			// The nulls themselves arrived: a null in a field with a default
			// is stored as the default, on both sides.
			count := func(c milvuspb.MilvusServiceClient, expr string) int64 {
				resp, err := c.Query(ctx, &milvuspb.QueryRequest{DbName: db, CollectionName: "nulls", Expr: expr,
					OutputFields: []string{"count(*)"}, ConsistencyLevel: commonpb.ConsistencyLevel_Strong})
				require.NoError(t, milvusx.Check(resp, err), expr)
				return resp.GetFieldsData()[0].GetScalars().GetLongData().GetData()[0]
			}
			for expr, want := range map[string]int64{"maybe is null": rows / 3, `label == "none"`: rows / 5,
				"tags is null": rows / 7, "tags is not null and array_length(tags) == 0": rows/7 + 1, "array_contains(tags, 299)": 1} {
				require.Equal(t, want, count(src, expr), "source: %s", expr)
				require.Equal(t, want, count(tgt, expr), "target: %s", expr)
			}
		})
	}
}
