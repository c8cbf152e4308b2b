package main

import (
	"fmt"
	"io"
	"strconv"
)

// copyFigures are the names make bench-copy prints, in order. Changing
// them breaks whoever reads them: TestFigureNames keeps them.
var copyFigures = []string{
	"rows", "runs", "cores",
	"ceiling_rows_per_s", "copy_rows_per_s", "naive_rows_per_s",
	"ratio_to_ceiling", "speedup_vs_naive", "copier_peak_rss_mib",
	"target_write_cpu_us_per_row", "source_read_cpu_us_per_row", "shared_limit_rows_per_s", "ratio_to_shared_limit",
	"copy_target_cpu_us_per_row", "copy_source_cpu_us_per_row", "target_cpu_per_row_vs_ceiling", "copier_cpu_us_per_row",
}

// scaleFigures are the names make bench-copy-scale prints for sizes.
func scaleFigures(sizes []int) []string {
	var out []string
	for _, n := range sizes {
		out = append(out, "rows_per_s_"+strconv.Itoa(n), "copier_peak_rss_mib_"+strconv.Itoa(n))
	}
	return append(out, "rate_drop_largest_vs_smallest")
}

// report prints names=value lines, failing when a figure was not
// measured: a figure the benchmark forgets must not vanish silently.
func report(w io.Writer, names []string, values map[string]float64) error {
	for _, n := range names {
		if _, ok := values[n]; !ok {
			return fmt.Errorf("figure %s was not measured", n)
		}
	}
	for _, n := range names {
		v := values[n]
		switch {
		case v == float64(int64(v)):
			fmt.Fprintf(w, "%s=%d\n", n, int64(v))
		case v >= 100:
			fmt.Fprintf(w, "%s=%.0f\n", n, v)
		default:
			fmt.Fprintf(w, "%s=%.2f\n", n, v)
		}
	}
	return nil
}
