// Package copier is the snapshot copier: it replicates every schema object
// of the source to the target and copies existing rows, pulling work units
// from a JetStream work queue. Any number of replicas can run.
package copier

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/zdm-io/zdm/pkg/milvusx"
	"github.com/zdm-io/zdm/pkg/natsbus"
	"github.com/zdm-io/zdm/pkg/service"
	"github.com/zdm-io/zdm/pkg/stage"
	copierpb "github.com/zdm-io/zdm/proto/zdm/copier/v1"
	eventspb "github.com/zdm-io/zdm/proto/zdm/events/v1"
	zdmpb "github.com/zdm-io/zdm/proto/zdm/v1"
)

// Name is the snapshot copier's -target name.
const Name = "snapshot-copier"

// Config configures a copier process.
type Config struct {
	// Workers is how many units this process copies at once. Default 2.
	Workers int
	// ID names this copier in checkpoints and events. Default host-pid.
	ID string
	// UnitAckWait is how long a unit held by a copier that stopped
	// answering waits before another copier takes it over. Default 30s.
	UnitAckWait time.Duration
	// BatchMiB caps each insert, and so the memory of a worker (about four
	// batches). Default 8.
	BatchMiB int
}

// DefaultConfig returns the defaults.
func DefaultConfig() Config {
	host, _ := os.Hostname()
	return Config{Workers: 2, ID: fmt.Sprintf("%s-%d", host, os.Getpid()), UnitAckWait: 30 * time.Second, BatchMiB: DefaultBatchBytes >> 20}
}

// RegisterFlags defines the copier's flags on fs.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	d := DefaultConfig()
	fs.IntVar(&c.Workers, "copier-workers", d.Workers, "work units this process copies at once")
	fs.StringVar(&c.ID, "copier-id", d.ID, "name of this copier in checkpoints and events")
	fs.IntVar(&c.BatchMiB, "copier-batch-mib", d.BatchMiB, "MiB per insert into the target; a worker holds about four batches in memory")
	fs.DurationVar(&c.UnitAckWait, "copier-unit-ack-wait", d.UnitAckWait, "how long a unit held by a copier that stopped answering waits before another copier takes it")
}

// Validate checks the configuration.
func (c Config) Validate() error {
	var errs []error
	if c.Workers < 1 || c.Workers > 64 {
		errs = append(errs, fmt.Errorf("--copier-workers %d: want 1 to 64", c.Workers))
	}
	if c.BatchMiB < 1 || c.BatchMiB > 32 {
		errs = append(errs, fmt.Errorf("--copier-batch-mib %d: want 1 to 32 (Milvus refuses inserts over 64 MiB)", c.BatchMiB))
	}
	if c.ID == "" {
		errs = append(errs, errors.New("--copier-id is empty"))
	}
	if c.UnitAckWait < time.Second || c.UnitAckWait > 10*time.Minute {
		errs = append(errs, fmt.Errorf("--copier-unit-ack-wait %s: want 1s to 10m", c.UnitAckWait))
	}
	return errors.Join(errs...)
}

// Copier serves SnapshotCopierService, handles the prepare and copy
// commands and runs copy workers.
type Copier struct {
	copierpb.UnimplementedSnapshotCopierServiceServer

	cfg  Config
	deps service.Deps

	cc       jetstream.ConsumeContext
	controls *Controls
	status   *Status
	metrics  *copyMetrics
	cancel   context.CancelFunc
	wg       sync.WaitGroup
}

var _ service.Service = (*Copier)(nil)

// New returns a copier that is not yet started.
func New(cfg Config, deps service.Deps) (*Copier, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	metrics, err := newCopyMetrics(deps.Metrics)
	if err != nil {
		return nil, err
	}
	return &Copier{cfg: cfg, deps: deps, status: NewStatus(), metrics: metrics}, nil
}

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

