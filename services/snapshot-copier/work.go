package copier

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
	"go.opentelemetry.io/otel/trace/noop"
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

// pausedRetry is how soon a unit of a paused migration comes back.
const pausedRetry = 2 * time.Second

// Worker copies work units pulled from the queue. Any number of workers,
// in any number of processes, share the queue.
type Worker struct {
	ID         string
	JS         jetstream.JetStream
	Propagator propagation.TextMapPropagator
	// Tracer makes a span of each unit copied, in its migration's trace;
	// nil makes none.
	Tracer trace.Tracer
	Logger *slog.Logger
	// Replicas of the checkpoint bucket.
	Replicas int
	// AckWait is how long a unit held by a copier that stopped answering
	// waits before another copier gets it; copiers report progress well
	// within it. Default 30s.
	AckWait time.Duration
	// BatchBytes caps each insert of a unit that does not set its own;
	// 0 means DefaultBatchBytes.
	BatchBytes int
	// Controls pause and throttle the copy; nil lets it run freely.
	Controls *Controls
	// Status records the unit in hand, for GetCopierStatus; may be nil.
	Status *Status
	// Registry resolves the units' cluster IDs.
	Registry *registry.Registry
	// metrics counts the rows copied; nil counts nothing.
	metrics *copyMetrics

	checkpoints *natsbus.Table[*eventspb.WorkUnitCheckpoint]
	mu          sync.Mutex
	clients     map[string]*milvusx.Client
}

// Run pulls and copies units until ctx is done, one at a time.
func (w *Worker) Run(ctx context.Context) error {
	if w.AckWait == 0 {
		w.AckWait = 30 * time.Second
	}
	cps, err := natsbus.OpenTable(ctx, w.JS, natsbus.CheckpointsBucket, "checkpoint", w.Replicas,
		func() *eventspb.WorkUnitCheckpoint { return &eventspb.WorkUnitCheckpoint{} })
	if err != nil {
		return err
	}
	w.checkpoints = cps
	w.clients = map[string]*milvusx.Client{}
	defer w.closeClients()
	// Every copier process shares the consumer, so each unit goes to one
	// copier at a time.
	cons, err := natsbus.WorkConsumer(w.AckWait).Create(ctx, w.JS)
	if err != nil {
		return fmt.Errorf("work consumer: %w", err)
	}
	for ctx.Err() == nil {
		batch, err := cons.Fetch(1, jetstream.FetchMaxWait(time.Second))
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("fetch work: %w", err)
		}
		for msg := range batch.Messages() {
			w.handle(ctx, msg)
		}
	}
	return nil
}

// closeClients closes the cached clients when the worker stops. Closing
// only releases a connection the worker is done with, so a failure to
// close changes nothing and is dropped.
func (w *Worker) closeClients() {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, c := range w.clients {
		_ = c.Close()
	}
}

