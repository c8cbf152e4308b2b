package main_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/zdm-io/zdm/pkg/milvusx"
	"github.com/zdm-io/zdm/pkg/natsbus"
	"github.com/zdm-io/zdm/pkg/service"
	"github.com/zdm-io/zdm/pkg/verify"
	"github.com/zdm-io/zdm/pkg/ztest"
	eventspb "github.com/zdm-io/zdm/proto/zdm/events/v1"
	zdmpb "github.com/zdm-io/zdm/proto/zdm/v1"
)

// registerPair registers srcAddr as cluster "src" and tgtAddr as "tgt".
func registerPair(t *testing.T, ctx context.Context, clusters zdmpb.ClusterServiceClient, srcAddr, tgtAddr string) {
	t.Helper()
	for id, addr := range map[string]string{"src": srcAddr, "tgt": tgtAddr} {
		_, err := clusters.RegisterCluster(ctx, &zdmpb.RegisterClusterRequest{ClusterId: id, Connection: &zdmpb.ClusterConnection{Endpoint: addr}})
		require.NoError(t, err)
	}
}

// waitMigration polls migration id until done says so, failing after
// timeout with the state it was in; every poll runs tick first, if given.
func waitMigration(t *testing.T, ctx context.Context, mig zdmpb.MigrationServiceClient, id string, timeout time.Duration,
	done func(*zdmpb.Migration) bool, tick func(*zdmpb.Migration)) *zdmpb.Migration {
	t.Helper()
	var m *zdmpb.Migration
	ztest.Eventually(t, timeout, func() bool {
		resp, err := mig.GetMigration(ctx, &zdmpb.GetMigrationRequest{MigrationId: id})
		require.NoError(t, err)
		m = resp.GetMigration()
		if done(m) {
			return true
		}
		if tick != nil {
			tick(m)
		}
		return false
	}, "migration %s still %s", id, lazy(func() string { return m.GetState().String() }))
	return m
}

// lazy prints as what it returns when a message is formatted, so a
// failure message passed before polling shows what the last poll saw.
type lazy func() string

func (f lazy) String() string { return f() }

func inState(want zdmpb.MigrationState) func(*zdmpb.Migration) bool {
	return func(m *zdmpb.Migration) bool { return m.GetState() == want }
}

func terminal(m *zdmpb.Migration) bool {
	switch m.GetState() {
	case zdmpb.MigrationState_MIGRATION_STATE_COMPLETED, zdmpb.MigrationState_MIGRATION_STATE_FAILED, zdmpb.MigrationState_MIGRATION_STATE_CANCELLED:
		return true
	}
	return false
}

// compareSides verifies db.coll on the two servers, independently of zdm.
func compareSides(t *testing.T, ctx context.Context, srcAddr, tgtAddr, db, coll string) *verify.Report {
	t.Helper()
	sc, err := milvusx.Open(ctx, &zdmpb.ClusterConnection{Endpoint: srcAddr}, "")
	require.NoError(t, err)
	defer sc.Close()
	tc, err := milvusx.Open(ctx, &zdmpb.ClusterConnection{Endpoint: tgtAddr}, "")
	require.NoError(t, err)
	defer tc.Close()
	table, err := milvusx.DescribeTable(ctx, sc.Raw, db, coll)
	require.NoError(t, err)
	report, err := verify.Collection(ctx, sc.Raw, tc.Raw, table, 0)
	require.NoError(t, err)
	return report
}

// announceStages announces on the bus that stages are served, as live
// services would, until t ends: for tests that play a stage themselves, or
// whose service joins later.
func announceStages(t *testing.T, js jetstream.JetStream, stages ...zdmpb.StageKind) {
	t.Helper()
	kv, err := natsbus.StagesBucket.Open(context.Background(), js, 1)
	require.NoError(t, err)
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		service.Announce(ctx, kv, stages, slog.New(slog.NewTextHandler(io.Discard, nil)))
	}()
	t.Cleanup(func() { stop(); <-done })
}

// announceGateway keeps an entry in the gateways bucket as a live gateway
// in front of cluster would, until t ends: for tests that play the
// gateway's part themselves.
func announceGateway(t *testing.T, js jetstream.JetStream, cluster string) {
	t.Helper()
	kv, err := natsbus.GatewaysBucket.Open(context.Background(), js, 1)
	require.NoError(t, err)
	b, err := proto.Marshal(&eventspb.ResolvedTimestamp{GatewayId: "test-" + cluster, ClusterId: cluster})
	require.NoError(t, err)
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			_, _ = kv.Put(ctx, "test-"+cluster, b) // the next beat retries
			select {
			case <-ctx.Done():
			case <-time.After(time.Second):
			}
		}
	}()
	t.Cleanup(func() { stop(); <-done })
}

// createWhenServed creates a migration once processes that were just
// started announce the stages it needs and gateways their clusters,
// retrying while CreateMigration says one is missing.
func createWhenServed(t *testing.T, ctx context.Context, mig zdmpb.MigrationServiceClient, req *zdmpb.CreateMigrationRequest) {
	t.Helper()
	var err error
	ztest.Eventually(t, 30*time.Second, func() bool {
		_, err = mig.CreateMigration(ctx, req)
		msg := status.Convert(err).Message()
		return status.Code(err) != codes.FailedPrecondition || !(strings.Contains(msg, "no running zdm process") || strings.Contains(msg, "no zdm gateway"))
	}, "stages not served: %v", lazy(func() string { return fmt.Sprint(err) }))
	require.NoError(t, err)
}

// jetStream connects to the bus at natsURL for the test.
func jetStream(t *testing.T, natsURL string) jetstream.JetStream {
	t.Helper()
	nc, err := nats.Connect(natsURL)
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	return js
}
