package ztest

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/zdm-io/zdm/pkg/natsbus"
	"github.com/zdm-io/zdm/pkg/registry"
	coordpb "github.com/zdm-io/zdm/proto/zdm/coordinator/v1"
	zdmpb "github.com/zdm-io/zdm/proto/zdm/v1"
)

// Bus starts an in-process NATS server with JetStream (file storage in a
// temporary directory, fsync on every write, as in production), creates
// zdm's streams and returns a connection. Both are closed when t ends.
func Bus(t testing.TB) (*natsbus.Conn, *natsbus.Embedded) {
	t.Helper()
	logger := Logger(t, slog.LevelWarn)
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
	if err := natsbus.EnsureStreams(ctx, c.JS, 1, natsbus.ChangeLimits{}); err != nil {
		t.Fatalf("create streams: %v", err)
	}
	return c, e
}

// Registry registers clusters (ID to host:port, no credentials) in the
// cluster registry on bus, as the coordinator would, and returns it.
func Registry(t testing.TB, bus *natsbus.Conn, clusters map[string]string) *registry.Registry {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	reg, err := registry.Open(ctx, bus.JS, 1, nil)
	if err != nil {
		t.Fatalf("open registry: %v", err)
	}
	for id, addr := range clusters {
		rec := &coordpb.ClusterRecord{Cluster: &zdmpb.Cluster{ClusterId: id, Endpoint: addr}}
		if err := reg.Seal(rec, &zdmpb.ClusterConnection{Endpoint: addr}); err != nil {
			t.Fatal(err)
		}
		if _, err := reg.Records.Create(ctx, id, rec); err != nil {
			t.Fatalf("register %s: %v", id, err)
		}
	}
	return reg
}
