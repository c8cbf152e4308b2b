package main_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/milvus-io/milvus-proto/go-api/v2/milvuspb"
	"github.com/milvus-io/milvus-sdk-go/v2/client"
	"github.com/milvus-io/milvus-sdk-go/v2/entity"
	"github.com/stretchr/testify/require"

	"github.com/zdm-io/zdm/pkg/milvusx"
	"github.com/zdm-io/zdm/pkg/ztest"
	zdmpb "github.com/zdm-io/zdm/proto/zdm/v1"
)

// pymilvusAlias asks for an alias through the gateway and prints the error.
const pymilvusAlias = `
import sys
from pymilvus import MilvusClient
c = MilvusClient(uri="http://" + sys.argv[1], db_name="shop")
try:
    c.create_alias("items", "shop_items")
    print("created")
except Exception as e:
    print("refused:", e)
`

// load is applications writing through the gateway: 8 writers upserting
// the same 100 keys at once, one inserting new rows, one deleting rows.
// Every write must succeed.
type load struct {
	stop   chan struct{}
	wg     sync.WaitGroup
	writes atomic.Int64
	mu     sync.Mutex
	errs   []error
}

// startLoad starts the writers. With idempotent set, new rows are written
// with upsert rather than insert, so a write the client retries after a
// gateway died under it cannot land twice on the source.
func startLoad(t *testing.T, ctx context.Context, gw, db string, idempotent bool) *load {
	t.Helper()
	l := &load{stop: make(chan struct{})}
	c, err := client.NewClient(ctx, client.Config{Address: gw, DBName: db})
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	run := func(op func(i int) error) {
		l.wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-l.stop:
					return
				case <-ctx.Done():
					return
				default:
				}
				if err := op(i); err != nil {
					l.mu.Lock()
					l.errs = append(l.errs, err)
					l.mu.Unlock()
					time.Sleep(100 * time.Millisecond)
					continue
				}
				l.writes.Add(1)
			}
		})
	}
	row := func(id int64, title string) []entity.Column {
		v := make([]float32, 16)
		for j := range v {
			v[j] = float32(id) + float32(j)/16
		}
		return []entity.Column{entity.NewColumnInt64("id", []int64{id}), entity.NewColumnVarChar("title", []string{title}),
			entity.NewColumnFloatVector("vec", 16, [][]float32{v})}
	}
	for w := range 8 {
		run(func(i int) error {
			id := int64(1 + rand.IntN(100))
			_, err := c.Upsert(ctx, "items", "", row(id, fmt.Sprintf("hot %d.%d", w, i))...)
			time.Sleep(time.Duration(rand.IntN(40)) * time.Millisecond)
			return err
		})
	}
	run(func(i int) error {
		var ids []int64
		var titles []string
		var vecs [][]float32
		for k := range 10 {
			id := int64(100000 + i*10 + k)
			cols := row(id, fmt.Sprintf("new %d", id))
			ids, titles = append(ids, id), append(titles, cols[1].(*entity.ColumnVarChar).Data()[0])
			vecs = append(vecs, cols[2].(*entity.ColumnFloatVector).Data()[0])
		}
		write := c.Insert
		if idempotent {
			write = c.Upsert
		}
		_, err := write(ctx, "items", "", entity.NewColumnInt64("id", ids), entity.NewColumnVarChar("title", titles),
			entity.NewColumnFloatVector("vec", 16, vecs))
		time.Sleep(100 * time.Millisecond)
		return err
	})
	run(func(i int) error {
		// Seeded rows above the hot keys, then some of the new ones.
		ids := []int64{int64(200 + i), int64(100000 + i*7)}
		err := c.DeleteByPks(ctx, "items", "", entity.NewColumnInt64("id", ids))
		time.Sleep(50 * time.Millisecond)
		return err
	})
	return l
}

// end stops the writers and fails t if any write failed.
func (l *load) end(t *testing.T) {
	t.Helper()
	require.Empty(t, l.halt(t), "writes through the gateway failed")
}

// halt stops the writers and returns the errors they met.
func (l *load) halt(t *testing.T) []error {
	t.Helper()
	close(l.stop)
	l.wg.Wait()
	require.Positive(t, l.writes.Load())
	return l.errs
}

