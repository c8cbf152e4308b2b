package cli

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/types/known/timestamppb"

	zdmpb "github.com/zdm-io/zdm/proto/zdm/v1"
)

// TestSummaryRate: the piped summary's rate and ETA come from the rows
// the watcher saw grow over the last ten seconds, over all collections,
// so a collection that starts or finishes does not make them jump.
func TestSummaryRate(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var w rateWindow
	require.Zero(t, w.add(t0, 0), "no rate from one sample")
	require.InDelta(t, 1000, w.add(t0.Add(2*time.Second), 2000), 0.01)
	for s := 4; s <= 30; s += 2 {
		w.add(t0.Add(time.Duration(s)*time.Second), int64(s)*1000)
	}
	require.InDelta(t, 1000, w.add(t0.Add(32*time.Second), 32_000), 0.01)
	require.LessOrEqual(t, len(w.samples), 7, "samples older than the span are dropped")

	m := &zdmpb.Migration{State: zdmpb.MigrationState_MIGRATION_STATE_COPYING, Collections: []*zdmpb.CollectionProgress{
		{RowsCopied: 30_000, RowsTotal: 30_000, RowsPerSecond: 0}, // done
		{RowsCopied: 2_000, RowsTotal: 50_000, RowsPerSecond: 13}, // just started
		{RowsCopied: 0, RowsTotal: 20_000},                        // waiting
	}}
	require.Equal(t, "COPYING  32000/100000 rows (32%)  1000 rows/s  ETA 1m8s", summary(m, 1000))
	m.State = zdmpb.MigrationState_MIGRATION_STATE_SYNCING
	require.Equal(t, "SYNCING  32000/100000 rows (32%)", summary(m, 1000), "no copy rate once the copy is over")
}

// TestHelp: -h prints a command's usage and flags on stdout and exits 0;
// a bad command line exits 2 with one line on stderr.
func TestHelp(t *testing.T) {
	var out, errOut strings.Builder
	require.Equal(t, ExitOK, Run(context.Background(), []string{"migrate", "create", "-h"}, &out, &errOut))
	require.Contains(t, out.String(), "usage: zdm migrate create")
	require.Contains(t, out.String(), "-work-unit-rows")
	require.Empty(t, errOut.String())
	out.Reset()
	require.Equal(t, ExitUsage, Run(context.Background(), []string{"migrate", "create", "--frobnicate"}, &out, &errOut))
	require.Equal(t, 1, strings.Count(errOut.String(), "\n"), errOut.String())
	require.Empty(t, out.String())
}

// TestClusterProblemShown: a cluster that stops answering shows in every
// view of the migration, with its role, ID, since when, attempts, fail
// time and last error, and not once it answers again.
func TestClusterProblemShown(t *testing.T) {
	since := time.Date(2026, 1, 1, 12, 0, 0, 0, time.Local)
	m := &zdmpb.Migration{MigrationId: "m1", State: zdmpb.MigrationState_MIGRATION_STATE_COPYING, SourceClusterId: "src", TargetClusterId: "tgt",
		Collections: []*zdmpb.CollectionProgress{{Database: "shop", Collection: "items", RowsCopied: 127, RowsTotal: 34_498}},
		ClusterProblems: []*zdmpb.ClusterProblem{{Role: zdmpb.ClusterRole_CLUSTER_ROLE_TARGET, ClusterId: "tgt",
			Since: timestamppb.New(since), FailTime: timestamppb.New(since.Add(10 * time.Minute)), FailedAttempts: 4,
			LastError: "connection refused", LastErrorTime: timestamppb.New(since.Add(time.Minute))}}}
	want := `target "tgt" since 12:00:00, 4 failed attempts, fails at 12:10:00 if still down; last error: connection refused`
	var printed strings.Builder
	require.NoError(t, printMigration(&printed, m))
	require.Contains(t, printed.String(), "not answering  "+want)
	require.Equal(t, "COPYING  127/34498 rows (0%)  not answering: "+want, summary(m, 0))
	require.Contains(t, newScreen().with(m).View(), want)

	m.ClusterProblems = nil
	printed.Reset()
	require.NoError(t, printMigration(&printed, m))
	require.NotContains(t, printed.String(), "not answering")
	require.NotContains(t, newScreen().with(m).View(), "not answering")
}
