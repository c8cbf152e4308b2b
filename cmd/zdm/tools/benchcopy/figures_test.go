package main

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestFigureNames keeps the names of the benchmarks' figures, which
// docs/performance.md and whoever tracks them read: a change that drops or
// renames one fails here.
func TestFigureNames(t *testing.T) {
	require.Equal(t, []string{
		"rows", "runs", "cores",
		"ceiling_rows_per_s", "copy_rows_per_s", "naive_rows_per_s",
		"ratio_to_ceiling", "speedup_vs_naive", "copier_peak_rss_mib",
		"target_write_cpu_us_per_row", "source_read_cpu_us_per_row", "shared_limit_rows_per_s", "ratio_to_shared_limit",
		"copy_target_cpu_us_per_row", "copy_source_cpu_us_per_row", "target_cpu_per_row_vs_ceiling", "copier_cpu_us_per_row",
	}, copyFigures)
	require.Equal(t, []string{
		"rows_per_s_100000", "copier_peak_rss_mib_100000", "rows_per_s_400000", "copier_peak_rss_mib_400000",
		"rows_per_s_1600000", "copier_peak_rss_mib_1600000", "rate_drop_largest_vs_smallest",
	}, scaleFigures([]int{100_000, 400_000, 1_600_000}))
}

// TestReportNeedsEveryFigure: a figure not measured fails the report
// rather than vanishing from it.
func TestReportNeedsEveryFigure(t *testing.T) {
	var b strings.Builder
	require.ErrorContains(t, report(&b, []string{"a", "b"}, map[string]float64{"a": 1}), "figure b was not measured")
	require.Empty(t, b.String())
	require.NoError(t, report(&b, []string{"rows", "runs", "ratio", "rate"}, map[string]float64{"rows": 200000, "runs": 3, "ratio": 0.8512, "rate": 5123.4}))
	require.Equal(t, "rows=200000\nruns=3\nratio=0.85\nrate=5123\n", b.String())
}
