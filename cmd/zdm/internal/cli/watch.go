package cli

import (
	"context"
	"fmt"
	"strings"
	"time"

	zdmpb "github.com/zdm-io/zdm/proto/zdm/v1"
)

// watch follows migration id until it ends, printing a line for every
// change of state, progress or lag, and every history entry as it
// happens (the API's JSON per update with --output json). It reconnects
// from the last revision seen when the stream breaks.
func (c *client) watch(ctx context.Context, id string) error {
	if err := c.dial(); err != nil {
		return err
	}
	defer c.conn.Close()
	var rev uint64
	seen := 0 // history entries printed
	last := ""
	for attempt := 0; ; attempt++ {
		sctx, cancel := c.ctx(ctx, true)
		stream, err := zdmpb.NewMigrationServiceClient(c.conn).WatchMigration(sctx, &zdmpb.WatchMigrationRequest{MigrationId: id, FromRevision: rev})
		for err == nil {
			var resp *zdmpb.WatchMigrationResponse
			if resp, err = stream.Recv(); err != nil {
				break
			}
			m := resp.GetMigration()
			rev, attempt = m.GetRevision(), 0
			if c.output == "json" {
				if err = c.json(m); err != nil {
					break
				}
			} else {
				for _, h := range m.GetHistory()[min(seen, len(m.GetHistory())):] {
					fmt.Fprintf(c.out, "%s  %s -> %s  %s\n", h.GetTime().AsTime().Local().Format(time.TimeOnly),
						trim(h.GetFromState().String(), "MIGRATION_STATE_"), trim(h.GetToState().String(), "MIGRATION_STATE_"), h.GetReason())
				}
				seen = len(m.GetHistory())
				if line := summary(m); line != last {
					fmt.Fprintf(c.out, "%s  %s\n", time.Now().Format(time.TimeOnly), line)
					last = line
				}
			}
			if m.GetEndTime() != nil {
				cancel()
				return nil
			}
		}
		cancel()
		if ctx.Err() != nil {
			return nil // interrupted: not an error
		}
		if attempt >= 5 {
			return err
		}
		time.Sleep(time.Second)
	}
}

// summary is one line of where m is: state, progress over all
// collections, rate, ETA and lag.
func summary(m *zdmpb.Migration) string {
	var copied, total int64
	var rate float64
	var eta time.Duration
	for _, p := range m.GetCollections() {
		copied, total, rate = copied+p.GetRowsCopied(), total+p.GetRowsTotal(), rate+p.GetRowsPerSecond()
		eta = max(eta, p.GetEta().AsDuration())
	}
	parts := []string{state(m)}
	if total > 0 {
		parts = append(parts, fmt.Sprintf("%d/%d rows (%.0f%%)", copied, total, 100*float64(copied)/float64(total)))
	}
	if rate > 0 {
		parts = append(parts, fmt.Sprintf("%.0f rows/s", rate))
	}
	if eta > 0 {
		parts = append(parts, "ETA "+eta.Round(time.Second).String())
	}
	if l := m.GetLag().GetLag(); l != nil {
		parts = append(parts, "lag "+l.AsDuration().Round(100*time.Millisecond).String())
	}
	return strings.Join(parts, "  ")
}
