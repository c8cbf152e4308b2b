package copier

import (
	"context"
	"log/slog"
	"strconv"
	"testing"
	"time"

	"github.com/milvus-io/milvus-sdk-go/v2/entity"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"

	"github.com/zdm-io/zdm/pkg/milvusx"
	"github.com/zdm-io/zdm/pkg/natsbus"
	"github.com/zdm-io/zdm/pkg/telemetry"
	"github.com/zdm-io/zdm/pkg/verify"
	"github.com/zdm-io/zdm/pkg/ztest"
	eventspb "github.com/zdm-io/zdm/proto/zdm/events/v1"
	zdmpb "github.com/zdm-io/zdm/proto/zdm/v1"
)

// TestIntegrationWorkersCopyUnits plans a copy onto a real work queue and
// lets two copiers pull the units; one is stopped mid-unit, and the other
// finishes its unit from the checkpoint. The target then equals the
// source, with no row twice.
func TestIntegrationWorkersCopyUnits(t *testing.T) {
	ztest.Integration(t)
	tier := ztest.PrimaryTier(t)
	bus, _ := ztest.Bus(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	p := ztest.NewPair(t, tier)
	db := p.Source.Database
	seed(t, ctx, p.Source.Client)
	fill(t, ctx, p.Source.Client, "", 1, seededRows-500)
	fill(t, ctx, p.Source.Client, "spring", seededRows-499, 500)
	// Standalone Milvus queries only loaded collections.
	idx, err := entity.NewIndexFlat(entity.L2)
	require.NoError(t, err)
	require.NoError(t, p.Source.Client.CreateIndex(ctx, "events", "emb", idx, false))
	require.NoError(t, p.Source.Client.LoadCollection(ctx, "events", false))
	_, err = PrepareTarget(ctx, p.Source.Client, p.Target.Client, PrepareOptions{Databases: []string{db}})
	require.NoError(t, err)

	reg := ztest.Registry(t, bus, map[string]string{"src": tier.Source, "tgt": tier.Target})
	src, err := milvusx.Connect(ctx, &zdmpb.ClusterConnection{Endpoint: tier.Source}, "")
	require.NoError(t, err)
	defer src.Close()
	prop := telemetry.Propagator()
	planOpts := PlanOptions{Databases: []string{db}, UnitRows: 400, BatchBytes: 4 << 10, SourceClusterID: "src", TargetClusterID: "tgt"}
	units, err := PlanCopy(ctx, bus.JS, prop, "m1", src, planOpts)
	require.NoError(t, err)
	// items: _default (2500 rows -> 7 units) and spring (500 -> 2) and
	// autumn (empty -> 1); events: empty, partition key -> 1.
	require.Len(t, units, 11)
	// Rows written after planning (possible in a zero-downtime copy) must
	// not change the units of a plan made again after a crash: they fall
	// in the open last unit.
	fill(t, ctx, p.Source.Client, "", seededRows+1, 400)
	again, err := PlanCopy(ctx, bus.JS, prop, "m1", src, planOpts)
	require.NoError(t, err)
	require.Len(t, again, 11)
	// Collections come in the server's order, which may change: compare
	// by unit ID.
	byID := map[string]*eventspb.WorkUnit{}
	for _, u := range units {
		byID[u.GetUnitId()] = u
	}
	for _, u := range again {
		require.NotNil(t, byID[u.GetUnitId()], "unit %s is new", u.GetUnitId())
		first, second := proto.Clone(byID[u.GetUnitId()]).(*eventspb.WorkUnit), proto.Clone(u).(*eventspb.WorkUnit)
		first.ReadTimestamp, second.ReadTimestamp = 0, 0 // each planning reads at a timestamp of its own
		require.True(t, proto.Equal(first, second), "unit %s planned differently:\n%v\n%v", u.GetUnitId(), first, second)
	}
	stream, err := bus.JS.Stream(ctx, natsbus.WorkStream)
	require.NoError(t, err)
	info, err := stream.Info(ctx)
	require.NoError(t, err)
	require.Equal(t, uint64(11), info.State.Msgs, "planning again publishes no duplicate unit")

	logger := ztest.Logger(t, slog.LevelWarn)
	worker := func(id string) *Worker {
		return &Worker{ID: id, JS: bus.JS, Propagator: prop, Logger: logger, AckWait: 2 * time.Second, Registry: reg}
	}
	// Copier A runs until it has written part of a unit, then stops dead.
	ctxA, stopA := context.WithCancel(ctx)
	doneA := make(chan error, 1)
	go func() { doneA <- worker("a").Run(ctxA) }()
	ztest.Eventually(t, 30*time.Second, func() bool {
		kv, err := bus.JS.KeyValue(ctx, natsbus.CheckpointsBucket.Name)
		if err != nil {
			return false
		}
		e, err := kv.Get(ctx, units[0].GetUnitId())
		return err == nil && len(e.Value()) > 0
	}, "copier a wrote no checkpoint")
	stopA()
	require.NoError(t, <-doneA)

	ctxB, stopB := context.WithCancel(ctx)
	defer stopB()
	doneB := make(chan error, 1)
	go func() { doneB <- worker("b").Run(ctxB) }()

	cons, err := bus.JS.OrderedConsumer(ctx, natsbus.EventsStream, jetstream.OrderedConsumerConfig{FilterSubjects: []string{natsbus.EventSubject("m1", natsbus.EventUnit)}})
	require.NoError(t, err)
	seen := map[string]bool{}
	deadline, _ := ctx.Deadline()
	ztest.Eventually(t, time.Until(deadline), func() bool {
		batch, err := cons.Fetch(20, jetstream.FetchMaxWait(time.Second))
		require.NoError(t, err)
		for msg := range batch.Messages() {
			var d eventspb.WorkUnitDone
			_, err := natsbus.Decode(ctx, prop, msg, &d)
			require.NoError(t, err)
			seen[d.GetUnitId()] = true
		}
		return len(seen) == len(units)
	}, "units done: %s of %d", lazy(func() string { return strconv.Itoa(len(seen)) }), len(units))
	stopB()
	require.NoError(t, <-doneB)

	rs, rt := mustRaw(t, p.Source.Client), mustRaw(t, p.Target.Client)
	for _, name := range []string{"items", "events"} {
		table, err := milvusx.DescribeTable(ctx, rs, db, name)
		require.NoError(t, err)
		report, err := verify.Collection(ctx, rs, rt, table, 0)
		require.NoError(t, err)
		require.True(t, report.Match(), report.String())
	}
	items, err := milvusx.DescribeTable(ctx, rt, db, "items")
	require.NoError(t, err)
	n, err := verify.Count(ctx, rt, items)
	require.NoError(t, err)
	require.Equal(t, int64(seededRows+400), n)
}

// lazy prints as what it returns when a message is formatted, so a
// failure message passed before polling shows what the last poll saw.
type lazy func() string

func (f lazy) String() string { return f() }

// TestIntegrationPlanRefusesUnloadedSource plans a copy of a collection
// that is not loaded on standalone Milvus, which cannot read it: planning
// fails and says why and what to do.
func TestIntegrationPlanRefusesUnloadedSource(t *testing.T) {
	ztest.Integration(t)
	tier := ztest.PrimaryTier(t)
	bus, _ := ztest.Bus(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	p := ztest.NewPair(t, tier)
	schema := entity.NewSchema().WithName("cold").
		WithField(entity.NewField().WithName("id").WithDataType(entity.FieldTypeInt64).WithIsPrimaryKey(true)).
		WithField(entity.NewField().WithName("vec").WithDataType(entity.FieldTypeFloatVector).WithDim(4))
	require.NoError(t, p.Source.Client.CreateCollection(ctx, schema, 1))
	src, err := milvusx.Connect(ctx, &zdmpb.ClusterConnection{Endpoint: tier.Source}, "")
	require.NoError(t, err)
	defer src.Close()
	_, err = PlanCopy(ctx, bus.JS, telemetry.Propagator(), "m-cold", src, PlanOptions{Databases: []string{p.Source.Database}})
	require.ErrorContains(t, err, p.Source.Database+".cold is not loaded")
	require.ErrorContains(t, err, "load it on the source")
}