// Start follows the copy controls, consumes prepare, copy and cancel
// commands and starts the workers.
func (c *Copier) Start(ctx context.Context) error {
	wctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	c.cancel = cancel
	c.controls = NewControls()
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		if err := c.controls.Run(wctx, c.deps.Bus.JS, c.deps.Bus.Replicas, c.cfg.ID, c.deps.Logger); err != nil {
			c.deps.Logger.Error("copy controls stopped: pause and throttle no longer apply", "error", err)
		}
	}()
	cc, err := stage.Consume(ctx, wctx, c.deps.Bus.JS, c.deps.Propagator, c.tracer(), c.deps.Logger, natsbus.CopierCommandsDurable,
		[]zdmpb.StageKind{zdmpb.StageKind_STAGE_KIND_PREPARE_TARGET, zdmpb.StageKind_STAGE_KIND_COPY_DATA, zdmpb.StageKind_STAGE_KIND_UNSPECIFIED},
		30*time.Minute, c.command)
	if err != nil {
		cancel()
		c.wg.Wait()
		return err
	}
	c.cc = cc
	for i := range c.cfg.Workers {
		w := &Worker{ID: fmt.Sprintf("%s/%d", c.cfg.ID, i), JS: c.deps.Bus.JS, Propagator: c.deps.Propagator, Tracer: c.tracer(),
			Logger: c.deps.Logger, Replicas: c.deps.Bus.Replicas, Registry: c.deps.Registry, AckWait: c.cfg.UnitAckWait, BatchBytes: c.cfg.BatchMiB << 20,
			Controls: c.controls, Status: c.status, metrics: c.metrics}
		c.wg.Add(1)
		go func() {
			defer c.wg.Done()
			if err := w.Run(wctx); err != nil {
				c.deps.Logger.Error("copy worker stopped", "worker", w.ID, "error", err)
			}
		}()
	}
	return nil
}

// Stop cancels the work in hand and stops taking commands and units;
// units in hand are left to other copiers (or this one's next start),
// which resume them from their checkpoints, and a command in hand is
// redelivered. It returns when every worker has stopped or ctx is done.
func (c *Copier) Stop(ctx context.Context) error {
	if c.cancel != nil {
		c.cancel()
	}
	natsbus.StopConsuming(ctx, c.cc)
	return service.Wait(ctx, &c.wg)
}

// command carries out a prepare, copy or cancel command.
func (c *Copier) command(ctx context.Context, cmd *eventspb.StageCommand) (eventspb.StageError, error) {
	if cmd.GetAction() == eventspb.StageAction_STAGE_ACTION_CANCEL {
		return c.cancelMigration(ctx, cmd)
	}
	if !stage.Starts(cmd) {
		return 0, stage.ErrPending // pause and resume reach the workers through the copy controls
	}
	if err := c.controls.Check(ctx, cmd.GetMigrationId()); errors.Is(err, errEnded) {
		// A command delivered after its migration ended (a redelivery, or
		// one that lost a race with a cancel): doing it would recreate
		// what the cancel dropped.
		c.deps.Logger.InfoContext(ctx, "command of an ended migration ignored", "migration", cmd.GetMigrationId(), "stage", cmd.GetStage().String())
		return 0, stage.ErrPending
	}
	if cmd.GetType() == zdmpb.MigrationType_MIGRATION_TYPE_ZERO_DOWNTIME {
		// Capture first: the schema and the rows are read after T0.
		if _, err := stage.WaitArmed(ctx, c.deps.Bus.JS, c.deps.Bus.Replicas, cmd.GetSourceClusterId(), cmd.GetMigrationId()); err != nil {
			return eventspb.StageError_STAGE_ERROR_NO_GATEWAY, err
		}
	}
	src, tgt, code, err := stage.Connect(ctx, c.deps.Registry, cmd)
	if err != nil {
		return code, err
	}
	defer stage.CloseClients(ctx, c.deps.Logger, src, tgt)
	code, err = c.start(ctx, cmd, src, tgt)
	return code, stage.Blame(ctx, err, src, tgt)
}

