package copier

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/time/rate"

	"github.com/zdm-io/zdm/pkg/apierr"
	"github.com/zdm-io/zdm/pkg/natsbus"
	eventspb "github.com/zdm-io/zdm/proto/zdm/events/v1"
)

// copierRenew is how often a copier renews its key in natsbus.CopiersBucket,
// well within the bucket's TTL: the live keys are the copiers sharing a
// throttle.
const copierRenew = 5 * time.Second

// errPaused stops a unit at a page boundary, its checkpoint saved, while
// its migration is paused; errEnded drops the unit of a migration that
// has ended (its control is gone).
var (
	errPaused = errors.New("migration paused")
	errEnded  = errors.New("migration ended")
)

// Controls follows the copy controls (pause, throttle) of every running
// migration and applies them to this process's workers. A migration's
// throttle is shared evenly by the live copier processes.
type Controls struct {
	mu      sync.Mutex
	byID    map[string]*control
	copiers int
	// ready is closed once the controls stored at start are loaded.
	ready chan struct{}
	table *natsbus.Table[*eventspb.CopyControl]
	log   *slog.Logger
}

type control struct {
	cfg         *eventspb.CopyControl
	rows, bytes *rate.Limiter
}

// NewControls returns controls that let everything run until Run loads
// the stored ones.
func NewControls() *Controls {
	return &Controls{byID: map[string]*control{}, copiers: 1, ready: make(chan struct{})}
}

// Run announces this copier as live and follows the controls bucket until
// ctx is done.
func (c *Controls) Run(ctx context.Context, js jetstream.JetStream, replicas int, copierID string, log *slog.Logger) error {
	defer c.markReady() // never leave workers waiting on a watch that failed
	live, err := natsbus.CopiersBucket.Open(ctx, js, replicas)
	if err != nil {
		return err
	}
	ctl, err := natsbus.OpenTable(ctx, js, natsbus.CopyControlsBucket, "copy control", replicas,
		func() *eventspb.CopyControl { return &eventspb.CopyControl{} })
	if err != nil {
		return err
	}
	c.mu.Lock()
	c.table, c.log = ctl, log
	c.mu.Unlock()
	w, err := ctl.KV().WatchAll(ctx)
	if err != nil {
		return fmt.Errorf("watch copy controls: %w", err)
	}
	defer func() { _ = w.Stop() }() // the watch only reads: stopping it has nothing to undo
	renew := time.NewTicker(copierRenew)
	defer renew.Stop()
	c.announce(ctx, live, copierID, log)
	for {
		select {
		case <-ctx.Done():
			_ = live.Delete(context.WithoutCancel(ctx), natsbus.KeyToken(copierID)) // best effort: the key expires anyway
			return nil
		case <-renew.C:
			c.announce(ctx, live, copierID, log)
		case e, ok := <-w.Updates():
			if !ok {
				if ctx.Err() != nil {
					return nil
				}
				return errors.New("copy controls watch ended")
			}
			if e == nil {
				c.markReady()
				continue
			}
			c.apply(e.Key(), e.Operation() == jetstream.KeyValuePut, func() (*eventspb.CopyControl, error) { return ctl.Decode(e) })
		}
	}
}

// announce renews this copier's liveness and recounts the live copiers.
func (c *Controls) announce(ctx context.Context, live jetstream.KeyValue, copierID string, log *slog.Logger) {
	if _, err := live.PutString(ctx, natsbus.KeyToken(copierID), time.Now().UTC().Format(time.RFC3339)); err != nil {
		log.WarnContext(ctx, "announce copier", slog.Any("error", err))
		return
	}
	keys, err := live.ListKeys(ctx)
	if err != nil {
		log.WarnContext(ctx, "count copiers", slog.Any("error", err))
		return
	}
	n := 0
	for range keys.Keys() {
		n++
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if n = max(n, 1); n != c.copiers {
		c.copiers = n
		for _, ctl := range c.byID {
			c.setLimits(ctl)
		}
	}
}

func (c *Controls) markReady() {
	select {
	case <-c.ready:
	default:
		close(c.ready)
	}
}

// apply records migration's control: put is false when it was deleted,
// and decode returns the one stored.
func (c *Controls) apply(migration string, put bool, decode func() (*eventspb.CopyControl, error)) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !put {
		delete(c.byID, migration)
		return
	}
	cfg, err := decode()
	if err != nil {
		c.log.Error("malformed copy control ignored", slog.String("migration", migration), slog.Any("error", err))
		return
	}
	ctl, ok := c.byID[migration]
	if !ok {
		ctl = &control{rows: rate.NewLimiter(rate.Inf, 1), bytes: rate.NewLimiter(rate.Inf, 1)}
		c.byID[migration] = ctl
	}
	ctl.cfg = cfg
	c.setLimits(ctl)
}

