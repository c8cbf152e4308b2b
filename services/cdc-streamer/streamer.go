// Package streamer is the CDC streamer: the gateway, a Milvus-protocol gRPC
// endpoint in front of the source that forwards every call and guards the
// source's writes during a migration, and (to come) the capture of every
// acknowledged mutation and the applier that replays it on the target.
package streamer

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"sync"

	"google.golang.org/grpc"

	"github.com/zdm-io/zdm/pkg/natsbus"
	"github.com/zdm-io/zdm/pkg/service"
	streamerpb "github.com/zdm-io/zdm/proto/zdm/streamer/v1"
	zdmpb "github.com/zdm-io/zdm/proto/zdm/v1"
)

// Name is the CDC streamer's -target name.
const Name = "cdc-streamer"

// Config configures the streamer.
type Config struct {
	// GatewayCluster is the registered cluster the gateway stands in
	// front of; empty runs no gateway.
	GatewayCluster string
	// GatewayAddr is where the gateway listens for Milvus clients.
	// Default 127.0.0.1:19540.
	GatewayAddr string
}

// DefaultConfig returns the defaults.
func DefaultConfig() Config { return Config{GatewayAddr: "127.0.0.1:19540"} }

// RegisterFlags defines the streamer's flags on fs.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	d := DefaultConfig()
	fs.StringVar(&c.GatewayCluster, "gateway-cluster", d.GatewayCluster, "registered cluster the Milvus gateway stands in front of; empty runs no gateway")
	fs.StringVar(&c.GatewayAddr, "gateway-addr", d.GatewayAddr, "host:port where the gateway serves Milvus clients")
}

// Validate checks the configuration.
func (c Config) Validate() error {
	if c.GatewayCluster == "" {
		return nil
	}
	if _, _, err := net.SplitHostPort(c.GatewayAddr); err != nil {
		return fmt.Errorf("--gateway-addr %q: want host:port, for example 127.0.0.1:19540", c.GatewayAddr)
	}
	return nil
}

// Streamer runs the gateway and serves GatewayControlService, whose RPCs
// answer UNIMPLEMENTED until capture lands. It announces no stage yet, so
// the coordinator refuses ZERO_DOWNTIME migrations; without a gateway its
// health is NOT_SERVING.
type Streamer struct {
	streamerpb.UnimplementedGatewayControlServiceServer

	cfg     Config
	deps    service.Deps
	gateway *gateway
	stop    context.CancelFunc
	wg      sync.WaitGroup
}

var (
	_ service.Service = (*Streamer)(nil)
	_ service.Idle    = (*Streamer)(nil)
)

// New returns a streamer that is not yet started.
func New(cfg Config, deps service.Deps) (*Streamer, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &Streamer{cfg: cfg, deps: deps}, nil
}

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

// Idle implements service.Idle: a streamer without a gateway serves
// nothing yet.
func (s *Streamer) Idle() bool { return s.gateway == nil }

// Start opens the gateway, when configured, in front of its cluster. The
// cluster is resolved from the registry at the first call, so it may be
// registered after the gateway starts. It returns once the gateway
// listens.
func (s *Streamer) Start(ctx context.Context) error {
	if s.cfg.GatewayCluster == "" {
		return nil
	}
	migrations, err := natsbus.OpenTable(ctx, s.deps.Bus.JS, natsbus.MigrationsBucket, "migration", s.deps.Bus.Replicas,
		func() *zdmpb.Migration { return &zdmpb.Migration{} })
	if err != nil {
		return err
	}
	lis, err := net.Listen("tcp", s.cfg.GatewayAddr)
	if err != nil {
		return fmt.Errorf("gateway on --gateway-addr %s: %w", s.cfg.GatewayAddr, err)
	}
	up := &upstream{reg: s.deps.Registry, id: s.cfg.GatewayCluster}
	p := newPolicy(s.cfg.GatewayCluster)
	s.gateway = newGateway(up, p, s.deps.Logger)
	run, stop := context.WithCancel(context.WithoutCancel(ctx))
	s.stop = stop
	s.wg.Go(func() {
		if err := p.run(run, migrations); err != nil {
			// Writes wait for a policy that no longer follows the
			// migrations: say so loudly; the process should be restarted.
			s.deps.Logger.Error("gateway stopped following migrations", "error", err)
		}
	})
	s.wg.Go(func() {
		if err := s.gateway.serve(lis); err != nil {
			s.deps.Logger.Error("gateway stopped serving", "error", err)
		}
	})
	s.deps.Logger.Info("gateway serving", "addr", lis.Addr().String(), "cluster", s.cfg.GatewayCluster)
	return nil
}

// Stop lets calls in flight through the gateway finish until ctx ends,
// then stops following migrations.
func (s *Streamer) Stop(ctx context.Context) error {
	if s.gateway == nil {
		return nil
	}
	s.gateway.stop(ctx)
	s.stop()
	err := service.Wait(ctx, &s.wg)
	return errors.Join(err, s.gateway.up.close())
}
