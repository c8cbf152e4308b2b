package copier

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"
	"golang.org/x/time/rate"
	"google.golang.org/protobuf/proto"

	"github.com/zdm-io/zdm/pkg/natsbus"
	"github.com/zdm-io/zdm/pkg/ztest"
	eventspb "github.com/zdm-io/zdm/proto/zdm/events/v1"
	zdmpb "github.com/zdm-io/zdm/proto/zdm/v1"
)

// controlsBucket opens the copy controls bucket the way Run does, so a
// test can write controls before the copier starts.
func controlsBucket(t *testing.T, bus *natsbus.Conn) jetstream.KeyValue {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	kv, err := natsbus.CopyControlsBucket.Open(ctx, bus.JS, 1)
	require.NoError(t, err)
	return kv
}

// putControl writes a migration's control, as the coordinator does.
func putControl(t *testing.T, kv jetstream.KeyValue, ctl *eventspb.CopyControl) {
	t.Helper()
	data, err := proto.Marshal(ctl)
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err = kv.Put(ctx, ctl.GetMigrationId(), data)
	require.NoError(t, err)
}

// runControls follows the controls on bus as copier id until the test
// ends; Run's error is checked then.
func runControls(t *testing.T, bus *natsbus.Conn, id string) *Controls {
	t.Helper()
	c := NewControls()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	logger := ztest.Logger(t, slog.LevelWarn)
	go func() { done <- c.Run(ctx, bus.JS, 1, id, logger) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			require.NoError(t, err, "Controls.Run")
		case <-time.After(10 * time.Second):
			t.Error("Controls.Run did not return within 10s of its context's end")
		}
	})
	return c
}

// limits returns the rate limits migration's control sets on this copier.
func (c *Controls) limits(migration string) (rows, bytes rate.Limit, rowBurst int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	ctl := c.byID[migration]
	if ctl == nil {
		return 0, 0, 0
	}
	return ctl.rows.Limit(), ctl.bytes.Limit(), ctl.rows.Burst()
}

// checkIs is a condition for ztest.Eventually: Check on migration returns
// want (nil: no error).
func checkIs(c *Controls, migration string, want error) func() bool {
	return func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		err := c.Check(ctx, migration)
		if want == nil {
			return err == nil
		}
		return errors.Is(err, want)
	}
}

// TestControlsPauseAndResume: a copier that starts while a
// migration is paused sees it paused from its first check; resuming and
// pausing again reach it through the bucket.
func TestControlsPauseAndResume(t *testing.T) {
	bus, _ := ztest.Bus(t)
	kv := controlsBucket(t, bus)
	putControl(t, kv, &eventspb.CopyControl{MigrationId: "m1", Paused: true, MigrationRevision: 5})
	c := runControls(t, bus, "copier-a")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	// No waiting: Check itself waits until the stored controls are loaded.
	require.ErrorIs(t, c.Check(ctx, "m1"), errPaused)
	alive := 0
	require.ErrorIs(t, c.Wait(ctx, "m1", 1000, 1<<20, func() { alive++ }), errPaused, "a paused migration takes no rows")
	require.Zero(t, alive)

	putControl(t, kv, &eventspb.CopyControl{MigrationId: "m1", MigrationRevision: 6})
	ztest.Eventually(t, 10*time.Second, checkIs(c, "m1", nil), "m1 still paused after the resume")
	require.NoError(t, c.Wait(ctx, "m1", 1000, 1<<20, func() { alive++ }))
	require.Zero(t, alive, "an unthrottled migration never waits")

	putControl(t, kv, &eventspb.CopyControl{MigrationId: "m1", Paused: true, MigrationRevision: 7})
	ztest.Eventually(t, 10*time.Second, checkIs(c, "m1", errPaused), "m1 not paused after the pause")
}

// TestControlsEnded: a migration whose control is gone, or
// never was, has ended: its units are dropped.
func TestControlsEnded(t *testing.T) {
	bus, _ := ztest.Bus(t)
	kv := controlsBucket(t, bus)
	c := runControls(t, bus, "copier-a")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	require.ErrorIs(t, c.Check(ctx, "never"), errEnded)
	require.ErrorIs(t, c.Wait(ctx, "never", 10, 10, func() {}), errEnded)

	putControl(t, kv, &eventspb.CopyControl{MigrationId: "m1", MigrationRevision: 3})
	// Known at once, from the bucket, even before the watch delivers it.
	require.NoError(t, c.Check(ctx, "m1"))
	require.NoError(t, kv.Purge(ctx, "m1")) // the coordinator's cleanup when m1 ends
	ztest.Eventually(t, 10*time.Second, checkIs(c, "m1", errEnded), "m1 not ended after its control was purged")
}

