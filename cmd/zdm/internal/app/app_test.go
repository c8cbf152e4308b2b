package app

import (
	"bytes"
	"context"
	"encoding/base64"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestShutdownGivesEachStepItsShare: a step that hangs is cut off at its
// share of the timeout and logged, one that heeds no context is left
// behind at the end of its share, and the steps after them still run
// within what is left.
func TestShutdownGivesEachStepItsShare(t *testing.T) {
	var log bytes.Buffer
	logger := slog.New(slog.NewTextHandler(&log, nil))
	var mu sync.Mutex
	var ran []string
	record := func(name string) {
		mu.Lock()
		defer mu.Unlock()
		ran = append(ran, name)
	}
	hang := func(ctx context.Context) error { <-ctx.Done(); record("hung"); return ctx.Err() }
	deaf := func(context.Context) error { time.Sleep(2 * time.Second); return nil } // heeds no context
	quick := func(name string) func(context.Context) error {
		return func(ctx context.Context) error {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			record(name)
			return nil
		}
	}
	start := time.Now()
	shutdown(context.Background(), 600*time.Millisecond, []step{{"api", 3, quick("api")}, {"drain", 2, hang}, {"embedded", 1, deaf}, {"nats", 1, quick("nats")}}, logger)
	took := time.Since(start)
	mu.Lock()
	require.ElementsMatch(t, []string{"api", "hung", "nats"}, ran, "the step after one left behind still runs")
	require.Equal(t, "api", ran[0])
	mu.Unlock()
	require.Less(t, took, 600*time.Millisecond, "within the timeout, the deaf step left behind")
	require.Greater(t, took, 200*time.Millisecond, "the hanging step had its share: half of what api left")
	require.Contains(t, log.String(), `msg="shutdown step did not finish cleanly" step=drain`)
	require.Contains(t, log.String(), `msg="shutdown step did not finish cleanly" step=embedded`)
	require.Contains(t, log.String(), "still running at the end of its share")
	require.Contains(t, log.String(), `msg=stopped step=nats`)
	require.Contains(t, log.String(), `msg="zdm stopped"`)
}

// TestRunStoppedWhileStarting: a stop asked for before zdm serves is not
// an error, and what was started is stopped again.
func TestRunStoppedWhileStarting(t *testing.T) {
	cfg, err := Parse([]string{"-data-dir", filepath.Join(t.TempDir(), "data"), "-grpc-addr", "127.0.0.1:0", "-metrics-addr", "127.0.0.1:0"})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	var log bytes.Buffer
	require.NoError(t, Run(ctx, cfg, &log, func(Addrs) { t.Error("a stopped zdm must not report ready") }))
	require.Contains(t, log.String(), "zdm stopped while starting")
	require.Contains(t, log.String(), "zdm stopped")
}

// TestRunSaysCredentialsArePlain: without a credentials key zdm says at
// start that cluster credentials are stored in plain form, and with one
// it does not.
func TestRunSaysCredentialsArePlain(t *testing.T) {
	const plain = "cluster credentials are stored in plain form"
	for _, tc := range []struct {
		args []string
		says bool
	}{
		{nil, true},
		{[]string{"-credentials-key", base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{7}, 32))}, false},
	} {
		cfg, err := Parse(append([]string{"-target", "coordinator", "-data-dir", filepath.Join(t.TempDir(), "data"),
			"-grpc-addr", "127.0.0.1:0", "-metrics-addr", "127.0.0.1:0"}, tc.args...))
		require.NoError(t, err)
		ctx, cancel := context.WithCancel(context.Background())
		var log bytes.Buffer
		served := false
		require.NoError(t, Run(ctx, cfg, &log, func(Addrs) { served = true; cancel() }))
		require.True(t, served, "%s", log.String())
		require.Equal(t, tc.says, strings.Contains(log.String(), plain), "%v:\n%s", tc.args, log.String())
	}
}
