package coordinator

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/milvus-io/milvus-sdk-go/v2/client"
	"github.com/milvus-io/milvus-sdk-go/v2/entity"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/zdm-io/zdm/pkg/natsbus"
	"github.com/zdm-io/zdm/pkg/telemetry"
	"github.com/zdm-io/zdm/pkg/ztest"
	coordpb "github.com/zdm-io/zdm/proto/zdm/coordinator/v1"
	eventspb "github.com/zdm-io/zdm/proto/zdm/events/v1"
	zdmpb "github.com/zdm-io/zdm/proto/zdm/v1"
)

func requireCode(t *testing.T, want codes.Code, err error, contains ...string) {
	t.Helper()
	require.Equal(t, want, status.Code(err), "error: %v", err)
	for _, c := range contains {
		require.Contains(t, status.Convert(err).Message(), c)
	}
}

// TestClusterRegistry registers, lists and deregisters clusters, with
// fake clusters behind the probe.
func TestClusterRegistry(t *testing.T) {
	bus, _ := ztest.Bus(t)
	fake := newFakeProber()
	h := newUnitHarness(t, bus, newClock(), fake)
	ctx := ctxT(t)

	addr := fake.add()
	resp, err := h.clusters.RegisterCluster(ctx, &zdmpb.RegisterClusterRequest{
		ClusterId: "prod-a", DisplayName: "Production A",
		Connection: &zdmpb.ClusterConnection{Endpoint: addr, Auth: &zdmpb.ClusterConnection_Token{Token: "tok-very-secret"}},
	})
	require.NoError(t, err)
	cl := resp.GetCluster()
	require.Equal(t, addr, cl.GetEndpoint())
	require.Equal(t, "Production A", cl.GetDisplayName())
	require.Equal(t, zdmpb.AuthKind_AUTH_KIND_TOKEN, cl.GetAuthKind())
	require.Equal(t, zdmpb.LockState_LOCK_STATE_UNLOCKED, cl.GetLockState())
	require.Equal(t, fakeVersion, cl.GetMilvusVersion(), "the version the probe found is recorded")
	raw, err := proto.Marshal(resp)
	require.NoError(t, err)
	require.NotContains(t, string(raw), "tok-very-secret", "credentials are never returned")
	got, err := h.clusters.GetCluster(ctx, &zdmpb.GetClusterRequest{ClusterId: "prod-a"})
	require.NoError(t, err)
	if diff := cmp.Diff(cl, got.GetCluster(), protocmp.Transform()); diff != "" {
		t.Errorf("GetCluster (-registered, +got):\n%s", diff)
	}

	_, err = h.clusters.RegisterCluster(ctx, &zdmpb.RegisterClusterRequest{ClusterId: "prod-a", Connection: &zdmpb.ClusterConnection{Endpoint: addr}})
	requireCode(t, codes.AlreadyExists, err, `cluster "prod-a" already exists`)
	_, err = h.clusters.RegisterCluster(ctx, &zdmpb.RegisterClusterRequest{ClusterId: "Prod_A", Connection: &zdmpb.ClusterConnection{Endpoint: addr}})
	requireCode(t, codes.InvalidArgument, err, `cluster ID "Prod_A"`)
	_, err = h.clusters.RegisterCluster(ctx, &zdmpb.RegisterClusterRequest{ClusterId: "nowhere", Connection: &zdmpb.ClusterConnection{Endpoint: "milvus"}})
	requireCode(t, codes.InvalidArgument, err, "want host:port")
	_, err = h.clusters.RegisterCluster(ctx, &zdmpb.RegisterClusterRequest{ClusterId: "down", Connection: &zdmpb.ClusterConnection{
		Endpoint: "127.0.0.1:1", Auth: &zdmpb.ClusterConnection_UserPassword{UserPassword: &zdmpb.UserPassword{Username: "root", Password: "pw-very-secret"}},
	}})
	requireCode(t, codes.FailedPrecondition, err, `cluster "down" does not answer`)
	require.NotContains(t, err.Error(), "pw-very-secret")
	_, err = h.clusters.GetCluster(ctx, &zdmpb.GetClusterRequest{ClusterId: "down"})
	requireCode(t, codes.NotFound, err, `cluster "down" does not exist`)

	for _, id := range []string{"prod-b", "prod-c"} {
		_, err := h.clusters.RegisterCluster(ctx, &zdmpb.RegisterClusterRequest{ClusterId: id, Connection: &zdmpb.ClusterConnection{Endpoint: addr}})
		require.NoError(t, err)
	}
	page1, err := h.clusters.ListClusters(ctx, &zdmpb.ListClustersRequest{PageSize: 2})
	require.NoError(t, err)
	require.Len(t, page1.GetClusters(), 2)
	require.NotEmpty(t, page1.GetNextPageToken())
	page2, err := h.clusters.ListClusters(ctx, &zdmpb.ListClustersRequest{PageSize: 2, PageToken: page1.GetNextPageToken()})
	require.NoError(t, err)
	var ids []string
	for _, c := range append(page1.GetClusters(), page2.GetClusters()...) {
		ids = append(ids, c.GetClusterId())
	}
	require.Equal(t, []string{"prod-a", "prod-b", "prod-c"}, ids)
	require.Empty(t, page2.GetNextPageToken())
	_, err = h.clusters.ListClusters(ctx, &zdmpb.ListClustersRequest{PageToken: "%%%"})
	requireCode(t, codes.InvalidArgument, err, "page_token")

	_, err = h.clusters.DeregisterCluster(ctx, &zdmpb.DeregisterClusterRequest{ClusterId: "prod-b"})
	require.NoError(t, err)
	_, err = h.clusters.GetCluster(ctx, &zdmpb.GetClusterRequest{ClusterId: "prod-b"})
	requireCode(t, codes.NotFound, err)
	_, err = h.clusters.DeregisterCluster(ctx, &zdmpb.DeregisterClusterRequest{ClusterId: "prod-b"})
	requireCode(t, codes.NotFound, err)
}

