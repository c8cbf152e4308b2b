package main_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/milvus-io/milvus-sdk-go/v2/client"
	"github.com/milvus-io/milvus-sdk-go/v2/entity"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/zdm-io/zdm/pkg/ztest"
	streamerpb "github.com/zdm-io/zdm/proto/zdm/streamer/v1"
	zdmpb "github.com/zdm-io/zdm/proto/zdm/v1"
)

// switchRig is a ZERO_DOWNTIME migration of database shop whose parts run
// as processes of their own on one NATS: the coordinator with the copier
// and the lag monitor, gateway replicas (no applier in them) and one
// applier.
type switchRig struct {
	processes
	src, tgt string
	coord    *binaryProcess
	gates    []*binaryProcess
	gws      []string // the replicas' Milvus addresses
	gwCtl    []string // their gRPC addresses
	view     string   // the first replica's target view
	applier  *binaryProcess
	mig      zdmpb.MigrationServiceClient
}

func newSwitchRig(t *testing.T, ctx context.Context, srcAddr, tgtAddr string, replicas int) *switchRig {
	t.Helper()
	_, nats := ztest.Bus(t)
	seedShop(t, ctx, srcAddr, 2000)
	r := &switchRig{processes: processes{t, nats.ClientURL()}, src: srcAddr, tgt: tgtAddr, view: freeAddr(t)}
	coordAddr := freeAddr(t)
	r.coord = r.zdm("coordinator,snapshot-copier,lag-monitor", coordAddr, "-coordinator-event-ack-wait", "1s")
	for i := range replicas {
		gw, ctl := freeAddr(t), freeAddr(t)
		args := []string{"-apply=false", "-gateway-cluster", "src", "-gateway-addr", gw}
		if i == 0 {
			args = append(args, "-gateway-target-view-addr", r.view)
		}
		r.gates, r.gws, r.gwCtl = append(r.gates, r.zdm("cdc-streamer", ctl, args...)), append(r.gws, gw), append(r.gwCtl, ctl)
	}
	r.startApplier()
	for i, ctl := range r.gwCtl {
		waitHealthy(t, ctl, r.gates[i].logs) // its gateway listens
	}
	waitHealthy(t, coordAddr, r.coord.logs)
	conn := dial(t, coordAddr)
	r.mig = zdmpb.NewMigrationServiceClient(conn)
	registerPair(t, ctx, zdmpb.NewClusterServiceClient(conn), srcAddr, tgtAddr)
	return r
}

func (r *switchRig) startApplier() {
	r.applier = r.zdm("cdc-streamer", freeAddr(r.t), "-log-level", "debug")
}

// migrate creates the migration and waits until it is ready to finalise.
func (r *switchRig) migrate(ctx context.Context, id string) {
	r.t.Helper()
	createWhenServed(r.t, ctx, r.mig, &zdmpb.CreateMigrationRequest{MigrationId: id, Type: zdmpb.MigrationType_MIGRATION_TYPE_ZERO_DOWNTIME,
		SourceClusterId: "src", TargetClusterId: "tgt", Options: &zdmpb.MigrationOptions{WorkUnitRows: 1000}})
	m := waitMigration(r.t, ctx, r.mig, id, 4*time.Minute, func(m *zdmpb.Migration) bool {
		return m.GetState() == zdmpb.MigrationState_MIGRATION_STATE_READY_TO_FINALIZE || terminal(m)
	}, nil)
	require.Equal(r.t, zdmpb.MigrationState_MIGRATION_STATE_READY_TO_FINALIZE, m.GetState(), "error: %v", m.GetError())
}

// switchover asks for a switchover and waits until it is decided: the
// migration is VERIFYING or COMPLETED (switched) or READY_TO_FINALIZE
// again (aborted).
func (r *switchRig) switchover(ctx context.Context, id string, maxPause time.Duration) *zdmpb.Migration {
	r.t.Helper()
	resp, err := r.mig.Switchover(ctx, &zdmpb.SwitchoverRequest{MigrationId: id, MaxWritePause: durationpb.New(maxPause)})
	require.NoError(r.t, err)
	attempt := resp.GetMigration().GetSwitchover().GetAttempt()
	return waitMigration(r.t, ctx, r.mig, id, time.Minute, func(m *zdmpb.Migration) bool {
		switch m.GetState() {
		case zdmpb.MigrationState_MIGRATION_STATE_READY_TO_FINALIZE:
			return m.GetSwitchover().GetAttempt() == attempt && m.GetSwitchover().GetAbortReason() != ""
		case zdmpb.MigrationState_MIGRATION_STATE_SWITCHING_OVER:
			return false
		}
		return true
	}, nil)
}

