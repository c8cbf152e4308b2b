package streamer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/zdm-io/zdm/pkg/apierr"
	"github.com/zdm-io/zdm/pkg/milvusx"
	"github.com/zdm-io/zdm/pkg/natsbus"
	"github.com/zdm-io/zdm/pkg/registry"
	"github.com/zdm-io/zdm/pkg/stage"
	"github.com/zdm-io/zdm/pkg/telemetry"
	eventspb "github.com/zdm-io/zdm/proto/zdm/events/v1"
	zdmpb "github.com/zdm-io/zdm/proto/zdm/v1"
)

// The applier replays a ZERO_DOWNTIME migration's captured changes on its
// target from the moment the copy is done (SYNCING) until stop sync has
// drained them. Any streamer process may run it; a lease in the appliers
// bucket makes one of them do so at a time, and another takes over
// within the lease's TTL when it dies. Changes are read in stream order,
// which for changes to the same keys is the order the source applied them
// (the gateway serialises those), and applied one by one. The position
// (the last stream sequence applied) and the applied watermark are stored
// after the changes they cover are applied, so a restarted applier
// replays at most a few changes again, idempotently, and never skips one.

const (
	// leaseRenew is how often an applier renews its lease (the bucket's
	// TTL is a few times longer).
	leaseRenew = 2 * time.Second
	// scanEvery is how often each streamer looks for migrations to apply.
	scanEvery = time.Second
	// fetchMax is how many changes one read takes.
	fetchMax = 256
	// applyPoll is how long the applier waits for changes when there are
	// none, and so how soon it sees its migration's state change.
	applyPoll = 100 * time.Millisecond
)

// applying is a migration state in which its changes are applied.
func applying(m *zdmpb.Migration) bool {
	if m.GetType() != zdmpb.MigrationType_MIGRATION_TYPE_ZERO_DOWNTIME {
		return false
	}
	switch m.GetState() {
	case zdmpb.MigrationState_MIGRATION_STATE_SYNCING, zdmpb.MigrationState_MIGRATION_STATE_READY_TO_FINALIZE,
		zdmpb.MigrationState_MIGRATION_STATE_STOPPING_SYNC, zdmpb.MigrationState_MIGRATION_STATE_SWITCHING_OVER:
		return true
	}
	return false
}

// appliers starts an applier for every migration that needs one and whose
// lease this process wins.
type appliers struct {
	id          string
	js          jetstream.JetStream
	prop        propagation.TextMapPropagator
	tracer      trace.Tracer
	metrics     *streamMetrics
	log         *slog.Logger
	reg         *registry.Registry
	migrations  *natsbus.Table[*zdmpb.Migration]
	positions   *natsbus.Table[*eventspb.AppliedPosition]
	leases      jetstream.KeyValue
	gateways    jetstream.KeyValue
	switchovers jetstream.KeyValue

	mu      sync.Mutex
	running map[string]context.CancelFunc
	wg      sync.WaitGroup
}

// run scans for migrations to apply until ctx ends, then waits for the
// appliers it started.
func (a *appliers) run(ctx context.Context) {
	t := time.NewTicker(scanEvery)
	defer t.Stop()
	for {
		if err := a.scan(ctx); err != nil && ctx.Err() == nil {
			a.log.Warn("look for migrations to apply", slog.Any("error", err))
		}
		select {
		case <-ctx.Done():
			a.wg.Wait()
			return
		case <-t.C:
		}
	}
}

func (a *appliers) scan(ctx context.Context) error {
	all, err := a.migrations.List(ctx)
	if err != nil {
		return err
	}
	for _, e := range all {
		m := e.Val
		id := m.GetMigrationId()
		a.mu.Lock()
		_, busy := a.running[id]
		a.mu.Unlock()
		if busy || !applying(m) {
			continue
		}
		rev, err := a.leases.Create(ctx, id, []byte(a.id))
		if errors.Is(err, jetstream.ErrKeyExists) {
			continue // another process applies it
		}
		if err != nil {
			// The next scan tries again; the other migrations go on.
			if ctx.Err() == nil {
				a.log.Warn("applier: take the lease; will retry", slog.String("migration", id), slog.Any("error", err))
			}
			continue
		}
		actx, cancel := context.WithCancel(ctx)
		a.mu.Lock()
		a.running[id] = cancel
		a.mu.Unlock()
		a.wg.Go(func() {
			defer func() {
				cancel()
				a.mu.Lock()
				delete(a.running, id)
				a.mu.Unlock()
				dctx, dcancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
				// The lease expires at its TTL if this fails.
				_ = a.leases.Delete(dctx, id)
				dcancel()
			}()
			a.log.Info("applier started", slog.String("migration", id))
			err := a.apply(actx, m, rev)
			switch {
			case err == nil || actx.Err() != nil:
				a.log.Info("applier stopped", slog.String("migration", id))
			default:
				a.log.Error("applier stopped", slog.String("migration", id), slog.Any("error", err))
			}
		})
	}
	return nil
}