// TestIntegrationRegisterClusterProbesEveryTier registers the source
// server of every tier of the rig through the Milvus probe, and a cluster
// that does not answer.
func TestIntegrationRegisterClusterProbesEveryTier(t *testing.T) {
	ztest.Integration(t)
	tiers := ztest.Tiers(t)
	bus, _ := ztest.Bus(t)
	h := newHarness(t, bus, newClock())
	ctx := ctxT(t)

	for _, tier := range tiers {
		resp, err := h.clusters.RegisterCluster(ctx, &zdmpb.RegisterClusterRequest{
			ClusterId: tier.Name, Connection: &zdmpb.ClusterConnection{Endpoint: tier.Source},
		})
		require.NoError(t, err, tier.Name)
		require.Equal(t, tier.Source, resp.GetCluster().GetEndpoint())
		require.NotEmpty(t, resp.GetCluster().GetMilvusVersion(), tier.Name)
	}
	_, err := h.clusters.RegisterCluster(ctx, &zdmpb.RegisterClusterRequest{ClusterId: "down", Connection: &zdmpb.ClusterConnection{
		Endpoint: "127.0.0.1:1", Auth: &zdmpb.ClusterConnection_UserPassword{UserPassword: &zdmpb.UserPassword{Username: "root", Password: "pw-very-secret"}},
	}})
	requireCode(t, codes.FailedPrecondition, err, `cluster "down" does not answer`)
	require.NotContains(t, err.Error(), "pw-very-secret")
}

// TestCreateMigrationRefusesBadInput: every refused create says why, with
// its code, and leaves no migration and no lock behind.
func TestCreateMigrationRefusesBadInput(t *testing.T) {
	bus, _ := ztest.Bus(t)
	fake := newFakeProber()
	h := newUnitHarness(t, bus, newClock(), fake)
	ctx := ctxT(t)
	h.register("src")
	h.register("tgt")
	// Targets that already hold collections.
	_, err := h.clusters.RegisterCluster(ctx, &zdmpb.RegisterClusterRequest{ClusterId: "full",
		Connection: &zdmpb.ClusterConnection{Endpoint: fake.add("default.existing")}})
	require.NoError(t, err)
	var many []string
	for i := range 12 {
		many = append(many, fmt.Sprintf("shop.c%02d", i))
	}
	_, err = h.clusters.RegisterCluster(ctx, &zdmpb.RegisterClusterRequest{ClusterId: "crowded",
		Connection: &zdmpb.ClusterConnection{Endpoint: fake.add(many...)}})
	require.NoError(t, err)
	// A registered cluster that has since gone away.
	_, err = h.clusters.RegisterCluster(ctx, &zdmpb.RegisterClusterRequest{ClusterId: "gone", Connection: &zdmpb.ClusterConnection{Endpoint: fake.add()}})
	require.NoError(t, err)
	_, _, err = h.coord.store.clusters.Update(ctx, "gone", func(r *coordpb.ClusterRecord) error {
		r.Connection.Endpoint = "127.0.0.1:1"
		return nil
	})
	require.NoError(t, err)

	zdt := zdmpb.MigrationType_MIGRATION_TYPE_ZERO_DOWNTIME
	for _, tc := range []struct {
		name string
		req  *zdmpb.CreateMigrationRequest
		code codes.Code
		msg  string
	}{
		{"no type", &zdmpb.CreateMigrationRequest{SourceClusterId: "src", TargetClusterId: "tgt"}, codes.InvalidArgument, "type MIGRATION_TYPE_UNSPECIFIED"},
		{"same cluster", &zdmpb.CreateMigrationRequest{Type: zdt, SourceClusterId: "src", TargetClusterId: "src"}, codes.InvalidArgument, `same cluster "src"`},
		{"bad id", &zdmpb.CreateMigrationRequest{MigrationId: "Bad ID", Type: zdt, SourceClusterId: "src", TargetClusterId: "tgt"}, codes.InvalidArgument, `migration ID "Bad ID"`},
		{"lag threshold", &zdmpb.CreateMigrationRequest{Type: zdt, SourceClusterId: "src", TargetClusterId: "tgt",
			Options: &zdmpb.MigrationOptions{LagThreshold: durationpb.New(2 * time.Hour)}}, codes.InvalidArgument, "options.lag_threshold 2h0m0s: want 1s to 1h0m0s"},
		{"max sync", &zdmpb.CreateMigrationRequest{Type: zdt, SourceClusterId: "src", TargetClusterId: "tgt",
			Options: &zdmpb.MigrationOptions{MaxSyncDuration: durationpb.New(time.Minute)}}, codes.InvalidArgument, "options.max_sync_duration"},
		{"throttle", &zdmpb.CreateMigrationRequest{Type: zdt, SourceClusterId: "src", TargetClusterId: "tgt",
			Options: &zdmpb.MigrationOptions{Throttle: &zdmpb.Throttle{MaxRowsPerSecond: -1}}}, codes.InvalidArgument, "options.throttle"},
		{"email", &zdmpb.CreateMigrationRequest{Type: zdt, SourceClusterId: "src", TargetClusterId: "tgt",
			Options: &zdmpb.MigrationOptions{Notifications: &zdmpb.Notifications{Emails: []string{"not-an-address"}}}}, codes.InvalidArgument, "not an email address"},
		{"unknown source", &zdmpb.CreateMigrationRequest{Type: zdt, SourceClusterId: "nope", TargetClusterId: "tgt"}, codes.NotFound, `source: not found: cluster "nope" does not exist`},
		{"unknown target", &zdmpb.CreateMigrationRequest{Type: zdt, SourceClusterId: "src", TargetClusterId: "nope"}, codes.NotFound, `target: not found: cluster "nope"`},
		{"source unreachable", &zdmpb.CreateMigrationRequest{Type: zdt, SourceClusterId: "gone", TargetClusterId: "tgt"}, codes.FailedPrecondition, `source: failed precondition: cluster "gone" does not answer`},
		{"target unreachable", &zdmpb.CreateMigrationRequest{Type: zdt, SourceClusterId: "src", TargetClusterId: "gone"}, codes.FailedPrecondition, `target: failed precondition: cluster "gone" does not answer`},
		{"target not new", &zdmpb.CreateMigrationRequest{Type: zdt, SourceClusterId: "src", TargetClusterId: "full"}, codes.FailedPrecondition, `target cluster "full" is not new: it holds 1 collection(s): default.existing; migrate to an empty cluster`},
		{"target not new, many", &zdmpb.CreateMigrationRequest{Type: zdt, SourceClusterId: "src", TargetClusterId: "crowded"}, codes.FailedPrecondition,
			`it holds 12 collection(s): shop.c00, shop.c01, shop.c02, shop.c03, shop.c04, shop.c05, shop.c06, shop.c07, shop.c08, shop.c09 and 2 more;`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := h.mig.CreateMigration(ctx, tc.req)
			requireCode(t, tc.code, err, tc.msg)
		})
	}
	// Nothing was half-written: no migration, no lock.
	list, err := h.mig.ListMigrations(ctx, &zdmpb.ListMigrationsRequest{})
	require.NoError(t, err)
	require.Empty(t, list.GetMigrations())
	for _, id := range []string{"src", "tgt", "full", "crowded", "gone"} {
		c, err := h.clusters.GetCluster(ctx, &zdmpb.GetClusterRequest{ClusterId: id})
		require.NoError(t, err)
		require.Equal(t, zdmpb.LockState_LOCK_STATE_UNLOCKED, c.GetCluster().GetLockState(), id)
	}
}

