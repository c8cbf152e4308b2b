package cli

import (
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/charmbracelet/bubbles/progress"
	tea "github.com/charmbracelet/bubbletea"
	"github.com/charmbracelet/lipgloss"
	"golang.org/x/term"

	zdmpb "github.com/zdm-io/zdm/proto/zdm/v1"
)

// On a terminal, watch redraws one screen in place (bubbletea): the
// stages, a bar per collection with rows, rate and ETA, the lag with a
// sparkline of the last minutes, and the latest history. Piped, it prints
// plain lines (watch.go).

// isTerminal reports whether w is a terminal.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// lagSamples bounds the sparkline: one sample per lag measurement, about
// one a second, so the last few minutes.
const lagSamples = 180

// screen is the watch's model.
type screen struct {
	m     *zdmpb.Migration
	lags  []float64 // seconds, oldest first
	lagAt time.Time // measure time of the last sample
	bar   progress.Model
	width int
	err   error
}

type (
	migrationMsg struct{ m *zdmpb.Migration }
	watchEndMsg  struct{ err error }
)

func newScreen() screen {
	return screen{bar: progress.New(progress.WithDefaultGradient(), progress.WithoutPercentage()), width: 100}
}

func (s screen) Init() tea.Cmd { return nil }

func (s screen) Update(msg tea.Msg) (tea.Model, tea.Cmd) {
	switch msg := msg.(type) {
	case tea.KeyMsg:
		if msg.String() == "q" || msg.String() == "ctrl+c" {
			return s, tea.Quit
		}
	case tea.WindowSizeMsg:
		s.width = msg.Width
	case migrationMsg:
		s = s.with(msg.m)
		if msg.m.GetEndTime() != nil {
			return s, tea.Quit
		}
	case watchEndMsg:
		s.err = msg.err
		return s, tea.Quit
	}
	return s, nil
}

// with records m, and its lag as a new sample when it was measured again.
func (s screen) with(m *zdmpb.Migration) screen {
	s.m = m
	if l := m.GetLag(); l.GetLag() != nil && l.GetMeasureTime().AsTime().After(s.lagAt) {
		s.lagAt = l.GetMeasureTime().AsTime()
		s.lags = append(s.lags, l.GetLag().AsDuration().Seconds())
		if len(s.lags) > lagSamples {
			s.lags = s.lags[len(s.lags)-lagSamples:]
		}
	}
	return s
}

var (
	bold  = lipgloss.NewStyle().Bold(true)
	faint = lipgloss.NewStyle().Faint(true)
)

func (s screen) View() string {
	m := s.m
	if m == nil {
		return "waiting for the migration…\n"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s  %s  %s -> %s\n", bold.Render("migration"), m.GetMigrationId(),
		bold.Render(state(m)), m.GetSourceClusterId(), m.GetTargetClusterId())
	var stages []string
	for _, st := range m.GetStages() {
		mark := map[zdmpb.StageState]string{zdmpb.StageState_STAGE_STATE_SUCCEEDED: "✓", zdmpb.StageState_STAGE_STATE_RUNNING: "●",
			zdmpb.StageState_STAGE_STATE_FAILED: "✗", zdmpb.StageState_STAGE_STATE_SKIPPED: "-", zdmpb.StageState_STAGE_STATE_CANCELLED: "✗"}[st.GetState()]
		if mark == "" {
			mark = "·"
		}
		stages = append(stages, mark+" "+strings.ToLower(trim(st.GetKind().String(), "STAGE_KIND_")))
	}
	fmt.Fprintf(&b, "%s\n\n", strings.Join(stages, "   "))
	name := 10
	for _, p := range m.GetCollections() {
		name = max(name, len(p.GetDatabase())+1+len(p.GetCollection()))
	}
	s.bar.Width = max(10, min(40, s.width-name-50))
	for _, p := range m.GetCollections() {
		frac := 0.0
		if t := p.GetRowsTotal(); t > 0 {
			frac = float64(p.GetRowsCopied()) / float64(t)
		}
		fmt.Fprintf(&b, "%-*s %s %s\n", name, p.GetDatabase()+"."+p.GetCollection(), s.bar.ViewAs(frac), strings.TrimSpace(progressLine(p)))
	}
	if len(s.lags) > 0 {
		fmt.Fprintf(&b, "\n%s %s  %s\n", bold.Render("lag"), (time.Duration(s.lags[len(s.lags)-1] * float64(time.Second))).Round(100*time.Millisecond), sparkline(s.lags))
	}
	if h := m.GetHistory(); len(h) > 0 {
		b.WriteString("\n")
		for _, e := range h[max(0, len(h)-5):] {
			fmt.Fprintf(&b, "%s\n", faint.Render(fmt.Sprintf("%s  %s -> %s  %s", e.GetTime().AsTime().Local().Format(time.TimeOnly),
				trim(e.GetFromState().String(), "MIGRATION_STATE_"), trim(e.GetToState().String(), "MIGRATION_STATE_"), e.GetReason())))
		}
	}
	for _, p := range m.GetClusterProblems() {
		fmt.Fprintf(&b, "\n%s %s\n", bold.Render("not answering"), problemLine(p))
	}
	if e := m.GetError(); e != nil {
		fmt.Fprintf(&b, "\n%s %s: %s\n", bold.Render("error"), e.GetCode(), e.GetMessage())
	}
	b.WriteString(faint.Render("\nq to stop watching") + "\n")
	return b.String()
}

// sparkline draws values as a line of block characters scaled to their
// maximum.
func sparkline(values []float64) string {
	const ticks = "▁▂▃▄▅▆▇█"
	top := 0.0
	for _, v := range values {
		top = max(top, v)
	}
	r := []rune(ticks)
	var b strings.Builder
	for _, v := range values {
		i := 0
		if top > 0 {
			i = min(len(r)-1, int(v/top*float64(len(r)-1)+0.5))
		}
		b.WriteRune(r[i])
	}
	return b.String()
}
