// Package lagmonitor measures each migration's lag behind the source, emits
// threshold events and notifications, and verifies source against target
// (counts, distinct keys and per-range checksums).
package lagmonitor

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/zdm-io/zdm/pkg/apierr"
	"github.com/zdm-io/zdm/pkg/milvusx"
	"github.com/zdm-io/zdm/pkg/natsbus"
	"github.com/zdm-io/zdm/pkg/service"
	"github.com/zdm-io/zdm/pkg/stage"
	"github.com/zdm-io/zdm/pkg/validate"
	"github.com/zdm-io/zdm/pkg/verify"
	eventspb "github.com/zdm-io/zdm/proto/zdm/events/v1"
	lagpb "github.com/zdm-io/zdm/proto/zdm/lag/v1"
	zdmpb "github.com/zdm-io/zdm/proto/zdm/v1"
)

// Name is the lag monitor's -target name.
const Name = "lag-monitor"

// Monitor serves LagMonitorService, measures and reports the lag of every
// syncing migration and runs verification stages (with a repair of what
// the change stream missed, for ZERO_DOWNTIME). Verify answers for any
// pair of clusters it is given.
type Monitor struct {
	lagpb.UnimplementedLagMonitorServiceServer

	cfg        Config
	deps       service.Deps
	lag        *lagMeter
	migrations *natsbus.Table[*zdmpb.Migration]
	wg         sync.WaitGroup
	cc         jetstream.ConsumeContext
	// stop ends the run context that verifications derive from.
	stop context.CancelFunc
}

var _ service.Service = (*Monitor)(nil)

// New returns a monitor that is not yet started.
func New(cfg Config, deps service.Deps) (*Monitor, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &Monitor{cfg: cfg, deps: deps}, nil
}

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

// Start measures lag and consumes verification commands.
func (m *Monitor) Start(ctx context.Context) error {
	bus := m.deps.Bus
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
	publish := func(ctx context.Context, subject, id string, ev *eventspb.LagReport) error {
		_, err := natsbus.Publish(ctx, bus.JS, m.deps.Propagator, subject, id, ev)
		return err
	}
	if m.lag, err = newLagMeter(publish, m.deps.Logger, migrations, positions, m.deps.Metrics); err != nil {
		return err
	}
	m.migrations = migrations
	notices, err := natsbus.NoticesBucket.Open(ctx, bus.JS, bus.Replicas)
	if err != nil {
		return err
	}
	n := &notifier{cfg: m.cfg, log: m.deps.Logger, tracer: m.tracer(), migrations: migrations, notices: natsbus.NoticesTable(notices), http: &http.Client{}, now: time.Now, retryBase: sendTimeout,
		publish: func(ctx context.Context, subject, id string, ev proto.Message) error {
			_, err := natsbus.Publish(ctx, bus.JS, m.deps.Propagator, subject, id, ev)
			return err
		}}
	run, stop := context.WithCancel(context.WithoutCancel(ctx))
	m.wg.Go(func() { m.lag.run(run) })
	m.wg.Go(func() { n.run(run) })
	cc, err := stage.Consume(ctx, run, m.deps.Bus.JS, m.deps.Propagator, m.tracer(), m.deps.Logger, natsbus.LagMonitorCommandsDurable,
		[]zdmpb.StageKind{zdmpb.StageKind_STAGE_KIND_VERIFY}, time.Hour, m.verify)
	if err != nil {
		stop()
		m.wg.Wait()
		return err
	}
	m.cc, m.stop = cc, stop
	return nil
}

// GetLag implements lagpb.LagMonitorServiceServer.
func (m *Monitor) GetLag(ctx context.Context, req *lagpb.GetLagRequest) (*lagpb.GetLagResponse, error) {
	if err := validate.ID("migration_id", "migration", req.GetMigrationId()); err != nil {
		return nil, err
	}
	return m.lag.getLag(ctx, req.GetMigrationId())
}

