package streamer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/propagation"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/zdm-io/zdm/pkg/milvusx"
	"github.com/zdm-io/zdm/pkg/natsbus"
	"github.com/zdm-io/zdm/pkg/registry"
	"github.com/zdm-io/zdm/pkg/stage"
	"github.com/zdm-io/zdm/pkg/verify"
	eventspb "github.com/zdm-io/zdm/proto/zdm/events/v1"
	zdmpb "github.com/zdm-io/zdm/proto/zdm/v1"
)

// A switchover, as each gateway replica sees it (the applier's side is in
// applier.go):
//
//  0. The migration becomes SWITCHING_OVER with attempt N. Writes go on
//     while the applier catches up with the change stream and reads the
//     source for keys it holds twice (heldTwice); once it has (or after
//     catchUpWait at the latest) it says so with the hold key in bucket
//     zdm_switchovers. The pause then lasts one small drain and the count
//     check, not the whole lag nor a read of the whole source.
//  1. The replica holds every new write (begin waits; reads go on to the
//     source), waits for the writes in flight to be answered and
//     published, and says so at once in its gateways entry (hold_attempt
//     N, with its last stream sequence).
//  2. The applier drains to the last sequence of every live replica,
//     compares count(*) of each collection on both sides (the source's
//     without the second rows of keys it holds twice), and creates the
//     decision "switch" in bucket zdm_switchovers.
//  3. A replica still holding when max_write_pause has passed since its
//     hold began creates the decision "abort" instead. The decision is
//     created once: whoever is first decides for everyone.
//  4. On the decision every replica releases its held writes: to the
//     target, where every call goes from then on, or to the source.
//
// A replica that starts while a switchover runs holds from its first
// write, so no write reaches the source between the drain and the switch.

// hold is one switchover attempt's hold of writes on this replica.
type hold struct {
	migration  string
	attempt    int32
	target     string
	maxPause   time.Duration
	start, end time.Time
	ready      bool  // every write accepted before the hold has ended
	writes     int64 // writes that waited
}

// defaultMaxWritePause is the API's default, for a record without one.
const defaultMaxWritePause = time.Second

// catchUpWait bounds how long a switchover waits for the applier to catch
// up before the replicas hold writes all the same.
const catchUpWait = 5 * time.Second

// caughtUp is the backlog (stream messages not yet read) below which the
// applier lets the replicas hold: what is left is drained in one read.
const caughtUp = fetchMax / 4

// wanted is a switchover attempt whose hold waits for the applier.
type wanted struct {
	migration string
	attempt   int32
	signal    chan struct{} // closed when the hold key appears
}

// awaitHold holds m's switchover attempt once the applier has caught up
// (the hold key appears) or catchUpWait after the switchover began. c.mu
// is held.
func (c *capture) awaitHold(m *zdmpb.Migration) {
	w := wanted{migration: m.GetMigrationId(), attempt: m.GetSwitchover().GetAttempt(), signal: make(chan struct{})}
	c.wanted = w
	by := m.GetSwitchover().GetStartTime().AsTime().Add(catchUpWait)
	go func() {
		t := time.NewTimer(time.Until(by))
		defer t.Stop()
		if _, err := c.switchovers.Get(c.ctx, natsbus.HoldKey(w.migration, w.attempt)); err != nil {
			select {
			case <-w.signal:
			case <-t.C:
				c.log.Warn("switchover: the applier did not catch up in time; holding writes all the same", slog.String("migration", w.migration))
			case <-c.ctx.Done():
				return
			}
		}
		c.mu.Lock()
		defer c.mu.Unlock()
		m := c.view.active
		if c.wanted.signal == w.signal && c.decided < w.attempt && c.hold.attempt != w.attempt && m.GetMigrationId() == w.migration &&
			m.GetState() == zdmpb.MigrationState_MIGRATION_STATE_SWITCHING_OVER && m.GetSwitchover().GetAttempt() == w.attempt {
			c.startHold(m)
		}
	}()
}

