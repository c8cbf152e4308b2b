package coordinator

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/zdm-io/zdm/pkg/apierr"
	"github.com/zdm-io/zdm/pkg/auth"
	"github.com/zdm-io/zdm/pkg/natsbus"
	eventspb "github.com/zdm-io/zdm/proto/zdm/events/v1"
	zdmpb "github.com/zdm-io/zdm/proto/zdm/v1"
)

// errRetryLater marks an event that arrived before what it depends on; it
// is redelivered later.
var errRetryLater = errors.New("not yet")

// eventsConsumer is the coordinator's durable consumer of stage events; all
// coordinator replicas share it, so each event is handled once.
const eventsConsumer = "coordinator"

// transition applies ev to migration id in one revision-checked write,
// then carries out its side effects. If another writer changed the
// migration first, the event is re-applied to the new state, where it may
// no longer be allowed: a retried event is never applied twice.
func (c *Coordinator) transition(ctx context.Context, id string, ev Event) (*zdmpb.Migration, error) {
	var from zdmpb.MigrationState
	m, rev, err := c.store.migrations.Update(ctx, id, func(m *zdmpb.Migration) error {
		var err error
		from, err = Apply(m, ev)
		return err
	})
	if err != nil {
		return nil, err
	}
	m = withRevision(m, rev)
	c.deps.Logger.InfoContext(ctx, "migration transition", slog.String("migration", id),
		slog.String("from", stateName(from)), slog.String("to", stateName(m.GetState())),
		slog.String("trigger", ev.Trigger.String()), slog.String("actor", ev.Actor), slog.String("reason", ev.Reason))
	if err := c.effects(ctx, m); err != nil {
		// The state is written; reconcile re-sends effects after a restart
		// and the next transition retries them.
		return m, fmt.Errorf("migration %q is %s, but its side effects failed: %w", id, stateName(m.GetState()), err)
	}
	return m, nil
}

// effects does what entering m's state requires: the copy's control and
// the stage command for the services, or releasing the clusters once the
// migration has ended.
// It is idempotent: a command's message ID names the transition that
// caused it (its index in the history), not the record's revision, which
// also moves with lag and progress updates; so a repeat is dropped by
// JetStream.
func (c *Coordinator) effects(ctx context.Context, m *zdmpb.Migration) error {
	if IsTerminal(m.GetState()) {
		return errors.Join(c.store.controls.Purge(ctx, m.GetMigrationId()),
			c.unlock(ctx, m.GetSourceClusterId(), m.GetMigrationId()),
			c.unlock(ctx, m.GetTargetClusterId(), m.GetMigrationId()))
	}
	if err := c.putControl(ctx, m); err != nil {
		return err
	}
	if err := c.command(ctx, m); err != nil {
		return err
	}
	if err := c.restartRate(ctx, m); err != nil {
		return err
	}
	return c.resumeFinishedCopy(ctx, m)
}

// command publishes the stage command m's state needs, if any.
func (c *Coordinator) command(ctx context.Context, m *zdmpb.Migration) error {
	stage, action := commandFor(m)
	if action == eventspb.StageAction_STAGE_ACTION_UNSPECIFIED {
		return nil
	}
	cmd := &eventspb.StageCommand{
		EventId:           fmt.Sprintf("%s-t%d-%s", m.GetMigrationId(), len(m.GetHistory()), action),
		MigrationId:       m.GetMigrationId(),
		Stage:             stage,
		Action:            action,
		MigrationRevision: m.GetRevision(),
		Options:           m.GetOptions(),
		Time:              m.GetUpdateTime(),
		Type:              m.GetType(),
		// The services resolve the clusters from the registry: no
		// connection, and so no credential, rides on the bus.
		SourceClusterId: m.GetSourceClusterId(),
		TargetClusterId: m.GetTargetClusterId(),
	}
	_, err := natsbus.Publish(ctx, c.deps.Bus.JS, c.deps.Propagator, natsbus.CommandSubject(m.GetMigrationId(), stage), cmd.GetEventId(), cmd)
	return err
}

// putControl writes how the copy of m should run, unless the control
// already stored comes from a newer revision of m.
func (c *Coordinator) putControl(ctx context.Context, m *zdmpb.Migration) error {
	// A cancelling copy stops too, while the copier drops what it made.
	want := &eventspb.CopyControl{MigrationId: m.GetMigrationId(), Paused: m.GetState() == paused || m.GetState() == cancelling,
		Throttle: m.GetOptions().GetThrottle(), MigrationRevision: m.GetRevision()}
	_, _, err := c.store.controls.Upsert(ctx, m.GetMigrationId(), func(ctl *eventspb.CopyControl) error {
		if ctl.GetMigrationRevision() >= want.GetMigrationRevision() {
			return errStop
		}
		proto.Reset(ctl)
		proto.Merge(ctl, want)
		return nil
	})
	return err
}

