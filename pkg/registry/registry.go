// Package registry is the cluster registry as every service reads it: the
// coordinator's ClusterRecords in natsbus.ClustersBucket, with each
// connection sealed under the --credentials-key when zdm has one. Bus
// messages carry cluster IDs, never connections; a service resolves an ID
// here when it needs to reach the cluster.
package registry

import (
	"context"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	"github.com/zdm-io/zdm/pkg/natsbus"
	"github.com/zdm-io/zdm/pkg/secret"
	coordpb "github.com/zdm-io/zdm/proto/zdm/coordinator/v1"
	zdmpb "github.com/zdm-io/zdm/proto/zdm/v1"
)

// Registry reads and writes cluster records.
type Registry struct {
	// Records is the revision-checked table of records; their connections
	// may be sealed: read them with Connection.
	Records *natsbus.Table[*coordpb.ClusterRecord]
	box     *secret.Box
}

// Open opens the registry's bucket. box may be nil (no key: connections
// are stored as they are).
func Open(ctx context.Context, js jetstream.JetStream, replicas int, box *secret.Box) (*Registry, error) {
	t, err := natsbus.OpenTable(ctx, js, natsbus.ClustersBucket, "cluster", replicas,
		func() *coordpb.ClusterRecord { return &coordpb.ClusterRecord{} })
	if err != nil {
		return nil, err
	}
	return &Registry{Records: t, box: box}, nil
}

// Seal stores conn in rec: sealed under the key when there is one (and
// then nowhere in plain form), as it is otherwise.
func (r *Registry) Seal(rec *coordpb.ClusterRecord, conn *zdmpb.ClusterConnection) error {
	if !r.box.Enabled() {
		rec.Connection, rec.SealedConnection = conn, nil
		return nil
	}
	plain, err := proto.Marshal(conn)
	if err != nil {
		return err
	}
	sealed, err := r.box.Seal(plain, []byte(rec.GetCluster().GetClusterId()))
	if err != nil {
		return fmt.Errorf("seal connection of cluster %q: %w", rec.GetCluster().GetClusterId(), err)
	}
	rec.Connection, rec.SealedConnection = nil, sealed
	return nil
}

// Connection returns rec's connection, opening it when sealed.
func (r *Registry) Connection(rec *coordpb.ClusterRecord) (*zdmpb.ClusterConnection, error) {
	if len(rec.GetSealedConnection()) == 0 {
		return rec.GetConnection(), nil
	}
	id := rec.GetCluster().GetClusterId()
	plain, err := r.box.Open(rec.GetSealedConnection(), []byte(id))
	if err != nil {
		return nil, fmt.Errorf("cluster %q: %w", id, err)
	}
	conn := &zdmpb.ClusterConnection{}
	if err := proto.Unmarshal(plain, conn); err != nil {
		return nil, fmt.Errorf("cluster %q: sealed connection: %w", id, err)
	}
	return conn, nil
}

// Resolve returns the connection of cluster id. Errors: apierr.ErrNotFound
// for a cluster not registered.
func (r *Registry) Resolve(ctx context.Context, id string) (*zdmpb.ClusterConnection, error) {
	rec, _, err := r.Records.Get(ctx, id)
	if err != nil {
		return nil, err
	}
	return r.Connection(rec)
}
