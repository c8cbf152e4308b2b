package cli

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	tea "github.com/charmbracelet/bubbletea"

	zdmpb "github.com/zdm-io/zdm/proto/zdm/v1"
)

// watch follows migration id until it ends: on a terminal one screen
// redrawn in place (ui.go); piped, a line for every change of state,
// progress or lag and every history entry as it happens (the API's JSON
// per update with --output json).
func (c *client) watch(ctx context.Context, id string) error {
	if err := c.dial(); err != nil {
		return err
	}
	defer c.conn.Close()
	if c.output == "text" && isTerminal(c.out) {
		return c.watchScreen(ctx, id)
	}
	return c.follow(ctx, id, c.printUpdate())
}

// printUpdate prints each update as plain lines: every new history
// entry, and a summary when it changed (the API's JSON with --output
// json).
func (c *client) printUpdate() func(*zdmpb.Migration) error {
	seen, last := 0, ""
	return func(m *zdmpb.Migration) error {
		if c.output == "json" {
			return c.json(m)
		}
		for _, h := range m.GetHistory()[min(seen, len(m.GetHistory())):] {
			fmt.Fprintf(c.out, "%s  %s -> %s  %s\n", h.GetTime().AsTime().Local().Format(time.TimeOnly),
				trim(h.GetFromState().String(), "MIGRATION_STATE_"), trim(h.GetToState().String(), "MIGRATION_STATE_"), h.GetReason())
		}
		seen = len(m.GetHistory())
		if line := summary(m); line != last {
			fmt.Fprintf(c.out, "%s  %s\n", time.Now().Format(time.TimeOnly), line)
			last = line
		}
		return nil
	}
}

// watchScreen shows the migration on one screen redrawn in place.
func (c *client) watchScreen(ctx context.Context, id string) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	p := tea.NewProgram(newScreen(), tea.WithContext(ctx), tea.WithOutput(c.out))
	go func() {
		err := c.follow(ctx, id, func(m *zdmpb.Migration) error {
			p.Send(migrationMsg{m})
			return nil
		})
		p.Send(watchEndMsg{err})
	}()
	final, err := p.Run()
	if err != nil && !errors.Is(err, tea.ErrProgramKilled) {
		return err
	}
	if s, ok := final.(screen); ok && s.err != nil {
		return s.err
	}
	return nil
}

// follow calls show with every update of migration id until it ends,
// reconnecting from the last revision seen when the stream breaks.
func (c *client) follow(ctx context.Context, id string, show func(*zdmpb.Migration) error) error {
	var rev uint64
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
			if err = show(m); err != nil {
				break
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
	if rate > 0 && copied < total {
		// Collections not started yet have no ETA of their own.
		eta = max(eta, time.Duration(float64(total-copied)/rate*float64(time.Second)))
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
