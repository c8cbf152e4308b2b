package app

import (
	"bytes"
	"context"
	"encoding/base64"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestShutdownGivesEachStepItsShare: a step that hangs is cut off at its
// share of the timeout and logged, and the steps after it still run
// within what is left.
func TestShutdownGivesEachStepItsShare(t *testing.T) {
	var log bytes.Buffer
	logger := slog.New(slog.NewTextHandler(&log, nil))
	var ran []string
	hang := func(ctx context.Context) error { <-ctx.Done(); ran = append(ran, "hung"); return ctx.Err() }
	quick := func(name string) func(context.Context) error {
		return func(ctx context.Context) error {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			ran = append(ran, name)
			return nil
		}
	}
	start := time.Now()
	shutdown(context.Background(), 400*time.Millisecond, []step{{"api", 3, quick("api")}, {"drain", 2, hang}, {"nats", 1, quick("nats")}}, logger)
	took := time.Since(start)
	require.Equal(t, []string{"api", "hung", "nats"}, ran)
	require.Less(t, took, 400*time.Millisecond, "within the timeout")
	require.Greater(t, took, 100*time.Millisecond, "the hanging step had its share: 2/3 of what api left")
	require.Contains(t, log.String(), `msg="shutdown step did not finish cleanly" step=drain`)
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