// clients are applications on the gateways: writers inserting rows of
// their own (and deleting some of them again), each keeping a record of
// every write acknowledged, and readers querying and searching. Every
// call must succeed.
type clients struct {
	stop   chan struct{}
	wg     sync.WaitGroup
	mu     sync.Mutex
	errs   []error
	rec    []map[int64]string // per writer: key -> title; "" when deleted
	writes atomic.Int64
	reads  atomic.Int64
}

// startClients starts writers and readers, spread over gws; each writer
// writes about every interval.
func startClients(t *testing.T, ctx context.Context, gws []string, writers, readers int, interval time.Duration) *clients {
	t.Helper()
	cl := &clients{stop: make(chan struct{}), rec: make([]map[int64]string, writers)}
	connect := func(i int) client.Client {
		cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		c, err := client.NewClient(cctx, client.Config{Address: gws[i%len(gws)], DBName: "shop"})
		require.NoError(t, err, "connect to the gateway at %s", gws[i%len(gws)])
		t.Cleanup(func() { c.Close() })
		return c
	}
	loop := func(op func(i int) error) {
		cl.wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-cl.stop:
					return
				case <-ctx.Done():
					return
				default:
				}
				if err := op(i); err != nil {
					cl.mu.Lock()
					cl.errs = append(cl.errs, err)
					cl.mu.Unlock()
				}
			}
		})
	}
	for w := range writers {
		c, rec := connect(w), map[int64]string{}
		cl.rec[w] = rec
		loop(func(i int) error {
			defer time.Sleep(interval)
			id := int64(10_000_000*(w+1) + i)
			if i%10 == 9 {
				// Delete one of this writer's earlier rows.
				gone := id - 5
				if err := c.DeleteByPks(ctx, "items", "", entity.NewColumnInt64("id", []int64{gone})); err != nil {
					return fmt.Errorf("writer %d: delete %d: %w", w, gone, err)
				}
				cl.mu.Lock()
				rec[gone] = ""
				cl.mu.Unlock()
				cl.writes.Add(1)
				return nil
			}
			title := fmt.Sprintf("w%d.%d", w, i)
			v := make([]float32, 16)
			for j := range v {
				v[j] = float32(w) + float32(j)/16
			}
			if _, err := c.Insert(ctx, "items", "", entity.NewColumnInt64("id", []int64{id}), entity.NewColumnVarChar("title", []string{title}),
				entity.NewColumnFloatVector("vec", 16, [][]float32{v})); err != nil {
				return fmt.Errorf("writer %d: insert %d: %w", w, id, err)
			}
			cl.mu.Lock()
			rec[id] = title
			cl.mu.Unlock()
			cl.writes.Add(1)
			return nil
		})
	}
	for rd := range readers {
		c := connect(writers + rd)
		loop(func(i int) error {
			defer time.Sleep(20 * time.Millisecond)
			if i%2 == 0 {
				if _, err := c.Query(ctx, "items", nil, "id < 100", []string{"id", "title"}); err != nil {
					return fmt.Errorf("reader %d: query: %w", rd, err)
				}
			} else {
				sp, err := entity.NewIndexFlatSearchParam()
				if err != nil {
					return err
				}
				v := make([]float32, 16)
				if _, err := c.Search(ctx, "items", nil, "", []string{"title"}, []entity.Vector{entity.FloatVector(v)}, "vec", entity.L2, 5, sp); err != nil {
					return fmt.Errorf("reader %d: search: %w", rd, err)
				}
			}
			cl.reads.Add(1)
			return nil
		})
	}
	return cl
}

// end stops the clients and fails t if any call failed.
func (cl *clients) end(t *testing.T) {
	t.Helper()
	close(cl.stop)
	cl.wg.Wait()
	require.Positive(t, cl.writes.Load())
	require.Empty(t, cl.errs, "calls through the gateways failed")
}