// TestE2EZeroDowntime runs a ZERO_DOWNTIME migration while applications
// write through the gateway the whole time (while the target is prepared,
// while the snapshot copies, while syncing), with 8 writers on the same
// 100 keys; a collection is created and another dropped mid-sync. After
// stop sync, the migration is COMPLETED and the target equals the source,
// by zdm's verification and by an independent comparison.
func TestE2EZeroDowntime(t *testing.T) {
	ztest.Integration(t)
	zeroDowntime(t, ztest.NewServer(t, "lite3"), ztest.NewServer(t, "lite3"))
}

// TestE2EZeroDowntimePrimaryTier is TestE2EZeroDowntime on standalone
// Milvus 2.3, whose Delete replies name no key and carry no timestamp.
func TestE2EZeroDowntimePrimaryTier(t *testing.T) {
	ztest.Integration(t)
	tier := ztest.WholePrimaryTier(t)
	for _, addr := range []string{tier.Source, tier.Target} {
		t.Cleanup(func() { dropAll(t, addr) })
	}
	zeroDowntime(t, tier.Source, tier.Target)
}

// dropAll drops every user collection and database of the server at addr.
func dropAll(t *testing.T, addr string) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, err := milvusx.Open(ctx, &zdmpb.ClusterConnection{Endpoint: addr}, "")
	require.NoError(t, err)
	defer c.Close()
	colls, err := milvusx.UserCollections(ctx, c)
	require.NoError(t, err)
	for _, full := range colls {
		db, name, _ := strings.Cut(full, ".")
		resp, err := c.Raw.DropCollection(ctx, &milvuspb.DropCollectionRequest{DbName: db, CollectionName: name})
		require.NoError(t, milvusx.CheckStatus(resp, err))
	}
	dbs, err := milvusx.Databases(ctx, c)
	require.NoError(t, err)
	for _, db := range dbs {
		if db != milvusx.DefaultDatabase {
			require.NoError(t, c.DropDatabase(ctx, db))
		}
	}
}

