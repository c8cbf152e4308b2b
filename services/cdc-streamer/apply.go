package streamer

import (
	"context"
	"fmt"
	"strings"
	"sync"

	"github.com/milvus-io/milvus-proto/go-api/v2/commonpb"
	"github.com/milvus-io/milvus-proto/go-api/v2/milvuspb"
	"github.com/milvus-io/milvus-proto/go-api/v2/schemapb"
	"google.golang.org/protobuf/proto"

	"github.com/zdm-io/zdm/pkg/milvusx"
	eventspb "github.com/zdm-io/zdm/proto/zdm/events/v1"
)

// replayer applies captured changes to a target, one at a time, each
// idempotently: an insert becomes an upsert, a delete names its keys (or
// repeats its filter when the keys are unknown), and DDL skips what is
// already done. Applying a suffix of the stream again, in order, leaves
// the target as applying it once did, which is how a restarted applier
// resumes without loss or duplicate.
type replayer struct {
	tgt milvuspb.MilvusServiceClient

	mu  sync.Mutex
	pks map[string]*schemapb.FieldSchema // by database.collection
}

func newReplayer(tgt milvuspb.MilvusServiceClient) *replayer {
	return &replayer{tgt: tgt, pks: map[string]*schemapb.FieldSchema{}}
}

// apply replays ev on the target and returns the rows it wrote or
// deleted.
func (r *replayer) apply(ctx context.Context, ev *eventspb.ChangeEvent) (int64, error) {
	name := strings.TrimPrefix(ev.GetMethod(), milvusService)
	newMsg, ok := captured[name]
	if !ok {
		return 0, fmt.Errorf("change %s: method %s is not replayable", ev.GetEventId(), ev.GetMethod())
	}
	msg := newMsg()
	if err := proto.Unmarshal(ev.GetRequest(), msg); err != nil {
		return 0, fmt.Errorf("change %s: %w", ev.GetEventId(), err)
	}
	db, coll := ev.GetDatabase(), ev.GetCollection()
	switch m := msg.(type) {
	case *milvuspb.InsertRequest:
		return r.upsert(ctx, ev, m.GetFieldsData(), m.GetNumRows())
	case *milvuspb.UpsertRequest:
		return r.upsert(ctx, ev, m.GetFieldsData(), m.GetNumRows())
	case *milvuspb.DeleteRequest:
		return r.delete(ctx, ev, m.GetExpr())
	}
	defer r.forget(db + "." + coll)
	return 0, r.ddl(ctx, db, coll, msg)
}

func (r *replayer) forget(collection string) {
	r.mu.Lock()
	delete(r.pks, collection)
	r.mu.Unlock()
}

func (r *replayer) pk(ctx context.Context, db, coll string) (*schemapb.FieldSchema, error) {
	key := db + "." + coll
	r.mu.Lock()
	f := r.pks[key]
	r.mu.Unlock()
	if f != nil {
		return f, nil
	}
	t, err := milvusx.DescribeTable(ctx, r.tgt, db, coll)
	if err != nil {
		return nil, err
	}
	r.mu.Lock()
	r.pks[key] = t.PK
	r.mu.Unlock()
	return t.PK, nil
}

// upsert writes the rows of an insert or upsert. Rows of an auto-ID
// collection come without their key, which the source returned: the
// target's copy of the collection takes explicit keys (see
// PrepareOptions.ExplicitAutoID), so the key column is added.
func (r *replayer) upsert(ctx context.Context, ev *eventspb.ChangeEvent, fields []*schemapb.FieldData, rows uint32) (int64, error) {
	pk, err := r.pk(ctx, ev.GetDatabase(), ev.GetCollection())
	if err != nil {
		return 0, err
	}
	has := false
	for _, f := range fields {
		if f.GetFieldName() == pk.GetName() {
			has = true
		}
	}
	if !has {
		keys := keysFromPB(ev.GetPrimaryKeys())
		if len(keys) != int(rows) {
			return 0, fmt.Errorf("change %s: %d rows but %d keys", ev.GetEventId(), rows, len(keys))
		}
		fields = append(fields, keyColumn(pk, keys))
	}
	resp, err := r.tgt.Upsert(ctx, &milvuspb.UpsertRequest{DbName: ev.GetDatabase(), CollectionName: ev.GetCollection(),
		PartitionName: ev.GetPartition(), FieldsData: fields, NumRows: rows})
	if err := milvusx.Check(resp, err); err != nil {
		return 0, fmt.Errorf("upsert into %s.%s: %w", ev.GetDatabase(), ev.GetCollection(), err)
	}
	return int64(rows), nil
}