// setLimits sets ctl's limiters to this process's share of its throttle.
// The burst is one second's share, so a limit holds over any second.
func (c *Controls) setLimits(ctl *control) {
	set := func(l *rate.Limiter, perSecond int64) {
		if perSecond <= 0 {
			l.SetLimit(rate.Inf)
			return
		}
		share := float64(perSecond) / float64(c.copiers)
		l.SetLimit(rate.Limit(share))
		l.SetBurst(int(math.Max(share, 1)))
	}
	set(ctl.rows, ctl.cfg.GetThrottle().GetMaxRowsPerSecond())
	set(ctl.bytes, ctl.cfg.GetThrottle().GetMaxBytesPerSecond())
}

// Check returns errPaused while migration is paused and errEnded once it
// has ended; nil Controls let everything run. It waits for the stored
// controls to load first, so a copier that starts while a migration is
// paused does not copy a page of it.
func (c *Controls) Check(ctx context.Context, migration string) error {
	if c == nil {
		return nil
	}
	select {
	case <-c.ready:
	case <-ctx.Done():
		return ctx.Err()
	}
	isPaused, known, table := c.paused(migration)
	if !known && table != nil {
		// Not seen on the watch: ask the bucket, in case the watch lags.
		cfg, _, err := table.Get(ctx, migration)
		switch {
		case errors.Is(err, apierr.ErrNotFound):
			return errEnded
		case err != nil:
			return fmt.Errorf("read copy control of %s: %w", migration, err)
		}
		c.apply(migration, true, func() (*eventspb.CopyControl, error) { return cfg, nil })
		isPaused, _, _ = c.paused(migration)
	}
	if isPaused {
		return errPaused
	}
	return nil
}

// paused reports, under the lock, whether migration is paused and whether
// its control is known.
func (c *Controls) paused(migration string) (paused, known bool, table *natsbus.Table[*eventspb.CopyControl]) {
	c.mu.Lock()
	defer c.mu.Unlock()
	ctl := c.byID[migration]
	return ctl != nil && ctl.cfg.GetPaused(), ctl != nil, c.table
}

// Wait takes rows and bytes from migration's throttle, waiting as long as
// it needs, and calling alive at least every second meanwhile. It returns
// errPaused if the migration is paused, or becomes paused while waiting.
func (c *Controls) Wait(ctx context.Context, migration string, rows, bytes int64, alive func()) error {
	if err := c.Check(ctx, migration); err != nil || c == nil {
		return err
	}
	c.mu.Lock()
	ctl := c.byID[migration]
	c.mu.Unlock()
	if ctl == nil {
		return nil
	}
	for _, take := range []struct {
		l *rate.Limiter
		n int64
	}{{ctl.rows, rows}, {ctl.bytes, bytes}} {
		for n := take.n; n > 0; {
			if take.l.Limit() == rate.Inf {
				break
			}
			chunk := min(n, int64(take.l.Burst()))
			if err := take.l.WaitN(ctx, int(chunk)); err != nil {
				return err
			}
			n -= chunk
			alive()
			// A long wait (a big page under a low limit) must not outlast
			// a pause by more than a second's worth.
			if err := c.Check(ctx, migration); err != nil {
				return err
			}
		}
	}
	return nil
}