// Stop cancels a verification in hand (its command is redelivered and
// the verification runs again) and stops consuming.
func (m *Monitor) Stop(ctx context.Context) error {
	if m.stop != nil {
		m.stop()
	}
	natsbus.StopConsuming(ctx, m.cc)
	return service.Wait(ctx, &m.wg)
}

// maxReported bounds how many mismatched collections a failure names.
const maxReported = 5

// verify compares every collection of every source database with the
// target and fails the stage with the ranges and keys that differ.
func (m *Monitor) verify(ctx context.Context, cmd *eventspb.StageCommand) (eventspb.StageError, error) {
	if !stage.Starts(cmd) {
		return 0, stage.ErrPending
	}
	src, tgt, code, err := stage.Connect(ctx, m.deps.Registry, cmd)
	if err != nil {
		return code, err
	}
	defer stage.CloseClients(ctx, m.deps.Logger, src, tgt)
	code, err = m.compare(ctx, cmd, src, tgt)
	return code, stage.Blame(ctx, err, src, tgt)
}

// compare is verify's work once both clusters are connected.
func (m *Monitor) compare(ctx context.Context, cmd *eventspb.StageCommand, src, tgt *milvusx.Client) (eventspb.StageError, error) {
	mig, _, err := m.migrations.Get(ctx, cmd.GetMigrationId())
	if err != nil {
		return eventspb.StageError_STAGE_ERROR_VERIFY_FAILED, err
	}
	// The copy leaves the target's collections released; verifying reads
	// them (normally the applier has loaded them already).
	if err := milvusx.LoadLikeSource(ctx, src, tgt); err != nil {
		return eventspb.StageError_STAGE_ERROR_VERIFY_FAILED, err
	}
	if mig.GetSwitchover().GetSwitchTime() != nil {
		return m.verifySwitched(ctx, mig, src, tgt)
	}
	reports, err := compareAll(ctx, src, tgt, nil, 0, nil)
	if err != nil {
		return eventspb.StageError_STAGE_ERROR_VERIFY_FAILED, err
	}
	stage.Duplicates(ctx, duplicates(reports))
	if cmd.GetType() == zdmpb.MigrationType_MIGRATION_TYPE_ZERO_DOWNTIME {
		// Writes to the source have stopped: what differs now is a write
		// that never reached the change stream (it bypassed the gateway,
		// or its gateway died before publishing it). Copy those ranges
		// again from the source, then compare everything once more.
		repairs, code, err := m.repair(ctx, src, tgt, reports)
		stage.Repaired(ctx, repairs)
		if err != nil {
			return code, err
		}
		if len(repairs) > 0 {
			var rows int64
			for _, r := range repairs {
				rows += r.GetRowsUpserted() + r.GetKeysDeleted()
			}
			trace.SpanFromContext(ctx).SetAttributes(attribute.Int("zdm.repaired_ranges", len(repairs)), attribute.Int64("zdm.repaired_rows", rows))
			if reports, err = compareAll(ctx, src, tgt, nil, 0, nil); err != nil {
				return eventspb.StageError_STAGE_ERROR_VERIFY_FAILED, err
			}
			stage.Duplicates(ctx, duplicates(reports))
		}
	}
	if err := mismatch(reports); err != nil {
		return eventspb.StageError_STAGE_ERROR_VERIFICATION_MISMATCH, err
	}
	return 0, nil
}