func keyColumn(pk *schemapb.FieldSchema, keys []milvusx.Key) *schemapb.FieldData {
	f := &schemapb.FieldData{FieldName: pk.GetName(), FieldId: pk.GetFieldID(), Type: pk.GetDataType()}
	if pk.GetDataType() == schemapb.DataType_VarChar {
		v := make([]string, len(keys))
		for i, k := range keys {
			v[i] = k.Str
		}
		f.Field = &schemapb.FieldData_Scalars{Scalars: &schemapb.ScalarField{Data: &schemapb.ScalarField_StringData{StringData: &schemapb.StringArray{Data: v}}}}
		return f
	}
	v := make([]int64, len(keys))
	for i, k := range keys {
		v[i] = k.Int
	}
	f.Field = &schemapb.FieldData_Scalars{Scalars: &schemapb.ScalarField{Data: &schemapb.ScalarField_LongData{LongData: &schemapb.LongArray{Data: v}}}}
	return f
}

// delete removes the keys the delete named or the source returned; a
// delete whose keys are unknown repeats its filter at its place in the
// stream, which converges all the same (shared/DESIGN.md).
func (r *replayer) delete(ctx context.Context, ev *eventspb.ChangeEvent, expr string) (int64, error) {
	keys := keysFromPB(ev.GetPrimaryKeys())
	if len(keys) > 0 {
		pk, err := r.pk(ctx, ev.GetDatabase(), ev.GetCollection())
		if err != nil {
			return 0, err
		}
		expr = milvusx.InFilter(pk.GetName(), keys)
	}
	resp, err := r.tgt.Delete(ctx, &milvuspb.DeleteRequest{DbName: ev.GetDatabase(), CollectionName: ev.GetCollection(),
		PartitionName: ev.GetPartition(), Expr: expr})
	if err := milvusx.Check(resp, err); err != nil {
		return 0, fmt.Errorf("delete from %s.%s: %w", ev.GetDatabase(), ev.GetCollection(), err)
	}
	return resp.GetDeleteCnt(), nil
}

// ddl replays a create or drop. What is already done (a collection that
// exists, a database that is gone) counts as done: the change may be
// replayed after a restart.
func (r *replayer) ddl(ctx context.Context, db, coll string, msg proto.Message) error {
	var (
		st  *commonpb.Status
		err error
	)
	switch m := msg.(type) {
	case *milvuspb.CreateDatabaseRequest:
		st, err = r.tgt.CreateDatabase(ctx, m)
	case *milvuspb.DropDatabaseRequest:
		st, err = r.tgt.DropDatabase(ctx, m)
	case *milvuspb.CreateCollectionRequest:
		m.DbName = db
		if m.Schema, err = explicitKeys(m.GetSchema()); err != nil {
			return err
		}
		st, err = r.tgt.CreateCollection(ctx, m)
	case *milvuspb.DropCollectionRequest:
		m.DbName = db
		st, err = r.tgt.DropCollection(ctx, m)
	case *milvuspb.CreatePartitionRequest:
		m.DbName = db
		st, err = r.tgt.CreatePartition(ctx, m)
	case *milvuspb.DropPartitionRequest:
		m.DbName = db
		st, err = r.tgt.DropPartition(ctx, m)
	case *milvuspb.CreateIndexRequest:
		m.DbName = db
		st, err = r.tgt.CreateIndex(ctx, m)
	case *milvuspb.DropIndexRequest:
		m.DbName = db
		st, err = r.tgt.DropIndex(ctx, m)
	case *milvuspb.AlterIndexRequest:
		m.DbName = db
		st, err = r.tgt.AlterIndex(ctx, m)
	case *milvuspb.LoadCollectionRequest:
		m.DbName = db
		st, err = r.tgt.LoadCollection(ctx, m)
	case *milvuspb.ReleaseCollectionRequest:
		m.DbName = db
		st, err = r.tgt.ReleaseCollection(ctx, m)
	case *milvuspb.LoadPartitionsRequest:
		m.DbName = db
		st, err = r.tgt.LoadPartitions(ctx, m)
	case *milvuspb.ReleasePartitionsRequest:
		m.DbName = db
		st, err = r.tgt.ReleasePartitions(ctx, m)
	default:
		return fmt.Errorf("%T is not replayable", msg)
	}
	if err := milvusx.CheckStatus(st, err); err != nil && !alreadyDone(err) {
		return fmt.Errorf("replay %s on %s.%s: %w", strings.TrimSuffix(strings.TrimPrefix(fmt.Sprintf("%T", msg), "*milvuspb."), "Request"), db, coll, err)
	}
	return nil
}

// alreadyDone recognises the errors of a create whose object exists and
// of a drop whose object is gone.
func alreadyDone(err error) bool {
	s := strings.ToLower(err.Error())
	for _, m := range []string{"already exist", "not found", "not exist", "doesn't exist", "does not exist"} {
		if strings.Contains(s, m) {
			return true
		}
	}
	return false
}

// explicitKeys turns auto-ID off in a schema (serialised CollectionSchema),
// as the copy does for collections it creates: the target holds the keys
// the source generated.
func explicitKeys(b []byte) ([]byte, error) {
	var s schemapb.CollectionSchema
	if err := proto.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("decode schema: %w", err)
	}
	changed := false
	for _, f := range s.GetFields() {
		if f.GetIsPrimaryKey() && f.GetAutoID() {
			f.AutoID, changed = false, true
		}
	}
	if !changed {
		return b, nil
	}
	return proto.Marshal(&s)
}
