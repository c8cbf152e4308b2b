package main_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/zdm-io/zdm/pkg/natsbus"
	"github.com/zdm-io/zdm/pkg/telemetry"
	"github.com/zdm-io/zdm/pkg/ztest"
	eventspb "github.com/zdm-io/zdm/proto/zdm/events/v1"
	zdmpb "github.com/zdm-io/zdm/proto/zdm/v1"
)

// TestE2ECoordinatorKilled drives a migration through a coordinator
// process that is killed with SIGKILL right after every step, at a random
// moment, and restarted. NATS outlives it. The migration still completes
// with every transition applied exactly once and every command sent once.
func TestE2ECoordinatorKilled(t *testing.T) {
	ztest.Integration(t)
	bus, nats := ztest.Bus(t)
	bin, err := zdmBinary()
	require.NoError(t, err)
	// The test plays every stage with events of its own, so it announces
	// them as the services would.
	announceStages(t, bus.JS, zdmpb.StageKind_STAGE_KIND_PREPARE_TARGET, zdmpb.StageKind_STAGE_KIND_COPY_DATA,
		zdmpb.StageKind_STAGE_KIND_SYNC_INCREMENTAL, zdmpb.StageKind_STAGE_KIND_FINALIZE, zdmpb.StageKind_STAGE_KIND_VERIFY)
	announceGateway(t, bus.JS, "src")
	addr := freeAddr(t)

	var cmd *exec.Cmd
	var logs syncBuffer
	startCoord := func() {
		cmd = exec.Command(bin, "-target", "coordinator", "-nats-url", nats.ClientURL(), "-grpc-addr", addr,
			"-metrics-addr", "127.0.0.1:0", "-coordinator-event-ack-wait", "1s")
		cmd.Stdout, cmd.Stderr = &logs, &logs
		require.NoError(t, cmd.Start())
	}
	kill := func() {
		require.NoError(t, cmd.Process.Signal(syscall.SIGKILL))
		_ = cmd.Wait()
	}
	startCoord()
	t.Cleanup(func() { kill() })

	conn := dial(t, addr)
	waitServing := func() {
		ztest.Eventually(t, 30*time.Second, func() bool {
			st, err := healthOf(t, conn, zdmpb.MigrationService_ServiceDesc.ServiceName)
			return err == nil && st == healthpb.HealthCheckResponse_SERVING
		}, "coordinator not serving after restart; logs:\n%s", &logs)
	}
	waitServing()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	mig, clusters := zdmpb.NewMigrationServiceClient(conn), zdmpb.NewClusterServiceClient(conn)
	for _, id := range []string{"src", "tgt"} {
		_, err := clusters.RegisterCluster(ctx, &zdmpb.RegisterClusterRequest{ClusterId: id,
			Connection: &zdmpb.ClusterConnection{Endpoint: ztest.NewServer(t, "lite2")}})
		require.NoError(t, err)
	}
	_, err = mig.CreateMigration(ctx, &zdmpb.CreateMigrationRequest{MigrationId: "m1", Type: zdmpb.MigrationType_MIGRATION_TYPE_ZERO_DOWNTIME,
		SourceClusterId: "src", TargetClusterId: "tgt"})
	require.NoError(t, err)

	// Each step runs on a goroutine of its own while the coordinator is
	// killed, and returns its error to the test's goroutine.
	stage := func(k zdmpb.StageKind) func(seq int) error {
		return func(seq int) error {
			ev := &eventspb.StageCompleted{EventId: "m1-ev-" + strconv.Itoa(seq), MigrationId: "m1", Stage: k, Success: true, Time: timestamppb.Now()}
			_, err := natsbus.Publish(ctx, bus.JS, telemetry.Propagator(), natsbus.EventSubject("m1", natsbus.EventStage), ev.EventId, ev)
			return err
		}
	}
	lagReached := func(seq int) error {
		ev := &eventspb.LagReport{EventId: "m1-ev-" + strconv.Itoa(seq), MigrationId: "m1", Lag: durationpb.New(time.Second),
			ThresholdReached: true, Time: timestamppb.Now()}
		_, err := natsbus.Publish(ctx, bus.JS, telemetry.Propagator(), natsbus.EventSubject("m1", natsbus.EventLag), ev.EventId, ev)
		return err
	}
	stopSync := func(int) error {
		_, err := mig.StopSync(ctx, &zdmpb.StopSyncRequest{MigrationId: "m1", ConfirmWritesStopped: true})
		if code := status.Code(err); code != codes.OK && code != codes.Unavailable && code != codes.FailedPrecondition {
			return fmt.Errorf("StopSync: %w", err)
		}
		return nil
	}
	steps := []struct {
		do   func(seq int) error
		want zdmpb.MigrationState
	}{
		{stage(zdmpb.StageKind_STAGE_KIND_PREPARE_TARGET), zdmpb.MigrationState_MIGRATION_STATE_COPYING},
		{stage(zdmpb.StageKind_STAGE_KIND_COPY_DATA), zdmpb.MigrationState_MIGRATION_STATE_SYNCING},
		{lagReached, zdmpb.MigrationState_MIGRATION_STATE_READY_TO_FINALIZE},
		{stopSync, zdmpb.MigrationState_MIGRATION_STATE_STOPPING_SYNC},
		{stage(zdmpb.StageKind_STAGE_KIND_FINALIZE), zdmpb.MigrationState_MIGRATION_STATE_VERIFYING},
		{stage(zdmpb.StageKind_STAGE_KIND_VERIFY), zdmpb.MigrationState_MIGRATION_STATE_COMPLETED},
	}
	var m *zdmpb.Migration
	for i, s := range steps {
		done := make(chan error, 1)
		go func() { done <- s.do(i + 1) }()
		// Not a wait: the kill lands at a random moment of the step.
		time.Sleep(time.Duration(rand.IntN(15)) * time.Millisecond)
		kill()
		startCoord()
		waitServing()
		select {
		case err := <-done:
			require.NoError(t, err, "step %d", i)
		case <-time.After(30 * time.Second):
			t.Fatalf("step %d did not return within 30s", i)
		}
		if s.want == zdmpb.MigrationState_MIGRATION_STATE_STOPPING_SYNC {
			// The call may have died with the process: callers retry.
			require.NoError(t, stopSync(0), "step %d", i)
		}
		ztest.Eventually(t, 30*time.Second, func() bool {
			resp, err := mig.GetMigration(ctx, &zdmpb.GetMigrationRequest{MigrationId: "m1"})
			require.NoError(t, err)
			m = resp.GetMigration()
			return m.GetState() == s.want
		}, "step %d: want %s, still %s", i, s.want, lazy(func() string { return m.GetState().String() }))
	}
	var path []string
	for _, h := range m.GetHistory() {
		path = append(path, strings.TrimPrefix(h.GetToState().String(), "MIGRATION_STATE_"))
	}
	require.Equal(t, "PREPARING_TARGET COPYING SYNCING READY_TO_FINALIZE STOPPING_SYNC VERIFYING COMPLETED", strings.Join(path, " "),
		"every transition exactly once")

	cons, err := bus.JS.OrderedConsumer(ctx, natsbus.CommandsStream, jetstream.OrderedConsumerConfig{FilterSubjects: []string{natsbus.MigrationCommands("m1")}})
	require.NoError(t, err)
	info, err := cons.Info(ctx)
	require.NoError(t, err)
	batch, err := cons.Fetch(int(info.NumPending), jetstream.FetchMaxWait(5*time.Second))
	require.NoError(t, err)
	var sent []string
	for msg := range batch.Messages() {
		var c eventspb.StageCommand
		_, err := natsbus.Decode(ctx, telemetry.Propagator(), msg, &c)
		require.NoError(t, err)
		sent = append(sent, fmt.Sprintf("%s/%s", c.GetStage(), c.GetAction()))
	}
	require.Equal(t, []string{
		"STAGE_KIND_PREPARE_TARGET/STAGE_ACTION_START", "STAGE_KIND_COPY_DATA/STAGE_ACTION_START",
		"STAGE_KIND_SYNC_INCREMENTAL/STAGE_ACTION_START", "STAGE_KIND_FINALIZE/STAGE_ACTION_START",
		"STAGE_KIND_VERIFY/STAGE_ACTION_START",
	}, sent, "every command exactly once")
}
