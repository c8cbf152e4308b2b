package main_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/milvus-io/milvus-proto/go-api/v2/commonpb"
	"github.com/milvus-io/milvus-proto/go-api/v2/milvuspb"
	"github.com/milvus-io/milvus-sdk-go/v2/client"
	"github.com/milvus-io/milvus-sdk-go/v2/entity"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/zdm-io/zdm/pkg/milvusx"
	"github.com/zdm-io/zdm/pkg/ztest"
	zdmpb "github.com/zdm-io/zdm/proto/zdm/v1"
)

// The racing-upsert migration: three collections of 11,000 keys (0–9,999
// and 30,000–30,999), two writers per collection upserting 10 random keys
// of [0, 20,000) through the gateway, 400 rows a second in all, for the
// whole sync.
const (
	racingSync     = 10 * time.Second
	racingInterval = 150 * time.Millisecond // 6 writers × 10 rows / 150 ms = 400 rows/s
)

var racingCollections = []string{"lh_a", "lh_b", "lh_c"}

// TestE2ERacingUpsertsStopSync is the migration whose stop-sync repair
// deleted thousands of good rows: the source ends with keys held twice
// (inserted again through the gateway, besides what the racing upserts
// leave) and the collections span several pages. Mid-sync, 50 rows are
// deleted from the target behind zdm's back. The migration must complete,
// its repair must write exactly those 50 rows and delete nothing, the
// keys held twice must be reported, and an independent read of every key
// must find the target equal to the source.
func TestE2ERacingUpsertsStopSync(t *testing.T) {
	ztest.Integration(t)
	r := newRacing(t)
	r.untilReady("rs")
	// Rows deleted on the target behind zdm's back, of keys no writer
	// touches: only the repair can bring them back.
	gone := ztest.Keys(30000, 30050)
	tgt, err := client.NewClient(r.ctx, client.Config{Address: r.tier.Target})
	require.NoError(t, err)
	defer tgt.Close()
	require.NoError(t, tgt.DeleteByPks(r.ctx, "lh_a", "", entity.NewColumnInt64("id", gone)))
	r.syncUnderLoad()
	r.w.end(t)

	_, err = r.mig.StopSync(r.ctx, &zdmpb.StopSyncRequest{MigrationId: "rs", ConfirmWritesStopped: true})
	require.NoError(t, err)
	m := waitMigration(t, r.ctx, r.mig, "rs", 3*time.Minute, terminal, nil)
	require.Equal(t, zdmpb.MigrationState_MIGRATION_STATE_COMPLETED, m.GetState(), "error: %v", m.GetError())
	t.Logf("%d writes; history: %s", r.w.writes(), m.GetHistory()[len(m.GetHistory())-1].GetReason())

	// The repair wrote the 50 deleted rows and nothing else.
	var upserted, deleted int64
	var written []string
	for _, rr := range m.GetRepairs() {
		require.Equal(t, "lh_a", rr.GetCollection(), "only lh_a differed: %v", rr)
		upserted, deleted = upserted+rr.GetRowsUpserted(), deleted+rr.GetKeysDeleted()
		written = append(written, rr.GetSampleUpsertedKeys()...)
	}
	require.Equal(t, int64(len(gone)), upserted, "rows written by the repair: %v", m.GetRepairs())
	require.Zero(t, deleted, "keys deleted by the repair: %v", m.GetRepairs())
	require.Subset(t, []string{"30000", "30001", "30002", "30003", "30004", "30005", "30006", "30007", "30008", "30009"}, written)
	require.Contains(t, m.GetHistory()[len(m.GetHistory())-1].GetReason(), "50 rows written, 0 keys deleted")
	r.checkDuplicatesReported(m)
	r.checkEqual(nil)
}