func (w *Worker) handle(ctx context.Context, msg jetstream.Msg) {
	var u eventspb.WorkUnit
	ctx, err := natsbus.Decode(ctx, w.Propagator, msg, &u)
	if err != nil {
		w.Logger.ErrorContext(ctx, "malformed work unit dropped", slog.Any("error", err))
		// A unit whose Term or Nak is lost comes back after the ack wait
		// and is handled again, so those errors are dropped here and below.
		_ = msg.Term()
		return
	}
	log := w.Logger.With(slog.String("unit", u.GetUnitId()), slog.String("collection", u.GetDatabase()+"."+u.GetCollection()))
	if errors.Is(w.Controls.Check(ctx, u.GetMigrationId()), errPaused) {
		// Before its span: a paused migration's units come back every few
		// seconds, and each would be a span of no work.
		log.DebugContext(ctx, "migration paused; unit left on the queue")
		_ = msg.NakWithDelay(pausedRetry)
		return
	}
	tracer := w.Tracer
	if tracer == nil {
		tracer = noop.NewTracerProvider().Tracer("")
	}
	ctx, sp := tracer.Start(ctx, "copy unit", trace.WithAttributes(telemetry.MigrationKey.String(u.GetMigrationId()),
		telemetry.DatabaseKey.String(u.GetDatabase()), telemetry.CollectionKey.String(u.GetCollection()),
		attribute.String("zdm.unit_id", u.GetUnitId()), attribute.String("zdm.copier_id", w.ID)))
	w.Status.begin(w.ID, &u)
	err = w.copyUnit(ctx, msg, &u)
	w.Status.end(w.ID, err == nil)
	if errors.Is(err, errPaused) || errors.Is(err, errEnded) {
		sp.SetAttributes(attribute.String("zdm.outcome", err.Error())) // not a failure
		sp.End()
	} else {
		telemetry.End(sp, err)
	}
	if err != nil {
		if ctx.Err() != nil {
			return // stopping: the unit is redelivered to another copier
		}
		if errors.Is(err, errEnded) {
			log.InfoContext(ctx, "migration ended; unit dropped")
			_ = msg.Term()
			return
		}
		if errors.Is(err, errPaused) {
			log.DebugContext(ctx, "migration paused; unit left on the queue")
			_ = msg.NakWithDelay(pausedRetry)
			return
		}
		attempt := stage.Attempt(msg)
		log.WarnContext(ctx, "work unit failed; will retry", slog.Uint64("attempt", attempt), slog.Any("error", err))
		ev := &eventspb.WorkFailed{EventId: fmt.Sprintf("failed-%s-d%d", u.GetUnitId(), attempt), MigrationId: u.GetMigrationId(),
			Stage: zdmpb.StageKind_STAGE_KIND_COPY_DATA, UnitId: u.GetUnitId(), Database: u.GetDatabase(), Collection: u.GetCollection(),
			Range: u.GetRange(), Worker: w.ID}
		if perr := stage.PublishFailure(ctx, w.JS, w.Propagator, ev, err); perr != nil {
			log.WarnContext(ctx, "report failed unit", slog.Any("error", perr))
		}
		_ = msg.NakWithDelay(stage.Backoff(attempt))
		return
	}
	if err := msg.DoubleAck(ctx); err != nil {
		log.WarnContext(ctx, "ack work unit", slog.Any("error", err))
	}
}

// copyUnit copies one unit from its checkpoint on, saving a checkpoint
// after each batch, and announces it done.
func (w *Worker) copyUnit(ctx context.Context, msg jetstream.Msg, u *eventspb.WorkUnit) error {
	cp, rev, err := w.checkpoint(ctx, u.GetUnitId())
	if err != nil {
		return err
	}
	if !cp.GetComplete() {
		if err := w.Controls.Check(ctx, u.GetMigrationId()); err != nil {
			return err
		}
		// A unit with no checkpoint has written nothing. Say that it
		// starts before its first write, so that one that dies after it
		// is checked against the target when it resumes; until then the
		// target is not asked (see CopyOptions.Fresh).
		fresh := rev == 0
		if fresh {
			cp.Time, cp.CopierId = timestamppb.Now(), w.ID
			if rev, err = w.putCheckpoint(ctx, cp, 0); err != nil {
				return err
			}
		}
		src, err := w.client(ctx, u.GetSourceClusterId())
		if err != nil {
			return stage.OnSource(err)
		}
		tgt, err := w.client(ctx, u.GetTargetClusterId())
		if err != nil {
			return stage.OnTarget(err)
		}
		t, err := milvusx.DescribeTable(ctx, src.Raw, u.GetDatabase(), u.GetCollection())
		if err != nil {
			return stage.OnSource(err)
		}
		t.Partition, t.ReadTs = u.GetPartition(), u.GetReadTimestamp()
		base := CopyStats{Rows: cp.GetRows(), Bytes: cp.GetBytes()}
		// Keep the unit. A lost InProgress at worst hands the unit to another
		// copier, which the checkpoint's revision check already allows for.
		alive := func() { _ = msg.InProgress() }
		// Pay for each page before it is written; stop there if paused.
		pace := func(rows, bytes int64) error {
			return w.Controls.Wait(ctx, u.GetMigrationId(), rows, bytes, alive)
		}
		var saved CopyStats // of this attempt, counted in the metrics
		save := func(last milvusx.Key, s CopyStats) error {
			w.metrics.add(u.GetMigrationId(), s.Rows-saved.Rows, s.Bytes-saved.Bytes)
			saved = s
			cp.LastKey, cp.Rows, cp.Bytes = keyToPB(&last), base.Rows+s.Rows, base.Bytes+s.Bytes
			cp.Time, cp.CopierId = timestamppb.Now(), w.ID
			if rev, err = w.putCheckpoint(ctx, cp, rev); err != nil {
				return err
			}
			alive()
			w.Status.progress(w.ID, cp.GetRows(), cp.GetBytes())
			return w.progress(ctx, u, cp)
		}
		batch := int(u.GetBatchBytes())
		if batch == 0 {
			batch = w.BatchBytes
		}
		opts := CopyOptions{Resume: keyFromPB(cp.GetLastKey()), Fresh: fresh, BatchBytes: batch, Pace: pace, Checkpoint: save}
		if _, err := CopyRange(ctx, src.Raw, tgt.Raw, t, rangeFromPB(u.GetRange()), opts); err != nil {
			return err
		}
		cp.Complete, cp.Time, cp.CopierId = true, timestamppb.Now(), w.ID
		if _, err := w.putCheckpoint(ctx, cp, rev); err != nil {
			return err
		}
	}
	done := &eventspb.WorkUnitDone{EventId: "done-" + u.GetUnitId(), MigrationId: u.GetMigrationId(), UnitId: u.GetUnitId(),
		Database: u.GetDatabase(), Collection: u.GetCollection(), Rows: cp.GetRows(), Bytes: cp.GetBytes(),
		CopierId: w.ID, Time: timestamppb.Now()}
	_, err = natsbus.Publish(ctx, w.JS, w.Propagator, natsbus.EventSubject(u.GetMigrationId(), natsbus.EventUnit), done.GetEventId(), done)
	return err
}

