package coordinator

import (
	"context"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/zdm-io/zdm/pkg/apierr"
	"github.com/zdm-io/zdm/pkg/natsbus"
	"github.com/zdm-io/zdm/pkg/service"
	zdmpb "github.com/zdm-io/zdm/proto/zdm/v1"
)

// StageServers tells whether a live zdm process carries out a stage.
// CreateMigration asks it for every stage the migration's type runs, so a
// migration that nothing would ever move on is refused at once rather
// than left waiting for its maximum sync duration. Implementations are
// safe for concurrent use; Serves blocks until it knows or ctx ends.
type StageServers interface {
	Serves(ctx context.Context, stage zdmpb.StageKind) (bool, error)
	// Fronted tells whether a live gateway stands in front of cluster:
	// without one, a ZERO_DOWNTIME migration could capture nothing.
	Fronted(ctx context.Context, cluster string) (bool, error)
}

// liveServers is StageServers from the bus: the stages live processes
// announce, and the gateways that keep their state in zdm_gateways.
type liveServers struct {
	service.LiveStages
	gateways jetstream.KeyValue
}

// Fronted implements StageServers.
func (l liveServers) Fronted(ctx context.Context, cluster string) (bool, error) {
	gws, err := natsbus.Gateways(ctx, l.gateways)
	if err != nil {
		return false, err
	}
	for _, g := range gws {
		if g.GetClusterId() == cluster {
			return true, nil
		}
	}
	return false, nil
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

// checkFronted refuses a ZERO_DOWNTIME migration from a cluster that no
// live gateway stands in front of.
func (c *Coordinator) checkFronted(ctx context.Context, t zdmpb.MigrationType, source string) error {
	if t != zdmpb.MigrationType_MIGRATION_TYPE_ZERO_DOWNTIME {
		return nil
	}
	ok, err := c.stages.Fronted(ctx, source)
	if err != nil || ok {
		return err
	}
	return fmt.Errorf("%w: no zdm gateway stands in front of source cluster %q, so writes to it could not be captured: start zdm with --gateway-cluster %s (-target=cdc-streamer or all), point applications at its --gateway-addr, then create the migration",
		apierr.ErrFailedPrecondition, source, source)
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
