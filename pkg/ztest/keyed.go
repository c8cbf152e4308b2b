package ztest

import (
	"context"
	"testing"

	"github.com/milvus-io/milvus-sdk-go/v2/client"
	"github.com/milvus-io/milvus-sdk-go/v2/entity"
)

// KeyedCollection creates a loaded collection of one shard with an Int64
// primary key "id", an Int64 field "w" and an 8-dim float vector "vec"
// (FLAT index): the smallest shape the key-range readers and the repair
// are tested on. One shard keeps every duplicated key in the reply path
// where Milvus 2.3 under-reads limited queries.
func KeyedCollection(t testing.TB, ctx context.Context, c client.Client, name string) {
	t.Helper()
	s := entity.NewSchema().WithName(name).
		WithField(entity.NewField().WithName("id").WithDataType(entity.FieldTypeInt64).WithIsPrimaryKey(true)).
		WithField(entity.NewField().WithName("w").WithDataType(entity.FieldTypeInt64)).
		WithField(entity.NewField().WithName("vec").WithDataType(entity.FieldTypeFloatVector).WithDim(8))
	if err := c.CreateCollection(ctx, s, 1); err != nil {
		t.Fatalf("create %s: %v", name, err)
	}
	idx, err := entity.NewIndexFlat(entity.L2)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.CreateIndex(ctx, name, "vec", idx, false); err != nil {
		t.Fatalf("index %s: %v", name, err)
	}
	if err := c.LoadCollection(ctx, name, false); err != nil {
		t.Fatalf("load %s: %v", name, err)
	}
}

// InsertKeys inserts one row per key into a KeyedCollection, with w set
// on every row and a vector derived from key and w, in batches of 10,000.
// A key already there is inserted again: Milvus keeps both rows.
func InsertKeys(t testing.TB, ctx context.Context, c client.Client, name string, keys []int64, w int64) {
	t.Helper()
	for len(keys) > 0 {
		n := min(len(keys), 10000)
		ws, vecs := make([]int64, n), make([][]float32, n)
		for i, k := range keys[:n] {
			ws[i], vecs[i] = w, make([]float32, 8)
			for j := range vecs[i] {
				vecs[i][j] = float32(k%1000)/1000 + float32(w) + float32(j)
			}
		}
		if _, err := c.Insert(ctx, name, "", entity.NewColumnInt64("id", keys[:n]), entity.NewColumnInt64("w", ws),
			entity.NewColumnFloatVector("vec", 8, vecs)); err != nil {
			t.Fatalf("insert into %s: %v", name, err)
		}
		keys = keys[n:]
	}
}

// Keys returns the keys from, from+1, ..., to-1.
func Keys(from, to int64) []int64 {
	out := make([]int64, 0, max(to-from, 0))
	for k := from; k < to; k++ {
		out = append(out, k)
	}
	return out
}
