package main_test

import (
	"context"
	"io"
	"net/http"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/zdm-io/zdm/pkg/ztest"
	zdmpb "github.com/zdm-io/zdm/proto/zdm/v1"
)

// tmuxTerm is a tmux session: a real terminal a test can read.
type tmuxTerm struct {
	t    *testing.T
	name string
}

// openTerminal runs command in a detached tmux session of 110x36 that
// stays open after the command exits.
func openTerminal(t *testing.T, command string) tmuxTerm {
	t.Helper()
	if _, err := exec.LookPath("tmux"); err != nil {
		ztest.Missing(t, "tmux")
	}
	term := tmuxTerm{t: t, name: "zdm-test-" + strings.ReplaceAll(t.Name(), "/", "-")}
	_ = exec.Command("tmux", "kill-session", "-t", term.name).Run()
	out, err := exec.Command("tmux", "new-session", "-d", "-s", term.name, "-x", "110", "-y", "36",
		"TERM=xterm-256color "+command+"; echo \"[exit $?]\"; sleep 600").CombinedOutput()
	require.NoError(t, err, "%s", out)
	t.Cleanup(func() { _ = exec.Command("tmux", "kill-session", "-t", term.name).Run() })
	return term
}

// screen is what the terminal shows now.
func (term tmuxTerm) screen() string {
	out, err := exec.Command("tmux", "capture-pane", "-p", "-t", term.name).Output()
	require.NoError(term.t, err)
	return string(out)
}

// scrolled is how many lines went up out of the screen.
func (term tmuxTerm) scrolled() string {
	out, err := exec.Command("tmux", "display-message", "-p", "-t", term.name, "#{history_size}").Output()
	require.NoError(term.t, err)
	return strings.TrimSpace(string(out))
}

// waitFor waits until the screen shows every one of want and returns it.
func (term tmuxTerm) waitFor(timeout time.Duration, want ...string) string {
	term.t.Helper()
	var s string
	ztest.Eventually(term.t, timeout, func() bool {
		s = term.screen()
		for _, w := range want {
			if !strings.Contains(s, w) {
				return false
			}
		}
		return true
	}, "the terminal never showed %q; it shows:\n%s", want, lazy(func() string { return s }))
	return s
}

// TestE2EWatchInTerminal runs zdm migrate watch in a real terminal (tmux)
// on a ZERO_DOWNTIME migration whose copy is throttled: the screen shows
// the stages, a bar per collection with rows, rate and ETA, then the lag
// with its sparkline, and it is redrawn in place (nothing scrolls).
func TestE2EWatchInTerminal(t *testing.T) {
	ztest.Integration(t)
	if _, err := exec.LookPath("tmux"); err != nil {
		ztest.Missing(t, "tmux")
	}
	ctx := context.Background()
	srcAddr, tgtAddr := ztest.NewServer(t, "lite3"), ztest.NewServer(t, "lite3")
	seedShop(t, ctx, srcAddr, 3000)
	gw := freeAddr(t)
	p := start(t, "-gateway-cluster", "src", "-gateway-addr", gw)
	addr := p.addrs.GRPC
	conn := dial(t, addr)
	mig := zdmpb.NewMigrationServiceClient(conn)
	registerPair(t, ctx, zdmpb.NewClusterServiceClient(conn), srcAddr, tgtAddr)
	createWhenServed(t, ctx, mig, &zdmpb.CreateMigrationRequest{MigrationId: "tty", Type: zdmpb.MigrationType_MIGRATION_TYPE_ZERO_DOWNTIME,
		SourceClusterId: "src", TargetClusterId: "tgt",
		Options: &zdmpb.MigrationOptions{WorkUnitRows: 1000, Throttle: &zdmpb.Throttle{MaxRowsPerSecond: 250}}})

	bin, err := zdmBinary()
	require.NoError(t, err)
	term := openTerminal(t, bin+" migrate watch tty --addr "+addr)
	copying := term.waitFor(time.Minute, "migration tty  COPYING", "● copy_data", "shop.items", "rows/s", "ETA", "█")
	t.Logf("copying:\n%s", copying)
	require.Contains(t, copying, "✓ prepare_target")
	require.Regexp(t, `shop\.items\s+\S*[█░]+\S*\s+copying\s+\d+/3000 rows`, copying)

	// Sync: a write through the gateway, then the lag and its sparkline.
	term.waitFor(2*time.Minute, "READY_TO_FINALIZE", "lag ")
	insertItems(t, ctx, sourceClient(t, ctx, gw), "", 9000, 9000)
	sparkline := regexp.MustCompile(`(?m)^lag \S+\s+[▁▂▃▄▅▆▇█]{3,}\s*$`)
	var syncing string
	ztest.Eventually(t, time.Minute, func() bool {
		syncing = term.screen()
		return sparkline.MatchString(syncing)
	}, "no lag sparkline on the screen:\n%s", lazy(func() string { return syncing }))
	t.Logf("ready to finalise:\n%s", syncing)
	require.Contains(t, syncing, "COPYING -> SYNCING")
	require.Equal(t, strings.SplitN(copying, "\n", 2)[0][:len("migration tty")], strings.SplitN(syncing, "\n", 2)[0][:len("migration tty")],
		"the first line stays the title")
	require.Equal(t, "0", term.scrolled(), "redrawn in place: no line scrolled off the screen")

	// The migration ends: watch exits 0 and leaves its last screen.
	_, err = mig.StopSync(ctx, &zdmpb.StopSyncRequest{MigrationId: "tty", ConfirmWritesStopped: true})
	require.NoError(t, err)
	end := term.waitFor(2*time.Minute, "[exit 0]")
	t.Logf("at the end:\n%s", end)
	require.Contains(t, end, "COMPLETED")
	require.Equal(t, "0", term.scrolled())

	// What the migration moved, in the metrics.
	resp, err := http.Get("http://" + p.addrs.Metrics + "/metrics")
	require.NoError(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	require.Regexp(t, `(?m)^zdm_copy_rows_total\{migration="tty"\} 3000$`, string(body))
	require.Regexp(t, `(?m)^zdm_copy_bytes_total\{migration="tty"\} [1-9]\d*$`, string(body))
	require.Regexp(t, `(?m)^zdm_gateway_changes_captured_total\{migration="tty"\} 1$`, string(body))
	require.Regexp(t, `(?m)^zdm_applier_changes_applied_total\{migration="tty"\} 1$`, string(body))
}
