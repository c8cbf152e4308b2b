package coordinator

import (
	"context"

	"github.com/zdm-io/zdm/pkg/natsbus"
	"github.com/zdm-io/zdm/pkg/registry"
	coordpb "github.com/zdm-io/zdm/proto/zdm/coordinator/v1"
	eventspb "github.com/zdm-io/zdm/proto/zdm/events/v1"
	zdmpb "github.com/zdm-io/zdm/proto/zdm/v1"
)

// maxConflictRetries bounds loops that re-check a condition when a write
// lost a revision race.
const maxConflictRetries = 16

// errStop ends an update without writing and without an error.
var errStop = natsbus.ErrNoChange

// store is the coordinator's persistent state, each bucket a
// revision-checked table (natsbus.Table): two coordinators, or a retried
// event, can never both apply a change read from the same revision.
type store struct {
	migrations *natsbus.Table[*zdmpb.Migration]
	// clusters is the registry's table; connections in it may be sealed:
	// read them with registry.Connection.
	clusters *natsbus.Table[*coordpb.ClusterRecord]
	plans    *natsbus.Table[*coordpb.CopyRecord]
	controls *natsbus.Table[*eventspb.CopyControl]
}

func openStore(ctx context.Context, bus *natsbus.Conn, reg *registry.Registry) (*store, error) {
	m, err := natsbus.OpenTable(ctx, bus.JS, natsbus.MigrationsBucket, "migration", bus.Replicas, func() *zdmpb.Migration { return &zdmpb.Migration{} })
	if err != nil {
		return nil, err
	}
	p, err := natsbus.OpenTable(ctx, bus.JS, natsbus.CopyPlansBucket, "copy plan", bus.Replicas, func() *coordpb.CopyRecord { return &coordpb.CopyRecord{} })
	if err != nil {
		return nil, err
	}
	ctl, err := natsbus.OpenTable(ctx, bus.JS, natsbus.CopyControlsBucket, "copy control", bus.Replicas, func() *eventspb.CopyControl { return &eventspb.CopyControl{} })
	if err != nil {
		return nil, err
	}
	return &store{migrations: m, clusters: reg.Records, plans: p, controls: ctl}, nil
}

// withRevision returns m with its revision field set to rev, the KV
// revision it was read at or written as.
func withRevision(m *zdmpb.Migration, rev uint64) *zdmpb.Migration {
	m.Revision = rev
	return m
}
