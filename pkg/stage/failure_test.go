package stage

import (
	"context"
	"errors"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
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

// notMilvus serves only gRPC health: a server that answers, as Blame's
// check sees it. Stop makes it one that does not.
func notMilvus(t *testing.T) (*milvusx.Client, func()) {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	srv := grpc.NewServer()
	healthpb.RegisterHealthServer(srv, health.NewServer())
	go func() { _ = srv.Serve(lis) }() // Serve returns when the test stops it
	t.Cleanup(srv.Stop)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := milvusx.Open(ctx, &zdmpb.ClusterConnection{Endpoint: lis.Addr().String()}, "")
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, c.Close()) })
	return c, srv.Stop
}

func TestBlame(t *testing.T) {
	src, stopSrc := notMilvus(t)
	tgt, stopTgt := notMilvus(t)
	ctx := t.Context()
	down := fmt.Errorf("create collection shop.items: %w", status.Error(codes.Unavailable, "connection refused"))

	require.NoError(t, Blame(ctx, nil, src, tgt))
	answered := errors.New("milvus error 100: collection not found")
	require.Same(t, answered, Blame(ctx, answered, src, tgt), "an answer is no cluster's failure to answer")
	marked := OnSource(down)
	require.Same(t, marked, Blame(ctx, marked, src, tgt), "a marked error keeps its cluster")
	require.Same(t, down, Blame(ctx, down, src, tgt), "both clusters answer: nobody to blame")

	stopTgt()
	got := Blame(ctx, down, src, tgt)
	require.Equal(t, zdmpb.ClusterRole_CLUSTER_ROLE_TARGET, Unreachable(got), "%v", got)
	require.ErrorIs(t, got, down)
	require.Equal(t, "target: "+down.Error(), got.Error())

	stopped, cancel := context.WithCancel(ctx)
	cancel()
	require.Equal(t, zdmpb.ClusterRole_CLUSTER_ROLE_TARGET, Unreachable(Blame(stopped, context.DeadlineExceeded, src, tgt)),
		"the check has a deadline of its own")

	stopSrc()
	require.Equal(t, zdmpb.ClusterRole_CLUSTER_ROLE_SOURCE, Unreachable(Blame(ctx, down, src, tgt)), "the source is checked first")
}
