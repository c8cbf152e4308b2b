// Package streamer is the CDC streamer: the gateway, a Milvus-protocol gRPC
// endpoint in front of the source that forwards every call, guards the
// source's writes during a migration and captures every acknowledged
// mutation and DDL of a ZERO_DOWNTIME migration on the change stream; and
// the applier, which replays the stream on the target.
package streamer

import (
	"context"
	"crypto/rand"
	"errors"
	"flag"
	"fmt"
	"net"
	"strings"
	"sync"

	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/zdm-io/zdm/pkg/natsbus"
	"github.com/zdm-io/zdm/pkg/service"
	eventspb "github.com/zdm-io/zdm/proto/zdm/events/v1"
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
	// TargetViewAddr, when set, is where the gateway serves a read-only
	// view of the target of the migration syncing from its cluster.
	TargetViewAddr string
	// Apply runs the applier for syncing migrations (one streamer process
	// at a time applies each). Default true.
	Apply bool
}

// DefaultConfig returns the defaults.
func DefaultConfig() Config { return Config{GatewayAddr: "127.0.0.1:19540", Apply: true} }

// RegisterFlags defines the streamer's flags on fs.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	d := DefaultConfig()
	fs.StringVar(&c.GatewayCluster, "gateway-cluster", d.GatewayCluster, "registered cluster the Milvus gateway stands in front of; empty runs no gateway")
	fs.StringVar(&c.GatewayAddr, "gateway-addr", d.GatewayAddr, "host:port where the gateway serves Milvus clients")
	fs.StringVar(&c.TargetViewAddr, "gateway-target-view-addr", d.TargetViewAddr, "host:port where the gateway serves a read-only view of the target while a migration from its cluster syncs; empty serves none")
	fs.BoolVar(&c.Apply, "apply", d.Apply, "apply the captured changes of syncing migrations to their targets (one streamer process applies each migration at a time)")
}

// Validate checks the configuration.
func (c Config) Validate() error {
	if c.GatewayCluster == "" {
		return nil
	}
	if _, _, err := net.SplitHostPort(c.GatewayAddr); err != nil {
		return fmt.Errorf("--gateway-addr %q: want host:port, for example 127.0.0.1:19540", c.GatewayAddr)
	}
	if _, _, err := net.SplitHostPort(c.TargetViewAddr); c.TargetViewAddr != "" && err != nil {
		return fmt.Errorf("--gateway-target-view-addr %q: want host:port, for example 127.0.0.1:19541", c.TargetViewAddr)
	}
	return nil
}

// Streamer runs the gateway, when configured, with its target view, and
// the applier, which any streamer process may run for any migration. It
// serves GatewayControlService's status; arming, stop sync and
// switchover follow the migrations and switchovers buckets.
type Streamer struct {
	streamerpb.UnimplementedGatewayControlServiceServer

	cfg     Config
	deps    service.Deps
	id      string
	gateway *gateway
	view    *gateway // the target view, when served
	metrics *streamMetrics
	stop    context.CancelFunc
	wg      sync.WaitGroup
}

var (
	_ service.Service = (*Streamer)(nil)
	_ service.Staged  = (*Streamer)(nil)
	_ service.Idle    = (*Streamer)(nil)
)

