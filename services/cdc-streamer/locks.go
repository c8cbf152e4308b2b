package streamer

import (
	"slices"
	"sync"

	"github.com/zdm-io/zdm/pkg/milvusx"
)

// keyLocks serialises the gateway's mutations that touch the same rows,
// so the change stream holds them in the order the source applied them:
// a mutation holds its keys from before it is sent to the source until
// its change is published. A mutation whose keys cannot be known in
// advance (a delete by filter) and DDL hold their whole collection, and
// wait for every key of it to be free. Changes to different keys commute,
// so they go through at once.
type keyLocks struct {
	mu    sync.Mutex
	colls map[string]*collLocks
}

type collLocks struct {
	whole sync.RWMutex // held for writing by collection-wide changes
	mu    sync.Mutex
	keys  map[milvusx.Key]*keyLock
}

type keyLock struct {
	mu   sync.Mutex
	refs int // holders and waiters; the entry goes when it drops to 0
}

func newKeyLocks() *keyLocks { return &keyLocks{colls: map[string]*collLocks{}} }

func (l *keyLocks) coll(name string) *collLocks {
	l.mu.Lock()
	defer l.mu.Unlock()
	c, ok := l.colls[name]
	if !ok {
		c = &collLocks{keys: map[milvusx.Key]*keyLock{}}
		l.colls[name] = c
	}
	return c
}

// lock takes keys of collection (database.collection), or the whole
// collection when whole is set, and returns the function that releases
// them. Keys are taken in order, so two mutations never wait for each
// other.
func (l *keyLocks) lock(collection string, keys []milvusx.Key, whole bool) func() {
	c := l.coll(collection)
	if whole {
		c.whole.Lock()
		return c.whole.Unlock
	}
	c.whole.RLock()
	if len(keys) == 0 {
		return c.whole.RUnlock
	}
	keys = slices.Clone(keys)
	slices.SortFunc(keys, milvusx.CompareKeys)
	keys = slices.Compact(keys)
	held := make([]*keyLock, len(keys))
	c.mu.Lock()
	for i, k := range keys {
		kl, ok := c.keys[k]
		if !ok {
			kl = &keyLock{}
			c.keys[k] = kl
		}
		kl.refs++
		held[i] = kl
	}
	c.mu.Unlock()
	for _, kl := range held {
		kl.mu.Lock()
	}
	return func() {
		for _, kl := range held {
			kl.mu.Unlock()
		}
		c.mu.Lock()
		for i, kl := range held {
			if kl.refs--; kl.refs == 0 {
				delete(c.keys, keys[i])
			}
		}
		c.mu.Unlock()
		c.whole.RUnlock()
	}
}
