package streamer

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"

	"github.com/milvus-io/milvus-proto/go-api/v2/commonpb"
	"github.com/milvus-io/milvus-proto/go-api/v2/milvuspb"
	"github.com/milvus-io/milvus-proto/go-api/v2/schemapb"
	"google.golang.org/protobuf/proto"

	"github.com/zdm-io/zdm/pkg/milvusx"
	"github.com/zdm-io/zdm/pkg/natsbus"
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

// maxBatchRows bounds the rows of one write the applier sends.
const maxBatchRows = 4096

// applyAll replays evs, in order, on the target and returns the rows it
// wrote or deleted. Consecutive row changes of one collection (and
// partition) are applied together: each key's last change wins, with
// one delete for the keys whose last change removes them and one upsert
// for the rest; so a key written a hundred times in a batch is written
// once. DDL, a delete by filter, another collection or rows of another
// layout end such a run. call runs each write to the target, retrying
// it as it sees fit.
func (r *replayer) applyAll(ctx context.Context, evs []*eventspb.ChangeEvent, call func(func() error) error) (int64, error) {
	var (
		done int64
		run  *rowRun
	)
	flush := func() error {
		if run == nil {
			return nil
		}
		n, err := run.flush(ctx, r.tgt, call)
		done += n
		run = nil
		return err
	}
	// join makes ev part of the run: a new one when there is none, or
	// when the one under way is of another table (or, with orFull, full)
	// and must end first.
	join := func(ev *eventspb.ChangeEvent, orFull bool) error {
		if run != nil && (!run.same(ev) || (orFull && run.full())) {
			if err := flush(); err != nil {
				return err
			}
		}
		if run == nil {
			pk, err := r.pkRetried(ctx, ev.GetDatabase(), ev.GetCollection(), call)
			if err != nil {
				return err
			}
			run = newRowRun(ev, pk)
		}
		return nil
	}
	for _, ev := range evs {
		name := strings.TrimPrefix(ev.GetMethod(), milvusService)
		newMsg, ok := captured[name]
		if !ok {
			return done, fmt.Errorf("change %s: method %s is not replayable", ev.GetEventId(), ev.GetMethod())
		}
		msg := newMsg()
		if err := proto.Unmarshal(ev.GetRequest(), msg); err != nil {
			return done, fmt.Errorf("change %s: %w", ev.GetEventId(), err)
		}
		db, coll := ev.GetDatabase(), ev.GetCollection()
		var fields []*schemapb.FieldData
		var rows uint32
		switch m := msg.(type) {
		case *milvuspb.InsertRequest:
			fields, rows = m.GetFieldsData(), m.GetNumRows()
		case *milvuspb.UpsertRequest:
			fields, rows = m.GetFieldsData(), m.GetNumRows()
		case *milvuspb.DeleteRequest:
			keys := natsbus.Keys(ev.GetPrimaryKeys())
			if len(keys) == 0 {
				// A delete by a filter whose keys are unknown: replayed
				// as it was, at its place.
				if err := flush(); err != nil {
					return done, err
				}
				err := call(func() error {
					resp, err := r.tgt.Delete(ctx, &milvuspb.DeleteRequest{DbName: db, CollectionName: coll, PartitionName: ev.GetPartition(), Expr: m.GetExpr()})
					if err := milvusx.Check(resp, err); err != nil {
						return fmt.Errorf("delete from %s.%s: %w", db, coll, err)
					}
					done += resp.GetDeleteCnt()
					return nil
				})
				if err != nil {
					return done, err
				}
				continue
			}
			if err := join(ev, false); err != nil {
				return done, err
			}
			run.delete(keys)
			continue
		default:
			if err := flush(); err != nil {
				return done, err
			}
			if err := call(func() error { return r.ddl(ctx, db, coll, msg) }); err != nil {
				return done, err
			}
			r.forget(db + "." + coll)
			continue
		}
		// An insert or upsert.
		if err := join(ev, true); err != nil {
			return done, err
		}
		fields, err := withKeys(ev, fields, rows, run.pk)
		if err != nil {
			return done, err
		}
		if !run.fits(fields) {
			pk := run.pk
			if err := flush(); err != nil {
				return done, err
			}
			run = newRowRun(ev, pk)
		}
		if err := run.upsert(fields, int(rows)); err != nil {
			return done, fmt.Errorf("change %s: %w", ev.GetEventId(), err)
		}
	}
	return done, flush()
}

// pkRetried is pk, with the target call retried by call.
func (r *replayer) pkRetried(ctx context.Context, db, coll string, call func(func() error) error) (*schemapb.FieldSchema, error) {
	var pk *schemapb.FieldSchema
	err := call(func() error {
		var err error
		pk, err = r.pk(ctx, db, coll)
		return err
	})
	return pk, err
}