// New returns a streamer that is not yet started.
func New(cfg Config, deps service.Deps) (*Streamer, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	metrics, err := newStreamMetrics(deps.Metrics)
	if err != nil {
		return nil, err
	}
	return &Streamer{cfg: cfg, deps: deps, id: "gw-" + rand.Text()[:10], metrics: metrics}, nil
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

// Stages implements service.Staged: the applier syncs and drains at stop
// sync.
func (s *Streamer) Stages() []zdmpb.StageKind {
	if !s.cfg.Apply {
		return nil
	}
	return []zdmpb.StageKind{zdmpb.StageKind_STAGE_KIND_SYNC_INCREMENTAL, zdmpb.StageKind_STAGE_KIND_FINALIZE}
}

// Idle implements service.Idle: a streamer that neither applies changes
// (--apply=false) nor fronts a cluster serves nothing.
func (s *Streamer) Idle() bool { return !s.cfg.Apply && s.gateway == nil }

// Start starts the applier and opens the gateway, when configured, in
// front of its cluster. The cluster is resolved from the registry at the
// first call, so it may be registered after the gateway starts. It
// returns once the gateway listens.
func (s *Streamer) Start(ctx context.Context) error {
	bus := s.deps.Bus
	migrations, err := natsbus.OpenTable(ctx, bus.JS, natsbus.MigrationsBucket, "migration", bus.Replicas,
		func() *zdmpb.Migration { return &zdmpb.Migration{} })
	if err != nil {
		return err
	}
	positions, err := natsbus.OpenTable(ctx, bus.JS, natsbus.AppliedBucket, "applied position", bus.Replicas,
		func() *eventspb.AppliedPosition { return &eventspb.AppliedPosition{} })
	if err != nil {
		return err
	}
	gateways, err := natsbus.GatewaysBucket.Open(ctx, bus.JS, bus.Replicas)
	if err != nil {
		return err
	}
	leases, err := natsbus.AppliersBucket.Open(ctx, bus.JS, bus.Replicas)
	if err != nil {
		return err
	}
	switchovers, err := natsbus.SwitchoversBucket.Open(ctx, bus.JS, bus.Replicas)
	if err != nil {
		return err
	}
	run, stop := context.WithCancel(context.WithoutCancel(ctx))
	s.stop = stop
	ap := &appliers{id: s.id, js: bus.JS, prop: s.deps.Propagator, tracer: s.tracer(), metrics: s.metrics, log: s.deps.Logger, reg: s.deps.Registry,
		migrations: migrations, positions: positions, leases: leases, gateways: gateways, switchovers: switchovers,
		running: map[string]context.CancelFunc{}}
	if s.cfg.Apply {
		s.wg.Go(func() { ap.run(run) })
	}
	if s.cfg.GatewayCluster == "" {
		return nil
	}
	fail := func(err error) error {
		stop()
		s.wg.Wait()
		return err
	}
	lis, err := net.Listen("tcp", s.cfg.GatewayAddr)
	if err != nil {
		return fail(fmt.Errorf("gateway on --gateway-addr %s: %w", s.cfg.GatewayAddr, err))
	}
	var viewLis net.Listener
	if s.cfg.TargetViewAddr != "" {
		if viewLis, err = net.Listen("tcp", s.cfg.TargetViewAddr); err != nil {
			return fail(errors.Join(fmt.Errorf("target view on --gateway-target-view-addr %s: %w", s.cfg.TargetViewAddr, err), lis.Close()))
		}
	}
	src := newSourceClient(s.deps.Registry, s.cfg.GatewayCluster)
	c := newCapture(run, s.id, lis.Addr().String(), bus.JS, s.deps.Propagator, s.tracer(), s.deps.Logger, src, gateways, switchovers)
	c.captured = s.metrics.captured
	viewSrc := newSourceClient(s.deps.Registry, "")
	p := newPolicy(s.cfg.GatewayCluster, func(v view) {
		c.follow(v)
		viewSrc.use(v.active.GetTargetClusterId())
	})
	s.gateway = newGateway(src, c, p.allow, s.deps.Logger)
	s.wg.Go(func() {
		if err := p.run(run, migrations); err != nil {
			// Writes wait for a policy that no longer follows the
			// migrations: say so loudly; the process should be restarted.
			s.deps.Logger.Error("gateway stopped following migrations", "error", err)
		}
	})
	s.wg.Go(func() { c.run(run) })
	s.wg.Go(func() { c.watchDecisions(run) })
	s.wg.Go(func() {
		if err := s.gateway.serve(lis); err != nil {
			s.deps.Logger.Error("gateway stopped serving", "error", err)
		}
	})
	s.deps.Logger.Info("gateway serving", "addr", lis.Addr().String(), "cluster", s.cfg.GatewayCluster, "gateway_id", s.id)
	if viewLis != nil {
		c.viewAddr = viewLis.Addr().String()
		s.view = newGateway(viewSrc, nil, targetView(p, s.cfg.GatewayCluster, lis.Addr().String()), s.deps.Logger)
		s.wg.Go(func() {
			if err := s.view.serve(viewLis); err != nil {
				s.deps.Logger.Error("target view stopped serving", "error", err)
			}
		})
		s.deps.Logger.Info("target view serving", "addr", viewLis.Addr().String(), "cluster", s.cfg.GatewayCluster)
	}
	return nil
}

// targetView is the target view's policy: reads of a syncing migration's
// target pass; every write is refused, and so is every call while no
// migration from home syncs.
func targetView(p *policy, home, gatewayAddr string) func(string) error {
	return func(method string) error {
		m := p.syncing()
		if m == nil {
			return status.Errorf(codes.FailedPrecondition, "zdm target view: no ZERO_DOWNTIME migration from cluster %q is syncing, so there is no target to show; it serves the target from the end of the copy until the switchover", home)
		}
		name, ok := strings.CutPrefix(method, milvusService)
		if ok && isWrite(name) {
			return refused("%s refused: target is syncing for migration %q, so this view of cluster %q is read-only; write through the gateway at %s",
				name, m.GetMigrationId(), m.GetTargetClusterId(), gatewayAddr)
		}
		return nil
	}
}

// Stop lets calls in flight through the gateway finish until ctx ends,
// then stops the applier and the gateway's loops.
func (s *Streamer) Stop(ctx context.Context) error {
	if s.view != nil {
		s.view.stop(ctx)
	}
	if s.gateway != nil {
		s.gateway.stop(ctx)
	}
	if s.stop != nil {
		s.stop()
	}
	err := service.Wait(ctx, &s.wg)
	for _, g := range []*gateway{s.gateway, s.view} {
		if g != nil {
			err = errors.Join(err, g.src.close())
		}
	}
	return err
}

// GetGatewayStatus implements streamerpb.GatewayControlServiceServer.
func (s *Streamer) GetGatewayStatus(context.Context, *streamerpb.GetGatewayStatusRequest) (*streamerpb.GetGatewayStatusResponse, error) {
	resp := &streamerpb.GetGatewayStatusResponse{GatewayId: s.id}
	if s.gateway == nil {
		return resp, nil
	}
	c := s.gateway.capture
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.armed != "" {
		resp.ArmedMigrationIds = []string{c.armed}
	}
	resp.LastSequence, resp.UpstreamClusterId, resp.HoldingAttempt = c.seq, c.src.current(), c.hold.attempt
	return resp, nil
}

func (s *Streamer) tracer() trace.Tracer {
	return s.deps.TracerProvider.Tracer("github.com/zdm-io/zdm/services/cdc-streamer")
}
