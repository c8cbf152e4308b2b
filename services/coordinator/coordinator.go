// Package coordinator owns zdm's public API (MigrationService,
// ClusterService), the migration state machine, the cluster registry and
// its locks. It advances migrations from stage events consumed from
// JetStream and sends stage commands back on the bus.
package coordinator

import (
	"context"

	"google.golang.org/grpc"

	"github.com/zdm-io/zdm/pkg/service"
	zdmpb "github.com/zdm-io/zdm/proto/zdm/v1"
)

// Name is the coordinator's -target name.
const Name = "coordinator"

// Coordinator serves the public API. Until the state machine lands, every
// RPC answers UNIMPLEMENTED.
type Coordinator struct {
	zdmpb.UnimplementedMigrationServiceServer
	zdmpb.UnimplementedClusterServiceServer

	deps service.Deps
}

var _ service.Service = (*Coordinator)(nil)

// New returns a coordinator that is not yet started.
func New(deps service.Deps) *Coordinator {
	return &Coordinator{deps: deps}
}

// Name implements service.Service.
func (c *Coordinator) Name() string { return Name }

// Register implements service.Service.
func (c *Coordinator) Register(r grpc.ServiceRegistrar) {
	zdmpb.RegisterMigrationServiceServer(r, c)
	zdmpb.RegisterClusterServiceServer(r, c)
}

// HealthNames implements service.Service.
func (c *Coordinator) HealthNames() []string {
	return []string{zdmpb.MigrationService_ServiceDesc.ServiceName, zdmpb.ClusterService_ServiceDesc.ServiceName}
}

// Start implements service.Service. The coordinator has no background work
// yet.
func (c *Coordinator) Start(context.Context) error { return nil }

// Stop implements service.Service.
func (c *Coordinator) Stop(context.Context) error { return nil }
