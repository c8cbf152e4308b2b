package main_test

import (
	"context"
	"math/rand/v2"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/milvus-io/milvus-sdk-go/v2/client"
	"github.com/milvus-io/milvus-sdk-go/v2/entity"
	"github.com/stretchr/testify/require"

	"github.com/zdm-io/zdm/pkg/ztest"
	zdmpb "github.com/zdm-io/zdm/proto/zdm/v1"
)

// TestE2EZeroDowntimeCrashes runs a ZERO_DOWNTIME migration under write
// load with the applier in a process of its own, killed with SIGKILL at
// random moments ten times while syncing and started again, and the
// gateway, also a process of its own, killed once and restarted on the
// same address (the writers retry). Once the applier has caught up, the
// target equals the source before any repair: nothing was lost or applied
// twice. Then a write goes to the source around the gateway, and after
// stop sync the repair has mended it and the target equals the source.
func TestE2EZeroDowntimeCrashes(t *testing.T) {
	ztest.Integration(t)
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	srcAddr, tgtAddr := ztest.NewServer(t, "lite3"), ztest.NewServer(t, "lite3")
	seedShop(t, ctx, srcAddr, 3000)
	p := start(t, "-target", "coordinator,snapshot-copier,lag-monitor,cdc-streamer", "-apply=false")
	conn := dial(t, p.addrs.GRPC)
	mig := zdmpb.NewMigrationServiceClient(conn)
	registerPair(t, ctx, zdmpb.NewClusterServiceClient(conn), srcAddr, tgtAddr)

	streamer := func(args ...string) *binaryProcess {
		return startBinary(t, append([]string{"-target", "cdc-streamer", "-nats-url", p.addrs.NATS,
			"-grpc-addr", freeAddr(t), "-metrics-addr", "127.0.0.1:0"}, args...)...)
	}
	kill := func(b *binaryProcess) {
		require.NoError(t, b.cmd.Process.Signal(syscall.SIGKILL))
		<-b.exit
	}
	gw := freeAddr(t)
	gateway := streamer("-apply=false", "-gateway-cluster", "src", "-gateway-addr", gw)
	applier := streamer()
	ztest.Eventually(t, 30*time.Second, func() bool {
		c, err := client.NewClient(ctx, client.Config{Address: gw})
		if err == nil {
			c.Close()
		}
		return err == nil
	}, "gateway not serving; logs:\n%s", gateway.logs)

	l := startLoad(t, ctx, gw, "shop", true)
	began := time.Now()
	createWhenServed(t, ctx, mig, &zdmpb.CreateMigrationRequest{MigrationId: "zdk", Type: zdmpb.MigrationType_MIGRATION_TYPE_ZERO_DOWNTIME,
		SourceClusterId: "src", TargetClusterId: "tgt", Options: &zdmpb.MigrationOptions{WorkUnitRows: 1000}})
	waitMigration(t, ctx, mig, "zdk", 3*time.Minute, func(m *zdmpb.Migration) bool {
		return m.GetState() == zdmpb.MigrationState_MIGRATION_STATE_SYNCING || terminal(m)
	}, nil)
	t.Logf("syncing after %s", time.Since(began))

	for i := range 10 {
		// Each applier takes the lease its killed predecessor left (it
		// expires) and applies for a random while before it is killed.
		waited := time.Now()
		ztest.Eventually(t, 60*time.Second, func() bool { return strings.Contains(applier.logs.String(), "applier started") },
			"applier %d did not start; logs:\n%s", i, applier.logs)
		t.Logf("applier %d took over after %s", i, time.Since(waited))
		time.Sleep(time.Duration(200+rand.IntN(2500)) * time.Millisecond)
		kill(applier)
		applier = streamer()
		if i == 4 {
			kill(gateway)
			gateway = streamer("-apply=false", "-gateway-cluster", "src", "-gateway-addr", gw)
		}
	}
	m := waitMigration(t, ctx, mig, "zdk", 3*time.Minute, func(m *zdmpb.Migration) bool {
		return m.GetState() == zdmpb.MigrationState_MIGRATION_STATE_READY_TO_FINALIZE || terminal(m)
	}, nil)
	require.Equal(t, zdmpb.MigrationState_MIGRATION_STATE_READY_TO_FINALIZE, m.GetState(), "error: %v", m.GetError())
	t.Logf("ready after %s: %v", time.Since(began), m.GetLag())
	errs := l.halt(t)
	halted := time.Now()
	t.Logf("%d writes through the gateway, %d failed while it was down", l.writes.Load(), len(errs))

	// Before any repair: once the applier has caught up with the last
	// write, the target already equals the source. Nothing was lost or
	// applied twice across the kills.
	waitMigration(t, ctx, mig, "zdk", time.Minute, func(m *zdmpb.Migration) bool {
		return m.GetLag().GetAppliedWatermark().AsTime().After(halted)
	}, nil)
	t.Logf("caught up after %s", time.Since(began))
	report := compareSides(t, ctx, srcAddr, tgtAddr, "shop", "items")
	require.True(t, report.Match(), "applied changes: %s", report)

	// A write that bypasses the gateway: only the repair can carry it.
	direct, err := client.NewClient(ctx, client.Config{Address: srcAddr, DBName: "shop"})
	require.NoError(t, err)
	defer direct.Close()
	_, err = direct.Upsert(ctx, "items", "", entity.NewColumnInt64("id", []int64{2500}), entity.NewColumnVarChar("title", []string{"around the gateway"}),
		entity.NewColumnFloatVector("vec", 16, [][]float32{make([]float32, 16)}))
	require.NoError(t, err)

	_, err = mig.StopSync(ctx, &zdmpb.StopSyncRequest{MigrationId: "zdk", ConfirmWritesStopped: true})
	require.NoError(t, err)
	m = waitMigration(t, ctx, mig, "zdk", 3*time.Minute, terminal, nil)
	require.Equal(t, zdmpb.MigrationState_MIGRATION_STATE_COMPLETED, m.GetState(), "error: %v\napplier logs:\n%s", m.GetError(), applier.logs)
	t.Logf("repaired %d ranges, %d rows", m.GetRepairedRanges(), m.GetRepairedRows())
	for _, h := range m.GetHistory() {
		t.Logf("%s %s: %s", h.GetTime().AsTime().Format("15:04:05.000"), h.GetToState(), h.GetReason())
	}
	require.Positive(t, m.GetRepairedRanges(), "the write around the gateway was repaired")
	report = compareSides(t, ctx, srcAddr, tgtAddr, "shop", "items")
	require.True(t, report.Match(), report.String())
}
