// Package streamer is the CDC streamer: the gateway, a Milvus-protocol gRPC
// endpoint in front of the source that publishes every acknowledged
// mutation and DDL to JetStream, and the applier that replays captured
// changes on the target.
package streamer

import (
	"context"

	"google.golang.org/grpc"

	"github.com/zdm-io/zdm/pkg/service"
	streamerpb "github.com/zdm-io/zdm/proto/zdm/streamer/v1"
)

// Name is the CDC streamer's -target name.
const Name = "cdc-streamer"

// Streamer serves GatewayControlService. Until capture lands, every RPC
// answers UNIMPLEMENTED, its health is NOT_SERVING and it announces no
// stage, so the coordinator refuses ZERO_DOWNTIME migrations.
type Streamer struct {
	streamerpb.UnimplementedGatewayControlServiceServer

	deps service.Deps
}

var _ service.Service = (*Streamer)(nil)

// New returns a streamer that is not yet started.
func New(deps service.Deps) *Streamer { return &Streamer{deps: deps} }

// Name implements service.Service.
func (s *Streamer) Name() string { return Name }

// Register implements service.Service.
func (s *Streamer) Register(r grpc.ServiceRegistrar) {
	streamerpb.RegisterGatewayControlServiceServer(r, s)
}

// HealthNames implements service.Service.
func (s *Streamer) HealthNames() []string {
	return []string{streamerpb.GatewayControlService_ServiceDesc.ServiceName}
}

// Start implements service.Service. The gateway does not listen yet.
func (s *Streamer) Start(context.Context) error { return nil }

// Stop implements service.Service.
func (s *Streamer) Stop(context.Context) error { return nil }

// Idle implements service.Idle: the gateway and the applier are not in
// place yet.
func (s *Streamer) Idle() bool { return true }
