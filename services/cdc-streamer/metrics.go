package streamer

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/zdm-io/zdm/pkg/telemetry"
)

// streamMetrics count the changes this process captured and applied.
type streamMetrics struct {
	captured, applied *prometheus.CounterVec
	backlog           *prometheus.GaugeVec
}

func newStreamMetrics(reg prometheus.Registerer) (*streamMetrics, error) {
	m := &streamMetrics{
		captured: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "zdm_gateway_changes_captured_total",
			Help: "Changes (rows inserted, upserted or deleted, and replicated DDL) this gateway published on the change stream, by migration."}, []string{"migration"}),
		applied: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "zdm_applier_changes_applied_total",
			Help: "Changes this applier wrote to targets, by migration."}, []string{"migration"}),
		backlog: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "zdm_applier_backlog_messages",
			Help: "Messages of the change stream not yet applied, by migration, as this applier last saw it."}, []string{"migration"}),
	}
	return m, telemetry.Register(reg, m.captured, m.applied, m.backlog)
}