// errEnded ends an applier whose migration left the applying states.
var errEnded = errors.New("migration no longer syncing")

// apply runs one migration's applier until its migration stops applying,
// its lease is lost or ctx ends.
func (a *appliers) apply(ctx context.Context, m *zdmpb.Migration, leaseRev uint64) (err error) {
	id := m.GetMigrationId()
	// One span for the applier's whole run, from the start of sync (or
	// this replica taking the lease) to the drain: what it publishes is
	// in the migration's trace.
	ctx, sp := telemetry.StartMigrationSpan(ctx, a.tracer, m, "apply changes", attribute.String("zdm.applier_id", a.id))
	defer func() { telemetry.End(sp, err) }()
	defer a.metrics.backlog.DeleteLabelValues(id) // another replica, or none, has it now
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	// Keep the lease.
	go func() {
		t := time.NewTicker(leaseRenew)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			rev, err := a.leases.Update(ctx, id, []byte(a.id), leaseRev)
			if err != nil {
				cancel(fmt.Errorf("lease lost: %w", err))
				return
			}
			leaseRev = rev
		}
	}()
	// Follow the migration's state as it changes: a switchover must be
	// seen within milliseconds.
	state := make(chan *zdmpb.Migration, 1)
	state <- m
	w, err := a.migrations.KV().Watch(ctx, id, jetstream.UpdatesOnly())
	if err != nil {
		return fmt.Errorf("watch migration: %w", err)
	}
	go func() {
		defer func() { _ = w.Stop() }() // the watch only reads: stopping it has nothing to undo
		for e := range w.Updates() {
			if e == nil {
				continue
			}
			cur, err := a.migrations.Decode(e)
			if e.Operation() != jetstream.KeyValuePut || (err == nil && !applying(cur)) {
				cancel(errEnded)
				return
			}
			if err != nil {
				continue
			}
			select {
			case <-state:
			default:
			}
			state <- cur
		}
	}()

	conn, err := a.reg.Resolve(ctx, m.GetTargetClusterId())
	if err != nil {
		return err
	}
	var tgt *milvusx.Client
	if !a.untilDone(ctx, id, "target does not answer", func() (err error) {
		tgt, err = milvusx.Open(ctx, conn, "")
		return err
	}) {
		return nil
	}
	defer stage.CloseClients(ctx, a.log, tgt)
	if err := a.loadTarget(ctx, m, tgt); err != nil || ctx.Err() != nil {
		return err
	}
	rp := newReplayer(tgt.Raw)

	pos, _, err := a.positions.Get(ctx, id)
	if errors.Is(err, apierr.ErrNotFound) {
		pos, err = &eventspb.AppliedPosition{MigrationId: id}, nil
	}
	if err != nil {
		return err
	}
	wm := newWatermark(m.GetSourceClusterId(), id, pos.GetWatermark())
	cons, err := natsbus.ChangesReader(id, pos.GetStreamSequence()+1).Create(ctx, a.js)
	if err != nil {
		return fmt.Errorf("change stream: %w", err)
	}
	cur, purged := m, time.Now()
	sw := &switchover{a: a, reg: a.reg, tgt: tgt}
	defer sw.close()
	seen := newReplicas(id)
	for ctx.Err() == nil {
		select {
		case cur = <-state:
		default:
		}
		wait := applyPoll
		if cur.GetState() == zdmpb.MigrationState_MIGRATION_STATE_SWITCHING_OVER {
			wait = switchPoll
		}
		batch, err := cons.Fetch(fetchMax, jetstream.FetchMaxWait(wait))
		if err != nil {
			if ctx.Err() != nil {
				break
			}
			return fmt.Errorf("read changes: %w", err)
		}
		var evs []*eventspb.ChangeEvent
		var last uint64
		var sampled []trace.Link // gateway spans of sampled changes (see traceEvery)
		for msg := range batch.Messages() {
			var b eventspb.ChangeBatch
			mctx, err := natsbus.Decode(ctx, a.prop, msg, &b)
			if err != nil {
				return fmt.Errorf("malformed change on %s: %w", msg.Subject(), err)
			}
			md, err := msg.Metadata()
			if err != nil {
				return err
			}
			if sc := trace.SpanContextFromContext(mctx); sc.IsValid() && sc.SpanID() != sp.SpanContext().SpanID() {
				sampled = append(sampled, trace.Link{SpanContext: sc})
			}
			evs, last = append(evs, b.GetChanges()...), md.Sequence.Stream
		}
		n := len(evs)
		if last > pos.GetStreamSequence() {
			actx := ctx
			var bsp trace.Span
			if len(sampled) > 0 {
				// A child of the gateway's span, so the trace shows the
				// change's path; linked to the applier's run.
				links := append(sampled[1:], trace.Link{SpanContext: sp.SpanContext()})
				actx, bsp = a.tracer.Start(trace.ContextWithSpanContext(ctx, sampled[0].SpanContext), "apply sampled changes",
					trace.WithLinks(links...), trace.WithAttributes(attribute.Int("zdm.changes", n), attribute.Int64("zdm.stream_sequence", int64(last))))
			}
			rows, err := rp.applyAll(actx, evs, a.retry(ctx, cur))
			if bsp != nil {
				telemetry.End(bsp, err)
			}
			if err != nil {
				if ctx.Err() != nil {
					break
				}
				return err
			}
			pos.StreamSequence = last
			pos.ChangesApplied += int64(n)
			a.metrics.applied.WithLabelValues(id).Add(float64(n))
			pos.RowsApplied += rows
		}
		if ctx.Err() != nil {
			break
		}
		info, err := cons.Info(ctx)
		pending := err != nil || info.NumPending > 0
		var backlog uint64
		if err == nil {
			backlog = info.NumPending
			a.metrics.backlog.WithLabelValues(id).Set(float64(backlog))
		}
		gws, err := natsbus.Gateways(ctx, a.gateways)
		if err != nil {
			// Without the replicas' states neither the watermark nor a
			// switchover can move: keep applying, try again next read.
			a.log.Warn("applier: read gateway replicas; will retry", slog.String("migration", id), slog.Any("error", err))
			continue
		}
		for _, ev := range seen.changes(gws) {
			if err := a.publish(ctx, natsbus.EventSubject(id, natsbus.EventGateway), ev.GetEventId(), ev); err != nil {
				a.log.Warn("applier: report a gateway replica joining or leaving", slog.Any("error", err))
			}
		}
		if cur.GetState() == zdmpb.MigrationState_MIGRATION_STATE_SWITCHING_OVER {
			if err := sw.step(ctx, cur, gws, pos.GetStreamSequence(), pending, backlog); err != nil {
				a.log.Warn("applier: switchover step; will retry", slog.String("migration", id), slog.Any("error", err))
			}
		}
		w, drained := wm.advance(gws, pos.GetStreamSequence())
		drained = drained && !pending && cur.GetState() == zdmpb.MigrationState_MIGRATION_STATE_STOPPING_SYNC
		if n == 0 && w == pos.GetWatermark() && !drained {
			continue
		}
		pos.Watermark, pos.Drained, pos.ApplierId, pos.Time = w, drained, a.id, timestamppb.Now()
		if w != 0 {
			pos.WatermarkTime = timestamppb.New(milvusx.PhysicalTime(w))
		}
		if _, _, err := a.positions.Upsert(ctx, id, func(p *eventspb.AppliedPosition) error {
			proto.Reset(p)
			proto.Merge(p, pos)
			return nil
		}); err != nil {
			a.log.Warn("applier: store position; will retry", slog.String("migration", id), slog.Any("error", err))
			continue
		}
		if time.Since(purged) > purgeEvery && pos.GetStreamSequence() > 0 {
			// Applied changes are not needed again: free their space, so
			// the stream's byte limit bounds only what is not applied.
			if err := a.purgeApplied(ctx, id, pos.GetStreamSequence()); err != nil {
				a.log.Warn("applier: drop applied changes; will retry", slog.String("migration", id), slog.Any("error", err))
			}
			purged = time.Now()
		}
		if drained {
			if err := a.reportDrained(ctx, cur); err != nil {
				a.log.Warn("applier: report drained; will retry", slog.String("migration", id), slog.Any("error", err))
			}
		}
	}
	if errors.Is(context.Cause(ctx), errEnded) {
		return nil
	}
	return context.Cause(ctx)
}