// TestIntegrationCreateMigrationChecksClusters creates migrations through
// the Milvus probe: onto a real target that holds a collection, and
// between clusters of which one no longer answers.
func TestIntegrationCreateMigrationChecksClusters(t *testing.T) {
	ztest.Integration(t)
	bus, _ := ztest.Bus(t)
	h := newHarness(t, bus, newClock())
	ctx := ctxT(t)
	h.register("src")
	h.register("tgt")
	// A target that already holds a collection.
	fullAddr := ztest.NewServer(t, "lite2")
	mc, err := client.NewClient(ctx, client.Config{Address: fullAddr})
	require.NoError(t, err)
	defer mc.Close()
	schema := entity.NewSchema().WithName("existing").
		WithField(entity.NewField().WithName("id").WithDataType(entity.FieldTypeInt64).WithIsPrimaryKey(true)).
		WithField(entity.NewField().WithName("vec").WithDataType(entity.FieldTypeFloatVector).WithDim(4))
	require.NoError(t, mc.CreateCollection(ctx, schema, 1))
	_, err = h.clusters.RegisterCluster(ctx, &zdmpb.RegisterClusterRequest{ClusterId: "full", Connection: &zdmpb.ClusterConnection{Endpoint: fullAddr}})
	require.NoError(t, err)
	// A registered cluster that has since gone away.
	goneAddr := ztest.NewServer(t, "lite2")
	_, err = h.clusters.RegisterCluster(ctx, &zdmpb.RegisterClusterRequest{ClusterId: "gone", Connection: &zdmpb.ClusterConnection{Endpoint: goneAddr}})
	require.NoError(t, err)
	_, _, err = h.coord.store.clusters.Update(ctx, "gone", func(r *coordpb.ClusterRecord) error {
		r.Connection.Endpoint = "127.0.0.1:1"
		return nil
	})
	require.NoError(t, err)

	zdt := zdmpb.MigrationType_MIGRATION_TYPE_ZERO_DOWNTIME
	for _, tc := range []struct {
		name string
		req  *zdmpb.CreateMigrationRequest
		msg  string
	}{
		{"source unreachable", &zdmpb.CreateMigrationRequest{Type: zdt, SourceClusterId: "gone", TargetClusterId: "tgt"}, `cluster "gone" does not answer`},
		{"target unreachable", &zdmpb.CreateMigrationRequest{Type: zdt, SourceClusterId: "src", TargetClusterId: "gone"}, `cluster "gone" does not answer`},
		{"target not new", &zdmpb.CreateMigrationRequest{Type: zdt, SourceClusterId: "src", TargetClusterId: "full"}, `target cluster "full" is not new: it holds 1 collection(s): default.existing`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := h.mig.CreateMigration(ctx, tc.req)
			requireCode(t, codes.FailedPrecondition, err, tc.msg)
		})
	}
	// Nothing was half-written: no migration, no lock.
	list, err := h.mig.ListMigrations(ctx, &zdmpb.ListMigrationsRequest{})
	require.NoError(t, err)
	require.Empty(t, list.GetMigrations())
	for _, id := range []string{"src", "tgt", "full"} {
		c, err := h.clusters.GetCluster(ctx, &zdmpb.GetClusterRequest{ClusterId: id})
		require.NoError(t, err)
		require.Equal(t, zdmpb.LockState_LOCK_STATE_UNLOCKED, c.GetCluster().GetLockState(), id)
	}
	// The empty target is accepted.
	_, err = h.mig.CreateMigration(ctx, &zdmpb.CreateMigrationRequest{MigrationId: "ok", Type: zdt, SourceClusterId: "src", TargetClusterId: "tgt"})
	require.NoError(t, err)
}