// resumeFinishedCopy ends the copy stage of a migration that is copying
// with no unit left: the last units can finish while it is paused, when
// their completion cannot move it on.
func (c *Coordinator) resumeFinishedCopy(ctx context.Context, m *zdmpb.Migration) error {
	if m.GetState() != copying {
		return nil
	}
	rec, _, err := c.store.plans.Get(ctx, m.GetMigrationId())
	if errors.Is(err, apierr.ErrNotFound) || (err == nil && len(rec.GetPendingUnits()) > 0) {
		return nil
	}
	if err != nil {
		return err
	}
	if err := c.copyDone(ctx, m.GetMigrationId()); err != nil && !errors.Is(err, ErrInvalidTransition) {
		return err
	}
	return nil
}

// commandFor is the command a migration in its current state needs.
func commandFor(m *zdmpb.Migration) (zdmpb.StageKind, eventspb.StageAction) {
	switch s := m.GetState(); s {
	case paused:
		return stageOf(m.GetPausedFromState()), eventspb.StageAction_STAGE_ACTION_PAUSE
	case cancelling:
		return zdmpb.StageKind_STAGE_KIND_UNSPECIFIED, eventspb.StageAction_STAGE_ACTION_CANCEL
	case ready:
		return zdmpb.StageKind_STAGE_KIND_UNSPECIFIED, eventspb.StageAction_STAGE_ACTION_UNSPECIFIED
	default:
		if k := stageOf(s); k != zdmpb.StageKind_STAGE_KIND_UNSPECIFIED {
			if last := lastTransition(m); last != nil && last.GetFromState() == paused {
				return k, eventspb.StageAction_STAGE_ACTION_RESUME
			}
			return k, eventspb.StageAction_STAGE_ACTION_START
		}
	}
	return zdmpb.StageKind_STAGE_KIND_UNSPECIFIED, eventspb.StageAction_STAGE_ACTION_UNSPECIFIED
}

func lastTransition(m *zdmpb.Migration) *zdmpb.Transition {
	if h := m.GetHistory(); len(h) > 0 {
		return h[len(h)-1]
	}
	return nil
}

// reconcile finishes what a crash interrupted: it starts migrations left
// PENDING between their creation and their first transition, and re-does
// the side effects of every other one.
func (c *Coordinator) reconcile(ctx context.Context) error {
	all, err := c.store.migrations.List(ctx)
	if err != nil {
		return err
	}
	var errs []error
	for _, e := range all {
		if e.Val.GetState() == pending {
			_, err := c.transition(ctx, e.Key, Event{Trigger: TriggerStart, Time: c.now(), Actor: auth.System, Reason: "migration created; started after a coordinator restart"})
			if !errors.Is(err, ErrInvalidTransition) {
				errs = append(errs, err)
			}
			continue
		}
		errs = append(errs, c.effects(ctx, withRevision(e.Val, e.Rev)))
	}
	return errors.Join(errs...)
}

func (c *Coordinator) tracer() trace.Tracer {
	return c.deps.TracerProvider.Tracer("github.com/zdm-io/zdm/services/coordinator")
}

// consumeEvents starts handling stage and lag events from the bus; each
// handler derives from run.
func (c *Coordinator) consumeEvents(ctx, run context.Context) (jetstream.ConsumeContext, error) {
	cons, err := c.deps.Bus.JS.CreateOrUpdateConsumer(ctx, natsbus.EventsStream, jetstream.ConsumerConfig{
		Durable:   eventsConsumer,
		AckPolicy: jetstream.AckExplicitPolicy,
		FilterSubjects: []string{natsbus.EventFilter(natsbus.EventStage), natsbus.EventFilter(natsbus.EventLag), natsbus.EventFilter(natsbus.EventPlan),
			natsbus.EventFilter(natsbus.EventUnit), natsbus.EventFilter(natsbus.EventProgress), natsbus.EventFilter(natsbus.EventFailed)},
		AckWait:    c.cfg.EventAckWait,
		MaxDeliver: -1,
	})
	if err != nil {
		return nil, fmt.Errorf("events consumer: %w", err)
	}
	return cons.Consume(func(msg jetstream.Msg) {
		ctx, cancel := context.WithTimeout(run, c.cfg.EventAckWait)
		defer cancel()
		c.handleEvent(ctx, msg)
	})
}

