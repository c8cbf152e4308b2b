// Package lagmonitor measures each migration's lag behind the source, emits
// threshold events and notifications, and verifies source against target
// (counts, distinct keys and per-range checksums).
package lagmonitor

import (
	"context"

	"google.golang.org/grpc"

	"github.com/zdm-io/zdm/pkg/service"
	lagpb "github.com/zdm-io/zdm/proto/zdm/lag/v1"
)

// Name is the lag monitor's -target name.
const Name = "lag-monitor"

// Monitor serves LagMonitorService. Until lag and verification land, every
// RPC answers UNIMPLEMENTED.
type Monitor struct {
	lagpb.UnimplementedLagMonitorServiceServer

	deps service.Deps
}

var _ service.Service = (*Monitor)(nil)

// New returns a monitor that is not yet started.
func New(deps service.Deps) *Monitor { return &Monitor{deps: deps} }

// Name implements service.Service.
func (m *Monitor) Name() string { return Name }

// Register implements service.Service.
func (m *Monitor) Register(r grpc.ServiceRegistrar) {
	lagpb.RegisterLagMonitorServiceServer(r, m)
}

// HealthNames implements service.Service.
func (m *Monitor) HealthNames() []string {
	return []string{lagpb.LagMonitorService_ServiceDesc.ServiceName}
}

// Start implements service.Service. The monitor measures nothing yet.
func (m *Monitor) Start(context.Context) error { return nil }

// Stop implements service.Service.
func (m *Monitor) Stop(context.Context) error { return nil }
