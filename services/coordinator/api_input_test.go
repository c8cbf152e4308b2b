package coordinator

import (
	"context"
	"encoding/base64"
	"net"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/zdm-io/zdm/pkg/ztest"
	zdmpb "github.com/zdm-io/zdm/proto/zdm/v1"
)

// TestAPIRefusesMalformedInput sends every call of the public API, over
// gRPC, with a malformed ID in each ID field, a garbage page token, or a
// malformed endpoint: each is INVALID_ARGUMENT, never INTERNAL and never a
// probe that waits.
func TestAPIRefusesMalformedInput(t *testing.T) {
	bus, _ := ztest.Bus(t)
	h := newUnitHarness(t, bus, newClock(), newFakeProber())
	ctx := ctxT(t)
	covered := map[string]bool{}

	zdt := zdmpb.MigrationType_MIGRATION_TYPE_ZERO_DOWNTIME
	conn := &zdmpb.ClusterConnection{Endpoint: "127.0.0.1:19530"}
	idCalls := []struct {
		rpc, field string
		optional   bool
		call       func(ctx context.Context, id string) error
	}{
		{"RegisterCluster", "cluster_id", false, func(ctx context.Context, id string) error {
			_, err := h.clusters.RegisterCluster(ctx, &zdmpb.RegisterClusterRequest{ClusterId: id, Connection: conn})
			return err
		}},
		{"GetCluster", "cluster_id", false, func(ctx context.Context, id string) error {
			_, err := h.clusters.GetCluster(ctx, &zdmpb.GetClusterRequest{ClusterId: id})
			return err
		}},
		{"DeregisterCluster", "cluster_id", false, func(ctx context.Context, id string) error {
			_, err := h.clusters.DeregisterCluster(ctx, &zdmpb.DeregisterClusterRequest{ClusterId: id})
			return err
		}},
		{"CreateMigration", "migration_id", true, func(ctx context.Context, id string) error {
			_, err := h.mig.CreateMigration(ctx, &zdmpb.CreateMigrationRequest{MigrationId: id, Type: zdt, SourceClusterId: "src", TargetClusterId: "tgt"})
			return err
		}},
		{"CreateMigration", "source_cluster_id", false, func(ctx context.Context, id string) error {
			_, err := h.mig.CreateMigration(ctx, &zdmpb.CreateMigrationRequest{MigrationId: "m1", Type: zdt, SourceClusterId: id, TargetClusterId: "tgt"})
			return err
		}},
		{"CreateMigration", "target_cluster_id", false, func(ctx context.Context, id string) error {
			_, err := h.mig.CreateMigration(ctx, &zdmpb.CreateMigrationRequest{MigrationId: "m1", Type: zdt, SourceClusterId: "src", TargetClusterId: id})
			return err
		}},
		{"GetMigration", "migration_id", false, func(ctx context.Context, id string) error {
			_, err := h.mig.GetMigration(ctx, &zdmpb.GetMigrationRequest{MigrationId: id})
			return err
		}},
		{"ListMigrations", "cluster_id", true, func(ctx context.Context, id string) error {
			_, err := h.mig.ListMigrations(ctx, &zdmpb.ListMigrationsRequest{ClusterId: id})
			return err
		}},
		{"WatchMigration", "migration_id", false, func(ctx context.Context, id string) error {
			ctx, cancel := context.WithCancel(ctx)
			defer cancel()
			s, err := h.mig.WatchMigration(ctx, &zdmpb.WatchMigrationRequest{MigrationId: id})
			if err != nil {
				return err
			}
			_, err = s.Recv()
			return err
		}},
		{"StopSync", "migration_id", false, func(ctx context.Context, id string) error {
			_, err := h.mig.StopSync(ctx, &zdmpb.StopSyncRequest{MigrationId: id, ConfirmWritesStopped: true})
			return err
		}},
		{"Switchover", "migration_id", false, func(ctx context.Context, id string) error {
			_, err := h.mig.Switchover(ctx, &zdmpb.SwitchoverRequest{MigrationId: id})
			return err
		}},
		{"CancelMigration", "migration_id", false, func(ctx context.Context, id string) error {
			_, err := h.mig.CancelMigration(ctx, &zdmpb.CancelMigrationRequest{MigrationId: id, Reason: "test"})
			return err
		}},
		{"PauseMigration", "migration_id", false, func(ctx context.Context, id string) error {
			_, err := h.mig.PauseMigration(ctx, &zdmpb.PauseMigrationRequest{MigrationId: id})
			return err
		}},
		{"ResumeMigration", "migration_id", false, func(ctx context.Context, id string) error {
			_, err := h.mig.ResumeMigration(ctx, &zdmpb.ResumeMigrationRequest{MigrationId: id})
			return err
		}},
		{"SetThrottle", "migration_id", false, func(ctx context.Context, id string) error {
			_, err := h.mig.SetThrottle(ctx, &zdmpb.SetThrottleRequest{MigrationId: id, Throttle: &zdmpb.Throttle{}})
			return err
		}},
	}
	badIDs := []struct{ name, id, says string }{
		{"has space", "has space", "want 1 to 63 lowercase letters"},
		{"star", "*", "want 1 to 63 lowercase letters"},
		{"upper", "UPPER", "want 1 to 63 lowercase letters"},
		{"dot", "a.b", "want 1 to 63 lowercase letters"},
		{"subject wildcard", "a>", "want 1 to 63 lowercase letters"},
		{"non-ASCII", "café", "want 1 to 63 lowercase letters"},
		{"64 chars", strings.Repeat("a", 64), "is 64 bytes long"},
		{"10000 chars", strings.Repeat("a", 10_000), "is 10000 bytes long"},
	}
	for _, c := range idCalls {
		covered[c.rpc] = true
		t.Run(c.rpc+"/"+c.field, func(t *testing.T) {
			for _, bad := range badIDs {
				err := c.call(ctx, bad.id)
				requireCode(t, codes.InvalidArgument, err, c.field, bad.says)
			}
			err := c.call(ctx, "")
			if c.optional {
				require.NotEqual(t, codes.InvalidArgument, status.Code(err), "%s is optional: %v", c.field, err)
				return
			}
			requireCode(t, codes.InvalidArgument, err, c.field+" is required")
		})
	}

	b64 := base64.RawURLEncoding.EncodeToString
	clusterTok, migrationTok := clusterPages.token("prod-a"), migrationPages.token("00001772366400000000/m-1")
	tokenCalls := []struct {
		rpc  string
		own  string // a token this list issues
		call func(tok string) error
	}{
		{"ListClusters", clusterTok, func(tok string) error {
			_, err := h.clusters.ListClusters(ctx, &zdmpb.ListClustersRequest{PageToken: tok})
			return err
		}},
		{"ListMigrations", migrationTok, func(tok string) error {
			_, err := h.mig.ListMigrations(ctx, &zdmpb.ListMigrationsRequest{PageToken: tok})
			return err
		}},
	}
	for _, c := range tokenCalls {
		covered[c.rpc] = true
		t.Run(c.rpc+"/page_token", func(t *testing.T) {
			require.NoError(t, c.call(c.own), "a token of its own list")
			other := clusterTok
			if c.own == clusterTok {
				other = migrationTok
			}
			for _, tok := range []string{
				"%%%", "garbage", "AAAA", b64([]byte("prod-a")), b64([]byte("zzzz")),
				other, c.own[:len(c.own)-1], c.own[:len(c.own)-4], c.own[:len(c.own)/2],
				strings.Repeat("A", 10_000),
			} {
				requireCode(t, codes.InvalidArgument, c.call(tok), "page_token is not one this server issued")
			}
		})
	}

	t.Run("RegisterCluster/endpoint", func(t *testing.T) {
		for _, ep := range []string{
			"127.0.0.1:99999", "host:port", "", "http://x:19530", "x", ":19530",
			"127.0.0.1:0", "has space:19530", "999.1.1.1:19530", "[::1]",
		} {
			_, err := h.clusters.RegisterCluster(ctx, &zdmpb.RegisterClusterRequest{
				ClusterId: "ep", Connection: &zdmpb.ClusterConnection{Endpoint: ep},
			})
			requireCode(t, codes.InvalidArgument, err, "connection.endpoint")
		}
	})

	for name := range apiRequests(t) {
		require.True(t, covered[name], "%s is not sent by this test", name)
	}
}

// TestRegisterClusterRefusesNonMilvus registers a gRPC server
// that answers only health checks: the probe finds no Milvus there.
func TestRegisterClusterRefusesNonMilvus(t *testing.T) {
	bus, _ := ztest.Bus(t)
	h := newHarness(t, bus, newClock())
	ctx := ctxT(t)

	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	srv := grpc.NewServer()
	healthpb.RegisterHealthServer(srv, health.NewServer())
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	addr := lis.Addr().String()

	_, err = h.clusters.RegisterCluster(ctx, &zdmpb.RegisterClusterRequest{
		ClusterId: "not-milvus", Connection: &zdmpb.ClusterConnection{Endpoint: addr},
	})
	requireCode(t, codes.FailedPrecondition, err, "endpoint "+addr+" answers gRPC but is not a Milvus server")
	_, err = h.clusters.GetCluster(ctx, &zdmpb.GetClusterRequest{ClusterId: "not-milvus"})
	requireCode(t, codes.NotFound, err)
}