// signalHold tells a wanted hold that the applier caught up.
func (c *capture) signalHold(migration string, attempt int32) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.wanted.migration == migration && c.wanted.attempt == attempt && c.wanted.signal != nil {
		select {
		case <-c.wanted.signal:
		default:
			close(c.wanted.signal)
		}
	}
}

// startHold begins holding the writes of m's current switchover attempt.
// c.mu is held.
func (c *capture) startHold(m *zdmpb.Migration) {
	h := hold{migration: m.GetMigrationId(), attempt: m.GetSwitchover().GetAttempt(), target: m.GetTargetClusterId(),
		maxPause: m.GetSwitchover().GetMaxWritePause().AsDuration(), start: time.Now()}
	if h.maxPause <= 0 {
		h.maxPause = defaultMaxWritePause
	}
	c.hold = h
	c.log.Info("switchover: holding writes", slog.String("migration", h.migration), slog.Int("attempt", int(h.attempt)))
	go c.holding(c.ctx, h, c.nextCall)
}

// endHold releases the writes held, to the target when toTarget. c.mu
// is held.
func (c *capture) endHold(toTarget bool) {
	if toTarget {
		c.switched = c.hold.migration
		c.src.use(c.hold.target)
	}
	c.released = c.hold
	c.released.end = time.Now()
	c.hold = hold{}
	c.changed.Broadcast()
}

// holding completes hold h: once the writes accepted before it (last and
// older) are answered it reports the hold, then follows a decision that
// exists already, or decides to abort when h's time is up.
func (c *capture) holding(ctx context.Context, h hold, last uint64) {
	go func() {
		// Connected before the switch, so the first call there does not
		// wait for a connection.
		if err := c.src.prepare(ctx, h.target); err != nil {
			c.log.Warn("switchover: dial the target", slog.String("cluster", h.target), slog.Any("error", err))
		}
	}()
	deadline := h.start.Add(h.maxPause)
	wctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	if err := c.waitBefore(wctx, last); err != nil {
		if ctx.Err() == nil {
			c.abort(ctx, h, fmt.Sprintf("gateway replica %s: writes in flight at the hold were not answered within max_write_pause %s", c.id, h.maxPause))
		}
		return
	}
	c.mu.Lock()
	if c.hold.migration != h.migration || c.hold.attempt != h.attempt {
		c.mu.Unlock()
		return
	}
	c.hold.ready = true
	st := c.state()
	c.mu.Unlock()
	if err := c.put(ctx, st); err != nil {
		c.log.Warn("switchover: report the hold", slog.Any("error", err))
	}
	// A replica that restarted, or joined late, finds the decision made.
	if d, err := c.decision(ctx, h); err == nil {
		c.decide(ctx, d)
		return
	}
	<-wctx.Done()
	if ctx.Err() != nil {
		return
	}
	c.mu.Lock()
	still := c.hold.migration == h.migration && c.hold.attempt == h.attempt
	c.mu.Unlock()
	if still {
		c.abort(ctx, h, fmt.Sprintf("the drain and the count check did not finish within max_write_pause %s (gateway replica %s gave up waiting)", h.maxPause, c.id))
	}
}

// decision reads the decision of h's attempt (jetstream.ErrKeyNotFound
// while there is none).
func (c *capture) decision(ctx context.Context, h hold) (*eventspb.SwitchoverDecision, error) {
	e, err := c.switchovers.Get(ctx, natsbus.SwitchoverKey(h.migration, h.attempt))
	if err != nil {
		return nil, err
	}
	d := &eventspb.SwitchoverDecision{}
	if err := proto.Unmarshal(e.Value(), d); err != nil {
		return nil, err
	}
	return d, nil
}

// abort decides to abort h's attempt unless someone decided first, and
// follows whatever was decided.
func (c *capture) abort(ctx context.Context, h hold, reason string) {
	d := &eventspb.SwitchoverDecision{MigrationId: h.migration, Attempt: h.attempt, Reason: reason, DecidedBy: c.id, Time: timestamppb.Now()}
	for ctx.Err() == nil {
		got, err := decide(ctx, c.switchovers, d)
		if err == nil {
			c.decide(ctx, got)
			return
		}
		c.log.Warn("switchover: record the abort; will retry", slog.Any("error", err))
		if stage.Sleep(ctx, 100*time.Millisecond) != nil {
			return
		}
	}
}

