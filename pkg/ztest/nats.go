package ztest

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/zdm-io/zdm/pkg/natsbus"
)

// Bus starts an in-process NATS server with JetStream (file storage in a
// temporary directory, fsync on every write, as in production), creates
// zdm's streams and returns a connection. Both are closed when t ends.
func Bus(t testing.TB) (*natsbus.Conn, *natsbus.Embedded) {
	t.Helper()
	logger := slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	e, err := natsbus.StartEmbedded(natsbus.EmbeddedConfig{StoreDir: t.TempDir(), Listen: "127.0.0.1:0"}, logger)
	if err != nil {
		t.Fatalf("start embedded NATS: %v", err)
	}
	t.Cleanup(e.Shutdown)
	c, err := natsbus.Connect(e.ClientURL(), nil, t.Name(), logger)
	if err != nil {
		t.Fatalf("connect to embedded NATS: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := c.Close(ctx); err != nil {
			t.Errorf("close NATS connection: %v", err)
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := natsbus.EnsureStreams(ctx, c.JS, 1); err != nil {
		t.Fatalf("create streams: %v", err)
	}
	return c, e
}

// testWriter sends log output to the test log.
type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(string(p))
	return len(p), nil
}