// checkpoint returns the unit's checkpoint and its revision (0: none yet).
func (w *Worker) checkpoint(ctx context.Context, id string) (*eventspb.WorkUnitCheckpoint, uint64, error) {
	cp, rev, err := w.checkpoints.Get(ctx, id)
	if errors.Is(err, apierr.ErrNotFound) {
		return &eventspb.WorkUnitCheckpoint{UnitId: id}, 0, nil
	}
	return cp, rev, err
}

// putCheckpoint writes cp if the stored one is still at rev: a copier that
// lost its unit to another (it stalled past the ack wait) cannot move the
// other's checkpoint.
func (w *Worker) putCheckpoint(ctx context.Context, cp *eventspb.WorkUnitCheckpoint, rev uint64) (uint64, error) {
	return w.checkpoints.Put(ctx, cp.GetUnitId(), cp, rev)
}

func (w *Worker) progress(ctx context.Context, u *eventspb.WorkUnit, cp *eventspb.WorkUnitCheckpoint) error {
	p := &eventspb.Progress{EventId: fmt.Sprintf("progress-%s-%d", u.GetUnitId(), cp.GetRows()), MigrationId: u.GetMigrationId(),
		Database: u.GetDatabase(), Collection: u.GetCollection(), UnitId: u.GetUnitId(), Rows: cp.GetRows(), Bytes: cp.GetBytes(),
		Time: cp.GetTime()}
	_, err := natsbus.Publish(ctx, w.JS, w.Propagator, natsbus.EventSubject(u.GetMigrationId(), natsbus.EventProgress), p.GetEventId(), p)
	return err
}

// client returns a cached connection to the registered cluster id, keyed
// by its connection, so a cluster registered again under the same ID with
// another endpoint gets a client of its own.
func (w *Worker) client(ctx context.Context, id string) (*milvusx.Client, error) {
	conn, err := w.Registry.Resolve(ctx, id)
	if err != nil {
		return nil, err
	}
	key, err := proto.Marshal(conn)
	if err != nil {
		return nil, err
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if c, ok := w.clients[string(key)]; ok {
		return c, nil
	}
	c, err := stage.ConnectCluster(ctx, conn)
	if err != nil {
		return nil, err
	}
	w.clients[string(key)] = c
	return c, nil
}
