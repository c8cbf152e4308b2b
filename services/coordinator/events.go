// Event consumption: stage, lag and copy events from the bus, each turned
// into the transition or record update it means, then acked.

package coordinator

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/zdm-io/zdm/pkg/apierr"
	"github.com/zdm-io/zdm/pkg/auth"
	"github.com/zdm-io/zdm/pkg/natsbus"
	"github.com/zdm-io/zdm/pkg/telemetry"
	"github.com/zdm-io/zdm/pkg/verify"
	eventspb "github.com/zdm-io/zdm/proto/zdm/events/v1"
	zdmpb "github.com/zdm-io/zdm/proto/zdm/v1"
)

// errRetryLater marks an event that arrived before what it depends on; it
// is redelivered later.
var errRetryLater = errors.New("not yet")

// consumeEvents starts handling stage and lag events from the bus; each
// handler derives from run.
func (c *Coordinator) consumeEvents(ctx, run context.Context) (jetstream.ConsumeContext, error) {
	cons, err := natsbus.EventsConsumer(c.cfg.EventAckWait).Create(ctx, c.deps.Bus.JS)
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
		ctx, err = apply(c, ctx, msg, "", &eventspb.LagReport{}, c.onLagReport)
	case natsbus.EventPlan:
		ctx, err = apply(c, ctx, msg, "coordinator.copy_planned", &eventspb.CopyPlanned{}, c.onCopyPlanned)
	case natsbus.EventUnit:
		ctx, err = apply(c, ctx, msg, "coordinator.unit_done", &eventspb.WorkUnitDone{}, c.onUnitDone)
	case natsbus.EventProgress:
		ctx, err = apply(c, ctx, msg, "", &eventspb.Progress{}, c.onProgress)
	case natsbus.EventFailed:
		ctx, err = apply(c, ctx, msg, "coordinator.work_failed", &eventspb.WorkFailed{}, c.onWorkFailed)
	case natsbus.EventGateway:
		ctx, err = apply(c, ctx, msg, "coordinator.gateway_change", &eventspb.GatewayChange{}, c.onGatewayChange)
	case natsbus.EventNotice:
		ctx, err = apply(c, ctx, msg, "coordinator.notification", &eventspb.NotificationReport{}, c.onNotification)
	}
	if errors.Is(err, errMalformed) {
		c.deps.Logger.ErrorContext(ctx, "malformed event dropped", slog.String("subject", msg.Subject()), slog.Any("error", err))
		// Best effort: an event whose Term is lost comes back after the ack
		// wait and is terminated then.
		_ = msg.Term()
		return
	}
	// The Naks below only hasten the redelivery: an event whose Nak is lost
	// comes back anyway once its ack wait ends, so their errors are dropped.
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

// apply decodes msg into ev and hands it to on, in a span named span in
// the migration's trace. Span "" makes none: lag reports (every second
// of a sync) and copy progress (every batch) would bury a migration's
// trace; a transition they cause has its own span.
func apply[T migrationEvent](c *Coordinator, ctx context.Context, msg jetstream.Msg, span string, ev T,
	on func(context.Context, T) error) (context.Context, error) {
	ctx, err := natsbus.Decode(ctx, c.deps.Propagator, msg, ev)
	if err != nil {
		return ctx, fmt.Errorf("%w: %w", errMalformed, err)
	}
	if span == "" {
		return ctx, on(ctx, ev)
	}
	ctx, sp := telemetry.StartMigrationSpan(ctx, c.tracer(), c.traced(ctx, ev.GetMigrationId()), span)
	err = on(ctx, ev)
	telemetry.End(sp, err)
	return ctx, err
}

