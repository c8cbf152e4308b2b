package cli

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	zdmpb "github.com/zdm-io/zdm/proto/zdm/v1"
)

// TestScreen: the watch screen shows the stages, a bar and the progress
// of each collection, the lag with its sparkline of past samples, and the
// latest history; it stops watching when the migration ends.
func TestScreen(t *testing.T) {
	at := time.Now()
	m := func(state zdmpb.MigrationState, lag time.Duration, measured time.Time) *zdmpb.Migration {
		return &zdmpb.Migration{MigrationId: "m1", State: state, SourceClusterId: "src", TargetClusterId: "tgt",
			Stages: []*zdmpb.Stage{{Kind: zdmpb.StageKind_STAGE_KIND_COPY_DATA, State: zdmpb.StageState_STAGE_STATE_SUCCEEDED},
				{Kind: zdmpb.StageKind_STAGE_KIND_SYNC_INCREMENTAL, State: zdmpb.StageState_STAGE_STATE_RUNNING}},
			Collections: []*zdmpb.CollectionProgress{{Database: "shop", Collection: "items", Phase: zdmpb.CollectionPhase_COLLECTION_PHASE_COPYING,
				RowsCopied: 500, RowsTotal: 2000, RowsPerSecond: 250, Eta: durationpb.New(6 * time.Second)}},
			Lag:     &zdmpb.Lag{Lag: durationpb.New(lag), MeasureTime: timestamppb.New(measured)},
			History: []*zdmpb.Transition{{FromState: zdmpb.MigrationState_MIGRATION_STATE_COPYING, ToState: state, Time: timestamppb.New(at), Reason: "existing data copied"}}}
	}
	s := newScreen()
	s = s.with(m(zdmpb.MigrationState_MIGRATION_STATE_SYNCING, 4*time.Second, at))
	s = s.with(m(zdmpb.MigrationState_MIGRATION_STATE_SYNCING, 4*time.Second, at)) // the same measurement again
	s = s.with(m(zdmpb.MigrationState_MIGRATION_STATE_SYNCING, 500*time.Millisecond, at.Add(time.Second)))
	require.Equal(t, []float64{4, 0.5}, s.lags)
	view := s.View()
	for _, want := range []string{"SYNCING", "src -> tgt", "✓ copy_data", "● sync_incremental", "shop.items", "500/2000 rows (25%)",
		"250 rows/s", "ETA 6s", "lag 500ms", "█▂", "COPYING -> SYNCING  existing data copied"} {
		require.Contains(t, view, want)
	}
	done := m(zdmpb.MigrationState_MIGRATION_STATE_COMPLETED, 0, at.Add(2*time.Second))
	done.EndTime = timestamppb.New(at.Add(2 * time.Second))
	_, cmd := s.Update(migrationMsg{m(zdmpb.MigrationState_MIGRATION_STATE_SYNCING, 0, at.Add(2*time.Second))})
	require.Nil(t, cmd, "a running migration is watched on")
	next, cmd := s.Update(migrationMsg{done})
	require.NotNil(t, cmd, "an ended migration stops the watch")
	require.Contains(t, next.View(), "COMPLETED")
	require.Equal(t, "▁▅█", sparkline([]float64{0, 1, 2}))
	require.Equal(t, "▁▁", sparkline([]float64{0, 0}))
	require.True(t, strings.HasSuffix(view, "\n"))
}