// TestE2ERacingUpsertsSwitchover is the same migration finalised by a
// switchover while the writers go on: it must switch with a pause under a
// second, complete with the verification after the switch equal, report
// the keys held twice, and an independent read must find the target
// equal to the source but for keys written after the switchover was
// asked for.
func TestE2ERacingUpsertsSwitchover(t *testing.T) {
	ztest.Integration(t)
	r := newRacing(t)
	r.untilReady("rw")
	r.syncUnderLoad()

	var m *zdmpb.Migration
	asked := time.Now()
	for attempt := 1; ; attempt++ {
		resp, err := r.mig.Switchover(r.ctx, &zdmpb.SwitchoverRequest{MigrationId: "rw", MaxWritePause: durationpb.New(time.Second)})
		require.NoError(t, err)
		n := resp.GetMigration().GetSwitchover().GetAttempt()
		m = waitMigration(t, r.ctx, r.mig, "rw", time.Minute, func(m *zdmpb.Migration) bool {
			switch m.GetState() {
			case zdmpb.MigrationState_MIGRATION_STATE_READY_TO_FINALIZE:
				return m.GetSwitchover().GetAttempt() == n && m.GetSwitchover().GetAbortReason() != ""
			case zdmpb.MigrationState_MIGRATION_STATE_SWITCHING_OVER:
				return false
			}
			return true
		}, nil)
		if m.GetState() != zdmpb.MigrationState_MIGRATION_STATE_READY_TO_FINALIZE {
			break
		}
		// An abort sends writes back to the source; an operator tries again.
		t.Logf("switchover attempt %d aborted: %s", attempt, m.GetSwitchover().GetAbortReason())
		require.Less(t, attempt, 5, "five switchovers aborted")
	}
	require.Less(t, m.GetSwitchoverWritePause().AsDuration(), time.Second)
	m = waitMigration(t, r.ctx, r.mig, "rw", 3*time.Minute, terminal, nil)
	r.w.end(t)
	require.Equal(t, zdmpb.MigrationState_MIGRATION_STATE_COMPLETED, m.GetState(), "error: %v", m.GetError())
	verifyStage := m.GetStages()[len(m.GetStages())-1]
	require.Equal(t, zdmpb.StageState_STAGE_STATE_SUCCEEDED, verifyStage.GetState(), verifyStage.GetMessage())
	require.Contains(t, verifyStage.GetMessage(), "verified equal after the switchover")
	t.Logf("%d writes, paused %s; %s", r.w.writes(), m.GetSwitchoverWritePause().AsDuration(), verifyStage.GetMessage())
	r.checkDuplicatesReported(m)
	r.checkEqual(r.w.writtenSince(asked))
}

// racing is one racing-upsert migration on the primary tier.
type racing struct {
	t    *testing.T
	ctx  context.Context
	tier ztest.Tier
	gw   string
	mig  zdmpb.MigrationServiceClient
	w    *racers
	// twice are the keys inserted a second time through the gateway.
	twice []int64
}

func newRacing(t *testing.T) *racing {
	tier := ztest.WholePrimaryTier(t)
	for _, addr := range []string{tier.Source, tier.Target} {
		t.Cleanup(func() { dropAll(t, addr) })
	}
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	t.Cleanup(cancel)
	src, err := client.NewClient(ctx, client.Config{Address: tier.Source})
	require.NoError(t, err)
	defer src.Close()
	for _, name := range racingCollections {
		ztest.KeyedCollection(t, ctx, src, name)
		ztest.InsertKeys(t, ctx, src, name, append(ztest.Keys(0, 10000), ztest.Keys(30000, 31000)...), 0)
		require.NoError(t, src.Flush(ctx, name, false))
	}
	r := &racing{t: t, ctx: ctx, tier: tier, gw: freeAddr(t), twice: ztest.Keys(30500, 30505)}
	p := start(t, "-gateway-cluster", "src", "-gateway-addr", r.gw)
	conn := dial(t, p.addrs.GRPC)
	r.mig = zdmpb.NewMigrationServiceClient(conn)
	registerPair(t, ctx, zdmpb.NewClusterServiceClient(conn), tier.Source, tier.Target)
	r.w = startRacers(t, ctx, r.gw)
	return r
}

// untilReady creates the migration while the writers run and waits until
// it is ready to finalise; then it inserts r.twice again into every
// collection through the gateway, so the source holds them twice (the
// target, where inserts are replayed as upserts, once).
func (r *racing) untilReady(id string) {
	r.t.Helper()
	_, err := r.mig.CreateMigration(r.ctx, &zdmpb.CreateMigrationRequest{MigrationId: id, Type: zdmpb.MigrationType_MIGRATION_TYPE_ZERO_DOWNTIME,
		SourceClusterId: "src", TargetClusterId: "tgt", Options: &zdmpb.MigrationOptions{WorkUnitRows: 4000}})
	require.NoError(r.t, err)
	m := waitMigration(r.t, r.ctx, r.mig, id, 4*time.Minute, func(m *zdmpb.Migration) bool {
		return m.GetState() == zdmpb.MigrationState_MIGRATION_STATE_READY_TO_FINALIZE || terminal(m)
	}, nil)
	require.Equal(r.t, zdmpb.MigrationState_MIGRATION_STATE_READY_TO_FINALIZE, m.GetState(), "error: %v", m.GetError())
	app, err := client.NewClient(r.ctx, client.Config{Address: r.gw})
	require.NoError(r.t, err)
	defer app.Close()
	for _, name := range racingCollections {
		ztest.InsertKeys(r.t, r.ctx, app, name, r.twice, 7)
	}
}

