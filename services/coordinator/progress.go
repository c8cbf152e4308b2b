package coordinator

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/zdm-io/zdm/pkg/apierr"
	"github.com/zdm-io/zdm/pkg/auth"
	coordpb "github.com/zdm-io/zdm/proto/zdm/coordinator/v1"
	eventspb "github.com/zdm-io/zdm/proto/zdm/events/v1"
	zdmpb "github.com/zdm-io/zdm/proto/zdm/v1"
)

// Throughput is measured over about a minute of samples taken at least
// sampleEvery apart.
const (
	sampleEvery  = 5 * time.Second
	sampleWindow = time.Minute
)

// onCopyPlanned records a copy's units and the collections' totals. A plan
// repeated (a copier that planned again after a crash) changes nothing.
func (c *Coordinator) onCopyPlanned(ctx context.Context, ev *eventspb.CopyPlanned) error {
	rec := &coordpb.CopyRecord{PendingUnits: ev.GetUnitIds()}
	for _, p := range ev.GetCollections() {
		rec.Collections = append(rec.Collections, &coordpb.CollectionCopy{
			UnitsTotal: p.GetUnits(), RowsTotal: p.GetRows(),
			Done: &coordpb.CopyCount{Database: p.GetDatabase(), Collection: p.GetCollection()},
		})
	}
	if _, err := c.store.plans.Create(ctx, ev.GetMigrationId(), rec); errors.Is(err, apierr.ErrAlreadyExists) {
		return nil
	} else if err != nil {
		return err
	}
	if err := c.showCopy(ctx, ev.GetMigrationId()); err != nil {
		return err
	}
	if len(ev.GetUnitIds()) == 0 {
		return c.copyDone(ctx, ev.GetMigrationId())
	}
	return nil
}

// onProgress records how far a running unit has got.
func (c *Coordinator) onProgress(ctx context.Context, ev *eventspb.Progress) error {
	changed, err := c.updateCopy(ctx, ev.GetMigrationId(), ev.GetUnitId(), func(rec *coordpb.CopyRecord) error {
		if !slices.Contains(rec.GetPendingUnits(), ev.GetUnitId()) {
			return errStop // done already: a late report
		}
		if prev, ok := rec.GetRunning()[ev.GetUnitId()]; ok && prev.GetRows() >= ev.GetRows() {
			return errStop // an older report arrived late
		}
		if rec.Running == nil {
			rec.Running = map[string]*coordpb.CopyCount{}
		}
		rec.Running[ev.GetUnitId()] = &coordpb.CopyCount{Database: ev.GetDatabase(), Collection: ev.GetCollection(),
			Rows: ev.GetRows(), Bytes: ev.GetBytes()}
		delete(rec.Failures, ev.GetUnitId()) // it moves again
		return nil
	})
	if err != nil || !changed {
		return err
	}
	return c.showCopy(ctx, ev.GetMigrationId())
}

// onUnitDone strikes a unit off the plan, adds it to its collection's
// progress and, with the last unit, completes the copy stage. Striking off
// is one revision-checked write, so a unit reported twice counts once.
func (c *Coordinator) onUnitDone(ctx context.Context, ev *eventspb.WorkUnitDone) error {
	remaining := 0
	changed, err := c.updateCopy(ctx, ev.GetMigrationId(), ev.GetUnitId(), func(rec *coordpb.CopyRecord) error {
		i := slices.Index(rec.GetPendingUnits(), ev.GetUnitId())
		remaining = len(rec.GetPendingUnits())
		if i < 0 {
			return errStop
		}
		rec.PendingUnits = slices.Delete(rec.PendingUnits, i, i+1)
		remaining--
		delete(rec.Running, ev.GetUnitId())
		delete(rec.Failures, ev.GetUnitId())
		if cc := collectionCopy(rec, ev.GetDatabase(), ev.GetCollection()); cc != nil {
			cc.Done.Rows += ev.GetRows()
			cc.Done.Bytes += ev.GetBytes()
			cc.UnitsDone++
		}
		return nil
	})
	if err != nil {
		return err
	}
	if changed {
		if err := c.showCopy(ctx, ev.GetMigrationId()); err != nil {
			return err
		}
	}
	if remaining == 0 {
		return c.copyDone(ctx, ev.GetMigrationId())
	}
	return nil
}

// updateCopy applies fn to a migration's copy record and samples the
// collections' totals in the same write. It reports whether fn changed
// anything.
func (c *Coordinator) updateCopy(ctx context.Context, id, unit string, fn func(*coordpb.CopyRecord) error) (bool, error) {
	changed := false
	_, _, err := c.store.plans.Update(ctx, id, func(rec *coordpb.CopyRecord) error {
		changed = false
		if err := fn(rec); err != nil {
			return err
		}
		changed = true
		sample(rec, c.now())
		return nil
	})
	if errors.Is(err, apierr.ErrNotFound) {
		// Units are published before their plan is announced: keep the
		// event until the plan arrives.
		return false, fmt.Errorf("%w: unit %s reported before the copy plan arrived", errRetryLater, unit)
	}
	return changed, err
}

func collectionCopy(rec *coordpb.CopyRecord, db, coll string) *coordpb.CollectionCopy {
	for _, cc := range rec.GetCollections() {
		if cc.GetDone().GetDatabase() == db && cc.GetDone().GetCollection() == coll {
			return cc
		}
	}
	return nil
}

