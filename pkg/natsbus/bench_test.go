package natsbus_test

import (
	"context"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/zdm-io/zdm/pkg/natsbus"
	"github.com/zdm-io/zdm/pkg/telemetry"
	eventspb "github.com/zdm-io/zdm/proto/zdm/events/v1"
)

// BenchmarkPublishChange measures what the fsync-on-every-write default
// costs a gateway publishing change events, against JetStream syncing once
// a second. Run with make bench, which prints the ratio.
func BenchmarkPublishChange(b *testing.B) {
	for _, tc := range []struct {
		name string
		sync time.Duration
	}{{"sync=1s", time.Second}, {"sync=always", 0}} {
		b.Run(tc.name, func(b *testing.B) {
			logger := slog.New(slog.DiscardHandler)
			e, err := natsbus.StartEmbedded(natsbus.EmbeddedConfig{StoreDir: b.TempDir(), SyncInterval: tc.sync}, logger)
			if err != nil {
				b.Fatal(err)
			}
			defer e.Shutdown()
			c, err := natsbus.Connect("", e.InProcess(), "bench", logger)
			if err != nil {
				b.Fatal(err)
			}
			ctx := context.Background()
			defer c.Close(ctx)
			if err := natsbus.EnsureStreams(ctx, c.JS, 1, natsbus.ChangeLimits{}); err != nil {
				b.Fatal(err)
			}
			prop := telemetry.Propagator()
			ev := &eventspb.ChangeEvent{GatewayId: "g1", Database: "db", Collection: "items", Request: make([]byte, 32<<10)}
			b.SetBytes(int64(len(ev.Request)))
			b.ReportAllocs()
			b.ResetTimer()
			for i := range b.N {
				ev.Sequence = uint64(i + 1)
				ev.EventId = fmt.Sprintf("g1-%d", ev.Sequence)
				if _, err := natsbus.Publish(ctx, c.JS, prop, "zdm.chg.db.items", ev.EventId, ev); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