// handleEvent applies one bus event and acks it. An event the current
// state does not allow (a late duplicate, or one about a migration that
// has moved on) is acked and dropped; a malformed one is terminated; a
// failure to write is retried later.
func (c *Coordinator) handleEvent(ctx context.Context, msg jetstream.Msg) {
	var err error
	switch natsbus.EventKindOf(msg.Subject()) {
	case natsbus.EventStage:
		ctx, err = apply(c, ctx, msg, "coordinator.stage_completed", &eventspb.StageCompleted{}, c.onStageCompleted)
	case natsbus.EventLag:
		ctx, err = apply(c, ctx, msg, "coordinator.lag_report", &eventspb.LagReport{}, c.onLagReport)
	case natsbus.EventPlan:
		ctx, err = apply(c, ctx, msg, "coordinator.copy_planned", &eventspb.CopyPlanned{}, c.onCopyPlanned)
	case natsbus.EventUnit:
		ctx, err = apply(c, ctx, msg, "coordinator.unit_done", &eventspb.WorkUnitDone{}, c.onUnitDone)
	case natsbus.EventProgress:
		ctx, err = apply(c, ctx, msg, "coordinator.progress", &eventspb.Progress{}, c.onProgress)
	case natsbus.EventFailed:
		ctx, err = apply(c, ctx, msg, "coordinator.work_failed", &eventspb.WorkFailed{}, c.onWorkFailed)
	}
	if errors.Is(err, errMalformed) {
		c.deps.Logger.ErrorContext(ctx, "malformed event dropped", slog.String("subject", msg.Subject()), slog.Any("error", err))
		_ = msg.Term()
		return
	}
	switch {
	case err == nil, errors.Is(err, ErrInvalidTransition), errors.Is(err, apierr.ErrNotFound):
		if err != nil {
			c.deps.Logger.DebugContext(ctx, "event dropped", slog.String("subject", msg.Subject()), slog.Any("reason", err))
		}
		if aerr := msg.DoubleAck(ctx); aerr != nil {
			c.deps.Logger.WarnContext(ctx, "ack event", slog.Any("error", aerr))
		}
	case errors.Is(err, errRetryLater):
		c.deps.Logger.DebugContext(ctx, "event early; will retry", slog.String("subject", msg.Subject()), slog.Any("reason", err))
		_ = msg.NakWithDelay(500 * time.Millisecond)
	case ctx.Err() != nil:
		// Stopping, or out of time: the event comes back.
		c.deps.Logger.InfoContext(ctx, "event cut short; will retry", slog.String("subject", msg.Subject()), slog.Any("error", err))
		_ = msg.Nak()
	default:
		c.deps.Logger.ErrorContext(ctx, "event not applied; will retry", slog.String("subject", msg.Subject()), slog.Any("error", err))
		_ = msg.NakWithDelay(time.Second)
	}
}

// errMalformed marks an event that cannot be decoded; it is terminated.
var errMalformed = errors.New("malformed event")

// migrationEvent is any bus event about one migration.
type migrationEvent interface {
	proto.Message
	GetMigrationId() string
}

// apply decodes msg into ev and hands it to on, in a span that continues
// the publisher's trace.
func apply[T migrationEvent](c *Coordinator, ctx context.Context, msg jetstream.Msg, span string, ev T,
	on func(context.Context, T) error) (context.Context, error) {
	ctx, err := natsbus.Decode(ctx, c.deps.Propagator, msg, ev)
	if err != nil {
		return ctx, fmt.Errorf("%w: %w", errMalformed, err)
	}
	ctx, sp := c.tracer().Start(ctx, span, trace.WithAttributes(attribute.String("zdm.migration_id", ev.GetMigrationId())))
	defer sp.End()
	return ctx, on(ctx, ev)
}

