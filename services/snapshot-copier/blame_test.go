package copier

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/zdm-io/zdm/pkg/milvusx"
	"github.com/zdm-io/zdm/pkg/stage"
	"github.com/zdm-io/zdm/pkg/verify"
	"github.com/zdm-io/zdm/pkg/ztest"
	zdmpb "github.com/zdm-io/zdm/proto/zdm/v1"
)

// TestIntegrationDeadClusterBlamed kills a real server in the middle of
// work that talks to both clusters: preparing the target with the target
// dead, and verifying with the source dead. The error is blamed on the
// cluster that died, so the stage is retried and the cluster shown as
// down, rather than failed; with the target back, the preparing succeeds.
func TestIntegrationDeadClusterBlamed(t *testing.T) {
	ztest.Integration(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	src, tgt := ztest.StartServer(t, "lite3"), ztest.StartServer(t, "lite3")
	open := func(s *ztest.Server) *milvusx.Client {
		c, err := milvusx.Open(ctx, &zdmpb.ClusterConnection{Endpoint: s.Addr}, "")
		require.NoError(t, err)
		t.Cleanup(func() { _ = c.Close() }) // the server may be dead by then
		return c
	}
	sc, tc := open(src), open(tgt)
	seed(t, ctx, sc)

	tgt.Kill()
	_, err := PrepareTarget(ctx, sc, tc, PrepareOptions{})
	require.Error(t, err)
	blamed := stage.Blame(ctx, err, sc, tc)
	require.Equal(t, zdmpb.ClusterRole_CLUSTER_ROLE_TARGET, stage.Unreachable(blamed), "%v", blamed)

	tgt.Start()
	tc = open(tgt)
	_, err = PrepareTarget(ctx, sc, tc, PrepareOptions{})
	require.NoError(t, err, "the target is back: the retried stage succeeds")

	table, err := milvusx.DescribeTable(ctx, sc.Raw, milvusx.DefaultDatabase, "items")
	require.NoError(t, err)
	src.Kill()
	_, err = verify.Collection(ctx, sc.Raw, tc.Raw, table, 0)
	require.Error(t, err)
	blamed = stage.Blame(ctx, err, sc, tc)
	require.Equal(t, zdmpb.ClusterRole_CLUSTER_ROLE_SOURCE, stage.Unreachable(blamed), "%v", blamed)
}
