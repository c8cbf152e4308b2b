// Transitions and their side effects: one revision-checked write moves a
// migration, then the commands, controls and locks its new state needs.

package coordinator

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"go.opentelemetry.io/otel/attribute"
	"google.golang.org/protobuf/proto"

	"github.com/zdm-io/zdm/pkg/apierr"
	"github.com/zdm-io/zdm/pkg/auth"
	"github.com/zdm-io/zdm/pkg/natsbus"
	"github.com/zdm-io/zdm/pkg/telemetry"
	eventspb "github.com/zdm-io/zdm/proto/zdm/events/v1"
	zdmpb "github.com/zdm-io/zdm/proto/zdm/v1"
)

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
	ctx, sp := telemetry.StartMigrationSpan(ctx, c.tracer(), m, "transition to "+stateName(m.GetState()),
		attribute.String("zdm.from_state", stateName(from)), attribute.String("zdm.trigger", ev.Trigger.String()))
	c.deps.Logger.InfoContext(ctx, "migration transition", slog.String("migration", id),
		slog.String("from", stateName(from)), slog.String("to", stateName(m.GetState())),
		slog.String("trigger", ev.Trigger.String()), slog.String("actor", ev.Actor), slog.String("reason", ev.Reason))
	err = c.effects(ctx, m)
	telemetry.End(sp, err)
	if err != nil {
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
			natsbus.PurgeChanges(ctx, c.deps.Bus.JS, m.GetMigrationId()),
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
		EventId:           fmt.Sprintf("%s-t%d-%s", m.GetMigrationId(), changes(m), action),
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

// lastTransition is m's last change of state (notes are not).
func lastTransition(m *zdmpb.Migration) *zdmpb.Transition {
	h := m.GetHistory()
	for i := len(h) - 1; i >= 0; i-- {
		if h[i].GetFromState() != h[i].GetToState() {
			return h[i]
		}
	}
	return nil
}

// changes counts m's changes of state, so an ID built from it names the
// transition and not the notes recorded since.
func changes(m *zdmpb.Migration) int {
	n := 0
	for _, t := range m.GetHistory() {
		if t.GetFromState() != t.GetToState() {
			n++
		}
	}
	return n
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
		mctx, sp := telemetry.StartMigrationSpan(ctx, c.tracer(), e.Val, "reconcile after restart")
		err := c.effects(mctx, withRevision(e.Val, e.Rev))
		telemetry.End(sp, err)
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}
