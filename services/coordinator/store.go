package coordinator

import (
	"context"
	"errors"
	"fmt"
	"sort"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	"github.com/zdm-io/zdm/pkg/apierr"
	"github.com/zdm-io/zdm/pkg/natsbus"
	coordpb "github.com/zdm-io/zdm/proto/zdm/coordinator/v1"
	eventspb "github.com/zdm-io/zdm/proto/zdm/events/v1"
	zdmpb "github.com/zdm-io/zdm/proto/zdm/v1"
)

// KV buckets of the coordinator's state.
const (
	MigrationsBucket = "zdm_migrations"
	ClustersBucket   = "zdm_clusters"
	// CopyPlansBucket holds, per migration, the copy's units still to do
	// and its progress.
	CopyPlansBucket = "zdm_copy_plans"
	// kvHistory is how many revisions of each key a bucket keeps, so a
	// watcher that reconnects can replay what it missed.
	kvHistory = 64
	// maxConflictRetries bounds the read-modify-write loop of update; each
	// retry means another writer won a revision race.
	maxConflictRetries = 16
)

// errStop ends an update without writing and without an error.
var errStop = errors.New("no change")

// table is a KV bucket of one protobuf message type. Every write is
// revision-checked: two coordinators, or a retried event, can never both
// apply a change read from the same revision.
type table[T proto.Message] struct {
	kv   jetstream.KeyValue
	kind string // for messages: "migration", "cluster"
	new  func() T
}

func openTable[T proto.Message](ctx context.Context, js jetstream.JetStream, bucket, kind string, replicas int, newT func() T) (*table[T], error) {
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:   bucket,
		History:  kvHistory,
		Storage:  jetstream.FileStorage,
		Replicas: replicas,
	})
	if err != nil {
		return nil, fmt.Errorf("KV bucket %s: %w", bucket, err)
	}
	return &table[T]{kv: kv, kind: kind, new: newT}, nil
}

// get returns the value of key and its revision. Errors: apierr.ErrNotFound.
func (t *table[T]) get(ctx context.Context, key string) (T, uint64, error) {
	var zero T
	e, err := t.kv.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return zero, 0, fmt.Errorf("%w: %s %q does not exist", apierr.ErrNotFound, t.kind, key)
	}
	if err != nil {
		return zero, 0, fmt.Errorf("read %s %q: %w", t.kind, key, err)
	}
	v, err := t.decode(e)
	return v, e.Revision(), err
}

func (t *table[T]) decode(e jetstream.KeyValueEntry) (T, error) {
	v := t.new()
	if err := proto.Unmarshal(e.Value(), v); err != nil {
		var zero T
		return zero, fmt.Errorf("decode %s %q at revision %d: %w", t.kind, e.Key(), e.Revision(), err)
	}
	return v, nil
}

// create stores v under a new key. Errors: apierr.ErrAlreadyExists.
func (t *table[T]) create(ctx context.Context, key string, v T) (uint64, error) {
	data, err := proto.Marshal(v)
	if err != nil {
		return 0, err
	}
	rev, err := t.kv.Create(ctx, key, data)
	if errors.Is(err, jetstream.ErrKeyExists) {
		return 0, fmt.Errorf("%w: %s %q already exists", apierr.ErrAlreadyExists, t.kind, key)
	}
	if err != nil {
		return 0, fmt.Errorf("create %s %q: %w", t.kind, key, err)
	}
	return rev, nil
}

// update reads key, lets fn change a copy and writes it back if the key is
// still at the revision read, retrying from a fresh read when another
// writer got there first. fn may run more than once and must decide from
// the value it is given. Returning errStop from fn ends the update with no
// write and no error; any other error ends it with that error. Errors:
// apierr.ErrNotFound when key does not exist.
func (t *table[T]) update(ctx context.Context, key string, fn func(T) error) (T, uint64, error) {
	return t.modify(ctx, key, false, fn)
}

// upsert is update for a key that may not exist yet: fn then gets an
// empty value, and the write creates the key.
func (t *table[T]) upsert(ctx context.Context, key string, fn func(T) error) (T, uint64, error) {
	return t.modify(ctx, key, true, fn)
}