func zeroDowntime(t *testing.T, srcAddr, tgtAddr string) {
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	seedShop(t, ctx, srcAddr, 3000)
	gw := freeAddr(t)
	p := start(t, "-gateway-cluster", "src", "-gateway-addr", gw)
	conn := dial(t, p.addrs.GRPC)
	mig := zdmpb.NewMigrationServiceClient(conn)
	registerPair(t, ctx, zdmpb.NewClusterServiceClient(conn), srcAddr, tgtAddr)

	app, err := client.NewClient(ctx, client.Config{Address: gw, DBName: "shop"})
	require.NoError(t, err)
	defer app.Close()
	doomed := entity.NewSchema().WithName("doomed").
		WithField(entity.NewField().WithName("id").WithDataType(entity.FieldTypeInt64).WithIsPrimaryKey(true)).
		WithField(entity.NewField().WithName("vec").WithDataType(entity.FieldTypeFloatVector).WithDim(4))
	require.NoError(t, app.CreateCollection(ctx, doomed, 1))
	_, err = app.Insert(ctx, "doomed", "", entity.NewColumnInt64("id", []int64{1, 2}),
		entity.NewColumnFloatVector("vec", 4, [][]float32{{1, 2, 3, 4}, {5, 6, 7, 8}}))
	require.NoError(t, err)
	idx, err := entity.NewIndexFlat(entity.L2)
	require.NoError(t, err)
	// Standalone Milvus reads only loaded collections.
	require.NoError(t, app.CreateIndex(ctx, "doomed", "vec", idx, false))
	require.NoError(t, app.LoadCollection(ctx, "doomed", false))

	l := startLoad(t, ctx, gw, "shop", false)
	_, err = mig.CreateMigration(ctx, &zdmpb.CreateMigrationRequest{MigrationId: "zd1", Type: zdmpb.MigrationType_MIGRATION_TYPE_ZERO_DOWNTIME,
		SourceClusterId: "src", TargetClusterId: "tgt", Options: &zdmpb.MigrationOptions{WorkUnitRows: 1000}})
	require.NoError(t, err)
	waitMigration(t, ctx, mig, "zd1", 3*time.Minute, func(m *zdmpb.Migration) bool {
		return m.GetState() == zdmpb.MigrationState_MIGRATION_STATE_SYNCING || terminal(m)
	}, nil)

	// DDL mid-sync goes through the gateway and is replayed.
	late := entity.NewSchema().WithName("late").
		WithField(entity.NewField().WithName("id").WithDataType(entity.FieldTypeInt64).WithIsPrimaryKey(true)).
		WithField(entity.NewField().WithName("vec").WithDataType(entity.FieldTypeFloatVector).WithDim(4))
	require.NoError(t, app.CreateCollection(ctx, late, 1))
	var ids []int64
	var vecs [][]float32
	for i := range 50 {
		ids, vecs = append(ids, int64(i)), append(vecs, []float32{float32(i), 1, 2, 3})
	}
	_, err = app.Insert(ctx, "late", "", entity.NewColumnInt64("id", ids), entity.NewColumnFloatVector("vec", 4, vecs))
	require.NoError(t, err)
	require.NoError(t, app.CreateIndex(ctx, "late", "vec", idx, false))
	require.NoError(t, app.LoadCollection(ctx, "late", false))
	require.NoError(t, app.DropCollection(ctx, "doomed"))
	// An auto-ID collection, and one insert of 3 MiB: more than a message
	// of the change stream holds.
	wide := entity.NewSchema().WithName("wide").WithAutoID(true).
		WithField(entity.NewField().WithName("id").WithDataType(entity.FieldTypeInt64).WithIsPrimaryKey(true).WithIsAutoID(true)).
		WithField(entity.NewField().WithName("vec").WithDataType(entity.FieldTypeFloatVector).WithDim(768))
	require.NoError(t, app.CreateCollection(ctx, wide, 1))
	big := make([][]float32, 1000)
	for i := range big {
		big[i] = make([]float32, 768)
		for j := range big[i] {
			big[i][j] = rand.Float32()
		}
	}
	_, err = app.Insert(ctx, "wide", "", entity.NewColumnFloatVector("vec", 768, big))
	require.NoError(t, err)
	require.NoError(t, app.CreateIndex(ctx, "wide", "vec", idx, false))
	require.NoError(t, app.LoadCollection(ctx, "wide", false))

	// pymilvus works through the armed gateway unchanged, and DDL the
	// target could not follow reaches pymilvus and milvus-sdk-go as an
	// error naming the migration.
	require.Contains(t, runPython(t, pymilvusFlow, gw), "pymilvus flow ok")
	out := runPython(t, pymilvusAlias, gw)
	require.Contains(t, out, "refused:")
	require.Contains(t, out, `CreateAlias refused: cluster "src" is the source of migration "zd1"`)
	require.ErrorContains(t, app.CreateAlias(ctx, "items", "shop_items"), `CreateAlias refused: cluster "src" is the source of migration "zd1"`)

	m := waitMigration(t, ctx, mig, "zd1", 2*time.Minute, func(m *zdmpb.Migration) bool {
		return m.GetState() == zdmpb.MigrationState_MIGRATION_STATE_READY_TO_FINALIZE || terminal(m)
	}, nil)
	require.Equal(t, zdmpb.MigrationState_MIGRATION_STATE_READY_TO_FINALIZE, m.GetState(), "error: %v", m.GetError())
	require.NotNil(t, m.GetLag().GetLag(), "lag is reported")
	waitMigration(t, ctx, mig, "zd1", 10*time.Second, func(m *zdmpb.Migration) bool {
		for _, c := range m.GetCollections() {
			if c.GetCollection() == "items" {
				return c.GetLag() != nil && c.GetPhase() == zdmpb.CollectionPhase_COLLECTION_PHASE_SYNCING
			}
		}
		return false
	}, nil)

	l.end(t)
	_, err = mig.StopSync(ctx, &zdmpb.StopSyncRequest{MigrationId: "zd1", ConfirmWritesStopped: true})
	require.NoError(t, err)
	m = waitMigration(t, ctx, mig, "zd1", 2*time.Minute, terminal, nil)
	require.Equal(t, zdmpb.MigrationState_MIGRATION_STATE_COMPLETED, m.GetState(), "error: %v", m.GetError())
	var path []string
	for _, h := range m.GetHistory() {
		path = append(path, h.GetToState().String())
	}
	require.Equal(t, []string{"MIGRATION_STATE_PREPARING_TARGET", "MIGRATION_STATE_COPYING", "MIGRATION_STATE_SYNCING",
		"MIGRATION_STATE_READY_TO_FINALIZE", "MIGRATION_STATE_STOPPING_SYNC", "MIGRATION_STATE_VERIFYING", "MIGRATION_STATE_COMPLETED"}, path)
	t.Logf("%d writes through the gateway", l.writes.Load())
	// Every write went through a live gateway: the change stream has them
	// all, and the final verification had nothing to repair.
	require.Zero(t, m.GetRepairedRanges(), "repaired %d rows", m.GetRepairedRows())

	for _, coll := range []string{"items", "late", "wide"} {
		report := compareSides(t, ctx, srcAddr, tgtAddr, "shop", coll)
		require.True(t, report.Match(), report.String())
	}
	tgt, err := client.NewClient(ctx, client.Config{Address: tgtAddr, DBName: "shop"})
	require.NoError(t, err)
	defer tgt.Close()
	has, err := tgt.HasCollection(ctx, "doomed")
	require.NoError(t, err)
	require.False(t, has, "the collection dropped mid-sync is gone from the target")
}