// syncUnderLoad lets the migration sync for racingSync while the writers
// go on.
func (r *racing) syncUnderLoad() {
	r.t.Helper()
	before := r.w.writes()
	deadline := time.Now().Add(racingSync)
	ztest.Eventually(r.t, racingSync+10*time.Second, func() bool { return time.Now().After(deadline) }, "sync did not last")
	require.Greater(r.t, r.w.writes()-before, int64(racingSync/racingInterval), "the writers kept writing")
}

// checkDuplicatesReported: the migration names, for every collection, the
// keys the source holds twice (at least those inserted twice), and the
// source's count(*) agrees.
func (r *racing) checkDuplicatesReported(m *zdmpb.Migration) {
	r.t.Helper()
	reported := map[string]*zdmpb.DuplicateKeys{}
	for _, d := range m.GetSourceDuplicates() {
		reported[d.GetCollection()] = d
	}
	src := r.open(r.tier.Source)
	for _, name := range racingCollections {
		d := reported[name]
		require.NotNil(r.t, d, "keys held twice in %s are reported: %v", name, m.GetSourceDuplicates())
		require.GreaterOrEqual(r.t, d.GetKeys(), int64(len(r.twice)))
		for _, k := range r.twice {
			require.Contains(r.t, d.GetSampleKeys(), fmt.Sprint(k))
		}
		count, err := milvusx.CountRows(r.ctx, src, milvusx.Table{Database: milvusx.DefaultDatabase, Collection: name}, "")
		require.NoError(r.t, err)
		keys := len(r.read(src, name))
		require.Equal(r.t, int64(keys)+d.GetExtraRows(), count, "%s: count(*) is the distinct keys and the extra rows reported", name)
		r.t.Logf("%s: %d keys, count(*) %d, held twice: %d keys (e.g. %v)", name, keys, count, d.GetKeys(), d.GetSampleKeys())
	}
}

// checkEqual reads every key of every collection on both sides, by key
// lists of 500, and requires the same keys, each once on the target, with
// the same row (w), but for keys held twice on the source (only present)
// and the keys in after (written after the switchover was asked for).
func (r *racing) checkEqual(after map[string]map[int64]bool) {
	r.t.Helper()
	src, tgt := r.open(r.tier.Source), r.open(r.tier.Target)
	for _, name := range racingCollections {
		sw, tw := r.read(src, name), r.read(tgt, name)
		count, err := milvusx.CountRows(r.ctx, tgt, milvusx.Table{Database: milvusx.DefaultDatabase, Collection: name}, "")
		require.NoError(r.t, err)
		if after == nil {
			require.Equal(r.t, int64(len(tw)), count, "%s: the target holds each key once", name)
		} else if extra := count - int64(len(tw)); extra > 0 {
			// After the switch the writers' racing upserts land on the
			// target, which can keep two rows of a key as the source did.
			r.t.Logf("%s: the target holds %d extra rows after the writes that followed the switch", name, extra)
		}
		twice := map[int64]bool{}
		for _, k := range r.twice {
			twice[k] = true
		}
		var differ []int64
		for k, w := range sw {
			if tv, ok := tw[k]; !ok || (tv != w && !twice[k]) {
				differ = append(differ, k)
			}
		}
		for k := range tw {
			if _, ok := sw[k]; !ok {
				differ = append(differ, k)
			}
		}
		differ = slices.DeleteFunc(differ, func(k int64) bool { return after[name][k] })
		slices.Sort(differ)
		require.Empty(r.t, differ, "%s: keys that differ between source and target", name)
		require.Greater(r.t, len(sw), 11000, "%s: the writers added keys", name)
		r.t.Logf("%s: %d keys equal on both sides (%d written after the switchover asked for left out)", name, len(sw), len(after[name]))
	}
}