// decide creates decision d unless one exists, and returns the one that
// stands.
func decide(ctx context.Context, kv jetstream.KeyValue, d *eventspb.SwitchoverDecision) (*eventspb.SwitchoverDecision, error) {
	b, err := proto.Marshal(d)
	if err != nil {
		return nil, err
	}
	key := natsbus.SwitchoverKey(d.GetMigrationId(), d.GetAttempt())
	if _, err := kv.Create(ctx, key, b); err == nil {
		return d, nil
	} else if !errors.Is(err, jetstream.ErrKeyExists) {
		return nil, err
	}
	e, err := kv.Get(ctx, key)
	if err != nil {
		return nil, err
	}
	got := &eventspb.SwitchoverDecision{}
	return got, proto.Unmarshal(e.Value(), got)
}

// decide follows decision d, if it is about the attempt this replica
// holds: the held writes go to the target (and every call after them) or
// back to the source.
func (c *capture) decide(ctx context.Context, d *eventspb.SwitchoverDecision) {
	c.mu.Lock()
	if c.hold.migration != d.GetMigrationId() || c.hold.attempt != d.GetAttempt() {
		c.mu.Unlock()
		return
	}
	c.decided = d.GetAttempt()
	c.endHold(d.GetSwitch())
	r := c.released
	st := c.state()
	c.mu.Unlock()
	pause := r.end.Sub(r.start)
	if d.GetSwitch() {
		c.log.Info("switchover: calls go to the target now", slog.String("migration", r.migration), slog.String("cluster", r.target),
			slog.Duration("write_pause", pause), slog.Int64("held_writes", r.writes))
	} else {
		c.log.Warn("switchover aborted: held writes go to the source", slog.String("migration", r.migration),
			slog.String("reason", d.GetReason()), slog.Duration("write_pause", pause), slog.Int64("held_writes", r.writes))
	}
	if err := c.put(ctx, st); err != nil {
		c.log.Warn("switchover: report the release", slog.Any("error", err))
	}
	if !d.GetSwitch() {
		if err := publishAborted(ctx, c.js, c.prop, d); err != nil {
			c.log.Warn("switchover: report the abort", slog.Any("error", err))
		}
	}
}

// watchDecisions follows the decisions of switchovers until ctx ends.
func (c *capture) watchDecisions(ctx context.Context) {
	for ctx.Err() == nil {
		w, err := c.switchovers.WatchAll(ctx, jetstream.UpdatesOnly())
		if err != nil {
			c.log.Warn("watch switchover decisions; will retry", slog.Any("error", err))
			_ = stage.Sleep(ctx, time.Second)
			continue
		}
		for e := range w.Updates() {
			if e == nil || e.Operation() != jetstream.KeyValuePut {
				continue
			}
			// A malformed entry is no hold and no decision; logged and
			// passed over, so the ones after it are followed.
			if natsbus.IsHoldKey(e.Key()) {
				migration, attempt, err := natsbus.ParseHoldKey(e.Key())
				if err != nil {
					c.log.Warn("switchover: malformed hold ignored", slog.Any("error", err))
					continue
				}
				c.signalHold(migration, attempt)
				continue
			}
			d := &eventspb.SwitchoverDecision{}
			if err := proto.Unmarshal(e.Value(), d); err != nil {
				c.log.Warn("switchover: malformed decision ignored", slog.String("key", e.Key()),
					slog.Uint64("revision", e.Revision()), slog.Any("error", err))
				continue
			}
			c.decide(ctx, d)
		}
		// The updates end once the watch's subscription is gone (ctx
		// ended, or the connection closed), so Stop finds nothing to stop
		// and says so; any other failure is worth a line.
		if err := w.Stop(); err != nil && !errors.Is(err, nats.ErrBadSubscription) &&
			!errors.Is(err, nats.ErrConnectionClosed) && !errors.Is(err, nats.ErrConnectionDraining) {
			c.log.Warn("switchover: stop watching decisions", slog.Any("error", err))
		}
	}
}