// TestE2EChangeStreamFull gives the change stream a small byte limit and
// writes more than it holds while the copy runs (nothing is applied yet):
// the write that does not fit is answered UNAVAILABLE, and the migration
// FAILS with CHANGE_STREAM_FULL saying what to raise, rather than losing
// changes.
func TestE2EChangeStreamFull(t *testing.T) {
	ztest.Integration(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	srcAddr, tgtAddr := ztest.NewServer(t, "lite3"), ztest.NewServer(t, "lite3")
	seedShop(t, ctx, srcAddr, 3000)
	gw := freeAddr(t)
	p := start(t, "-gateway-cluster", "src", "-gateway-addr", gw, "-change-max-bytes", "1048576")
	conn := dial(t, p.addrs.GRPC)
	mig := zdmpb.NewMigrationServiceClient(conn)
	registerPair(t, ctx, zdmpb.NewClusterServiceClient(conn), srcAddr, tgtAddr)
	_, err := mig.CreateMigration(ctx, &zdmpb.CreateMigrationRequest{MigrationId: "full", Type: zdmpb.MigrationType_MIGRATION_TYPE_ZERO_DOWNTIME,
		SourceClusterId: "src", TargetClusterId: "tgt", Options: &zdmpb.MigrationOptions{WorkUnitRows: 1000,
			Throttle: &zdmpb.Throttle{MaxRowsPerSecond: 100}}})
	require.NoError(t, err)
	copyingWithRows(t, ctx, mig, "full")

	app, err := client.NewClient(ctx, client.Config{Address: gw, DBName: "shop"})
	require.NoError(t, err)
	defer app.Close()
	var refused error
	for i := 0; i < 40 && refused == nil; i++ {
		from := 100000 + i*1000
		var ids []int64
		var titles []string
		var vecs [][]float32
		for id := from; id < from+1000; id++ {
			ids, titles, vecs = append(ids, int64(id)), append(titles, fmt.Sprintf("bulk %d", id)), append(vecs, make([]float32, 16))
		}
		_, refused = app.Insert(ctx, "items", "", entity.NewColumnInt64("id", ids), entity.NewColumnVarChar("title", titles),
			entity.NewColumnFloatVector("vec", 16, vecs))
	}
	require.Error(t, refused, "a write beyond the change stream's limit")
	require.ErrorContains(t, refused, `UNAVAILABLE: Insert reached the source but could not be recorded for migration "full"`)
	m := waitMigration(t, ctx, mig, "full", time.Minute, terminal, nil)
	require.Equal(t, zdmpb.MigrationState_MIGRATION_STATE_FAILED, m.GetState())
	require.Equal(t, "CHANGE_STREAM_FULL", m.GetError().GetCode())
	require.Contains(t, m.GetError().GetMessage(), "--change-max-bytes")
}
