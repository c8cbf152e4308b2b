package stage

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/zdm-io/zdm/pkg/milvusx"
	zdmpb "github.com/zdm-io/zdm/proto/zdm/v1"
)

func TestUnreachable(t *testing.T) {
	down := status.Error(codes.Unavailable, "connection refused")
	for _, tc := range []struct {
		name string
		err  error
		want zdmpb.ClusterRole
	}{
		{"source unavailable", OnSource(fmt.Errorf("query shop.items: %w", down)), zdmpb.ClusterRole_CLUSTER_ROLE_SOURCE},
		{"target deadline", OnTarget(status.Error(codes.DeadlineExceeded, "slow")), zdmpb.ClusterRole_CLUSTER_ROLE_TARGET},
		{"target connect", OnTarget(fmt.Errorf("%w at x:1: %w", milvusx.ErrConnect, context.DeadlineExceeded)), zdmpb.ClusterRole_CLUSTER_ROLE_TARGET},
		{"the first role sticks", OnTarget(OnSource(down)), zdmpb.ClusterRole_CLUSTER_ROLE_SOURCE},
		{"answered with an error", OnTarget(errors.New("milvus error 100: collection not found")), zdmpb.ClusterRole_CLUSTER_ROLE_UNSPECIFIED},
		{"refused call", OnSource(status.Error(codes.PermissionDenied, "no")), zdmpb.ClusterRole_CLUSTER_ROLE_UNSPECIFIED},
		{"no role", down, zdmpb.ClusterRole_CLUSTER_ROLE_UNSPECIFIED},
		{"nil", OnSource(nil), zdmpb.ClusterRole_CLUSTER_ROLE_UNSPECIFIED},
	} {
		require.Equal(t, tc.want, Unreachable(tc.err), tc.name)
	}
	require.Equal(t, "target: boom", OnTarget(errors.New("boom")).Error())
}

func TestBackoff(t *testing.T) {
	var got []time.Duration
	for a := uint64(1); a <= 7; a++ {
		got = append(got, Backoff(a))
	}
	s := time.Second
	require.Equal(t, []time.Duration{s, 2 * s, 4 * s, 8 * s, 16 * s, 30 * s, 30 * s}, got)
	require.Equal(t, 30*s, Backoff(1000))
}