func TestLockedSource(t *testing.T) {
	bus, _ := ztest.Bus(t)
	h := newUnitHarness(t, bus, newClock(), newFakeProber())
	ctx := ctxT(t)
	h.create("job1", zdmpb.MigrationType_MIGRATION_TYPE_OFFLINE)

	src, err := h.clusters.GetCluster(ctx, &zdmpb.GetClusterRequest{ClusterId: "job1-src"})
	require.NoError(t, err)
	require.Equal(t, zdmpb.LockState_LOCK_STATE_LOCKED, src.GetCluster().GetLockState())
	require.Equal(t, "job1", src.GetCluster().GetLockedByMigrationId())
	_, err = h.clusters.DeregisterCluster(ctx, &zdmpb.DeregisterClusterRequest{ClusterId: "job1-src"})
	requireCode(t, codes.FailedPrecondition, err, `cluster "job1-src" is LOCKED by migration "job1", which is PREPARING_TARGET`)

	h.register("other-tgt")
	_, err = h.mig.CreateMigration(ctx, &zdmpb.CreateMigrationRequest{Type: zdmpb.MigrationType_MIGRATION_TYPE_OFFLINE,
		SourceClusterId: "job1-src", TargetClusterId: "other-tgt"})
	requireCode(t, codes.FailedPrecondition, err, `source cluster "job1-src" is in migration "job1"`)
	other, err := h.clusters.GetCluster(ctx, &zdmpb.GetClusterRequest{ClusterId: "other-tgt"})
	require.NoError(t, err)
	require.Equal(t, zdmpb.LockState_LOCK_STATE_UNLOCKED, other.GetCluster().GetLockState(), "a refused create leaves no lock")

	// A retried create with the same ID returns the same migration.
	again, err := h.mig.CreateMigration(ctx, &zdmpb.CreateMigrationRequest{MigrationId: "job1", Type: zdmpb.MigrationType_MIGRATION_TYPE_OFFLINE,
		SourceClusterId: "job1-src", TargetClusterId: "job1-tgt"})
	require.NoError(t, err)
	require.Equal(t, "job1", again.GetMigration().GetMigrationId())

	_, err = h.mig.CancelMigration(ctx, &zdmpb.CancelMigrationRequest{MigrationId: "job1", Reason: "wrong source"})
	require.NoError(t, err)
	h.stageDone("job1", zdmpb.StageKind_STAGE_KIND_FINALIZE, true, "", "")
	h.waitState("job1", cancelled)
	_, err = h.clusters.DeregisterCluster(ctx, &zdmpb.DeregisterClusterRequest{ClusterId: "job1-src"})
	require.NoError(t, err, "the source is unlocked once the migration has ended")
}

func TestCompletedByStopSync(t *testing.T) {
	bus, _ := ztest.Bus(t)
	h := newUnitHarness(t, bus, newClock(), newFakeProber())
	ctx := ctxT(t)
	h.create("m1", zdmpb.MigrationType_MIGRATION_TYPE_ZERO_DOWNTIME)
	h.drive("m1", ready)

	_, err := h.mig.StopSync(ctx, &zdmpb.StopSyncRequest{MigrationId: "m1"})
	requireCode(t, codes.InvalidArgument, err, "confirm_writes_stopped must be true")
	_, err = h.mig.StopSync(ctx, &zdmpb.StopSyncRequest{MigrationId: "m1", ConfirmWritesStopped: true})
	require.NoError(t, err)
	h.stageDone("m1", zdmpb.StageKind_STAGE_KIND_FINALIZE, true, "", "")
	h.waitState("m1", verifying)
	h.stageDone("m1", zdmpb.StageKind_STAGE_KIND_VERIFY, true, "", "")
	m := h.waitState("m1", completed)

	require.NotEmpty(t, m.GetTargetEndpoint())
	require.Equal(t, "PREPARING_TARGET COPYING SYNCING READY_TO_FINALIZE STOPPING_SYNC VERIFYING COMPLETED", historyPath(m))
	require.Equal(t, "anonymous", m.GetHistory()[4].GetActor(), "API calls are recorded with their caller")
	require.Equal(t, "system", m.GetHistory()[1].GetActor())
	require.NotNil(t, m.GetLag().GetThresholdReachedTime())
	for _, id := range []string{"m1-src", "m1-tgt"} {
		c, err := h.clusters.GetCluster(ctx, &zdmpb.GetClusterRequest{ClusterId: id})
		require.NoError(t, err)
		require.Equal(t, zdmpb.LockState_LOCK_STATE_UNLOCKED, c.GetCluster().GetLockState(), id)
	}
	var sent []string
	for _, c := range h.commands("m1") {
		sent = append(sent, fmt.Sprintf("%s:%s", natsbus.StageToken(c.GetStage()), strings.TrimPrefix(c.GetAction().String(), "STAGE_ACTION_")))
	}
	require.Equal(t, []string{"prepare_target:START", "copy_data:START", "sync_incremental:START", "finalize:START", "verify:START"}, sent)

	_, err = h.mig.Switchover(ctx, &zdmpb.SwitchoverRequest{MigrationId: "m1"})
	requireCode(t, codes.FailedPrecondition, err, "COMPLETED")
}

