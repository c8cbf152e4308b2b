package ztest

import (
	"log/slog"
	"strings"
	"sync"
	"testing"
)

// Logger returns a text logger at level that writes to t's log, so a
// test's output shows what the code under test logged, next to its
// failure. Lines logged once t has finished (by a goroutine that outlives
// it) are dropped: testing panics on a t.Log after the test ends. Lines
// logged by t's cleanups that were registered after this call still
// reach t's log.
func Logger(t testing.TB, level slog.Level) *slog.Logger {
	w := &testWriter{t: t}
	// Cleanups run before t is marked done, so once this one has run no
	// Write reaches t.Log; it runs after every cleanup registered later.
	t.Cleanup(func() {
		w.mu.Lock()
		defer w.mu.Unlock()
		w.done = true
	})
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: level}))
}

// testWriter sends each write to the test log until the test ends.
type testWriter struct {
	t    testing.TB
	mu   sync.Mutex
	done bool
}

func (w *testWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.t.Log(strings.TrimSuffix(string(p), "\n"))
	}
	return len(p), nil
}
