package streamer

import (
	eventspb "github.com/zdm-io/zdm/proto/zdm/events/v1"
)

// watermark tracks a migration's applied watermark: the source time
// below which every captured change is on the target. Each live gateway
// replica promises that it will publish nothing more at or below its
// resolved timestamp R, and says which stream sequence its last change
// had when it promised; once the applier has applied that far, R holds
// for that replica. The watermark is the lowest R over the live replicas
// armed for the migration, and never goes back. A replica not yet
// confirmed counts from its arm point, below which the copy holds
// everything.
type watermark struct {
	cluster, migration string
	value              uint64
	confirmed          map[string]uint64 // by gateway ID
}

func newWatermark(cluster, migration string, start uint64) *watermark {
	return &watermark{cluster: cluster, migration: migration, value: start, confirmed: map[string]uint64{}}
}

// advance moves the watermark with the gateways' latest states, given
// the last stream sequence applied. drained is true when every live
// replica armed for the migration refuses its writes and all it published
// is applied.
func (w *watermark) advance(gateways []*eventspb.ResolvedTimestamp, applied uint64) (value uint64, drained bool) {
	low, any := uint64(0), false
	drained = true
	for _, g := range gateways {
		if g.GetClusterId() != w.cluster || g.GetMigrationId() != w.migration || g.GetArmTimestamp() == 0 {
			continue
		}
		caughtUp := applied >= g.GetLastStreamSequence()
		if caughtUp && g.GetResolvedTimestamp() > w.confirmed[g.GetGatewayId()] {
			w.confirmed[g.GetGatewayId()] = g.GetResolvedTimestamp()
		}
		c := w.confirmed[g.GetGatewayId()]
		if c == 0 {
			c = g.GetArmTimestamp()
		}
		if !any || c < low {
			low, any = c, true
		}
		drained = drained && caughtUp && g.GetWritesStopped()
	}
	if any && low > w.value {
		w.value = low
	}
	return w.value, drained
}
