package coordinator

import (
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/zdm-io/zdm/pkg/natsbus"
	"github.com/zdm-io/zdm/pkg/telemetry"
	"github.com/zdm-io/zdm/pkg/ztest"
	eventspb "github.com/zdm-io/zdm/proto/zdm/events/v1"
	zdmpb "github.com/zdm-io/zdm/proto/zdm/v1"
)

func TestDescribeRange(t *testing.T) {
	ir := func(s, e *int64) *eventspb.KeyRange {
		return &eventspb.KeyRange{Bounds: &eventspb.KeyRange_IntBounds_{IntBounds: &eventspb.KeyRange_IntBounds{Start: s, End: e}}}
	}
	sr := func(s, e *string) *eventspb.KeyRange {
		return &eventspb.KeyRange{Bounds: &eventspb.KeyRange_StringBounds_{StringBounds: &eventspb.KeyRange_StringBounds{Start: s, End: e}}}
	}
	require.Equal(t, "[2001, 4001)", describeRange(ir(proto.Int64(2001), proto.Int64(4001))))
	require.Equal(t, "[-inf, 7)", describeRange(ir(nil, proto.Int64(7))))
	require.Equal(t, `["a", +inf)`, describeRange(sr(proto.String("a"), nil)))
	require.Equal(t, "(all)", describeRange(nil))
}

func TestDownTooLong(t *testing.T) {
	since := time.Date(2026, 11, 26, 15, 0, 0, 0, time.UTC)
	p := &zdmpb.ClusterProblem{Role: zdmpb.ClusterRole_CLUSTER_ROLE_SOURCE, ClusterId: "prod", LastError: "refused",
		Since: timestamppb.New(since), FailTime: timestamppb.New(since.Add(time.Minute)), FailedAttempts: 4}
	require.Nil(t, downTooLong(p, since.Add(59*time.Second)))
	e := downTooLong(p, since.Add(time.Minute))
	require.NotNil(t, e)
	require.Equal(t, "CLUSTER_UNREACHABLE", e.GetCode())
	require.Equal(t, `source cluster "prod" has not answered since 2026-11-26T15:00:00Z (1m0s, 4 failed attempts); last error: refused`, e.GetMessage())
}

func TestTransitionsClearClusterProblems(t *testing.T) {
	at := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	m := &zdmpb.Migration{Type: offline, State: pending, Stages: NewStages(offline)}
	_, err := Apply(m, Event{Trigger: TriggerStart, Time: at})
	require.NoError(t, err)
	m.ClusterProblems = []*zdmpb.ClusterProblem{{Role: zdmpb.ClusterRole_CLUSTER_ROLE_TARGET}}
	_, err = Apply(m, Event{Trigger: TriggerPrepareDone, Time: at})
	require.NoError(t, err)
	require.Empty(t, m.GetClusterProblems(), "the stage moved on: its clusters answered")
	m.ClusterProblems = []*zdmpb.ClusterProblem{{Role: zdmpb.ClusterRole_CLUSTER_ROLE_TARGET}}
	_, err = Apply(m, Event{Trigger: TriggerFail, Time: at, Reason: "down"})
	require.NoError(t, err)
	require.Len(t, m.GetClusterProblems(), 1, "a failure keeps the problem that caused it")
}

// workFailed publishes a failed attempt at stage of migration id, timed
// now by the harness's clock.
func (h *harness) workFailed(id string, stage zdmpb.StageKind, role zdmpb.ClusterRole, msg string) {
	h.t.Helper()
	ev := &eventspb.WorkFailed{EventId: fmt.Sprintf("%s-failed-%d", id, eventSeq.Add(1)), MigrationId: id, Stage: stage,
		Cluster: role, ErrorMessage: msg, Time: timestamppb.New(h.clock.Now())}
	_, err := natsbus.Publish(ctxT(h.t), h.bus.JS, telemetry.Propagator(), natsbus.EventSubject(id, natsbus.EventFailed), ev.GetEventId(), ev)
	require.NoError(h.t, err)
	h.eventsHandled()
}

