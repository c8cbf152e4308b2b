// Package coordinator owns zdm's public API (MigrationService,
// ClusterService), the migration state machine, the cluster registry and
// its locks. State lives in JetStream KV buckets and every write is
// revision-checked; the machine advances from API calls, from stage events
// consumed from JetStream and from its own timer, and sends stage commands
// back on the bus.
package coordinator

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/grpc"

	"github.com/zdm-io/zdm/pkg/natsbus"
	"github.com/zdm-io/zdm/pkg/service"
	zdmpb "github.com/zdm-io/zdm/proto/zdm/v1"
)

// Name is the coordinator's -target name.
const Name = "coordinator"

// Config configures the coordinator.
type Config struct {
	// SweepInterval is how often running migrations are checked against
	// their maximum sync duration. Default 30s.
	SweepInterval time.Duration
	// ProbeTimeout bounds each check that a cluster answers. Default 10s.
	ProbeTimeout time.Duration
	// EventAckWait is how long a stage event taken by a coordinator that
	// then died waits before another coordinator gets it. Default 30s.
	EventAckWait time.Duration
	// ClusterDownTimeout is how long a source or target may go without
	// answering before the migration fails. Default 10m.
	ClusterDownTimeout time.Duration
	// UnitMaxAttempts is how many attempts in a row at one copy unit may
	// fail, while both clusters answer, before the migration fails.
	// Default 5.
	UnitMaxAttempts int
	// Now is the clock; tests inject one to cross days in milliseconds.
	// Default time.Now.
	Now func() time.Time
	// Prober checks clusters when they are registered and when a migration
	// is created. Default (nil): MilvusProber, which asks the clusters;
	// unit tests inject a fake to run the API without Milvus servers.
	Prober Prober
	// Stages tells whether a live process carries out a stage. Default
	// (nil): the stages live processes announce on the bus.
	Stages StageServers
}

// DefaultConfig returns the configuration with its defaults.
func DefaultConfig() Config {
	return Config{SweepInterval: 30 * time.Second, ProbeTimeout: 10 * time.Second, EventAckWait: 30 * time.Second,
		ClusterDownTimeout: 10 * time.Minute, UnitMaxAttempts: 5, Now: time.Now}
}

// RegisterFlags defines the coordinator's flags on fs.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	d := DefaultConfig()
	fs.DurationVar(&c.SweepInterval, "coordinator-sweep-interval", d.SweepInterval, "how often running migrations are checked against their maximum sync duration")
	fs.DurationVar(&c.ProbeTimeout, "cluster-probe-timeout", d.ProbeTimeout, "how long to wait for a Milvus cluster to answer when registering it or creating a migration")
	fs.DurationVar(&c.EventAckWait, "coordinator-event-ack-wait", d.EventAckWait, "how long a stage event held by a coordinator that died waits before redelivery")
	fs.DurationVar(&c.ClusterDownTimeout, "cluster-down-timeout", d.ClusterDownTimeout, "how long a migration's source or target may go without answering before the migration fails")
	fs.IntVar(&c.UnitMaxAttempts, "unit-max-attempts", d.UnitMaxAttempts, "failed attempts in a row at one copy unit, with both clusters answering, before the migration fails")
	c.Now = d.Now
}

// Validate checks the configuration.
func (c Config) Validate() error {
	var errs []error
	if c.SweepInterval < 10*time.Millisecond || c.SweepInterval > time.Hour {
		errs = append(errs, fmt.Errorf("--coordinator-sweep-interval %s: want 10ms to 1h", c.SweepInterval))
	}
	if c.ProbeTimeout < 100*time.Millisecond || c.ProbeTimeout > 5*time.Minute {
		errs = append(errs, fmt.Errorf("--cluster-probe-timeout %s: want 100ms to 5m", c.ProbeTimeout))
	}
	if c.EventAckWait < time.Second || c.EventAckWait > 10*time.Minute {
		errs = append(errs, fmt.Errorf("--coordinator-event-ack-wait %s: want 1s to 10m", c.EventAckWait))
	}
	if c.ClusterDownTimeout < time.Second || c.ClusterDownTimeout > 24*time.Hour {
		errs = append(errs, fmt.Errorf("--cluster-down-timeout %s: want 1s to 24h", c.ClusterDownTimeout))
	}
	if c.UnitMaxAttempts < 1 || c.UnitMaxAttempts > 1000 {
		errs = append(errs, fmt.Errorf("--unit-max-attempts %d: want 1 to 1000", c.UnitMaxAttempts))
	}
	if c.Now == nil {
		errs = append(errs, errors.New("coordinator clock is not set"))
	}
	return errors.Join(errs...)
}

// Coordinator serves the public API and drives migrations.
type Coordinator struct {
	zdmpb.UnimplementedMigrationServiceServer
	zdmpb.UnimplementedClusterServiceServer

	cfg    Config
	deps   service.Deps
	store  *store
	stages StageServers

	// stop ends the background loops started by Start.
	stop context.CancelFunc
	wg   sync.WaitGroup
	cc   jetstream.ConsumeContext

	traces sync.Map // migration ID -> telemetry.Traced (see traced)
}

var _ service.Service = (*Coordinator)(nil)

// New returns a coordinator that is not yet started.
func New(cfg Config, deps service.Deps) (*Coordinator, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &Coordinator{cfg: cfg, deps: deps}, nil
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

// Start opens the state buckets, re-sends what a crash may have left
// unsent, and starts consuming stage events and the maximum-sync timer.
func (c *Coordinator) Start(ctx context.Context) error {
	st, err := openStore(ctx, c.deps.Bus, c.deps.Registry)
	if err != nil {
		return err
	}
	c.store = st
	if c.stages = c.cfg.Stages; c.stages == nil {
		kv, err := natsbus.StagesBucket.Open(ctx, c.deps.Bus.JS, c.deps.Bus.Replicas)
		if err != nil {
			return err
		}
		gateways, err := natsbus.GatewaysBucket.Open(ctx, c.deps.Bus.JS, c.deps.Bus.Replicas)
		if err != nil {
			return err
		}
		c.stages = liveServers{LiveStages: service.LiveStages{KV: kv}, gateways: gateways}
	}
	if err := c.reconcile(ctx); err != nil {
		return fmt.Errorf("reconcile after start: %w", err)
	}
	run, cancel := context.WithCancel(context.WithoutCancel(ctx))
	cc, err := c.consumeEvents(ctx, run)
	if err != nil {
		cancel()
		return err
	}
	c.cc, c.stop = cc, cancel
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		c.sweepLoop(run)
	}()
	return nil
}

// Stop ends the run context that event handling and the timer derive from
// (an event cut short is redelivered: handling is revision-checked and
// idempotent), then stops consuming.
func (c *Coordinator) Stop(ctx context.Context) error {
	if c.stop != nil {
		c.stop()
	}
	natsbus.StopConsuming(ctx, c.cc)
	return service.Wait(ctx, &c.wg)
}

func (c *Coordinator) now() time.Time { return c.cfg.Now().UTC() }
