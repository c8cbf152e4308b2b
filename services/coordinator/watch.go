package coordinator

import (
	"fmt"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/grpc"

	"github.com/zdm-io/zdm/pkg/apierr"
	zdmpb "github.com/zdm-io/zdm/proto/zdm/v1"
)

// WatchMigration implements zdmpb.MigrationServiceServer. It follows the
// migration's key in the KV bucket: with from_revision it first replays the
// revisions the bucket still keeps after it (the last 64), then streams
// each new one. Every message is the whole migration, history included, so
// even a watcher that was away for longer than the kept revisions misses
// no transition.
func (c *Coordinator) WatchMigration(req *zdmpb.WatchMigrationRequest, stream grpc.ServerStreamingServer[zdmpb.WatchMigrationResponse]) error {
	if err := checkIDs(req); err != nil {
		return err
	}
	ctx := stream.Context()
	id := req.GetMigrationId()
	cur, rev, err := c.store.migrations.Get(ctx, id)
	if err != nil {
		return err
	}
	from := req.GetFromRevision()
	if from > rev {
		return fmt.Errorf("%w: from_revision %d is newer than migration %q's revision %d", apierr.ErrOutOfRange, from, id, rev)
	}
	var opts []jetstream.WatchOpt
	if from > 0 {
		opts = append(opts, jetstream.IncludeHistory())
	}
	w, err := c.store.migrations.KV().Watch(ctx, id, opts...)
	if err != nil {
		return fmt.Errorf("watch migration %q: %w", id, err)
	}
	defer func() { _ = w.Stop() }() // the watch only reads: stopping it has nothing to undo
	if from == 0 && IsTerminal(cur.GetState()) {
		return stream.Send(&zdmpb.WatchMigrationResponse{Migration: withRevision(cur, rev)})
	}
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case e, ok := <-w.Updates():
			if !ok {
				return fmt.Errorf("%w: watch of migration %q ended; reconnect with from_revision", apierr.ErrUnavailable, id)
			}
			if e == nil || e.Revision() <= from {
				continue // nil marks the end of the initial values
			}
			if e.Operation() != jetstream.KeyValuePut {
				return fmt.Errorf("%w: migration %q was deleted", apierr.ErrNotFound, id)
			}
			m, err := c.store.migrations.Decode(e)
			if err != nil {
				return err
			}
			if err := stream.Send(&zdmpb.WatchMigrationResponse{Migration: withRevision(m, e.Revision())}); err != nil {
				return err
			}
			from = e.Revision()
			if IsTerminal(m.GetState()) {
				return nil
			}
		}
	}
}
