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
	var rate rateWindow
	return func(m *zdmpb.Migration) error {
		if c.output == "json" {
			return c.json(m)
		}
		for _, h := range m.GetHistory()[min(seen, len(m.GetHistory())):] {
			fmt.Fprintf(c.out, "%s  %s -> %s  %s\n", h.GetTime().AsTime().Local().Format(time.TimeOnly),
				trim(h.GetFromState().String(), "MIGRATION_STATE_"), trim(h.GetToState().String(), "MIGRATION_STATE_"), h.GetReason())
		}
		seen = len(m.GetHistory())
		if line := summary(m, rate.add(time.Now(), copied(m))); line != last {
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

// copied is the rows copied of every collection of m.
func copied(m *zdmpb.Migration) int64 {
	var n int64
	for _, p := range m.GetCollections() {
		n += p.GetRowsCopied()
	}
	return n
}

// rateWindow is the copy's rate over all collections as the watcher saw
// the rows grow in the last rateSpan: collections start and finish one
// after another, so the sum of their own rates jumps as they do.
type rateWindow struct {
	samples []rateSample
}

type rateSample struct {
	at   time.Time
	rows int64
}

const rateSpan = 10 * time.Second

// add records rows at now and returns the rate in rows/s (0 until a
// second of samples).
func (w *rateWindow) add(now time.Time, rows int64) float64 {
	w.samples = append(w.samples, rateSample{now, rows})
	for len(w.samples) > 2 && now.Sub(w.samples[1].at) >= rateSpan {
		w.samples = w.samples[1:]
	}
	first := w.samples[0]
	if dt := now.Sub(first.at).Seconds(); dt >= 1 && rows > first.rows {
		return float64(rows-first.rows) / dt
	}
	return 0
}

// summary is one line of where m is: state, progress over all
// collections, rate (rows/s over all of them) and ETA, lag, and the
// clusters that do not answer.
func summary(m *zdmpb.Migration, rate float64) string {
	var total int64
	var eta time.Duration
	copied := copied(m)
	for _, p := range m.GetCollections() {
		total += p.GetRowsTotal()
	}
	if rate > 0 && copied < total {
		eta = time.Duration(float64(total-copied) / rate * float64(time.Second))
	}
	if m.GetState() != zdmpb.MigrationState_MIGRATION_STATE_COPYING {
		rate, eta = 0, 0
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
	for _, p := range m.GetClusterProblems() {
		parts = append(parts, "not answering: "+problemLine(p))
	}
	return strings.Join(parts, "  ")
}