// check asserts that the cluster at addr holds exactly what every writer
// recorded: each row it wrote, with its title, and none it deleted.
func (cl *clients) check(t *testing.T, ctx context.Context, addr string) {
	t.Helper()
	c, err := client.NewClient(ctx, client.Config{Address: addr, DBName: "shop"})
	require.NoError(t, err)
	defer c.Close()
	for w, rec := range cl.rec {
		var ids []string
		for id := range rec {
			ids = append(ids, fmt.Sprint(id))
		}
		got := map[int64]string{}
		for from := 0; from < len(ids); from += 1000 {
			part := ids[from:min(from+1000, len(ids))]
			rs, err := c.Query(ctx, "items", nil, "id in ["+strings.Join(part, ",")+"]", []string{"id", "title"},
				client.WithSearchQueryConsistencyLevel(entity.ClStrong))
			require.NoError(t, err)
			keys, titles := rs.GetColumn("id").(*entity.ColumnInt64).Data(), rs.GetColumn("title").(*entity.ColumnVarChar).Data()
			for i, k := range keys {
				got[k] = titles[i]
			}
		}
		for id, title := range rec {
			if title == "" {
				require.NotContains(t, got, id, "writer %d deleted %d", w, id)
			} else {
				require.Equal(t, title, got[id], "writer %d wrote %d", w, id)
			}
		}
	}
}

// TestE2ESwitchoverPrimaryTier: 8 writers and 2 readers on two gateway
// replicas run through a whole ZERO_DOWNTIME migration on standalone
// Milvus 2.3 that ends in a switchover. No call fails; the write pause is
// under max_write_pause; afterwards the clients write to the target
// through the same connections, the verification after the switch finds
// the sides equal, and the target holds every write each writer recorded.
// The read-only view of the target answers searches and refuses writes
// while syncing.
func TestE2ESwitchoverPrimaryTier(t *testing.T) {
	ztest.Integration(t)
	tier := ztest.WholePrimaryTier(t)
	for _, addr := range []string{tier.Source, tier.Target} {
		t.Cleanup(func() { dropAll(t, addr) })
	}
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	r := newSwitchRig(t, ctx, tier.Source, tier.Target, 2)
	cl := startClients(t, ctx, r.gws, 8, 2, 20*time.Millisecond)
	r.migrate(ctx, "sw")
	checkTargetView(t, ctx, r.view)

	var m *zdmpb.Migration
	for attempt := 1; ; attempt++ {
		m = r.switchover(ctx, "sw", time.Second)
		if m.GetState() != zdmpb.MigrationState_MIGRATION_STATE_READY_TO_FINALIZE {
			break
		}
		// An abort is the product working: the writes went back to the
		// source. This machine is shared; a second try is what an
		// operator would do.
		t.Logf("switchover attempt %d aborted: %s", attempt, m.GetSwitchover().GetAbortReason())
		require.Less(t, attempt, 3, "three switchovers aborted")
	}
	t.Logf("switched: pause %s, replicas %v, held writes %d", m.GetSwitchoverWritePause().AsDuration(), m.GetSwitchover().GetGatewayIds(), m.GetSwitchover().GetHeldWrites())
	require.Len(t, m.GetSwitchover().GetGatewayIds(), 2, "both replicas switched")
	require.Less(t, m.GetSwitchoverWritePause().AsDuration(), time.Second)
	// Writes go on, now to the target, through the same connections.
	before := cl.writes.Load()
	ztest.Eventually(t, 2*time.Second, func() bool { return cl.writes.Load() > before+50 },
		"writes do not continue after the switch: %d then %s", before, lazy(func() string { return fmt.Sprint(cl.writes.Load()) }))
	for _, ctl := range r.gwCtl {
		st, err := streamerpb.NewGatewayControlServiceClient(dial(t, ctl)).GetGatewayStatus(ctx, &streamerpb.GetGatewayStatusRequest{})
		require.NoError(t, err)
		require.Equal(t, "tgt", st.GetUpstreamClusterId())
	}
	m = waitMigration(t, ctx, r.mig, "sw", 3*time.Minute, terminal, nil)
	require.Equal(t, zdmpb.MigrationState_MIGRATION_STATE_COMPLETED, m.GetState(), "error: %v", m.GetError())
	cl.end(t)
	verifyStage := m.GetStages()[len(m.GetStages())-1]
	require.Equal(t, zdmpb.StageState_STAGE_STATE_SUCCEEDED, verifyStage.GetState(), verifyStage.GetMessage())
	require.Contains(t, verifyStage.GetMessage(), "verified equal after the switchover")
	t.Logf("%d writes and %d reads, none failed; %s", cl.writes.Load(), cl.reads.Load(), verifyStage.GetMessage())
	cl.check(t, ctx, tier.Target)
}