func TestCompletedBySwitchover(t *testing.T) {
	bus, _ := ztest.Bus(t)
	h := newUnitHarness(t, bus, newClock(), newFakeProber())
	h.create("m1", zdmpb.MigrationType_MIGRATION_TYPE_ZERO_DOWNTIME)
	h.drive("m1", switchingOver)
	// A switchover whose drain took too long goes back to syncing...
	h.stageDone("m1", zdmpb.StageKind_STAGE_KIND_FINALIZE, false, "SWITCHOVER_ABORTED", "drain exceeded max_write_pause")
	h.waitState("m1", ready)
	// ...and can be tried again.
	m := h.get("m1")
	require.Equal(t, int32(1), m.GetSwitchover().GetAttempt())
	require.Equal(t, "drain exceeded max_write_pause", m.GetSwitchover().GetAbortReason())
	_, err := h.mig.Switchover(ctxT(t), &zdmpb.SwitchoverRequest{MigrationId: "m1", MaxWritePause: durationpb.New(2 * time.Second)})
	require.NoError(t, err)
	m = h.get("m1")
	require.Equal(t, int32(2), m.GetSwitchover().GetAttempt())
	require.Equal(t, 2*time.Second, m.GetSwitchover().GetMaxWritePause().AsDuration())
	require.Empty(t, m.GetSwitchover().GetAbortReason())
	// Every replica switched: a verification follows, and whatever it
	// finds, the migration completes with the finding recorded, for
	// clients already write to the target.
	h.publishStage(&eventspb.StageCompleted{EventId: "sw", MigrationId: "m1", Stage: zdmpb.StageKind_STAGE_KIND_FINALIZE, Success: true,
		WritePause: durationpb.New(420 * time.Millisecond), GatewayIds: []string{"gw-a", "gw-b"}, HeldWrites: 17})
	m = h.waitState("m1", verifying)
	_, err = h.mig.CancelMigration(ctxT(t), &zdmpb.CancelMigrationRequest{MigrationId: "m1"})
	require.Equal(t, codes.FailedPrecondition, status.Code(err), "clients write to the target: no cancel drops it")
	require.Contains(t, err.Error(), "switched over")
	require.Equal(t, 420*time.Millisecond, m.GetSwitchoverWritePause().AsDuration())
	require.NotNil(t, m.GetSwitchover().GetSwitchTime())
	require.Equal(t, []string{"gw-a", "gw-b"}, m.GetSwitchover().GetGatewayIds())
	require.Contains(t, lastTransition(m).GetReason(), "writes paused 420ms (17 held")
	h.publishStage(&eventspb.StageCompleted{EventId: "vf", MigrationId: "m1", Stage: zdmpb.StageKind_STAGE_KIND_VERIFY, Success: false,
		Code: eventspb.StageError_STAGE_ERROR_VERIFICATION_MISMATCH, Verification: "after the switchover: default.items: count 10/11"})
	m = h.waitState("m1", completed)
	require.Equal(t, "PREPARING_TARGET COPYING SYNCING READY_TO_FINALIZE SWITCHING_OVER READY_TO_FINALIZE SWITCHING_OVER VERIFYING COMPLETED", historyPath(m))
	require.Equal(t, zdmpb.StageState_STAGE_STATE_FAILED, stage(m, zdmpb.StageKind_STAGE_KIND_VERIFY).GetState())
	require.Contains(t, stage(m, zdmpb.StageKind_STAGE_KIND_VERIFY).GetMessage(), "count 10/11")
	require.NotEmpty(t, m.GetTargetEndpoint())
}

func TestSwitchoverOnlyWhenReady(t *testing.T) {
	bus, _ := ztest.Bus(t)
	h := newUnitHarness(t, bus, newClock(), newFakeProber())
	h.create("m1", zdmpb.MigrationType_MIGRATION_TYPE_ZERO_DOWNTIME)
	h.drive("m1", syncing)
	_, err := h.mig.Switchover(ctxT(t), &zdmpb.SwitchoverRequest{MigrationId: "m1"})
	require.Equal(t, codes.FailedPrecondition, status.Code(err), "%v", err)
	require.Contains(t, err.Error(), "READY_TO_FINALIZE")
	_, err = h.mig.Switchover(ctxT(t), &zdmpb.SwitchoverRequest{MigrationId: "m1", MaxWritePause: durationpb.New(time.Minute)})
	require.Equal(t, codes.InvalidArgument, status.Code(err), "%v", err)
}

func TestFailedByMaxSyncDuration(t *testing.T) {
	bus, _ := ztest.Bus(t)
	clock := newClock()
	h := newUnitHarness(t, bus, clock, newFakeProber())
	ctx := ctxT(t)
	h.create("m1", zdmpb.MigrationType_MIGRATION_TYPE_ZERO_DOWNTIME)
	h.drive("m1", ready)

	clock.Advance(7*24*time.Hour - time.Minute)
	require.NoError(t, h.coord.sweep(ctx))
	h.waitState("m1", ready)
	clock.Advance(2 * time.Minute)
	require.NoError(t, h.coord.sweep(ctx))
	m := h.waitState("m1", failed)
	require.Equal(t, "MAX_SYNC_DURATION_EXCEEDED", m.GetError().GetCode())
	require.Contains(t, m.GetError().GetMessage(), "not stopped within 168h0m0s")
	require.Equal(t, zdmpb.StageKind_STAGE_KIND_SYNC_INCREMENTAL, m.GetError().GetStage())
	src, err := h.clusters.GetCluster(ctx, &zdmpb.GetClusterRequest{ClusterId: "m1-src"})
	require.NoError(t, err)
	require.Equal(t, zdmpb.LockState_LOCK_STATE_UNLOCKED, src.GetCluster().GetLockState())
}