// start prepares the target or plans the copy.
func (c *Copier) start(ctx context.Context, cmd *eventspb.StageCommand, src, tgt *milvusx.Client) (eventspb.StageError, error) {
	switch cmd.GetStage() {
	case zdmpb.StageKind_STAGE_KIND_PREPARE_TARGET:
		if _, err := PrepareTarget(ctx, src, tgt, PrepareOptions{DeferLoad: true, Logger: c.deps.Logger}); err != nil {
			return eventspb.StageError_STAGE_ERROR_PREPARE_FAILED, err
		}
		return 0, nil
	case zdmpb.StageKind_STAGE_KIND_COPY_DATA:
		units, err := PlanCopy(ctx, c.deps.Bus.JS, c.deps.Propagator, cmd.GetMigrationId(), src,
			PlanOptions{UnitRows: cmd.GetOptions().GetWorkUnitRows(), Replicas: c.deps.Bus.Replicas,
				SourceClusterID: cmd.GetSourceClusterId(), TargetClusterID: cmd.GetTargetClusterId()})
		if err != nil {
			return eventspb.StageError_STAGE_ERROR_PLAN_FAILED, err
		}
		if err := c.announcePlan(ctx, cmd, units); err != nil {
			return eventspb.StageError_STAGE_ERROR_PLAN_FAILED, err
		}
		return 0, stage.ErrPending // the coordinator ends the stage when every unit is done
	default:
		return eventspb.StageError_STAGE_ERROR_UNKNOWN_STAGE, fmt.Errorf("copier has no stage %s", cmd.GetStage())
	}
}

// cancelMigration takes the migration's units off the queue (running ones
// stop at their next page: the coordinator pauses a cancelling copy) and
// drops what the migration created on the target.
func (c *Copier) cancelMigration(ctx context.Context, cmd *eventspb.StageCommand) (eventspb.StageError, error) {
	if err := PurgeUnits(ctx, c.deps.Bus.JS, cmd.GetMigrationId()); err != nil {
		return eventspb.StageError_STAGE_ERROR_CANCEL_FAILED, err
	}
	if cmd.GetType() == zdmpb.MigrationType_MIGRATION_TYPE_ZERO_DOWNTIME {
		// Capture first: the schema and the rows are read after T0.
		if _, err := stage.WaitArmed(ctx, c.deps.Bus.JS, c.deps.Bus.Replicas, cmd.GetSourceClusterId(), cmd.GetMigrationId()); err != nil {
			return eventspb.StageError_STAGE_ERROR_NO_GATEWAY, err
		}
	}
	src, tgt, code, err := stage.Connect(ctx, c.deps.Registry, cmd)
	if err != nil {
		return code, err
	}
	defer stage.CloseClients(ctx, c.deps.Logger, src, tgt)
	dropped, err := DropCopied(ctx, src, tgt)
	if err != nil {
		return eventspb.StageError_STAGE_ERROR_CANCEL_FAILED, stage.Blame(ctx, err, src, tgt)
	}
	c.deps.Logger.InfoContext(ctx, "cancelled: dropped what the migration created on the target",
		"migration", cmd.GetMigrationId(), "collections", dropped)
	return 0, nil
}

func (c *Copier) announcePlan(ctx context.Context, cmd *eventspb.StageCommand, units []*eventspb.WorkUnit) error {
	ev := &eventspb.CopyPlanned{EventId: "plan-" + cmd.GetMigrationId(), MigrationId: cmd.GetMigrationId(), Time: timestamppb.Now()}
	byColl := map[string]*eventspb.CollectionPlan{}
	for _, u := range units {
		ev.UnitIds = append(ev.UnitIds, u.GetUnitId())
		key := u.GetDatabase() + "." + u.GetCollection()
		p, ok := byColl[key]
		if !ok {
			p = &eventspb.CollectionPlan{Database: u.GetDatabase(), Collection: u.GetCollection()}
			byColl[key] = p
			ev.Collections = append(ev.Collections, p)
		}
		p.Units++
		p.Rows += u.GetExpectedRows()
	}
	_, err := natsbus.Publish(ctx, c.deps.Bus.JS, c.deps.Propagator, natsbus.EventSubject(cmd.GetMigrationId(), natsbus.EventPlan), ev.GetEventId(), ev)
	return err
}

// Stages implements service.Staged: the copier prepares the target and
// copies the data.
func (c *Copier) Stages() []zdmpb.StageKind {
	return []zdmpb.StageKind{zdmpb.StageKind_STAGE_KIND_PREPARE_TARGET, zdmpb.StageKind_STAGE_KIND_COPY_DATA}
}

func (c *Copier) tracer() trace.Tracer {
	return c.deps.TracerProvider.Tracer("github.com/zdm-io/zdm/services/snapshot-copier")
}