// TestClusterProblemsShownClearedAndFailed follows a cluster that stops
// answering: shown at the first failed attempt of any stage, counted
// without moving since, ignored while paused, cleared once the stage moves
// on, and the migration failed by the sweep once the cluster has been down
// past the timeout, also with no new failure to say so.
func TestClusterProblemsShownClearedAndFailed(t *testing.T) {
	bus, _ := ztest.Bus(t)
	clock := newClock()
	h := newUnitHarness(t, bus, clock, newFakeProber())
	h.create("hp", offline)
	t0 := clock.Now()
	target := zdmpb.ClusterRole_CLUSTER_ROLE_TARGET

	h.workFailed("hp", zdmpb.StageKind_STAGE_KIND_PREPARE_TARGET, target, "target: connection refused")
	clock.Advance(30 * time.Second)
	h.workFailed("hp", zdmpb.StageKind_STAGE_KIND_PREPARE_TARGET, target, "target: deadline exceeded")
	m := h.get("hp")
	require.Equal(t, preparing, m.GetState())
	require.Len(t, m.GetClusterProblems(), 1)
	p := m.GetClusterProblems()[0]
	require.Equal(t, target, p.GetRole())
	require.Equal(t, "hp-tgt", p.GetClusterId())
	require.Equal(t, int64(2), p.GetFailedAttempts())
	require.Equal(t, t0, p.GetSince().AsTime(), "since the first failure")
	require.Equal(t, t0.Add(30*time.Second), p.GetLastErrorTime().AsTime())
	require.Equal(t, "target: deadline exceeded", p.GetLastError())
	require.Equal(t, t0.Add(DefaultConfig().ClusterDownTimeout), p.GetFailTime().AsTime())

	h.workFailed("hp", zdmpb.StageKind_STAGE_KIND_PREPARE_TARGET, zdmpb.ClusterRole_CLUSTER_ROLE_UNSPECIFIED, "milvus error 1100: bad schema")
	require.Equal(t, int64(2), h.get("hp").GetClusterProblems()[0].GetFailedAttempts(), "an answer with an error is no cluster down")

	h.stageDone("hp", zdmpb.StageKind_STAGE_KIND_PREPARE_TARGET, true, "", "")
	m = h.waitState("hp", copying)
	require.Empty(t, m.GetClusterProblems(), "the stage moved on: its clusters answered")

	_, err := h.mig.PauseMigration(ctxT(t), &zdmpb.PauseMigrationRequest{MigrationId: "hp"})
	require.NoError(t, err)
	h.workFailed("hp", zdmpb.StageKind_STAGE_KIND_COPY_DATA, target, "target: connection refused")
	require.Empty(t, h.get("hp").GetClusterProblems(), "a late report while paused: nothing runs")
	_, err = h.mig.ResumeMigration(ctxT(t), &zdmpb.ResumeMigrationRequest{MigrationId: "hp"})
	require.NoError(t, err)

	h.workFailed("hp", zdmpb.StageKind_STAGE_KIND_COPY_DATA, zdmpb.ClusterRole_CLUSTER_ROLE_SOURCE, "source: connection refused")
	down := clock.Now()
	clock.Advance(DefaultConfig().ClusterDownTimeout - time.Second)
	require.NoError(t, h.coord.sweep(ctxT(t)))
	require.Equal(t, copying, h.get("hp").GetState(), "not down long enough yet")
	clock.Advance(time.Second)
	require.NoError(t, h.coord.sweep(ctxT(t)))
	m = h.get("hp")
	require.Equal(t, failed, m.GetState())
	require.Equal(t, "CLUSTER_UNREACHABLE", m.GetError().GetCode())
	require.Equal(t, zdmpb.StageKind_STAGE_KIND_COPY_DATA, m.GetError().GetStage())
	require.Equal(t, fmt.Sprintf(`source cluster "hp-src" has not answered since %s (%s, 1 failed attempts); last error: source: connection refused`,
		down.Format(time.RFC3339), DefaultConfig().ClusterDownTimeout), m.GetError().GetMessage())
	require.Len(t, m.GetClusterProblems(), 1, "the failure keeps the problem on show")
}
