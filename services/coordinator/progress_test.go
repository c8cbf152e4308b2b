package coordinator

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	coordpb "github.com/zdm-io/zdm/proto/zdm/coordinator/v1"
	zdmpb "github.com/zdm-io/zdm/proto/zdm/v1"
)

// TestCopyProgress follows one collection's copy on a fake clock: totals
// add finished and running units, samples are taken at most every five
// seconds and forgotten after a minute, and throughput and ETA come from
// the oldest sample kept.
func TestCopyProgress(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	cc := &coordpb.CollectionCopy{UnitsTotal: 4, RowsTotal: 4000,
		Done: &coordpb.CopyCount{Database: "db", Collection: "c"}}
	other := &coordpb.CollectionCopy{UnitsTotal: 1, RowsTotal: 10, Done: &coordpb.CopyCount{Database: "db", Collection: "other"}}
	rec := &coordpb.CopyRecord{Collections: []*coordpb.CollectionCopy{cc, other}, Running: map[string]*coordpb.CopyCount{}}
	at := func(sec int, running int64, done int64, unitsDone int64) *zdmpb.CollectionProgress {
		now := t0.Add(time.Duration(sec) * time.Second)
		rec.Running["u"] = &coordpb.CopyCount{Database: "db", Collection: "c", Rows: running, Bytes: running * 10}
		rec.Running["x"] = &coordpb.CopyCount{Database: "db", Collection: "other", Rows: 7, Bytes: 70}
		cc.Done.Rows, cc.Done.Bytes, cc.UnitsDone = done, done*10, unitsDone
		sample(rec, now)
		return collectionProgress(rec, cc, now)
	}

	p := at(0, 0, 0, 0)
	require.Zero(t, p.GetRowsPerSecond(), "no rate from a single sample")
	require.Nil(t, p.GetEta(), "no ETA without a rate")
	require.Equal(t, zdmpb.CollectionPhase_COLLECTION_PHASE_COPYING, p.GetPhase())

	p = at(2, 200, 0, 0) // too soon for a second sample
	require.Len(t, cc.GetSamples(), 1)
	require.Equal(t, int64(200), p.GetRowsCopied(), "running rows of other collections must not count")
	require.InDelta(t, 100, p.GetRowsPerSecond(), 0.01)
	require.InDelta(t, 1000, p.GetBytesPerSecond(), 0.01)
	require.Equal(t, 38*time.Second, p.GetEta().AsDuration()) // 3800 rows left at 100/s

	p = at(10, 0, 1000, 1) // unit u finished and restarted as the next unit
	require.Len(t, cc.GetSamples(), 2)
	require.Equal(t, int64(1000), p.GetRowsCopied())
	require.Equal(t, int64(1), p.GetUnitsDone())

	// A minute on, the first samples are forgotten but for the newest one
	// older than the window; the rate covers about a minute.
	for s := 15; s <= 70; s += 5 {
		at(s, 0, 1000+int64(s-10)*20, 1)
	}
	p = at(75, 0, 2300, 2)
	first := cc.GetSamples()[0].GetTime().AsTime()
	require.GreaterOrEqual(t, t0.Add(75*time.Second).Sub(first), time.Minute)
	require.Less(t, t0.Add(75*time.Second).Sub(first), time.Minute+sampleEvery)
	require.InDelta(t, 20, p.GetRowsPerSecond(), 0.5)

	p = at(80, 0, 4000, 4)
	require.Equal(t, zdmpb.CollectionPhase_COLLECTION_PHASE_COPIED, p.GetPhase())
	require.Zero(t, p.GetEta().AsDuration())
	require.NotNil(t, p.GetEta())
}

// TestCopyProgressAfterWaiting: a collection whose units waited for a
// copier shows the rate since its copy began, not averaged over the wait.
func TestCopyProgressAfterWaiting(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	cc := &coordpb.CollectionCopy{UnitsTotal: 2, RowsTotal: 2000, Done: &coordpb.CopyCount{Database: "db", Collection: "c"}}
	rec := &coordpb.CopyRecord{Collections: []*coordpb.CollectionCopy{cc}, Running: map[string]*coordpb.CopyCount{}}
	at := func(sec int, running int64) *zdmpb.CollectionProgress {
		now := t0.Add(time.Duration(sec) * time.Second)
		rec.Running["u"] = &coordpb.CopyCount{Database: "db", Collection: "c", Rows: running}
		sample(rec, now)
		return collectionProgress(rec, cc, now)
	}
	for s := 0; s <= 10; s += 5 {
		at(s, 0) // waiting
	}
	at(15, 500)
	p := at(17, 700)
	require.InDelta(t, 100, p.GetRowsPerSecond(), 0.01, "700 rows in the 7 s since the last idle sample")
	require.Equal(t, 13*time.Second, p.GetEta().AsDuration())
}
