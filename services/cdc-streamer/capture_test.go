package streamer

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/milvus-io/milvus-proto/go-api/v2/commonpb"
	"github.com/milvus-io/milvus-proto/go-api/v2/milvuspb"
	"github.com/milvus-io/milvus-proto/go-api/v2/schemapb"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	"github.com/zdm-io/zdm/pkg/milvusx"
	"github.com/zdm-io/zdm/pkg/natsbus"
	"github.com/zdm-io/zdm/pkg/ztest"
	eventspb "github.com/zdm-io/zdm/proto/zdm/events/v1"
)

func TestParseKeyFilter(t *testing.T) {
	intPK := &schemapb.FieldSchema{Name: "id", DataType: schemapb.DataType_Int64}
	strPK := &schemapb.FieldSchema{Name: "pk", DataType: schemapb.DataType_VarChar}
	ints := func(v ...int64) []milvusx.Key {
		var out []milvusx.Key
		for _, x := range v {
			out = append(out, milvusx.Key{Int: x})
		}
		return out
	}
	for _, c := range []struct {
		expr string
		pk   *schemapb.FieldSchema
		want []milvusx.Key
	}{
		{"id in [1, 2, -3]", intPK, ints(1, 2, -3)},
		{" id in[7] ", intPK, ints(7)},
		{"id == 42", intPK, ints(42)},
		{`pk in ["a", 'b']`, strPK, []milvusx.Key{{Str: "a", IsStr: true}, {Str: "b", IsStr: true}}},
		{"id > 5", intPK, nil},
		{"id in [1, 2] or id == 3", intPK, nil},
		{"idx in [1]", intPK, nil},
		{"id in []", intPK, nil},
		{`pk in ["a,b"]`, strPK, nil},
		{`pk in ["a\"b"]`, strPK, nil},
		{"title == 'x'", intPK, nil},
	} {
		got, ok := parseKeyFilter(c.expr, c.pk)
		require.Equal(t, c.want != nil, ok, c.expr)
		require.Equal(t, c.want, got, c.expr)
	}
}

// TestKeyLocks: writes to the same key wait for each other; to other keys
// they do not; a collection-wide lock waits for every key.
func TestKeyLocks(t *testing.T) {
	l := newKeyLocks()
	k := func(v ...int64) []milvusx.Key {
		var out []milvusx.Key
		for _, x := range v {
			out = append(out, milvusx.Key{Int: x})
		}
		return out
	}
	release := l.lock("db.c", k(1, 2), false)
	other := l.lock("db.c", k(3), false) // disjoint: at once
	var got atomic.Bool
	done := make(chan struct{})
	go func() {
		r := l.lock("db.c", k(2, 5), false)
		got.Store(true)
		r()
		close(done)
	}()
	ztest.Consistently(t, 50*time.Millisecond, func() bool { return !got.Load() }, "lock on key 2 taken while key 2 is held")
	release()
	<-done
	whole := make(chan struct{})
	go func() {
		l.lock("db.c", nil, true)()
		close(whole)
	}()
	select {
	case <-whole:
		t.Fatal("collection lock taken while key 3 is held")
	case <-time.After(50 * time.Millisecond):
	}
	other()
	<-whole
	require.Empty(t, l.coll("db.c").keys, "no key entry left behind")
}

func TestWatermark(t *testing.T) {
	w := newWatermark("src", "m", 0)
	gw := func(id string, resolved, seq, arm uint64, stopped bool) *eventspb.ResolvedTimestamp {
		return &eventspb.ResolvedTimestamp{GatewayId: id, ClusterId: "src", MigrationId: "m", ResolvedTimestamp: resolved,
			LastStreamSequence: seq, ArmTimestamp: arm, WritesStopped: stopped}
	}
	// Not yet applied to a's last change: a counts from its arm point.
	v, drained := w.advance([]*eventspb.ResolvedTimestamp{gw("a", 500, 10, 100, false), gw("b", 400, 3, 90, false)}, 5)
	require.Equal(t, uint64(100), v)
	require.False(t, drained)
	// Applied past both: the lowest promise.
	v, _ = w.advance([]*eventspb.ResolvedTimestamp{gw("a", 500, 10, 100, false), gw("b", 400, 3, 90, false)}, 10)
	require.Equal(t, uint64(400), v)
	// A replica of another cluster or migration, or not armed, counts not.
	v, _ = w.advance([]*eventspb.ResolvedTimestamp{gw("a", 900, 10, 100, false), {GatewayId: "x", ClusterId: "other", MigrationId: "m", ArmTimestamp: 1},
		{GatewayId: "y", ClusterId: "src"}}, 10)
	require.Equal(t, uint64(900), v)
	// It never goes back, even when a replica joins from an older arm point.
	v, _ = w.advance([]*eventspb.ResolvedTimestamp{gw("a", 900, 10, 100, false), gw("c", 0, 0, 50, false)}, 10)
	require.Equal(t, uint64(900), v)
	// Drained: every replica stopped and applied.
	_, drained = w.advance([]*eventspb.ResolvedTimestamp{gw("a", 950, 12, 100, true)}, 11)
	require.False(t, drained, "a's last change is not applied")
	_, drained = w.advance([]*eventspb.ResolvedTimestamp{gw("a", 950, 12, 100, true)}, 12)
	require.True(t, drained)
}