// onStageCompleted turns a stage's end into the transition it means.
func (c *Coordinator) onStageCompleted(ctx context.Context, ev *eventspb.StageCompleted) error {
	m, _, err := c.store.migrations.Get(ctx, ev.GetMigrationId())
	if err != nil {
		return err
	}
	at := ev.GetTime().AsTime()
	if ev.GetTime() == nil {
		at = c.now()
	}
	e := Event{Time: at, Actor: auth.System}
	stage := ev.GetStage()
	switch {
	case m.GetState() == cancelling && ev.GetSuccess():
		e.Trigger, e.Reason = TriggerCancelled, "cleanup after cancellation finished"
	case !ev.GetSuccess() && m.GetState() == switchingOver && ev.GetCode() == eventspb.StageError_STAGE_ERROR_SWITCHOVER_ABORTED:
		e.Trigger, e.Reason = TriggerSwitchoverAborted, ev.GetErrorMessage()
	case !ev.GetSuccess():
		e.Trigger, e.Reason = TriggerFail, fmt.Sprintf("stage %s failed: %s", natsbus.StageToken(stage), ev.GetErrorMessage())
		e.Error = &zdmpb.MigrationError{Code: strings.TrimPrefix(ev.GetCode().String(), "STAGE_ERROR_"), Message: ev.GetErrorMessage(), Stage: stage, Time: ev.GetTime()}
	case stage == zdmpb.StageKind_STAGE_KIND_PREPARE_TARGET:
		e.Trigger, e.Reason = TriggerPrepareDone, "target prepared"
	case stage == zdmpb.StageKind_STAGE_KIND_COPY_DATA:
		e.Trigger, e.Reason = TriggerCopyDone, "existing data copied"
	case stage == zdmpb.StageKind_STAGE_KIND_FINALIZE && m.GetState() == switchingOver:
		e.Trigger, e.Reason = TriggerSwitchedOver, "clients switched to the target"
	case stage == zdmpb.StageKind_STAGE_KIND_FINALIZE:
		e.Trigger, e.Reason = TriggerDrained, "remaining changes applied"
	case stage == zdmpb.StageKind_STAGE_KIND_VERIFY:
		e.Trigger, e.Reason = TriggerVerified, "source and target verified equal"
	default:
		return fmt.Errorf("%w: stage %s has no transition", ErrInvalidTransition, stage)
	}
	if stageOf(m.GetState()) != stage && e.Trigger != TriggerCancelled {
		// The event is about a stage the migration is not in: a late
		// duplicate, or a stage of a paused migration.
		return fmt.Errorf("%w: %s event while %s", ErrInvalidTransition, natsbus.StageToken(stage), stateName(m.GetState()))
	}
	if e.Trigger == TriggerVerified || e.Trigger == TriggerSwitchedOver {
		// Completing: record where clients connect, in the same write.
		rec, _, err := c.store.clusters.Get(ctx, m.GetTargetClusterId())
		if err != nil {
			return err
		}
		e.TargetEndpoint = rec.GetCluster().GetEndpoint()
	}
	_, err = c.transition(ctx, ev.GetMigrationId(), e)
	return err
}

// onLagReport records the lag and moves a syncing migration to
// READY_TO_FINALIZE the first time lag reaches the threshold.
func (c *Coordinator) onLagReport(ctx context.Context, ev *eventspb.LagReport) error {
	_, _, err := c.store.migrations.Update(ctx, ev.GetMigrationId(), func(m *zdmpb.Migration) error {
		if m.GetState() != syncing && m.GetState() != ready {
			return errStop
		}
		if m.Lag == nil {
			m.Lag = &zdmpb.Lag{}
		}
		if m.Lag.MeasureTime != nil && ev.GetTime().AsTime().Before(m.Lag.MeasureTime.AsTime()) {
			return errStop // an older report arrived late
		}
		m.Lag.Lag, m.Lag.AppliedWatermark, m.Lag.MeasureTime = ev.GetLag(), ev.GetAppliedWatermark(), ev.GetTime()
		m.UpdateTime = timestamppb.New(c.now())
		return nil
	})
	if err != nil {
		return err
	}
	if !ev.GetThresholdReached() {
		return nil
	}
	_, err = c.transition(ctx, ev.GetMigrationId(), Event{
		Trigger: TriggerLagReached, Time: ev.GetTime().AsTime(), Actor: auth.System,
		Reason: fmt.Sprintf("lag %s reached the threshold", ev.GetLag().AsDuration()),
	})
	return err
}

// sweepLoop fails migrations that outlive their maximum sync duration.
func (c *Coordinator) sweepLoop(ctx context.Context) {
	t := time.NewTicker(c.cfg.SweepInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if err := c.sweep(ctx); err != nil && ctx.Err() == nil {
				c.deps.Logger.ErrorContext(ctx, "max sync sweep", slog.Any("error", err))
			}
		}
	}
}

// sweep checks every running migration for a cluster down too long, and
// every syncing one against its maximum sync duration, at the clock's
// current time.
func (c *Coordinator) sweep(ctx context.Context) error {
	all, err := c.store.migrations.List(ctx)
	if err != nil {
		return err
	}
	now := c.now()
	var errs []error
	for _, e := range all {
		m := e.Val
		if err := c.sweepProblems(ctx, m, now); err != nil {
			errs = append(errs, err)
			continue
		}
		if m.GetState() != syncing && m.GetState() != ready {
			continue
		}
		limit := m.GetOptions().GetMaxSyncDuration().AsDuration()
		start := SyncStart(m)
		if start.IsZero() || now.Sub(start) < limit {
			continue
		}
		_, err := c.transition(ctx, m.GetMigrationId(), Event{
			Trigger: TriggerFail, Time: now, Actor: auth.System,
			Reason: fmt.Sprintf("sync not stopped within the maximum sync duration of %s", limit),
			Error: &zdmpb.MigrationError{
				Code:    "MAX_SYNC_DURATION_EXCEEDED",
				Message: fmt.Sprintf("sync began %s and was not stopped within %s; finalise with StopSync or Switchover sooner, or raise options.max_sync_duration", start.Format(time.RFC3339), limit),
				Stage:   zdmpb.StageKind_STAGE_KIND_SYNC_INCREMENTAL,
			},
		})
		if err != nil && !errors.Is(err, ErrInvalidTransition) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
