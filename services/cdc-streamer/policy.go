package streamer

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/zdm-io/zdm/pkg/natsbus"
	zdmpb "github.com/zdm-io/zdm/proto/zdm/v1"
)

// milvusService prefixes the full method names of Milvus's API.
const milvusService = "/milvus.proto.milvus.MilvusService/"

// Writes, by method name without the service.
var (
	// mutations change rows.
	mutations = set("Insert", "Upsert", "Delete")
	// frozenDDL is the DDL refused on a source for as long as a migration
	// runs: the target could not follow it.
	frozenDDL = set("AlterCollection", "AlterCollectionField", "CreateAlias", "DropAlias", "AlterAlias",
		"RenameCollection", "AlterDatabase", "Import")
	// replicatedDDL is the DDL a ZERO_DOWNTIME migration carries over and
	// an OFFLINE one refuses with every other write.
	replicatedDDL = set("CreateDatabase", "DropDatabase", "CreateCollection", "DropCollection", "CreatePartition",
		"DropPartition", "CreateIndex", "DropIndex", "AlterIndex")
)

func set(names ...string) map[string]bool {
	m := map[string]bool{}
	for _, n := range names {
		m[n] = true
	}
	return m
}

// policy decides which calls the gateway lets through to the cluster it
// forwards to. With no migration from that cluster, all of them. During an
// OFFLINE migration, no write (mutation or DDL). During a ZERO_DOWNTIME
// migration, everything but the DDL the target could not follow
// (frozenDDL). Reads always pass. It follows the migrations bucket, so a
// migration's start, switchover and end reach every gateway replica within
// moments.
//
// The cluster calls go to is the fronted one (home) until a migration from
// it switches over: from then on its target, also after the migration
// ended and across restarts, for the migration record says so.
type policy struct {
	home string

	// follow is told, after every change, where calls go and which
	// ZERO_DOWNTIME migration's clients the gateway carries (nil: none).
	follow func(view)

	mu    sync.Mutex
	all   map[string]*zdmpb.Migration // every stored migration, by ID
	view  view
	ready chan struct{} // closed once the stored migrations are loaded
}

// view is what the gateway does now.
type view struct {
	// upstream is the cluster calls go to.
	upstream string
	// active is the running ZERO_DOWNTIME migration whose writes the
	// gateway captures: one from upstream, or one switched over to it and
	// not yet ended. Nil when none is.
	active *zdmpb.Migration
}

func newPolicy(home string, follow func(view)) *policy {
	return &policy{home: home, follow: follow, all: map[string]*zdmpb.Migration{}, view: view{upstream: home}, ready: make(chan struct{})}
}

// run follows table until ctx is done.
func (p *policy) run(ctx context.Context, table *natsbus.Table[*zdmpb.Migration]) error {
	w, err := table.KV().WatchAll(ctx)
	if err != nil {
		return fmt.Errorf("watch migrations: %w", err)
	}
	defer func() { _ = w.Stop() }() // ending a watch that ends with ctx anyway
	for {
		select {
		case <-ctx.Done():
			return nil
		case e, ok := <-w.Updates():
			if !ok {
				if ctx.Err() != nil {
					return nil
				}
				return errors.New("migrations watch ended")
			}
			if e == nil {
				p.markReady()
				continue
			}
			var m *zdmpb.Migration
			if e.Operation() == jetstream.KeyValuePut {
				if m, err = table.Decode(e); err != nil {
					return err
				}
			}
			p.update(e.Key(), m)
		}
	}
}

func (p *policy) markReady() {
	select {
	case <-p.ready:
	default:
		close(p.ready)
	}
}

// update records migration id as stored (nil: deleted).
func (p *policy) update(id string, m *zdmpb.Migration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if m == nil {
		delete(p.all, id)
	} else {
		p.all[id] = m
	}
	p.view = p.compute()
	if p.follow != nil {
		p.follow(p.view)
	}
}

// compute derives the view from every migration: upstream follows the
// switchovers from home, hop by hop.
func (p *policy) compute() view {
	v := view{upstream: p.home}
	for hops := 0; hops <= len(p.all); hops++ {
		moved := false
		for _, m := range p.all {
			if m.GetSourceClusterId() == v.upstream && switched(m) {
				v.upstream, moved = m.GetTargetClusterId(), true
				break
			}
		}
		if !moved {
			break
		}
	}
	for _, m := range p.running() {
		if m.GetType() != zdmpb.MigrationType_MIGRATION_TYPE_ZERO_DOWNTIME {
			continue
		}
		if m.GetSourceClusterId() == v.upstream || (switched(m) && m.GetTargetClusterId() == v.upstream) {
			v.active = m
		}
	}
	return v
}