// totals returns what a collection has copied: its finished units plus
// the latest reports of its running ones.
func totals(rec *coordpb.CopyRecord, cc *coordpb.CollectionCopy) (rows, bytes int64) {
	rows, bytes = cc.GetDone().GetRows(), cc.GetDone().GetBytes()
	for _, r := range rec.GetRunning() {
		if r.GetDatabase() == cc.GetDone().GetDatabase() && r.GetCollection() == cc.GetDone().GetCollection() {
			rows += r.GetRows()
			bytes += r.GetBytes()
		}
	}
	return rows, bytes
}

// sample adds each collection's totals at now to its samples, at most
// one per sampleEvery, and forgets samples that are out of the window.
func sample(rec *coordpb.CopyRecord, now time.Time) {
	for _, cc := range rec.GetCollections() {
		s := cc.GetSamples()
		if n := len(s); n == 0 || now.Sub(s[n-1].GetTime().AsTime()) >= sampleEvery {
			rows, bytes := totals(rec, cc)
			s = append(s, &coordpb.CopySample{Time: timestamppb.New(now), Rows: rows, Bytes: bytes})
		}
		// Keep the newest sample older than the window, so a rate always
		// covers at least the window once there is enough history.
		for len(s) > 1 && now.Sub(s[1].GetTime().AsTime()) >= sampleWindow {
			s = s[1:]
		}
		cc.Samples = s
	}
}

// showCopy writes the copy's progress into the migration: per collection,
// rows and bytes copied, units done, throughput and ETA. It reads the copy
// record inside the migration's update, so whichever of two concurrent
// writers writes last shows the newest record. Progress means both
// clusters answer: their problems, if any, are over.
func (c *Coordinator) showCopy(ctx context.Context, id string) error {
	_, _, err := c.store.migrations.Update(ctx, id, func(m *zdmpb.Migration) error {
		rec, _, err := c.store.plans.Get(ctx, id)
		if err != nil {
			return err
		}
		now := c.now()
		m.Collections = nil
		for _, cc := range rec.GetCollections() {
			m.Collections = append(m.Collections, collectionProgress(rec, cc, now))
		}
		clearProblems(m)
		m.UpdateTime = timestamppb.New(now)
		return nil
	})
	return err
}

// collectionProgress is what the API shows of one collection's copy.
func collectionProgress(rec *coordpb.CopyRecord, cc *coordpb.CollectionCopy, now time.Time) *zdmpb.CollectionProgress {
	rows, bytes := totals(rec, cc)
	p := &zdmpb.CollectionProgress{
		Database: cc.GetDone().GetDatabase(), Collection: cc.GetDone().GetCollection(),
		Phase:     zdmpb.CollectionPhase_COLLECTION_PHASE_COPYING,
		RowsTotal: cc.GetRowsTotal(), RowsCopied: rows, BytesCopied: bytes,
		UnitsTotal: cc.GetUnitsTotal(), UnitsDone: cc.GetUnitsDone(),
	}
	if p.UnitsDone == p.UnitsTotal {
		p.Phase, p.Eta = zdmpb.CollectionPhase_COLLECTION_PHASE_COPIED, durationpb.New(0)
		return p
	}
	if s := cc.GetSamples(); len(s) > 0 {
		// From the last sample before the copy of the collection began:
		// time it waited for a copier is not its rate.
		i := 0
		for i+1 < len(s) && s[i+1].GetRows() == s[0].GetRows() {
			i++
		}
		first := s[i]
		if dt := now.Sub(first.GetTime().AsTime()).Seconds(); dt >= 1 {
			p.RowsPerSecond = float64(rows-first.GetRows()) / dt
			p.BytesPerSecond = float64(bytes-first.GetBytes()) / dt
		}
	}
	if left := p.RowsTotal - rows; p.RowsPerSecond > 0 && left > 0 {
		p.Eta = durationpb.New(time.Duration(float64(left) / p.RowsPerSecond * float64(time.Second)).Round(time.Second))
	}
	return p
}

// restartRate forgets a copy's throughput samples when the copy is paused
// or resumed: a paused copy shows no rate and no ETA, and a resumed one a
// rate measured since it resumed, not averaged over the pause.
func (c *Coordinator) restartRate(ctx context.Context, m *zdmpb.Migration) error {
	pausedCopy := m.GetState() == paused && m.GetPausedFromState() == copying
	resumedCopy := m.GetState() == copying && lastTransition(m).GetFromState() == paused
	if !pausedCopy && !resumedCopy {
		return nil
	}
	_, _, err := c.store.plans.Update(ctx, m.GetMigrationId(), func(rec *coordpb.CopyRecord) error {
		for _, cc := range rec.GetCollections() {
			cc.Samples = nil
		}
		return nil
	})
	if errors.Is(err, apierr.ErrNotFound) {
		return nil // paused before the copy was planned
	}
	if err != nil {
		return err
	}
	return c.showCopy(ctx, m.GetMigrationId())
}

func (c *Coordinator) copyDone(ctx context.Context, id string) error {
	_, err := c.transition(ctx, id, Event{Trigger: TriggerCopyDone, Time: c.now(), Actor: auth.System, Reason: "every work unit copied"})
	return err
}