// repair copies again from the source every mismatched range of reports
// and returns what it did, range by range. A range it could not read
// whole, or that would lose more keys than the configured share, stops
// it: nothing of that range is deleted.
func (m *Monitor) repair(ctx context.Context, src, tgt *milvusx.Client, reports []*verify.Report) ([]*zdmpb.RangeRepair, eventspb.StageError, error) {
	var done []*zdmpb.RangeRepair
	for _, r := range reports {
		if len(r.Mismatches) == 0 {
			continue
		}
		t, err := milvusx.DescribeTable(ctx, src.Raw, r.Database, r.Collection)
		if err != nil {
			return done, eventspb.StageError_STAGE_ERROR_VERIFY_FAILED, err
		}
		for _, mm := range r.Mismatches {
			rr, err := verify.Repair(ctx, src.Raw, tgt.Raw, t, mm, m.cfg.RepairMaxDeleteShare)
			if rr.Upserted+rr.Deleted > 0 {
				done = append(done, &zdmpb.RangeRepair{Database: rr.Database, Collection: rr.Collection, Partition: rr.Partition,
					StartKey: rr.Start, EndKey: rr.End, RowsUpserted: rr.Upserted, KeysDeleted: rr.Deleted,
					SampleUpsertedKeys: rr.UpsertedSample, SampleDeletedKeys: rr.DeletedSample})
				m.deps.Logger.InfoContext(ctx, "repaired a range the change stream missed", "collection", r.Database+"."+r.Collection,
					"partition", rr.Partition, "start", verify.Bound(rr.Start), "end", verify.Bound(rr.End), "upserted", rr.Upserted, "deleted", rr.Deleted,
					"upserted_keys", rr.UpsertedSample, "deleted_keys", rr.DeletedSample)
			}
			if errors.Is(err, verify.ErrTooManyDeletes) {
				return done, eventspb.StageError_STAGE_ERROR_REPAIR_REFUSED, fmt.Errorf("repair %s.%s: %w; raise --repair-max-delete-share to allow it", r.Database, r.Collection, err)
			}
			if err != nil {
				return done, eventspb.StageError_STAGE_ERROR_VERIFY_FAILED, fmt.Errorf("repair %s.%s: %w", r.Database, r.Collection, err)
			}
		}
	}
	return done, 0, nil
}

// duplicates lists the collections of reports whose source holds keys
// more than once.
func duplicates(reports []*verify.Report) []*zdmpb.DuplicateKeys {
	var out []*zdmpb.DuplicateKeys
	for _, r := range reports {
		if r.SourceDuplicateKeys > 0 {
			out = append(out, &zdmpb.DuplicateKeys{Database: r.Database, Collection: r.Collection, Keys: r.SourceDuplicateKeys,
				ExtraRows: r.SourceExtraRows, SampleKeys: r.SourceDuplicates})
		}
	}
	return out
}

// mismatch describes the reports that do not match; nil when all do.
func mismatch(reports []*verify.Report) error {
	var bad []string
	for _, r := range reports {
		if !r.Match() {
			bad = append(bad, describe(r))
		}
	}
	if len(bad) == 0 {
		return nil
	}
	more := ""
	if len(bad) > maxReported {
		bad, more = bad[:maxReported], fmt.Sprintf("; and %d more collections", len(bad)-maxReported)
	}
	return errors.New(strings.Join(bad, "; ") + more)
}

// verifySwitched verifies a migration after its switchover: the source no
// longer changes, and the keys written through the gateway to the target
// since the switch (which it recorded) are left out on both sides. Nothing
// is repaired: clients write to the target now. The result is recorded in
// the migration whatever it is.
func (m *Monitor) verifySwitched(ctx context.Context, mig *zdmpb.Migration, src, tgt *milvusx.Client) (eventspb.StageError, error) {
	// Clients may still be writing to the target while it is compared.
	// Every key written there was recorded before its client heard back,
	// so once the comparison is over (and a moment more), every key it
	// may have seen written is known: differences in those keys alone
	// are writes after the switch.
	except, _, err := switchedKeys(ctx, m.deps.Bus.JS, m.deps.Propagator, mig.GetMigrationId())
	if err != nil {
		return eventspb.StageError_STAGE_ERROR_VERIFY_FAILED, err
	}
	reports, err := compareAll(ctx, src, tgt, nil, 0, except)
	if err != nil {
		return eventspb.StageError_STAGE_ERROR_VERIFY_FAILED, err
	}
	if err := stage.Sleep(ctx, recordGrace); err != nil {
		return eventspb.StageError_STAGE_ERROR_VERIFY_FAILED, err
	}
	except, n, err := switchedKeys(ctx, m.deps.Bus.JS, m.deps.Propagator, mig.GetMigrationId())
	if err != nil {
		return eventspb.StageError_STAGE_ERROR_VERIFY_FAILED, err
	}
	for _, r := range reports {
		settle(r, except[r.Database+"."+r.Collection])
	}
	stage.Duplicates(ctx, duplicates(reports))
	var rows int64
	for _, r := range reports {
		rows += r.SourceCount
	}
	left := fmt.Sprintf("leaving out %d keys written to the target after the switch", n)
	if err := mismatch(reports); err != nil {
		stage.Verified(ctx, fmt.Sprintf("verification after the switchover found differences (%s): %v", left, err))
		return eventspb.StageError_STAGE_ERROR_VERIFICATION_MISMATCH, err
	}
	stage.Verified(ctx, fmt.Sprintf("source and target verified equal after the switchover: %d collections, %d rows, %s", len(reports), rows, left))
	return 0, nil
}