// withKeys returns the columns of an insert or upsert with their key
// column. Rows of an auto-ID collection come without it, and the source
// returned the keys: the target's copy of the collection takes explicit
// keys (see PrepareOptions.ExplicitAutoID), so the column is added.
func withKeys(ev *eventspb.ChangeEvent, fields []*schemapb.FieldData, rows uint32, pk *schemapb.FieldSchema) ([]*schemapb.FieldData, error) {
	for _, f := range fields {
		if f.GetFieldName() == pk.GetName() {
			return fields, nil
		}
	}
	keys := natsbus.Keys(ev.GetPrimaryKeys())
	if len(keys) != int(rows) {
		return nil, fmt.Errorf("change %s: %d rows but %d keys", ev.GetEventId(), rows, len(keys))
	}
	return append(slices.Clone(fields), keyColumn(pk, keys)), nil
}

// rowRun is a run of row changes to one collection and partition, each
// key's last change winning.
type rowRun struct {
	db, coll, part string
	pk             *schemapb.FieldSchema
	last           map[milvusx.Key]rowRef // keys whose last change writes them
	deleted        map[milvusx.Key]bool   // keys whose last change deletes them
	srcs           [][]*schemapb.FieldData
	counts         []int
}

type rowRef struct{ src, row int }

func newRowRun(ev *eventspb.ChangeEvent, pk *schemapb.FieldSchema) *rowRun {
	return &rowRun{db: ev.GetDatabase(), coll: ev.GetCollection(), part: ev.GetPartition(), pk: pk,
		last: map[milvusx.Key]rowRef{}, deleted: map[milvusx.Key]bool{}}
}

func (b *rowRun) same(ev *eventspb.ChangeEvent) bool {
	return b.db == ev.GetDatabase() && b.coll == ev.GetCollection() && b.part == ev.GetPartition()
}

// fits reports whether rows with these columns can join the run: those
// of its first change set the layout.
func (b *rowRun) fits(fields []*schemapb.FieldData) bool {
	return len(b.srcs) == 0 || milvusx.SameLayout(b.srcs[0], fields)
}

func (b *rowRun) full() bool { return len(b.last)+len(b.deleted) >= maxBatchRows }

func (b *rowRun) delete(keys []milvusx.Key) {
	for _, k := range keys {
		delete(b.last, k)
		b.deleted[k] = true
	}
}

func (b *rowRun) upsert(fields []*schemapb.FieldData, n int) error {
	keys, err := milvusx.PKValues(fields, b.pk)
	if err != nil {
		return err
	}
	if !b.fits(fields) {
		return fmt.Errorf("rows of another layout")
	}
	b.srcs, b.counts = append(b.srcs, fields), append(b.counts, n)
	for i, k := range keys {
		b.last[k] = rowRef{len(b.srcs) - 1, i}
		delete(b.deleted, k)
	}
	return nil
}

// flush writes the run: one delete, one upsert.
func (b *rowRun) flush(ctx context.Context, tgt milvuspb.MilvusServiceClient, call func(func() error) error) (int64, error) {
	var done int64
	if len(b.deleted) > 0 {
		keys := make([]milvusx.Key, 0, len(b.deleted))
		for k := range b.deleted {
			keys = append(keys, k)
		}
		err := call(func() error {
			resp, err := tgt.Delete(ctx, &milvuspb.DeleteRequest{DbName: b.db, CollectionName: b.coll, PartitionName: b.part,
				Expr: milvusx.InFilter(b.pk.GetName(), keys)})
			if err := milvusx.Check(resp, err); err != nil {
				return fmt.Errorf("delete from %s.%s: %w", b.db, b.coll, err)
			}
			return nil
		})
		if err != nil {
			return done, err
		}
		done += int64(len(keys))
	}
	if len(b.last) == 0 {
		return done, nil
	}
	refs := make([]rowRef, 0, len(b.last))
	for _, ref := range b.last {
		refs = append(refs, ref)
	}
	slices.SortFunc(refs, func(a, c rowRef) int {
		if a.src != c.src {
			return a.src - c.src
		}
		return a.row - c.row
	})
	var rows milvusx.Rows
	for _, ref := range refs {
		if err := rows.Add(b.srcs[ref.src], ref.row, b.counts[ref.src]); err != nil {
			return done, err
		}
	}
	err := call(func() error {
		resp, err := tgt.Upsert(ctx, &milvuspb.UpsertRequest{DbName: b.db, CollectionName: b.coll, PartitionName: b.part,
			FieldsData: rows.Fields(), NumRows: uint32(rows.Len())})
		if err := milvusx.Check(resp, err); err != nil {
			return fmt.Errorf("upsert into %s.%s: %w", b.db, b.coll, err)
		}
		return nil
	})
	if err != nil {
		return done, err
	}
	return done + int64(rows.Len()), nil
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
