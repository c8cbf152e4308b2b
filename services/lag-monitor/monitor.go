// Package lagmonitor measures each migration's lag behind the source, emits
// threshold events and notifications, and verifies source against target
// (counts, distinct keys and per-range checksums).
package lagmonitor

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/zdm-io/zdm/pkg/apierr"

	"github.com/zdm-io/zdm/pkg/milvusx"
	"github.com/zdm-io/zdm/pkg/natsbus"
	"github.com/zdm-io/zdm/pkg/service"
	"github.com/zdm-io/zdm/pkg/stage"
	"github.com/zdm-io/zdm/pkg/verify"
	eventspb "github.com/zdm-io/zdm/proto/zdm/events/v1"
	lagpb "github.com/zdm-io/zdm/proto/zdm/lag/v1"
	zdmpb "github.com/zdm-io/zdm/proto/zdm/v1"
)

// Name is the lag monitor's -target name.
const Name = "lag-monitor"

// Monitor serves LagMonitorService and runs verification stages. Lag
// measurement lands with the CDC streamer; until then GetLag answers
// UNIMPLEMENTED. Verify answers for any pair of clusters it is given.
type Monitor struct {
	lagpb.UnimplementedLagMonitorServiceServer

	deps service.Deps
	cc   jetstream.ConsumeContext
	// stop ends the run context that verifications derive from.
	stop context.CancelFunc
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

// Start consumes verification commands.
func (m *Monitor) Start(ctx context.Context) error {
	run, stop := context.WithCancel(context.WithoutCancel(ctx))
	cc, err := stage.Consume(ctx, run, m.deps.Bus.JS, m.deps.Propagator, m.deps.Logger, "lag-monitor",
		[]zdmpb.StageKind{zdmpb.StageKind_STAGE_KIND_VERIFY}, time.Hour, m.verify)
	if err != nil {
		stop()
		return err
	}
	m.cc, m.stop = cc, stop
	return nil
}

// Stop cancels a verification in hand (its command is redelivered and
// the verification runs again) and stops consuming.
func (m *Monitor) Stop(ctx context.Context) error {
	if m.stop != nil {
		m.stop()
	}
	natsbus.StopConsuming(ctx, m.cc)
	return nil
}

// maxReported bounds how many mismatched collections a failure names.
const maxReported = 5

// verify compares every collection of every source database with the
// target and fails the stage with the ranges and keys that differ.
func (m *Monitor) verify(ctx context.Context, cmd *eventspb.StageCommand) (eventspb.StageError, error) {
	if !stage.Starts(cmd) {
		return 0, stage.ErrPending
	}
	sc, tc, code, err := stage.Connect(ctx, m.deps.Registry, cmd)
	if err != nil {
		return code, err
	}
	// Verifying only reads: a failure to close changes no result.
	defer sc.Close()
	defer tc.Close()
	src, err := milvusx.Wrap(sc)
	if err != nil {
		return eventspb.StageError_STAGE_ERROR_VERIFY_FAILED, err
	}
	tgt, err := milvusx.Wrap(tc)
	if err != nil {
		return eventspb.StageError_STAGE_ERROR_VERIFY_FAILED, err
	}
	reports, err := compareAll(ctx, src, tgt, nil, 0)
	if err != nil {
		return eventspb.StageError_STAGE_ERROR_VERIFY_FAILED, err
	}
	var bad []string
	for _, r := range reports {
		if !r.Match() {
			bad = append(bad, describe(r))
		}
	}
	if len(bad) == 0 {
		return 0, nil
	}
	more := ""
	if len(bad) > maxReported {
		bad, more = bad[:maxReported], fmt.Sprintf("; and %d more collections", len(bad)-maxReported)
	}
	return eventspb.StageError_STAGE_ERROR_VERIFICATION_MISMATCH, errors.New(strings.Join(bad, "; ") + more)
}

// compareAll verifies the given collections ("database.collection"; nil
// for every collection of every source database). Errors:
// apierr.ErrNotFound for a collection the source lacks.
func compareAll(ctx context.Context, src, tgt *milvusx.Client, only []string, rangeRows int) ([]*verify.Report, error) {
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
		r, err := verify.Collection(ctx, src.Raw, tgt.Raw, t, rangeRows)
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, nil
}

// Verify implements lagpb.LagMonitorServiceServer.
func (m *Monitor) Verify(ctx context.Context, req *lagpb.VerifyRequest) (*lagpb.VerifyResponse, error) {
	if req.GetSource() == nil || req.GetTarget() == nil {
		return nil, fmt.Errorf("%w: source and target connections are required", apierr.ErrInvalidArgument)
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
	// Verifying only reads: a failure to close changes no result.
	defer src.Close()
	tgt, err := milvusx.Open(ctx, req.GetTarget(), "")
	if err != nil {
		return nil, fmt.Errorf("%w: target: %w", apierr.ErrFailedPrecondition, err)
	}
	defer tgt.Close()
	reports, err := compareAll(ctx, src, tgt, req.GetCollections(), int(req.GetRangeRows()))
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
			SourceDistinctKeys: r.SourceDistinct, TargetDistinctKeys: r.TargetDistinct, Time: timestamppb.Now()}
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
		fmt.Fprintf(&b, ", keys [%s, %s) differ (e.g. %s)", orOpen(mm.Start), orOpen(mm.End), strings.Join(mm.SampleKeys, ", "))
	}
	return b.String()
}

func orOpen(s string) string {
	if s == "" {
		return "…"
	}
	return s
}

// Stages implements service.Staged: the lag monitor verifies.
func (m *Monitor) Stages() []zdmpb.StageKind {
	return []zdmpb.StageKind{zdmpb.StageKind_STAGE_KIND_VERIFY}
}