// publishAborted tells the coordinator that attempt d ended without a
// switch. Every replica and the applier may send it: its ID makes the
// copies one.
func publishAborted(ctx context.Context, js jetstream.JetStream, prop propagation.TextMapPropagator, d *eventspb.SwitchoverDecision) error {
	ev := &eventspb.StageCompleted{EventId: fmt.Sprintf("switchover-%s-a%d", d.GetMigrationId(), d.GetAttempt()),
		MigrationId: d.GetMigrationId(), Stage: zdmpb.StageKind_STAGE_KIND_FINALIZE, Time: timestamppb.Now(),
		Code: eventspb.StageError_STAGE_ERROR_SWITCHOVER_ABORTED, ErrorMessage: fmt.Sprintf("switchover attempt %d aborted, held writes released to the source: %s",
			d.GetAttempt(), d.GetReason())}
	_, err := natsbus.Publish(ctx, js, prop, natsbus.EventSubject(d.GetMigrationId(), natsbus.EventStage), ev.GetEventId(), ev)
	return err
}

// switchPoll is how long the applier waits for changes while a
// switchover runs, so it sees every replica's hold at once.
const switchPoll = 10 * time.Millisecond

// reportWait bounds how long the applier waits, after deciding to switch,
// for every replica to report its release before it reports the switch.
const reportWait = 5 * time.Second

// switchover is the applier's side of a migration's switchovers.
type switchover struct {
	a   *appliers
	reg *registry.Registry
	tgt *milvusx.Client
	src *milvusx.Client // opened at the first count check
	// counted is the attempt whose counts matched.
	counted int32
	// signalled is the attempt whose replicas were told to hold.
	signalled int32
	// source counts the source's collections once every replica holds
	// (the source no longer changes), while the drain goes on.
	source        chan counts
	sourceAttempt int32
	// colls are the source's collections, listed when the switchover
	// began (DDL waits for it like any write).
	colls []string
	// twice is the last finished scan of the source for keys held twice
	// (see twiceScan); scanned is the attempt it was started for, and
	// scan delivers a scan running in the background.
	twice   *heldTwice
	scanned int32
	scan    chan *heldTwice
	// scanErr is why the last scan failed; nil once one succeeds.
	scanErr error
}

// heldTwice are the keys the source holds more than one row for, by
// collection ("database.collection"), with the tables to count them in.
// Racing upserts on Milvus 2.3 leave such keys, and count(*) counts each
// of their rows while the target holds one: the count check takes the
// extra rows off the source's count.
type heldTwice struct {
	keys   map[string][]milvusx.Key
	tables map[string]milvusx.Table
	err    error
}

// counts are count(*) of every collection of one side.
type counts struct {
	counts map[string]int64
	err    error
}

func (s *switchover) close() {
	if s.src != nil {
		_ = s.src.Close() // only read counts
	}
}