// TestControlsThrottle: a throttle sets this copier's limits,
// Wait paces rows to them and reports the copy alive meanwhile, and a
// pause stops a long wait.
func TestControlsThrottle(t *testing.T) {
	bus, _ := ztest.Bus(t)
	kv := controlsBucket(t, bus)
	c := runControls(t, bus, "copier-a")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	const limit = 100
	putControl(t, kv, &eventspb.CopyControl{MigrationId: "m1", MigrationRevision: 2,
		Throttle: &zdmpb.Throttle{MaxRowsPerSecond: limit, MaxBytesPerSecond: 4096}})
	ztest.Eventually(t, 10*time.Second, func() bool {
		rows, _, _ := c.limits("m1")
		return rows == limit
	}, "m1's throttle not applied")
	rows, bytes, burst := c.limits("m1")
	require.Equal(t, rate.Limit(limit), rows)
	require.Equal(t, rate.Limit(4096), bytes)
	require.Equal(t, limit, burst, "the burst is one second's share, so the limit holds over any second")

	// 250 rows at 100 rows/s, taken 100 (one burst) at a time: whatever
	// the limiter held at the start, the last 150 rows take 1.5s.
	var alive int
	start := time.Now()
	require.NoError(t, c.Wait(ctx, "m1", 250, 0, func() { alive++ }))
	elapsed := time.Since(start)
	require.GreaterOrEqual(t, elapsed, 1400*time.Millisecond, "250 rows at %d rows/s", limit)
	require.Less(t, elapsed, 15*time.Second, "250 rows at %d rows/s", limit)
	require.Equal(t, 3, alive, "alive is called after each burst")

	// A slow wait stops at the next burst once the migration is paused.
	putControl(t, kv, &eventspb.CopyControl{MigrationId: "m1", MigrationRevision: 3, Throttle: &zdmpb.Throttle{MaxRowsPerSecond: 10}})
	ztest.Eventually(t, 10*time.Second, func() bool {
		rows, _, _ := c.limits("m1")
		return rows == 10
	}, "m1's new throttle not applied")
	var bursts atomic.Int64
	waited := make(chan error, 1)
	go func() { waited <- c.Wait(ctx, "m1", 1000, 0, func() { bursts.Add(1) }) }() // 100 s of rows
	ztest.Eventually(t, 10*time.Second, func() bool { return bursts.Load() > 0 }, "no burst taken at 10 rows/s")
	putControl(t, kv, &eventspb.CopyControl{MigrationId: "m1", MigrationRevision: 4, Paused: true, Throttle: &zdmpb.Throttle{MaxRowsPerSecond: 10}})
	select {
	case err := <-waited:
		require.ErrorIs(t, err, errPaused)
	case <-time.After(15 * time.Second):
		t.Fatal("Wait went on 15s after the pause")
	}
	require.Less(t, bursts.Load(), int64(100), "the wait took every row despite the pause")
}

// TestControlsShareThrottle: live copiers share a migration's
// throttle evenly, and a copier that goes away gives its share back.
func TestControlsShareThrottle(t *testing.T) {
	bus, _ := ztest.Bus(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	live, err := natsbus.CopiersBucket.Open(ctx, bus.JS, 1)
	require.NoError(t, err)
	_, err = live.PutString(ctx, "copier-b", time.Now().UTC().Format(time.RFC3339))
	require.NoError(t, err)
	kv := controlsBucket(t, bus)
	putControl(t, kv, &eventspb.CopyControl{MigrationId: "m1", MigrationRevision: 2, Throttle: &zdmpb.Throttle{MaxRowsPerSecond: 100}})
	c := runControls(t, bus, "copier-a")

	ztest.Eventually(t, 10*time.Second, func() bool {
		rows, _, burst := c.limits("m1")
		return rows == 50 && burst == 50
	}, "two copiers: each should take 50 rows/s; have %s", limitsOf{c, "m1"})
	require.NoError(t, live.Delete(ctx, "copier-b"))
	ztest.Eventually(t, 3*copierRenew, func() bool {
		rows, _, burst := c.limits("m1")
		return rows == 100 && burst == 100
	}, "one copier left: it should take all 100 rows/s; has %s", limitsOf{c, "m1"})
}

// limitsOf prints a migration's limits when a failure message is
// formatted.
type limitsOf struct {
	c  *Controls
	id string
}

func (l limitsOf) String() string {
	rows, bytes, burst := l.c.limits(l.id)
	return fmt.Sprintf("%v rows/s (burst %d), %v bytes/s", rows, burst, bytes)
}

// TestControlsWithoutBus: nil Controls let everything run; Controls that
// have not loaded the stored ones yet hold every check until they do.
func TestControlsWithoutBus(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var none *Controls
	require.NoError(t, none.Check(ctx, "m1"))
	require.NoError(t, none.Wait(ctx, "m1", 1<<40, 1<<40, func() { t.Error("alive called by nil Controls") }))

	short, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	require.ErrorIs(t, NewControls().Check(short, "m1"), context.DeadlineExceeded)
}
