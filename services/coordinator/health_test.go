package coordinator

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

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