// settle drops from r the differences in keys written after the switch
// (written): a range differs only if a key outside them differs. Counts
// then compare equal unless the target holds a key twice.
func settle(r *verify.Report, written map[milvusx.Key]bool) {
	var left []verify.Mismatch
	for _, mm := range r.Mismatches {
		if slices.ContainsFunc(mm.Keys, func(k milvusx.Key) bool { return !written[k] }) {
			left = append(left, mm)
		}
	}
	r.Mismatches = left
	if len(left) == 0 && r.TargetCount == r.TargetDistinct {
		r.TargetCount, r.TargetDistinct = r.SourceDistinct, r.SourceDistinct
	}
}

// recordGrace is how long after a write to the target its gateway has
// surely recorded it, or failed the call.
const recordGrace = time.Second

// switchedKeys reads the keys the gateways recorded as written to
// migration's target after its switchover, by "database.collection", and
// how many there are.
func switchedKeys(ctx context.Context, js jetstream.JetStream, prop propagation.TextMapPropagator, migration string) (map[string]map[milvusx.Key]bool, int, error) {
	cons, err := natsbus.SwitchedReader(migration).Create(ctx, js)
	if err != nil {
		return nil, 0, fmt.Errorf("changes after the switch: %w", err)
	}
	out, n := map[string]map[milvusx.Key]bool{}, 0
	for {
		batch, err := cons.Fetch(256, jetstream.FetchMaxWait(200*time.Millisecond))
		if err != nil {
			return nil, 0, fmt.Errorf("changes after the switch: %w", err)
		}
		for msg := range batch.Messages() {
			var b eventspb.ChangeBatch
			if _, err := natsbus.Decode(ctx, prop, msg, &b); err != nil {
				return nil, 0, fmt.Errorf("malformed change on %s: %w", msg.Subject(), err)
			}
			for _, ev := range b.GetChanges() {
				c := ev.GetDatabase() + "." + ev.GetCollection()
				if out[c] == nil {
					out[c] = map[milvusx.Key]bool{}
				}
				for _, k := range natsbus.Keys(ev.GetPrimaryKeys()) {
					if !out[c][k] {
						out[c][k], n = true, n+1
					}
				}
			}
		}
		info, err := cons.Info(ctx)
		if err != nil {
			return nil, 0, fmt.Errorf("changes after the switch: %w", err)
		}
		if info.NumPending == 0 {
			return out, n, nil
		}
	}
}