// step moves m's switchover on, given the gateways' entries and the last
// stream sequence applied (pending: changes are waiting to be applied).
func (s *switchover) step(ctx context.Context, m *zdmpb.Migration, gws []*eventspb.ResolvedTimestamp, applied uint64, pending bool, backlog uint64) error {
	id, sw := m.GetMigrationId(), m.GetSwitchover()
	e, err := s.a.switchovers.Get(ctx, natsbus.SwitchoverKey(id, sw.GetAttempt()))
	switch {
	case err == nil:
		d := &eventspb.SwitchoverDecision{}
		if err := proto.Unmarshal(e.Value(), d); err != nil {
			return err
		}
		return s.report(ctx, d, gws)
	case !errors.Is(err, jetstream.ErrKeyNotFound):
		return err
	}
	var live []*eventspb.ResolvedTimestamp
	for _, g := range gws {
		if g.GetMigrationId() == id {
			live = append(live, g)
		}
	}
	maxPause := sw.GetMaxWritePause().AsDuration()
	if maxPause <= 0 {
		maxPause = defaultMaxWritePause
	}
	first := sw.GetStartTime().AsTime()
	holding, need := 0, uint64(0)
	for _, g := range live {
		if g.GetHoldAttempt() == sw.GetAttempt() {
			holding++
			if g.GetHoldTime().AsTime().Before(first) || holding == 1 {
				first = g.GetHoldTime().AsTime()
			}
		}
		need = max(need, g.GetLastStreamSequence())
	}
	s.collectScan()
	if s.scanned != sw.GetAttempt() && s.scan == nil {
		if err := s.startScan(ctx, m); err != nil {
			return err
		}
		s.scanned = sw.GetAttempt()
	}
	deadline := first.Add(maxPause)
	if holding == 0 {
		// Writes are not held yet: the applier catches up first (and the
		// source's keys held twice are read), and tells the replicas to
		// hold once it has.
		deadline = first.Add(catchUpWait + maxPause)
		if len(live) > 0 && applied+uint64(caughtUp) >= need && backlog <= uint64(caughtUp) && s.scan == nil && s.signalled != sw.GetAttempt() {
			if _, err := s.a.switchovers.Create(ctx, natsbus.HoldKey(id, sw.GetAttempt()), []byte(s.a.id)); err != nil && !errors.Is(err, jetstream.ErrKeyExists) {
				return err
			}
			s.signalled = sw.GetAttempt()
		}
	}
	abort := func(reason string) error {
		d := &eventspb.SwitchoverDecision{MigrationId: id, Attempt: sw.GetAttempt(), Reason: reason, DecidedBy: s.a.id, Time: timestamppb.Now()}
		got, err := decide(ctx, s.a.switchovers, d)
		if err != nil {
			return err
		}
		return s.report(ctx, got, gws)
	}
	if time.Now().After(deadline) {
		return abort(fmt.Sprintf("the drain did not finish within max_write_pause %s: %d of %d gateway replicas held writes, changes applied up to stream sequence %d of %d",
			maxPause, holding, len(live), applied, need))
	}
	if len(live) > 0 && holding == len(live) && s.sourceAttempt != sw.GetAttempt() {
		s.sourceAttempt, s.source = sw.GetAttempt(), make(chan counts, 1)
		cctx, cancel := context.WithDeadline(ctx, deadline)
		if err := s.listSource(cctx, m); err != nil {
			cancel()
			return abort(err.Error())
		}
		twice := s.twice
		go func() {
			defer cancel()
			n, err := countAll(cctx, s.src, s.colls)
			if err == nil {
				err = twice.subtract(cctx, s.src, n)
			}
			if err != nil {
				err = fmt.Errorf("count check: source: %w", err)
			}
			s.source <- counts{n, err}
		}()
	}
	if len(live) == 0 || holding < len(live) || applied < need || pending {
		s.a.log.Debug("switchover: waiting", slog.String("migration", id), slog.Int("holding", holding), slog.Int("replicas", len(live)),
			slog.Uint64("applied", applied), slog.Uint64("need", need), slog.Bool("pending", pending))
		return nil
	}
	if s.counted != sw.GetAttempt() {
		drained := time.Now()
		cctx, cancel := context.WithDeadline(ctx, deadline)
		// The target is counted while the source's count (begun at the
		// hold) finishes: each waits for its server's next time tick.
		tgt := make(chan counts, 1)
		go func() {
			n, err := countAll(cctx, s.tgt, s.colls)
			tgt <- counts{n, err}
		}()
		var src, dst counts
		select {
		case src = <-s.source:
		case <-cctx.Done():
			src.err = cctx.Err()
		}
		dst = <-tgt
		err := src.err
		if err == nil && dst.err != nil {
			err = fmt.Errorf("count check: target: %w", dst.err)
		}
		if err == nil {
			err = compareCounts(src.counts, dst.counts)
			if err != nil && s.scanErr != nil {
				err = fmt.Errorf("%w; the last read of the source for keys held twice failed: %w", err, s.scanErr)
			}
		}
		cancel()
		if err != nil {
			return abort(err.Error())
		}
		s.counted = sw.GetAttempt()
		s.a.log.Info("switchover: drained and counted", slog.String("migration", id), slog.Duration("drain", drained.Sub(first)),
			slog.Duration("count_check", time.Since(drained)))
	}
	d := &eventspb.SwitchoverDecision{MigrationId: id, Attempt: sw.GetAttempt(), Switch: true, DecidedBy: s.a.id, Time: timestamppb.Now()}
	for _, g := range live {
		d.GatewayIds = append(d.GatewayIds, g.GetGatewayId())
	}
	got, err := decide(ctx, s.a.switchovers, d)
	if err != nil {
		return err
	}
	if got.GetSwitch() {
		s.a.log.Info("switchover: drained and counted; every replica switches to the target", slog.String("migration", id),
			slog.Int("replicas", len(live)), slog.Uint64("stream_sequence", applied))
	}
	return s.report(ctx, got, gws)
}