func (t *table[T]) modify(ctx context.Context, key string, create bool, fn func(T) error) (T, uint64, error) {
	var zero T
	for range maxConflictRetries {
		v, rev, err := t.get(ctx, key)
		if create && errors.Is(err, apierr.ErrNotFound) {
			v, rev, err = t.new(), 0, nil
		}
		if err != nil {
			return zero, 0, err
		}
		if err := fn(v); errors.Is(err, errStop) {
			return v, rev, nil
		} else if err != nil {
			return zero, 0, err
		}
		data, err := proto.Marshal(v)
		if err != nil {
			return zero, 0, err
		}
		var newRev uint64
		if rev == 0 {
			newRev, err = t.kv.Create(ctx, key, data)
		} else {
			newRev, err = t.kv.Update(ctx, key, data, rev)
		}
		if errors.Is(err, jetstream.ErrKeyRevisionMismatch) || errors.Is(err, jetstream.ErrKeyExists) {
			continue
		}
		if err != nil {
			return zero, 0, fmt.Errorf("write %s %q: %w", t.kind, key, err)
		}
		return v, newRev, nil
	}
	return zero, 0, fmt.Errorf("%w: %s %q changed %d times during one update; retry", apierr.ErrUnavailable, t.kind, key, maxConflictRetries)
}

// purge removes key and its history, if present.
func (t *table[T]) purge(ctx context.Context, key string) error {
	if err := t.kv.Purge(ctx, key); err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
		return fmt.Errorf("remove %s %q: %w", t.kind, key, err)
	}
	return nil
}

// delete removes key if it is still at revision rev.
func (t *table[T]) delete(ctx context.Context, key string, rev uint64) error {
	err := t.kv.Delete(ctx, key, jetstream.LastRevision(rev))
	if errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
		return fmt.Errorf("%w: %s %q changed meanwhile; retry", apierr.ErrFailedPrecondition, t.kind, key)
	}
	if err != nil {
		return fmt.Errorf("delete %s %q: %w", t.kind, key, err)
	}
	return nil
}

// entry is a value with its revision.
type entry[T proto.Message] struct {
	key string
	val T
	rev uint64
}

// list returns every value, ordered by key.
func (t *table[T]) list(ctx context.Context) ([]entry[T], error) {
	lister, err := t.kv.ListKeys(ctx)
	if err != nil {
		return nil, fmt.Errorf("list %ss: %w", t.kind, err)
	}
	var keys []string
	for k := range lister.Keys() {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	out := make([]entry[T], 0, len(keys))
	for _, k := range keys {
		v, rev, err := t.get(ctx, k)
		if errors.Is(err, apierr.ErrNotFound) {
			continue // deleted since listed
		}
		if err != nil {
			return nil, err
		}
		out = append(out, entry[T]{key: k, val: v, rev: rev})
	}
	return out, nil
}

// store is the coordinator's persistent state.
type store struct {
	migrations *table[*zdmpb.Migration]
	clusters   *table[*coordpb.ClusterRecord]
	plans      *table[*coordpb.CopyRecord]
	controls   *table[*eventspb.CopyControl]
}

func openStore(ctx context.Context, js jetstream.JetStream, replicas int) (*store, error) {
	m, err := openTable(ctx, js, MigrationsBucket, "migration", replicas, func() *zdmpb.Migration { return &zdmpb.Migration{} })
	if err != nil {
		return nil, err
	}
	c, err := openTable(ctx, js, ClustersBucket, "cluster", replicas, func() *coordpb.ClusterRecord { return &coordpb.ClusterRecord{} })
	if err != nil {
		return nil, err
	}
	p, err := openTable(ctx, js, CopyPlansBucket, "copy plan", replicas, func() *coordpb.CopyRecord { return &coordpb.CopyRecord{} })
	if err != nil {
		return nil, err
	}
	ctl, err := openTable(ctx, js, natsbus.CopyControlsBucket, "copy control", replicas, func() *eventspb.CopyControl { return &eventspb.CopyControl{} })
	if err != nil {
		return nil, err
	}
	return &store{migrations: m, clusters: c, plans: p, controls: ctl}, nil
}

// withRevision returns m with its revision field set to rev, the KV
// revision it was read at or written as.
func withRevision(m *zdmpb.Migration, rev uint64) *zdmpb.Migration {
	m.Revision = rev
	return m
}
