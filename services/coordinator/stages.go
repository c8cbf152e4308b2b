package coordinator

import (
	"context"
	"fmt"

	"github.com/zdm-io/zdm/pkg/apierr"
	zdmpb "github.com/zdm-io/zdm/proto/zdm/v1"
)

// StageServers tells whether a live zdm process carries out a stage.
// CreateMigration asks it for every stage the migration's type runs, so a
// migration that nothing would ever move on is refused at once rather
// than left waiting for its maximum sync duration. Implementations are
// safe for concurrent use; Serves blocks until it knows or ctx ends.
type StageServers interface {
	Serves(ctx context.Context, stage zdmpb.StageKind) (bool, error)
}

// serviceOf names the -target that carries out a stage, for the message
// that says what to start.
var serviceOf = map[zdmpb.StageKind]string{
	zdmpb.StageKind_STAGE_KIND_PREPARE_TARGET:   "snapshot-copier",
	zdmpb.StageKind_STAGE_KIND_COPY_DATA:        "snapshot-copier",
	zdmpb.StageKind_STAGE_KIND_SYNC_INCREMENTAL: "cdc-streamer",
	zdmpb.StageKind_STAGE_KIND_FINALIZE:         "cdc-streamer",
	zdmpb.StageKind_STAGE_KIND_VERIFY:           "lag-monitor",
}

// checkStagesServed refuses a migration of type t when one of its stages
// has no live process to carry it out.
func (c *Coordinator) checkStagesServed(ctx context.Context, t zdmpb.MigrationType) error {
	for _, st := range NewStages(t) {
		if st.GetState() == zdmpb.StageState_STAGE_STATE_SKIPPED {
			continue
		}
		ok, err := c.stages.Serves(ctx, st.GetKind())
		if err != nil {
			return err
		}
		if !ok {
			return fmt.Errorf("%w: no running zdm process carries out stage %s, which a %s migration needs; start one with -target=%s (or all)",
				apierr.ErrFailedPrecondition, st.GetKind(), t, serviceOf[st.GetKind()])
		}
	}
	return nil
}
