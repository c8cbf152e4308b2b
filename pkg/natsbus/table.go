package natsbus

import (
	"context"
	"errors"
	"fmt"
	"sort"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	"github.com/zdm-io/zdm/pkg/apierr"
)

// ErrNoChange, returned by the function given to Table.Update or
// Table.Upsert, ends the update without a write and without an error.
var ErrNoChange = errors.New("no change")

// maxConflictRetries bounds the read-modify-write loop of Update; each
// retry means another writer won a revision race.
const maxConflictRetries = 16

// Table is a KV bucket of one protobuf message type. Every write is
// revision-checked: two writers, or a retried event, can never both apply
// a change read from the same revision.
type Table[T proto.Message] struct {
	kv   jetstream.KeyValue
	kind string // for messages: "migration", "checkpoint"
	new  func() T
}

// OpenTable opens bucket b as a table of T; kind names a value in
// errors, and newT returns an empty T.
func OpenTable[T proto.Message](ctx context.Context, js jetstream.JetStream, b Bucket, kind string, replicas int, newT func() T) (*Table[T], error) {
	kv, err := b.Open(ctx, js, replicas)
	if err != nil {
		return nil, err
	}
	return &Table[T]{kv: kv, kind: kind, new: newT}, nil
}

// KV is the bucket, for watches.
func (t *Table[T]) KV() jetstream.KeyValue { return t.kv }

// Get returns the value of key and its revision. Errors:
// apierr.ErrNotFound.
func (t *Table[T]) Get(ctx context.Context, key string) (T, uint64, error) {
	var zero T
	e, err := t.kv.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return zero, 0, fmt.Errorf("%w: %s %q does not exist", apierr.ErrNotFound, t.kind, key)
	}
	if err != nil {
		return zero, 0, fmt.Errorf("read %s %q: %w", t.kind, key, err)
	}
	v, err := t.Decode(e)
	return v, e.Revision(), err
}

// Decode unmarshals an entry of the bucket (from a watch, say).
func (t *Table[T]) Decode(e jetstream.KeyValueEntry) (T, error) {
	v := t.new()
	if err := proto.Unmarshal(e.Value(), v); err != nil {
		var zero T
		return zero, fmt.Errorf("decode %s %q at revision %d: %w", t.kind, e.Key(), e.Revision(), err)
	}
	return v, nil
}

// Create stores v under a new key. Errors: apierr.ErrAlreadyExists.
func (t *Table[T]) Create(ctx context.Context, key string, v T) (uint64, error) {
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

// Put writes v if key is still at revision rev (0: if key does not exist
// yet) and returns the new revision. Errors: apierr.ErrFailedPrecondition
// when another writer changed the key meanwhile.
func (t *Table[T]) Put(ctx context.Context, key string, v T, rev uint64) (uint64, error) {
	data, err := proto.Marshal(v)
	if err != nil {
		return 0, err
	}
	var newRev uint64
	if rev == 0 {
		newRev, err = t.kv.Create(ctx, key, data)
	} else {
		newRev, err = t.kv.Update(ctx, key, data, rev)
	}
	if errors.Is(err, jetstream.ErrKeyRevisionMismatch) || errors.Is(err, jetstream.ErrKeyExists) {
		return 0, fmt.Errorf("%w: %s %q changed meanwhile", apierr.ErrFailedPrecondition, t.kind, key)
	}
	if err != nil {
		return 0, fmt.Errorf("write %s %q: %w", t.kind, key, err)
	}
	return newRev, nil
}

// Update reads key, lets fn change a copy and writes it back if the key is
// still at the revision read, retrying from a fresh read when another
// writer got there first. fn may run more than once and must decide from
// the value it is given. Returning ErrNoChange from fn ends the update
// with no write and no error; any other error ends it with that error.
// Errors: apierr.ErrNotFound when key does not exist; apierr.ErrUnavailable
// after maxConflictRetries lost races.
func (t *Table[T]) Update(ctx context.Context, key string, fn func(T) error) (T, uint64, error) {
	return t.modify(ctx, key, false, fn)
}

// Upsert is Update for a key that may not exist yet: fn then gets an
// empty value, and the write creates the key.
func (t *Table[T]) Upsert(ctx context.Context, key string, fn func(T) error) (T, uint64, error) {
	return t.modify(ctx, key, true, fn)
}

func (t *Table[T]) modify(ctx context.Context, key string, create bool, fn func(T) error) (T, uint64, error) {
	var zero T
	for range maxConflictRetries {
		v, rev, err := t.Get(ctx, key)
		if create && errors.Is(err, apierr.ErrNotFound) {
			v, rev, err = t.new(), 0, nil
		}
		if err != nil {
			return zero, 0, err
		}
		if err := fn(v); errors.Is(err, ErrNoChange) {
			return v, rev, nil
		} else if err != nil {
			return zero, 0, err
		}
		newRev, err := t.Put(ctx, key, v, rev)
		if errors.Is(err, apierr.ErrFailedPrecondition) {
			continue
		}
		if err != nil {
			return zero, 0, err
		}
		return v, newRev, nil
	}
	return zero, 0, fmt.Errorf("%w: %s %q changed %d times during one update; retry", apierr.ErrUnavailable, t.kind, key, maxConflictRetries)
}

// Purge removes key and its history, if present.
func (t *Table[T]) Purge(ctx context.Context, key string) error {
	if err := t.kv.Purge(ctx, key); err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
		return fmt.Errorf("remove %s %q: %w", t.kind, key, err)
	}
	return nil
}

// Delete removes key if it is still at revision rev. Errors:
// apierr.ErrFailedPrecondition when it changed meanwhile.
func (t *Table[T]) Delete(ctx context.Context, key string, rev uint64) error {
	err := t.kv.Delete(ctx, key, jetstream.LastRevision(rev))
	if errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
		return fmt.Errorf("%w: %s %q changed meanwhile; retry", apierr.ErrFailedPrecondition, t.kind, key)
	}
	if err != nil {
		return fmt.Errorf("delete %s %q: %w", t.kind, key, err)
	}
	return nil
}

// Entry is a value with its key and revision.
type Entry[T proto.Message] struct {
	Key string
	Val T
	Rev uint64
}

// List returns every value, ordered by key.
func (t *Table[T]) List(ctx context.Context) ([]Entry[T], error) {
	lister, err := t.kv.ListKeys(ctx)
	if err != nil {
		return nil, fmt.Errorf("list %ss: %w", t.kind, err)
	}
	var keys []string
	for k := range lister.Keys() {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	out := make([]Entry[T], 0, len(keys))
	for _, k := range keys {
		v, rev, err := t.Get(ctx, k)
		if errors.Is(err, apierr.ErrNotFound) {
			continue // deleted since listed
		}
		if err != nil {
			return nil, err
		}
		out = append(out, Entry[T]{Key: k, Val: v, Rev: rev})
	}
	return out, nil
}