// checkTargetView: the read-only view answers a search on the syncing
// target and refuses an insert, naming the migration.
func checkTargetView(t *testing.T, ctx context.Context, addr string) {
	t.Helper()
	c, err := client.NewClient(ctx, client.Config{Address: addr, DBName: "shop"})
	require.NoError(t, err)
	defer c.Close()
	sp, err := entity.NewIndexFlatSearchParam()
	require.NoError(t, err)
	res, err := c.Search(ctx, "items", nil, "", []string{"title"}, []entity.Vector{entity.FloatVector(make([]float32, 16))}, "vec", entity.L2, 3, sp)
	require.NoError(t, err)
	require.Len(t, res, 1)
	require.Equal(t, 3, res[0].ResultCount)
	_, err = c.Insert(ctx, "items", "", entity.NewColumnInt64("id", []int64{1}), entity.NewColumnVarChar("title", []string{"x"}),
		entity.NewColumnFloatVector("vec", 16, [][]float32{make([]float32, 16)}))
	require.ErrorContains(t, err, `target is syncing for migration "sw"`)
}

// TestE2ESwitchoverAbortAndReplicaLoss: with the applier stopped the
// drain cannot finish, so the switchover aborts after max_write_pause:
// the held writes go to the source and none is lost. A gateway replica
// killed with -9 is dropped from the job after its TTL, with a note in
// the history. With the applier back, the next switchover succeeds and
// the target holds every write.
func TestE2ESwitchoverAbortAndReplicaLoss(t *testing.T) {
	ztest.Integration(t)
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	r := newSwitchRig(t, ctx, ztest.NewServer(t, "lite3"), ztest.NewServer(t, "lite3"), 2)
	cl := startClients(t, ctx, r.gws[:1], 4, 1, 20*time.Millisecond)
	r.migrate(ctx, "ab")

	r.kill(r.gates[1])
	m := waitMigration(t, ctx, r.mig, "ab", 30*time.Second, func(m *zdmpb.Migration) bool {
		return historyMentions(m, "was dropped")
	}, nil)
	require.Equal(t, zdmpb.MigrationState_MIGRATION_STATE_READY_TO_FINALIZE, m.GetState())

	r.kill(r.applier)
	m = r.switchover(ctx, "ab", 500*time.Millisecond)
	require.Equal(t, zdmpb.MigrationState_MIGRATION_STATE_READY_TO_FINALIZE, m.GetState())
	require.Contains(t, m.GetSwitchover().GetAbortReason(), "max_write_pause 500ms")
	require.True(t, historyMentions(m, "aborted"), "the history says why")
	time.Sleep(time.Second) // writes go on to the source

	r.startApplier()
	// It takes over once the dead applier's lease expires.
	ztest.Eventually(t, 30*time.Second, func() bool { return strings.Contains(r.applier.logs.String(), "applier started") }, "no applier took over")
	// As an operator would, switch once it has caught up.
	started := time.Now()
	waitMigration(t, ctx, r.mig, "ab", time.Minute, func(m *zdmpb.Migration) bool {
		return m.GetLag().GetMeasureTime().AsTime().After(started) && m.GetLag().GetLag().AsDuration() < time.Second
	}, nil)
	m = r.switchover(ctx, "ab", 5*time.Second)
	require.Equal(t, int32(2), m.GetSwitchover().GetAttempt())
	require.NotEqual(t, zdmpb.MigrationState_MIGRATION_STATE_READY_TO_FINALIZE, m.GetState(), "abort: %s", m.GetSwitchover().GetAbortReason())
	m = waitMigration(t, ctx, r.mig, "ab", 3*time.Minute, terminal, nil)
	require.Equal(t, zdmpb.MigrationState_MIGRATION_STATE_COMPLETED, m.GetState(), "error: %v", m.GetError())
	cl.end(t)
	cl.check(t, ctx, r.tgt)
}

// historyMentions reports whether an entry of m's history says s.
func historyMentions(m *zdmpb.Migration, s string) bool {
	for _, h := range m.GetHistory() {
		if strings.Contains(h.GetReason(), s) {
			return true
		}
	}
	return false
}