// retry returns how the applier makes each write to the target: again
// and again with backoff for as long as the target fails, until ctx ends.
// While the target does not answer, the coordinator hears of it, as from
// the copy.
func (a *appliers) retry(ctx context.Context, m *zdmpb.Migration) func(func() error) error {
	return func(write func() error) error {
		for attempt := uint64(1); ; attempt++ {
			err := write()
			if err == nil {
				return nil
			}
			if ctx.Err() != nil {
				return ctx.Err()
			}
			a.log.Warn("applier: change not applied; will retry", slog.String("migration", m.GetMigrationId()),
				slog.Uint64("attempt", attempt), slog.Any("error", err))
			fail := &eventspb.WorkFailed{EventId: fmt.Sprintf("failed-%s-%d-a%d", m.GetMigrationId(), time.Now().UnixNano(), attempt),
				MigrationId: m.GetMigrationId(), Stage: zdmpb.StageKind_STAGE_KIND_SYNC_INCREMENTAL, Worker: a.id}
			if perr := stage.PublishFailure(ctx, a.js, a.prop, fail, stage.OnTarget(err)); perr != nil {
				a.log.Warn("applier: report failed change", slog.Any("error", perr))
			}
			if err := stage.Sleep(ctx, stage.Backoff(attempt)); err != nil {
				return err
			}
		}
	}
}