func TestFailedByStage(t *testing.T) {
	bus, _ := ztest.Bus(t)
	h := newUnitHarness(t, bus, newClock(), newFakeProber())
	h.create("m1", zdmpb.MigrationType_MIGRATION_TYPE_OFFLINE)
	h.drive("m1", copying)
	h.stageDone("m1", zdmpb.StageKind_STAGE_KIND_COPY_DATA, true, "", "")
	h.waitState("m1", verifying)
	h.stageDone("m1", zdmpb.StageKind_STAGE_KIND_VERIFY, false, "VERIFICATION_MISMATCH", "default.items: keys [100, 200) differ")
	m := h.waitState("m1", failed)
	require.Equal(t, "VERIFICATION_MISMATCH", m.GetError().GetCode())
	require.Contains(t, m.GetHistory()[len(m.GetHistory())-1].GetReason(), "keys [100, 200) differ")
}

func TestCancelFromEveryStage(t *testing.T) {
	bus, _ := ztest.Bus(t)
	h := newUnitHarness(t, bus, newClock(), newFakeProber())
	ctx := ctxT(t)
	for i, from := range []zdmpb.MigrationState{preparing, copying, paused, syncing, ready, stoppingSync, switchingOver, verifying} {
		id := fmt.Sprintf("c%d", i)
		h.create(id, zdmpb.MigrationType_MIGRATION_TYPE_ZERO_DOWNTIME)
		h.drive(id, from)
		resp, err := h.mig.CancelMigration(ctx, &zdmpb.CancelMigrationRequest{MigrationId: id, Reason: "operator cancelled"})
		require.NoError(t, err, stateName(from))
		require.Equal(t, cancelling, resp.GetMigration().GetState())
		// The cancel command is sent before CancelMigration returns; the
		// command of the state before may still follow it, since effects of
		// event-driven transitions run after their write.
		cancelSent := false
		for _, c := range h.commands(id) {
			cancelSent = cancelSent || c.GetAction() == eventspb.StageAction_STAGE_ACTION_CANCEL
		}
		require.True(t, cancelSent, stateName(from))
		h.stageDone(id, zdmpb.StageKind_STAGE_KIND_FINALIZE, true, "", "")
		m := h.waitState(id, cancelled)
		require.Equal(t, "operator cancelled", m.GetHistory()[len(m.GetHistory())-2].GetReason())
		_, err = h.mig.CancelMigration(ctx, &zdmpb.CancelMigrationRequest{MigrationId: id})
		requireCode(t, codes.FailedPrecondition, err, "CANCELLED")
		_, err = h.clusters.DeregisterCluster(ctx, &zdmpb.DeregisterClusterRequest{ClusterId: id + "-src"})
		require.NoError(t, err, "source unlocked after cancelling from %s", stateName(from))
	}
}

func TestPauseAndResume(t *testing.T) {
	bus, _ := ztest.Bus(t)
	h := newUnitHarness(t, bus, newClock(), newFakeProber())
	ctx := ctxT(t)
	h.create("m1", zdmpb.MigrationType_MIGRATION_TYPE_OFFLINE)
	m := h.drive("m1", paused)
	require.Equal(t, copying, m.GetPausedFromState())
	_, err := h.mig.PauseMigration(ctx, &zdmpb.PauseMigrationRequest{MigrationId: "m1"})
	requireCode(t, codes.FailedPrecondition, err, "cannot pause a migration that is PAUSED")
	// A late copy event while paused does not move the migration.
	h.stageDone("m1", zdmpb.StageKind_STAGE_KIND_COPY_DATA, true, "", "")
	h.eventsHandled()
	h.waitState("m1", paused)

	resp, err := h.mig.ResumeMigration(ctx, &zdmpb.ResumeMigrationRequest{MigrationId: "m1"})
	require.NoError(t, err)
	require.Equal(t, copying, resp.GetMigration().GetState())
	var actions []string
	for _, c := range h.commands("m1") {
		actions = append(actions, fmt.Sprintf("%s:%s", natsbus.StageToken(c.GetStage()), strings.TrimPrefix(c.GetAction().String(), "STAGE_ACTION_")))
	}
	require.Equal(t, []string{"prepare_target:START", "copy_data:START", "copy_data:PAUSE", "copy_data:RESUME"}, actions)
	_, err = h.mig.ResumeMigration(ctx, &zdmpb.ResumeMigrationRequest{MigrationId: "m1"})
	requireCode(t, codes.FailedPrecondition, err, "COPYING")
	h.stageDone("m1", zdmpb.StageKind_STAGE_KIND_COPY_DATA, true, "", "")
	h.waitState("m1", verifying)
	_, err = h.mig.PauseMigration(ctx, &zdmpb.PauseMigrationRequest{MigrationId: "m1"})
	requireCode(t, codes.FailedPrecondition, err, "VERIFYING")
	_, err = h.mig.GetMigration(ctx, &zdmpb.GetMigrationRequest{MigrationId: "nope"})
	requireCode(t, codes.NotFound, err)
}