// running returns the migrations not ended, by ID.
func (p *policy) running() map[string]*zdmpb.Migration {
	out := map[string]*zdmpb.Migration{}
	for id, m := range p.all {
		if !ended(m.GetState()) {
			out[id] = m
		}
	}
	return out
}

// switched reports whether m's clients were switched to its target.
func switched(m *zdmpb.Migration) bool { return m.GetSwitchover().GetSwitchTime() != nil }

// stoppedSync reports whether a ZERO_DOWNTIME migration in state s takes
// no more writes on its source.
func stoppedSync(s zdmpb.MigrationState) bool {
	return s == zdmpb.MigrationState_MIGRATION_STATE_STOPPING_SYNC || s == zdmpb.MigrationState_MIGRATION_STATE_VERIFYING
}

func ended(s zdmpb.MigrationState) bool {
	switch s {
	case zdmpb.MigrationState_MIGRATION_STATE_COMPLETED, zdmpb.MigrationState_MIGRATION_STATE_FAILED,
		zdmpb.MigrationState_MIGRATION_STATE_CANCELLED:
		return true
	}
	return false
}

// syncing returns the ZERO_DOWNTIME migration from the fronted cluster
// whose target is syncing (copied, not yet switched), for the target
// view; nil when there is none.
func (p *policy) syncing() *zdmpb.Migration {
	p.mu.Lock()
	defer p.mu.Unlock()
	m := p.view.active
	switch {
	case m == nil || switched(m):
		return nil
	case m.GetState() == zdmpb.MigrationState_MIGRATION_STATE_SYNCING, m.GetState() == zdmpb.MigrationState_MIGRATION_STATE_READY_TO_FINALIZE,
		m.GetState() == zdmpb.MigrationState_MIGRATION_STATE_SWITCHING_OVER, m.GetState() == zdmpb.MigrationState_MIGRATION_STATE_STOPPING_SYNC:
		return m
	}
	return nil
}

// refusal is a write the gateway does not let through, or could not
// record. It is answered as Milvus answers a failed call (see refuse), so
// every SDK raises it at once: the SDKs retry gRPC-level UNAVAILABLE and
// most other codes, and a retried insert that the source already took
// would be a duplicate row.
type refusal struct {
	code codes.Code
	msg  string
}

// refused is the refusal of a write the policy does not allow.
func refused(format string, args ...any) *refusal {
	return &refusal{codes.FailedPrecondition, fmt.Sprintf(format, args...)}
}

func (r *refusal) Error() string { return refusalNames[r.code] + ": " + r.msg }

// refusalNames are the codes a refusal carries, named as gRPC's spec does.
var refusalNames = map[codes.Code]string{codes.FailedPrecondition: "FAILED_PRECONDITION", codes.Unavailable: "UNAVAILABLE"}

// readyWait bounds how long a write waits for the policy to load.
const readyWait = 5 * time.Second

// allow returns nil when a call of method may go to the source; a
// *refusal naming the migration when the policy refuses it; UNAVAILABLE
// while the gateway does not know the migrations yet (clients retry it).
func (p *policy) allow(method string) error {
	name, ok := strings.CutPrefix(method, milvusService)
	if !ok || !isWrite(name) {
		return nil // a read, or a service that is not Milvus's data API
	}
	select {
	case <-p.ready:
	case <-time.After(readyWait):
		return status.Error(codes.Unavailable, "zdm gateway: migrations not loaded yet; retry")
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	up := p.view.upstream
	for id, m := range p.running() {
		switch {
		case m.GetSourceClusterId() != up && m != p.view.active:
		case m.GetType() == zdmpb.MigrationType_MIGRATION_TYPE_OFFLINE:
			return refused("%s refused: cluster %q is the source of OFFLINE migration %q, which refuses every write until it ends", name, up, id)
		case frozenDDL[name] && m.GetSourceClusterId() == up:
			return refused("%s refused: cluster %q is the source of migration %q, whose target could not follow it; retry after the migration ends", name, up, id)
		case frozenDDL[name]:
			return refused("%s refused: cluster %q is the target of migration %q, switched over and verifying; retry after the migration ends", name, up, id)
		}
	}
	return nil
}

// isWrite reports whether method name (without the service) writes.
func isWrite(name string) bool { return mutations[name] || frozenDDL[name] || replicatedDDL[name] }