// compareAll verifies the given collections ("database.collection"; nil
// for every collection of every source database). Errors:
// apierr.ErrNotFound for a collection the source lacks.
func compareAll(ctx context.Context, src, tgt *milvusx.Client, only []string, rangeRows int, except map[string]map[milvusx.Key]bool) ([]*verify.Report, error) {
	all, err := milvusx.UserCollections(ctx, src)
	if err != nil {
		return nil, fmt.Errorf("source: %w", err)
	}
	if only != nil {
		for _, c := range only {
			if !slices.Contains(all, c) {
				return nil, fmt.Errorf("%w: the source has no collection %s", apierr.ErrNotFound, c)
			}
		}
		all = only
	}
	var out []*verify.Report
	for _, c := range all {
		db, name, _ := strings.Cut(c, ".")
		t, err := milvusx.DescribeTable(ctx, src.Raw, db, name)
		if err != nil {
			return nil, err
		}
		r, err := verify.CollectionExcept(ctx, src.Raw, tgt.Raw, t, rangeRows, except[c])
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, nil
}

// Verify implements lagpb.LagMonitorServiceServer.
func (m *Monitor) Verify(ctx context.Context, req *lagpb.VerifyRequest) (*lagpb.VerifyResponse, error) {
	if err := validate.OptionalID("migration_id", "migration", req.GetMigrationId()); err != nil {
		return nil, err
	}
	if err := validate.Connection("source", req.GetSource()); err != nil {
		return nil, err
	}
	if err := validate.Connection("target", req.GetTarget()); err != nil {
		return nil, err
	}
	for _, c := range req.GetCollections() {
		if db, name, ok := strings.Cut(c, "."); !ok || db == "" || name == "" {
			return nil, fmt.Errorf("%w: collection %q: want database.collection", apierr.ErrInvalidArgument, c)
		}
	}
	if req.GetRangeRows() < 0 {
		return nil, fmt.Errorf("%w: range_rows %d must not be negative", apierr.ErrInvalidArgument, req.GetRangeRows())
	}
	src, err := milvusx.Open(ctx, req.GetSource(), "")
	if err != nil {
		return nil, fmt.Errorf("%w: source: %w", apierr.ErrFailedPrecondition, err)
	}
	defer stage.CloseClients(ctx, m.deps.Logger, src)
	tgt, err := milvusx.Open(ctx, req.GetTarget(), "")
	if err != nil {
		return nil, fmt.Errorf("%w: target: %w", apierr.ErrFailedPrecondition, err)
	}
	defer stage.CloseClients(ctx, m.deps.Logger, tgt)
	reports, err := compareAll(ctx, src, tgt, req.GetCollections(), int(req.GetRangeRows()), nil)
	if errors.Is(err, apierr.ErrNotFound) {
		return nil, err
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %w", apierr.ErrFailedPrecondition, err)
	}
	resp := &lagpb.VerifyResponse{Match: true}
	for _, r := range reports {
		cv := &lagpb.CollectionVerification{Database: r.Database, Collection: r.Collection,
			SourceCount: r.SourceCount, TargetCount: r.TargetCount,
			SourceDistinctKeys: r.SourceDistinct, TargetDistinctKeys: r.TargetDistinct, Time: timestamppb.Now(),
			SourceDuplicateKeys: r.SourceDuplicateKeys, SourceDuplicateSampleKeys: r.SourceDuplicates}
		for _, mm := range r.Mismatches {
			cv.Mismatches = append(cv.Mismatches, &lagpb.RangeMismatch{StartKey: mm.Start, EndKey: mm.End, SampleKeys: mm.SampleKeys})
		}
		resp.Collections = append(resp.Collections, cv)
		resp.Match = resp.Match && r.Match()
	}
	return resp, nil
}

// describe names a mismatch: counts and the first ranges with sample keys.
func describe(r *verify.Report) string {
	var b strings.Builder
	b.WriteString(r.String())
	for i, mm := range r.Mismatches {
		if i == 3 {
			fmt.Fprintf(&b, ", and %d more ranges", len(r.Mismatches)-3)
			break
		}
		fmt.Fprintf(&b, ", keys [%s, %s) differ (e.g. %s)", verify.Bound(mm.Start), verify.Bound(mm.End), strings.Join(mm.SampleKeys, ", "))
	}
	return b.String()
}

// Stages implements service.Staged: the lag monitor verifies.
func (m *Monitor) Stages() []zdmpb.StageKind {
	return []zdmpb.StageKind{zdmpb.StageKind_STAGE_KIND_VERIFY}
}

func (m *Monitor) tracer() trace.Tracer {
	return m.deps.TracerProvider.Tracer("github.com/zdm-io/zdm/services/lag-monitor")
}