// listSource lists the collections of m's source into s.colls.
func (s *switchover) listSource(ctx context.Context, m *zdmpb.Migration) error {
	if s.src == nil {
		conn, err := s.reg.Resolve(ctx, m.GetSourceClusterId())
		if err != nil {
			return fmt.Errorf("count check: source: %w", err)
		}
		if s.src, err = milvusx.Open(ctx, conn, ""); err != nil {
			return fmt.Errorf("count check: source: %w", err)
		}
	}
	colls, err := milvusx.UserCollections(ctx, s.src)
	if err != nil {
		return fmt.Errorf("count check: source: %w", err)
	}
	s.colls = colls
	return nil
}

// startScan reads, in the background, every key of m's source for keys
// held twice (outside the write pause: it reads the whole source); the
// result arrives on s.scan.
func (s *switchover) startScan(ctx context.Context, m *zdmpb.Migration) error {
	if err := s.listSource(ctx, m); err != nil {
		return err
	}
	src, colls, done := s.src, slices.Clone(s.colls), make(chan *heldTwice, 1)
	s.scan = done
	go func() { done <- scanTwice(ctx, src, colls) }()
	return nil
}

// collectScan takes a finished scan into s.twice.
func (s *switchover) collectScan() {
	if s.scan == nil {
		return
	}
	select {
	case t := <-s.scan:
		s.scan = nil
		if t.err != nil {
			s.a.log.Warn("switchover: reading the source for keys held twice failed", slog.Any("error", t.err))
			s.scanErr = t.err
			return
		}
		s.twice, s.scanErr = t, nil
	default:
	}
}

// scanTwice reads every key of colls on src for keys held twice.
func scanTwice(ctx context.Context, src *milvusx.Client, colls []string) *heldTwice {
	out := &heldTwice{keys: map[string][]milvusx.Key{}, tables: map[string]milvusx.Table{}}
	for _, coll := range colls {
		db, name, _ := strings.Cut(coll, ".")
		t, err := milvusx.DescribeTable(ctx, src.Raw, db, name)
		if err == nil {
			t.ReadTs, err = milvusx.ReadTimestamp(ctx, src.Raw)
		}
		var keys []milvusx.Key
		if err == nil {
			keys, err = verify.HeldTwice(ctx, src.Raw, t)
		}
		if err != nil {
			return &heldTwice{err: fmt.Errorf("%s: %w", coll, err)}
		}
		if len(keys) > 0 {
			out.keys[coll], out.tables[coll] = keys, t
		}
	}
	return out
}

// subtract takes off counts (count(*) of the source, quiet while writes
// are held) the rows beyond one of every key known held twice, counted
// now; nil knows none.
func (h *heldTwice) subtract(ctx context.Context, src *milvusx.Client, counts map[string]int64) error {
	if h == nil {
		return nil
	}
	ts, err := milvusx.ReadTimestamp(ctx, src.Raw)
	if err != nil {
		return err
	}
	for coll, keys := range h.keys {
		if _, ok := counts[coll]; !ok {
			continue
		}
		t := h.tables[coll]
		t.ReadTs = ts
		extra, err := verify.ExtraRows(ctx, src.Raw, t, keys)
		if err != nil {
			return fmt.Errorf("%s: %w", coll, err)
		}
		counts[coll] -= extra
	}
	return nil
}

