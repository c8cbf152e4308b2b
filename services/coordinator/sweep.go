// The sweep: a periodic pass over every migration for what no event
// reports, a cluster down too long or a sync past its maximum duration.

package coordinator

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/zdm-io/zdm/pkg/auth"
	zdmpb "github.com/zdm-io/zdm/proto/zdm/v1"
)

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