func TestListMigrations(t *testing.T) {
	bus, _ := ztest.Bus(t)
	clock := newClock()
	h := newUnitHarness(t, bus, clock, newFakeProber())
	ctx := ctxT(t)
	for _, id := range []string{"a", "b", "c"} {
		h.create(id, zdmpb.MigrationType_MIGRATION_TYPE_OFFLINE)
		clock.Advance(time.Minute)
	}
	_, err := h.mig.CancelMigration(ctx, &zdmpb.CancelMigrationRequest{MigrationId: "b"})
	require.NoError(t, err)

	var ids []string
	tok := ""
	for {
		resp, err := h.mig.ListMigrations(ctx, &zdmpb.ListMigrationsRequest{PageSize: 2, PageToken: tok})
		require.NoError(t, err)
		for _, m := range resp.GetMigrations() {
			ids = append(ids, m.GetMigrationId())
		}
		if tok = resp.GetNextPageToken(); tok == "" {
			break
		}
	}
	require.Equal(t, []string{"c", "b", "a"}, ids, "newest first, across pages")
	resp, err := h.mig.ListMigrations(ctx, &zdmpb.ListMigrationsRequest{States: []zdmpb.MigrationState{cancelling}})
	require.NoError(t, err)
	require.Len(t, resp.GetMigrations(), 1)
	require.Equal(t, "b", resp.GetMigrations()[0].GetMigrationId())
	resp, err = h.mig.ListMigrations(ctx, &zdmpb.ListMigrationsRequest{ClusterId: "c-tgt"})
	require.NoError(t, err)
	require.Len(t, resp.GetMigrations(), 1)
	require.Equal(t, "c", resp.GetMigrations()[0].GetMigrationId())
}

func TestWatchMigration(t *testing.T) {
	bus, _ := ztest.Bus(t)
	h := newUnitHarness(t, bus, newClock(), newFakeProber())
	h.create("m1", zdmpb.MigrationType_MIGRATION_TYPE_OFFLINE)

	watch := func(ctx context.Context, from uint64) (<-chan *zdmpb.Migration, <-chan error) {
		out, errc := make(chan *zdmpb.Migration, 64), make(chan error, 1)
		stream, err := h.mig.WatchMigration(ctx, &zdmpb.WatchMigrationRequest{MigrationId: "m1", FromRevision: from})
		require.NoError(t, err)
		go func() {
			defer close(out)
			for {
				resp, err := stream.Recv()
				if err != nil {
					errc <- err
					return
				}
				out <- resp.GetMigration()
			}
		}()
		return out, errc
	}
	next := func(ch <-chan *zdmpb.Migration) *zdmpb.Migration {
		select {
		case m := <-ch:
			require.NotNil(t, m, "stream ended early")
			return m
		case <-time.After(10 * time.Second):
			t.Fatal("no watch update within 10s")
			return nil
		}
	}

	// Two watchers at once.
	ctx1, cancel1 := context.WithCancel(ctxT(t))
	w1, _ := watch(ctx1, 0)
	w2, errc2 := watch(ctxT(t), 0)
	first := next(w1)
	require.Equal(t, preparing, first.GetState())
	require.Equal(t, preparing, next(w2).GetState())

	h.stageDone("m1", zdmpb.StageKind_STAGE_KIND_PREPARE_TARGET, true, "", "")
	seen := next(w1)
	require.Equal(t, copying, seen.GetState())
	require.Greater(t, seen.GetRevision(), first.GetRevision())
	cancel1() // watcher 1 disconnects...

	h.stageDone("m1", zdmpb.StageKind_STAGE_KIND_COPY_DATA, true, "", "")
	h.waitState("m1", verifying)
	// ...and reconnects from its last revision: it gets what it missed.
	w1, _ = watch(ctxT(t), seen.GetRevision())
	require.Equal(t, verifying, next(w1).GetState())

	h.stageDone("m1", zdmpb.StageKind_STAGE_KIND_VERIFY, true, "", "")
	require.Equal(t, completed, next(w1).GetState())
	var states []string
	for m := range w2 {
		states = append(states, stateName(m.GetState()))
	}
	require.Equal(t, "COPYING VERIFYING COMPLETED", strings.Join(states[len(states)-3:], " "))
	require.Equal(t, "EOF", fmt.Sprint(<-errc2), "the stream ends after a terminal state")

	_, errc := watch(ctxT(t), 1<<40)
	requireCode(t, codes.OutOfRange, <-errc, "newer than")
}

// TestRacingCoordinators: two coordinators share one bus and state;
// concurrent calls and duplicate events apply each transition exactly
// once.
func TestRacingCoordinators(t *testing.T) {
	bus, _ := ztest.Bus(t)
	clock := newClock()
	fake := newFakeProber()
	a := newUnitHarness(t, bus, clock, fake)
	b := newUnitHarness(t, bus, clock, fake)
	ctx := ctxT(t)
	a.create("m1", zdmpb.MigrationType_MIGRATION_TYPE_ZERO_DOWNTIME)
	a.drive("m1", copying)

	// The calls run on goroutines of their own; their results are judged
	// here, on the test's.
	results := make(chan error, 8)
	for i := range 8 {
		h := a
		if i%2 == 1 {
			h = b
		}
		go func() {
			_, err := h.mig.PauseMigration(ctx, &zdmpb.PauseMigrationRequest{MigrationId: "m1"})
			results <- err
		}()
	}
	ok := 0
	for range 8 {
		if err := <-results; err != nil {
			requireCode(t, codes.FailedPrecondition, err)
		} else {
			ok++
		}
	}
	require.Equal(t, 1, ok, "exactly one pause wins, the other 7 are refused")
	_, err := b.mig.ResumeMigration(ctx, &zdmpb.ResumeMigrationRequest{MigrationId: "m1"})
	require.NoError(t, err)

	// The same stage event published twice under different IDs (a service
	// retrying after a crash) moves the migration once.
	a.stageDone("m1", zdmpb.StageKind_STAGE_KIND_COPY_DATA, true, "", "")
	b.stageDone("m1", zdmpb.StageKind_STAGE_KIND_COPY_DATA, true, "", "")
	a.waitState("m1", syncing)
	a.lag("m1", time.Second, true)
	m := b.waitState("m1", ready)
	require.Equal(t, "PREPARING_TARGET COPYING PAUSED COPYING SYNCING READY_TO_FINALIZE", historyPath(m))
}