// compareCounts names every collection whose counts differ.
func compareCounts(source, target map[string]int64) error {
	var errs []error
	for _, c := range slices.Sorted(maps.Keys(source)) {
		if target[c] != source[c] {
			errs = append(errs, fmt.Errorf("count check: %s holds %d rows on the source (not counting a second row of a key it holds twice) and %d on the target", c, source[c], target[c]))
		}
	}
	return errors.Join(errs...)
}

// countAll counts the collections ("database.collection") of c at once.
func countAll(ctx context.Context, c *milvusx.Client, colls []string) (map[string]int64, error) {
	counts, errs := make([]int64, len(colls)), make([]error, len(colls))
	var wg sync.WaitGroup
	for i, coll := range colls {
		wg.Go(func() {
			db, name, _ := strings.Cut(coll, ".")
			counts[i], errs[i] = verify.Count(ctx, c.Raw, milvusx.Table{Database: db, Collection: name})
		})
	}
	wg.Wait()
	out := map[string]int64{}
	for i, coll := range colls {
		out[coll] = counts[i]
	}
	return out, errors.Join(errs...)
}

// report tells the coordinator how attempt d ended: aborted at once;
// switched once every replica that held reports its release (or after
// reportWait), with the write pause from the first hold to the last
// release.
func (s *switchover) report(ctx context.Context, d *eventspb.SwitchoverDecision, gws []*eventspb.ResolvedTimestamp) error {
	if !d.GetSwitch() {
		return publishAborted(ctx, s.a.js, s.a.prop, d)
	}
	var first, last time.Time
	var held int64
	released := 0
	for _, g := range gws {
		if g.GetMigrationId() != d.GetMigrationId() || g.GetReleasedAttempt() != d.GetAttempt() || !slices.Contains(d.GetGatewayIds(), g.GetGatewayId()) {
			continue
		}
		released++
		h, r := g.GetHoldTime().AsTime(), g.GetReleaseTime().AsTime()
		if first.IsZero() || h.Before(first) {
			first = h
		}
		if r.After(last) {
			last = r
		}
		held += g.GetHeldWrites()
	}
	if released < len(d.GetGatewayIds()) && time.Since(d.GetTime().AsTime()) < reportWait {
		return nil
	}
	ev := &eventspb.StageCompleted{EventId: fmt.Sprintf("switchover-%s-s%d", d.GetMigrationId(), d.GetAttempt()),
		MigrationId: d.GetMigrationId(), Stage: zdmpb.StageKind_STAGE_KIND_FINALIZE, Success: true, Time: timestamppb.Now(),
		WritePause: durationpb.New(last.Sub(first)), GatewayIds: d.GetGatewayIds(), HeldWrites: held}
	return s.a.publish(ctx, natsbus.EventSubject(d.GetMigrationId(), natsbus.EventStage), ev.GetEventId(), ev)
}

// replicas tracks the gateway replicas armed for a migration, to tell the
// coordinator when one joins or leaves (its entry expired).
type replicas struct {
	migration string
	known     map[string]string // gateway ID -> addr; nil until the first look
}

func newReplicas(migration string) *replicas { return &replicas{migration: migration} }

// changes returns the joins and departures since the last call; the
// first call only learns who is there.
func (r *replicas) changes(gws []*eventspb.ResolvedTimestamp) []*eventspb.GatewayChange {
	now := map[string]string{}
	for _, g := range gws {
		if g.GetMigrationId() == r.migration {
			now[g.GetGatewayId()] = g.GetAddr()
		}
	}
	first := r.known == nil
	var out []*eventspb.GatewayChange
	for gid, addr := range now {
		if _, ok := r.known[gid]; !ok && !first {
			out = append(out, &eventspb.GatewayChange{EventId: fmt.Sprintf("gw-%s-%s-joined", r.migration, gid), MigrationId: r.migration,
				GatewayId: gid, Addr: addr, Joined: true, Time: timestamppb.Now()})
		}
	}
	for gid, addr := range r.known {
		if _, ok := now[gid]; !ok {
			out = append(out, &eventspb.GatewayChange{EventId: fmt.Sprintf("gw-%s-%s-left", r.migration, gid), MigrationId: r.migration,
				GatewayId: gid, Addr: addr, Time: timestamppb.Now()})
		}
	}
	r.known = now
	return out
}