// target records the writes the applier makes; a fake of the Milvus
// service for the pure logic of batching.
type target struct {
	milvuspb.MilvusServiceClient
	calls []proto.Message
}

func (f *target) DescribeCollection(context.Context, *milvuspb.DescribeCollectionRequest, ...grpc.CallOption) (*milvuspb.DescribeCollectionResponse, error) {
	return &milvuspb.DescribeCollectionResponse{Status: &commonpb.Status{}, Schema: &schemapb.CollectionSchema{Fields: []*schemapb.FieldSchema{
		{Name: "id", DataType: schemapb.DataType_Int64, IsPrimaryKey: true}, {Name: "v", DataType: schemapb.DataType_Int64}}}}, nil
}

func (f *target) Upsert(_ context.Context, r *milvuspb.UpsertRequest, _ ...grpc.CallOption) (*milvuspb.MutationResult, error) {
	f.calls = append(f.calls, r)
	return &milvuspb.MutationResult{Status: &commonpb.Status{}}, nil
}

func (f *target) Delete(_ context.Context, r *milvuspb.DeleteRequest, _ ...grpc.CallOption) (*milvuspb.MutationResult, error) {
	f.calls = append(f.calls, r)
	return &milvuspb.MutationResult{Status: &commonpb.Status{}}, nil
}

func (f *target) DropCollection(_ context.Context, r *milvuspb.DropCollectionRequest, _ ...grpc.CallOption) (*commonpb.Status, error) {
	f.calls = append(f.calls, r)
	return &commonpb.Status{}, nil
}

func longCol(name string, v ...int64) *schemapb.FieldData {
	return &schemapb.FieldData{FieldName: name, Type: schemapb.DataType_Int64,
		Field: &schemapb.FieldData_Scalars{Scalars: &schemapb.ScalarField{Data: &schemapb.ScalarField_LongData{LongData: &schemapb.LongArray{Data: v}}}}}
}

func change(t *testing.T, coll, method string, req proto.Message, keys ...int64) *eventspb.ChangeEvent {
	b, err := proto.Marshal(req)
	require.NoError(t, err)
	ev := &eventspb.ChangeEvent{Database: "db", Collection: coll, Method: milvusService + method, Request: b}
	if len(keys) > 0 {
		var ks []milvusx.Key
		for _, k := range keys {
			ks = append(ks, milvusx.Key{Int: k})
		}
		ev.PrimaryKeys = natsbus.KeysPB(ks)
	}
	return ev
}

// TestApplyAllKeepsEachKeysLastChange: a run of changes to one collection
// becomes one delete and one upsert with each key's last change; DDL and
// a delete by filter end a run, in their place.
func TestApplyAllKeepsEachKeysLastChange(t *testing.T) {
	f := &target{}
	r := newReplayer(f)
	ins := func(coll string, ids, vals []int64) *eventspb.ChangeEvent {
		return change(t, coll, "Insert", &milvuspb.InsertRequest{CollectionName: coll, NumRows: uint32(len(ids)),
			FieldsData: []*schemapb.FieldData{longCol("id", ids...), longCol("v", vals...)}}, ids...)
	}
	del := func(coll string, expr string, ids ...int64) *eventspb.ChangeEvent {
		return change(t, coll, "Delete", &milvuspb.DeleteRequest{CollectionName: coll, Expr: expr}, ids...)
	}
	evs := []*eventspb.ChangeEvent{
		ins("a", []int64{1, 2, 3}, []int64{10, 20, 30}),
		ins("a", []int64{2}, []int64{21}),
		del("a", "", 3),
		ins("a", []int64{4}, []int64{40}),
		del("a", "", 4),
		ins("a", []int64{4}, []int64{41}),
		del("a", "v > 100"), // filter: ends the run
		ins("a", []int64{5}, []int64{50}),
		change(t, "b", "DropCollection", &milvuspb.DropCollectionRequest{CollectionName: "b"}),
		ins("a", []int64{6}, []int64{60}),
	}
	rows, err := r.applyAll(context.Background(), evs, func(w func() error) error { return w() })
	require.NoError(t, err)
	require.Equal(t, int64(6), rows, "rows deleted by key and written")
	var got []string
	for _, c := range f.calls {
		switch m := c.(type) {
		case *milvuspb.UpsertRequest:
			ids := m.GetFieldsData()[0].GetScalars().GetLongData().GetData()
			vals := m.GetFieldsData()[1].GetScalars().GetLongData().GetData()
			s := "upsert"
			for i := range ids {
				s += fmt.Sprintf(" %d=%d", ids[i], vals[i])
			}
			got = append(got, s)
		case *milvuspb.DeleteRequest:
			got = append(got, "delete "+m.GetExpr())
		case *milvuspb.DropCollectionRequest:
			got = append(got, "drop "+m.GetCollectionName())
		}
	}
	require.Equal(t, []string{
		"delete id in [3]",
		"upsert 1=10 2=21 4=41",
		"delete v > 100",
		"upsert 5=50",
		"drop b",
		"upsert 6=60",
	}, got)
}
