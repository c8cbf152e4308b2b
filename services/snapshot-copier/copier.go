// Package copier is the snapshot copier: it replicates every schema object
// of the source to the target and copies existing rows, pulling work units
// from a JetStream work queue. Any number of replicas can run.
package copier

import (
	"context"

	"google.golang.org/grpc"

	"github.com/zdm-io/zdm/pkg/service"
	copierpb "github.com/zdm-io/zdm/proto/zdm/copier/v1"
)

// Name is the snapshot copier's -target name.
const Name = "snapshot-copier"

// Copier serves SnapshotCopierService. Until the copy lands, every RPC
// answers UNIMPLEMENTED.
type Copier struct {
	copierpb.UnimplementedSnapshotCopierServiceServer

	deps service.Deps
}

var _ service.Service = (*Copier)(nil)

// New returns a copier that is not yet started.
func New(deps service.Deps) *Copier { return &Copier{deps: deps} }

// Name implements service.Service.
func (c *Copier) Name() string { return Name }

// Register implements service.Service.
func (c *Copier) Register(r grpc.ServiceRegistrar) {
	copierpb.RegisterSnapshotCopierServiceServer(r, c)
}

// HealthNames implements service.Service.
func (c *Copier) HealthNames() []string {
	return []string{copierpb.SnapshotCopierService_ServiceDesc.ServiceName}
}

// Start implements service.Service. The copier pulls no work yet.
func (c *Copier) Start(context.Context) error { return nil }

// Stop implements service.Service.
func (c *Copier) Stop(context.Context) error { return nil }
