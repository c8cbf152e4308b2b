package copier

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/zdm-io/zdm/pkg/telemetry"
)

// copyMetrics count what this process copied.
type copyMetrics struct {
	rows, bytes *prometheus.CounterVec
}

func newCopyMetrics(reg prometheus.Registerer) (*copyMetrics, error) {
	m := &copyMetrics{
		rows: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "zdm_copy_rows_total",
			Help: "Rows this process copied to targets, by migration (checkpointed batches)."}, []string{"migration"}),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "zdm_copy_bytes_total",
			Help: "Bytes of row data this process copied to targets, by migration."}, []string{"migration"}),
	}
	return m, telemetry.Register(reg, m.rows, m.bytes)
}

// add counts rows and bytes copied for migration; m may be nil.
func (m *copyMetrics) add(migration string, rows, bytes int64) {
	if m == nil {
		return
	}
	m.rows.WithLabelValues(migration).Add(float64(rows))
	m.bytes.WithLabelValues(migration).Add(float64(bytes))
}