// purgeEvery is how often the applier drops the changes it applied.
const purgeEvery = 5 * time.Second

// purgeApplied drops migration's changes up to stream sequence applied.
func (a *appliers) purgeApplied(ctx context.Context, migration string, applied uint64) error {
	s, err := a.js.Stream(ctx, natsbus.ChangesStream)
	if err != nil {
		return err
	}
	return s.Purge(ctx, jetstream.WithPurgeSubject(natsbus.ChangeFilter(migration)), jetstream.WithPurgeSequence(applied+1))
}

// loadTarget loads the target's collections that are loaded on the source
// before the first change is applied: the copy left them released, and
// from now on clients may read the target (its read-only view, then the
// switchover).
func (a *appliers) loadTarget(ctx context.Context, m *zdmpb.Migration, tgt *milvusx.Client) error {
	conn, err := a.reg.Resolve(ctx, m.GetSourceClusterId())
	if err != nil {
		return err
	}
	a.untilDone(ctx, m.GetMigrationId(), "load the target's collections", func() error {
		src, err := milvusx.Open(ctx, conn, "")
		if err != nil {
			return err
		}
		defer stage.CloseClients(ctx, a.log, src)
		return milvusx.LoadLikeSource(ctx, src, tgt)
	})
	return nil // done, or stopping (the caller sees ctx)
}

// untilDone calls f every two seconds until it succeeds, logging each
// failure as what, and reports whether it did: false when ctx ended first
// (stopping, or the migration ended).
func (a *appliers) untilDone(ctx context.Context, migration, what string, f func() error) bool {
	for {
		err := f()
		if err == nil {
			return true
		}
		a.log.Warn("applier: "+what+"; will retry", slog.String("migration", migration), slog.Any("error", err))
		if stage.Sleep(ctx, 2*time.Second) != nil {
			return false
		}
	}
}

// reportDrained ends the FINALIZE stage of a migration that stopped
// syncing: every change its gateways accepted is on the target.
func (a *appliers) reportDrained(ctx context.Context, m *zdmpb.Migration) error {
	ev := &eventspb.StageCompleted{EventId: fmt.Sprintf("drained-%s-t%d", m.GetMigrationId(), len(m.GetHistory())),
		MigrationId: m.GetMigrationId(), Stage: zdmpb.StageKind_STAGE_KIND_FINALIZE, Success: true, Time: timestamppb.Now()}
	return a.publish(ctx, natsbus.EventSubject(m.GetMigrationId(), natsbus.EventStage), ev.GetEventId(), ev)
}

func (a *appliers) publish(ctx context.Context, subject, id string, m proto.Message) error {
	_, err := natsbus.Publish(ctx, a.js, a.prop, subject, id, m)
	return err
}