// TestRestartResendsEffects: a coordinator that died after writing a
// transition but before sending its command re-sends it on start, and
// JetStream drops the copy when it had been sent.
func TestRestartResendsEffects(t *testing.T) {
	bus, _ := ztest.Bus(t)
	clock := newClock()
	h := newUnitHarness(t, bus, clock, newFakeProber())
	ctx := ctxT(t)
	h.create("m1", zdmpb.MigrationType_MIGRATION_TYPE_OFFLINE)
	h.drive("m1", copying)
	// The crash: the state moves to VERIFYING, the command is never sent.
	_, _, err := h.coord.store.migrations.Update(ctx, "m1", func(m *zdmpb.Migration) error {
		_, err := Apply(m, Event{Trigger: TriggerCopyDone, Time: clock.Now(), Actor: "system"})
		return err
	})
	require.NoError(t, err)
	before := len(h.commands("m1"))
	require.Equal(t, 2, before)

	restarted := newUnitHarness(t, bus, clock, h.fake)
	cmds := restarted.commands("m1")
	require.Len(t, cmds, 3, "the lost command is sent on start")
	require.Equal(t, zdmpb.StageKind_STAGE_KIND_VERIFY, cmds[2].GetStage())
	third := newUnitHarness(t, bus, clock, h.fake)
	require.Len(t, third.commands("m1"), 3, "a second restart sends no duplicate")
	restarted.stageDone("m1", zdmpb.StageKind_STAGE_KIND_VERIFY, true, "", "")
	restarted.waitState("m1", completed)
}

func historyPath(m *zdmpb.Migration) string {
	var out []string
	for _, h := range m.GetHistory() {
		out = append(out, stateName(h.GetToState()))
	}
	return strings.Join(out, " ")
}

// TestRestartStartsPendingMigration: a coordinator that died between
// recording a migration and starting it leaves it PENDING; the next one to
// start moves it on.
func TestRestartStartsPendingMigration(t *testing.T) {
	bus, _ := ztest.Bus(t)
	clock := newClock()
	h := newUnitHarness(t, bus, clock, newFakeProber())
	ctx := ctxT(t)
	_, err := h.coord.store.migrations.Create(ctx, "m1", &zdmpb.Migration{MigrationId: "m1", Type: offline, State: pending,
		SourceClusterId: "s", TargetClusterId: "t", Stages: NewStages(offline)})
	require.NoError(t, err)

	restarted := newUnitHarness(t, bus, clock, h.fake)
	m := restarted.waitState("m1", preparing)
	require.Equal(t, "system", m.GetHistory()[0].GetActor())
	cmds := restarted.commands("m1")
	require.Len(t, cmds, 1)
	require.Equal(t, zdmpb.StageKind_STAGE_KIND_PREPARE_TARGET, cmds[0].GetStage())
}

// TestNotesAndNotifications: a gateway replica leaving is noted in the
// history without a change of state, and each notification report
// updates the migration's record of that delivery, also once it ended.
func TestNotesAndNotifications(t *testing.T) {
	bus, _ := ztest.Bus(t)
	h := newUnitHarness(t, bus, newClock(), newFakeProber())
	ctx := ctxT(t)
	h.create("m1", zdmpb.MigrationType_MIGRATION_TYPE_ZERO_DOWNTIME)
	h.drive("m1", ready)
	publish := func(kind natsbus.EventKind, id string, ev proto.Message) {
		_, err := natsbus.Publish(ctx, bus.JS, telemetry.Propagator(), natsbus.EventSubject("m1", kind), id, ev)
		require.NoError(t, err)
	}
	publish(natsbus.EventGateway, "gw-left", &eventspb.GatewayChange{EventId: "gw-left", MigrationId: "m1", GatewayId: "gw-b", Addr: "10.0.0.2:19540",
		Time: timestamppb.New(h.clock.Now())})
	for i, d := range []*zdmpb.NotificationDelivery{
		{Notice: "LAG_THRESHOLD_REACHED", Channel: "webhook", Recipient: "http://hook", Attempts: 1, LastError: "answered 503"},
		{Notice: "LAG_THRESHOLD_REACHED", Channel: "webhook", Recipient: "http://hook", Attempts: 2, Delivered: true},
		{Notice: "LAG_THRESHOLD_REACHED", Channel: "webhook", Recipient: "http://hook", Attempts: 1, LastError: "late"},
	} {
		id := fmt.Sprintf("n%d", i)
		publish(natsbus.EventNotice, id, &eventspb.NotificationReport{EventId: id, MigrationId: "m1", Delivery: d})
	}
	h.eventsHandled()
	m := h.get("m1")
	require.Equal(t, ready, m.GetState())
	last := m.GetHistory()[len(m.GetHistory())-1]
	require.Equal(t, ready, last.GetFromState())
	require.Equal(t, ready, last.GetToState())
	require.Contains(t, last.GetReason(), "gateway replica gw-b (10.0.0.2:19540) stopped renewing its registration and was dropped")
	require.Len(t, m.GetNotifications(), 1)
	require.True(t, m.GetNotifications()[0].GetDelivered(), "the late failure report does not undo the delivery")
	require.Equal(t, int32(2), m.GetNotifications()[0].GetAttempts())
}