func (r *racing) open(addr string) milvuspb.MilvusServiceClient {
	r.t.Helper()
	c, err := milvusx.Open(r.ctx, &zdmpb.ClusterConnection{Endpoint: addr}, "")
	require.NoError(r.t, err)
	r.t.Cleanup(func() { c.Close() })
	return c.Raw
}

// read returns w by key for every key of the keyed collection that could
// exist ([0, 20,000) and [30,000, 31,000)), asking by lists of keys with
// Strong consistency: no range query, no limit.
func (r *racing) read(c milvuspb.MilvusServiceClient, name string) map[int64]int64 {
	r.t.Helper()
	out := map[int64]int64{}
	for chunk := range slices.Chunk(append(ztest.Keys(0, 20000), ztest.Keys(30000, 31000)...), 500) {
		expr := "id in ["
		for i, k := range chunk {
			if i > 0 {
				expr += ","
			}
			expr += fmt.Sprint(k)
		}
		resp, err := c.Query(r.ctx, &milvuspb.QueryRequest{CollectionName: name, Expr: expr + "]", OutputFields: []string{"id", "w"},
			ConsistencyLevel: commonpb.ConsistencyLevel_Strong})
		require.NoError(r.t, milvusx.Check(resp, err))
		var ids, ws []int64
		for _, f := range resp.GetFieldsData() {
			switch f.GetFieldName() {
			case "id":
				ids = f.GetScalars().GetLongData().GetData()
			case "w":
				ws = f.GetScalars().GetLongData().GetData()
			}
		}
		require.Len(r.t, ws, len(ids))
		for i, k := range ids {
			out[k] = ws[i]
		}
	}
	return out
}

// racers are six applications on the gateway, two per collection, each
// upserting 10 random keys of [0, 20,000) every racingInterval; w is the
// write's own number, so a row tells which write it holds. Every write
// must succeed.
type racers struct {
	stop chan struct{}
	wg   sync.WaitGroup
	mu   sync.Mutex
	errs []error
	n    int64
	// acked is when each key was last acknowledged, per collection.
	acked map[string]map[int64]time.Time
}

func startRacers(t *testing.T, ctx context.Context, gw string) *racers {
	t.Helper()
	w := &racers{stop: make(chan struct{}), acked: map[string]map[int64]time.Time{}}
	c, err := client.NewClient(ctx, client.Config{Address: gw})
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	for i, name := range racingCollections {
		w.acked[name] = map[int64]time.Time{}
		for j := range 2 {
			writer := int64(i*2 + j + 1)
			w.wg.Go(func() {
				tick := time.NewTicker(racingInterval)
				defer tick.Stop()
				for seq := int64(1); ; seq++ {
					select {
					case <-w.stop:
						return
					case <-ctx.Done():
						return
					case <-tick.C:
					}
					ids, ws, vecs := make([]int64, 10), make([]int64, 10), make([][]float32, 10)
					for k := range ids {
						ids[k], ws[k], vecs[k] = rand.Int64N(20000), writer<<32|seq, []float32{float32(writer), float32(seq), 0, 0, 0, 0, 0, 1}
					}
					_, err := c.Upsert(ctx, name, "", entity.NewColumnInt64("id", ids), entity.NewColumnInt64("w", ws),
						entity.NewColumnFloatVector("vec", 8, vecs))
					now := time.Now()
					w.mu.Lock()
					if err != nil {
						w.errs = append(w.errs, err)
					} else {
						w.n++
						for _, k := range ids {
							w.acked[name][k] = now
						}
					}
					w.mu.Unlock()
				}
			})
		}
	}
	return w
}

func (w *racers) writes() int64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.n
}

// writtenSince returns, per collection, the keys whose last write was
// acknowledged at or after since.
func (w *racers) writtenSince(since time.Time) map[string]map[int64]bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := map[string]map[int64]bool{}
	for name, keys := range w.acked {
		out[name] = map[int64]bool{}
		for k, at := range keys {
			if !at.Before(since) {
				out[name][k] = true
			}
		}
	}
	return out
}

// end stops the writers and fails t if any write failed.
func (w *racers) end(t *testing.T) {
	t.Helper()
	close(w.stop)
	w.wg.Wait()
	require.Positive(t, w.writes())
	require.Empty(t, w.errs, "writes through the gateway failed")
}
