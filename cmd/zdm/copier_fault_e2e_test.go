package main_test

import (
	"context"
	"math/rand/v2"
	"os/exec"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/zdm-io/zdm/pkg/ztest"
	zdmpb "github.com/zdm-io/zdm/proto/zdm/v1"
)

// TestE2ECopiersKilled runs the copy on three copier processes and kills
// one with SIGKILL at random moments, again and again, restarting it each
// time. The migration completes, verification passes, and the target's
// distinct-key count equals its count(*): no row lost, none twice.
func TestE2ECopiersKilled(t *testing.T) {
	ztest.Integration(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	srcAddr, tgtAddr := ztest.NewServer(t, "lite3"), ztest.NewServer(t, "lite3")
	const rows = 20000
	seedShop(t, ctx, srcAddr, rows)

	p := start(t, "-target", "coordinator,lag-monitor", "-nats-listen", "127.0.0.1:0")
	bin, err := zdmBinary()
	require.NoError(t, err)
	copiers := make([]*exec.Cmd, 3)
	var logs syncBuffer
	run := func(i int) {
		cmd := exec.Command(bin, "-target", "snapshot-copier", "-nats-url", p.addrs.NATS, "-grpc-addr", "127.0.0.1:0",
			"-metrics-addr", "127.0.0.1:0", "-copier-workers", "1", "-copier-unit-ack-wait", "1s", "-log-format", "text")
		cmd.Stdout, cmd.Stderr = &logs, &logs
		require.NoError(t, cmd.Start())
		copiers[i] = cmd
	}
	kill := func(i int) {
		_ = copiers[i].Process.Signal(syscall.SIGKILL)
		_ = copiers[i].Wait()
	}
	for i := range copiers {
		run(i)
	}
	t.Cleanup(func() {
		for i := range copiers {
			kill(i)
		}
		if t.Failed() {
			t.Logf("copier logs:\n%s", &logs)
		}
	})

	conn := dial(t, p.addrs.GRPC)
	mig := zdmpb.NewMigrationServiceClient(conn)
	registerPair(t, ctx, zdmpb.NewClusterServiceClient(conn), srcAddr, tgtAddr)
	// The copier processes announce their stages once they run.
	createWhenServed(t, ctx, mig, &zdmpb.CreateMigrationRequest{MigrationId: "fault", Type: zdmpb.MigrationType_MIGRATION_TYPE_OFFLINE,
		SourceClusterId: "src", TargetClusterId: "tgt", Options: &zdmpb.MigrationOptions{WorkUnitRows: 1000}})

	// Kill at random moments while copying, a bounded number of times,
	// so the copy also gets to finish.
	const maxKills = 12
	kills, nextKill := 0, time.Now()
	m := waitMigration(t, ctx, mig, "fault", 3*time.Minute, terminal, func(m *zdmpb.Migration) {
		if m.GetState() == zdmpb.MigrationState_MIGRATION_STATE_COPYING && kills < maxKills && time.Now().After(nextKill) {
			i := rand.IntN(len(copiers))
			kill(i)
			kills++
			run(i)
			nextKill = time.Now().Add(time.Duration(200+rand.IntN(800)) * time.Millisecond)
		}
	})
	require.Equal(t, zdmpb.MigrationState_MIGRATION_STATE_COMPLETED, m.GetState(), "error: %v", m.GetError())
	require.Positive(t, kills)
	t.Logf("copiers killed %d times", kills)

	report := compareSides(t, ctx, srcAddr, tgtAddr, "shop", "items")
	require.True(t, report.Match(), report.String())
	require.Equal(t, int64(rows), report.TargetCount)
	require.Equal(t, report.TargetCount, report.TargetDistinct)
}