// traced returns what migration id's record says of its trace, from a
// cache: the trace is fixed at creation, and events about a migration
// come often.
func (c *Coordinator) traced(ctx context.Context, id string) telemetry.Traced {
	if t, ok := c.traces.Load(id); ok {
		return t.(telemetry.Traced)
	}
	m, _, err := c.store.migrations.Get(ctx, id)
	if err != nil {
		return &zdmpb.Migration{MigrationId: id}
	}
	t := &zdmpb.Migration{MigrationId: id, TraceId: m.GetTraceId(), TraceSpanId: m.GetTraceSpanId()}
	c.traces.Store(id, t)
	return t
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
	case m.GetState() == verifying && Switched(m) && stage == zdmpb.StageKind_STAGE_KIND_VERIFY && ev.GetVerification() != "":
		// Clients write to the target already: the migration completes
		// whatever the verification found, and records it.
		e.Trigger, e.Reason, e.VerifyFailed = TriggerVerified, ev.GetVerification(), !ev.GetSuccess()
	case !ev.GetSuccess() && stage == zdmpb.StageKind_STAGE_KIND_UNSPECIFIED:
		// The migration as a whole cannot go on (its change stream is
		// full), whatever stage it is in.
		stage = stageOf(m.GetState())
		e.Trigger, e.Reason = TriggerFail, ev.GetErrorMessage()
		e.Error = &zdmpb.MigrationError{Code: strings.TrimPrefix(ev.GetCode().String(), "STAGE_ERROR_"), Message: ev.GetErrorMessage(), Stage: stage, Time: ev.GetTime()}
	case !ev.GetSuccess():
		e.Trigger, e.Reason = TriggerFail, fmt.Sprintf("stage %s failed: %s", natsbus.StageToken(stage), ev.GetErrorMessage())
		e.Error = &zdmpb.MigrationError{Code: strings.TrimPrefix(ev.GetCode().String(), "STAGE_ERROR_"), Message: ev.GetErrorMessage(), Stage: stage, Time: ev.GetTime()}
	case stage == zdmpb.StageKind_STAGE_KIND_PREPARE_TARGET:
		e.Trigger, e.Reason = TriggerPrepareDone, "target prepared"
	case stage == zdmpb.StageKind_STAGE_KIND_COPY_DATA:
		e.Trigger, e.Reason = TriggerCopyDone, "existing data copied"
	case stage == zdmpb.StageKind_STAGE_KIND_FINALIZE && m.GetState() == switchingOver:
		e.Trigger, e.WritePause, e.GatewayIDs, e.HeldWrites = TriggerSwitchedOver, ev.GetWritePause().AsDuration(), ev.GetGatewayIds(), ev.GetHeldWrites()
		e.Reason = fmt.Sprintf("clients switched to the target by %d gateway replicas; writes paused %s (%d held and released to the target); verifying",
			len(ev.GetGatewayIds()), ev.GetWritePause().AsDuration().Round(time.Millisecond), ev.GetHeldWrites())
	case stage == zdmpb.StageKind_STAGE_KIND_FINALIZE:
		e.Trigger, e.Reason = TriggerDrained, "remaining changes applied"
	case stage == zdmpb.StageKind_STAGE_KIND_VERIFY:
		e.Trigger, e.Reason = TriggerVerified, "source and target verified equal"
		if len(ev.GetRepairs()) > 0 {
			e.Reason = "source and target verified equal after a repair of what the change stream missed: " + repairSummary(ev.GetRepairs())
		}
	default:
		return fmt.Errorf("%w: stage %s has no transition", ErrInvalidTransition, stage)
	}
	if stage == zdmpb.StageKind_STAGE_KIND_VERIFY {
		e.Repairs, e.SourceDuplicates = ev.GetRepairs(), ev.GetSourceDuplicates()
		if !ev.GetSuccess() && len(ev.GetRepairs()) > 0 {
			e.Reason += "; repaired before it stopped: " + repairSummary(ev.GetRepairs())
		}
		if d := ev.GetSourceDuplicates(); len(d) > 0 {
			e.Reason += "; " + duplicatesSummary(d)
		}
	}
	if stageOf(m.GetState()) != stage && e.Trigger != TriggerCancelled {
		// The event is about a stage the migration is not in: a late
		// duplicate, or a stage of a paused migration.
		return fmt.Errorf("%w: %s event while %s", ErrInvalidTransition, natsbus.StageToken(stage), stateName(m.GetState()))
	}
	if e.Trigger == TriggerVerified {
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
		if m.Lag.AppliedWatermark != nil && ev.GetAppliedWatermark().AsTime().After(m.Lag.AppliedWatermark.AsTime()) {
			// Changes are being applied: the target answers again.
			clearProblems(m)
		}
		m.Lag.Lag, m.Lag.AppliedWatermark, m.Lag.MeasureTime = ev.GetLag(), ev.GetAppliedWatermark(), ev.GetTime()
		for _, cl := range ev.GetCollections() {
			for _, cp := range m.GetCollections() {
				if cp.GetDatabase() == cl.GetDatabase() && cp.GetCollection() == cl.GetCollection() {
					cp.Lag = cl.GetLag()
					if cp.GetPhase() == zdmpb.CollectionPhase_COLLECTION_PHASE_COPIED {
						cp.Phase = zdmpb.CollectionPhase_COLLECTION_PHASE_SYNCING
					}
				}
			}
		}
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

// onGatewayChange notes in a migration's history that a gateway replica
// armed for it joined or left.
func (c *Coordinator) onGatewayChange(ctx context.Context, ev *eventspb.GatewayChange) error {
	reason := fmt.Sprintf("gateway replica %s (%s) joined", ev.GetGatewayId(), ev.GetAddr())
	if !ev.GetJoined() {
		reason = fmt.Sprintf("gateway replica %s (%s) stopped renewing its registration and was dropped; the watermark and switchovers now count only the replicas alive", ev.GetGatewayId(), ev.GetAddr())
	}
	_, _, err := c.store.migrations.Update(ctx, ev.GetMigrationId(), func(m *zdmpb.Migration) error {
		if IsTerminal(m.GetState()) {
			return errStop
		}
		Note(m, ev.GetTime().AsTime(), auth.System, reason)
		return nil
	})
	return err
}

// onNotification records what became of a notice to one recipient.
func (c *Coordinator) onNotification(ctx context.Context, ev *eventspb.NotificationReport) error {
	d := ev.GetDelivery()
	_, _, err := c.store.migrations.Update(ctx, ev.GetMigrationId(), func(m *zdmpb.Migration) error {
		for i, cur := range m.GetNotifications() {
			if cur.GetNotice() == d.GetNotice() && cur.GetChannel() == d.GetChannel() && cur.GetRecipient() == d.GetRecipient() {
				if cur.GetDelivered() || cur.GetAttempts() > d.GetAttempts() {
					return errStop // a late report
				}
				m.Notifications[i] = d
				return nil
			}
		}
		m.Notifications = append(m.Notifications, d)
		return nil
	})
	return err
}

func (c *Coordinator) tracer() trace.Tracer {
	return c.deps.TracerProvider.Tracer("github.com/zdm-io/zdm/services/coordinator")
}

// repairSummary tells what a repair did, range by range (the first
// maxSummaryRanges of them).
func repairSummary(repairs []*zdmpb.RangeRepair) string {
	var upserted, deleted int64
	var parts []string
	for i, r := range repairs {
		upserted, deleted = upserted+r.GetRowsUpserted(), deleted+r.GetKeysDeleted()
		if i == maxSummaryRanges {
			parts = append(parts, fmt.Sprintf("and %d more ranges", len(repairs)-maxSummaryRanges))
		}
		if i >= maxSummaryRanges {
			continue
		}
		p := fmt.Sprintf("%s.%s keys [%s, %s): %d rows written", r.GetDatabase(), r.GetCollection(), verify.Bound(r.GetStartKey()), verify.Bound(r.GetEndKey()), r.GetRowsUpserted())
		if k := r.GetSampleUpsertedKeys(); len(k) > 0 {
			p += " (" + strings.Join(k, ", ") + ")"
		}
		p += fmt.Sprintf(", %d keys deleted", r.GetKeysDeleted())
		if k := r.GetSampleDeletedKeys(); len(k) > 0 {
			p += " (" + strings.Join(k, ", ") + ")"
		}
		parts = append(parts, p)
	}
	return fmt.Sprintf("%d key ranges, %d rows written, %d keys deleted: %s", len(repairs), upserted, deleted, strings.Join(parts, "; "))
}

// duplicatesSummary tells which collections' sources hold keys twice.
func duplicatesSummary(dups []*zdmpb.DuplicateKeys) string {
	var parts []string
	for _, d := range dups {
		parts = append(parts, fmt.Sprintf("%s.%s holds %d keys more than once (%d extra rows, e.g. %s)",
			d.GetDatabase(), d.GetCollection(), d.GetKeys(), d.GetExtraRows(), strings.Join(d.GetSampleKeys(), ", ")))
	}
	return "the source " + strings.Join(parts, ", ") + "; the target holds one row for each (see docs/operations.md)"
}

// maxSummaryRanges bounds the ranges a history entry names.
const maxSummaryRanges = 5
