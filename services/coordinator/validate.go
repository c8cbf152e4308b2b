package coordinator

import (
	"fmt"

	"github.com/zdm-io/zdm/pkg/validate"
	zdmpb "github.com/zdm-io/zdm/proto/zdm/v1"
)

// What the public API checks before it touches state: the IDs a request
// carries (pkg/validate has their form). Page tokens are in pagetoken.go.

// idField is one ID a request carries.
type idField struct {
	field    string // the request's field, as the proto names it
	kind     string // "cluster" or "migration"
	value    string
	optional bool // "" means not given, and is allowed
}

func clusterID(field, v string) idField   { return idField{field: field, kind: "cluster", value: v} }
func migrationID(field, v string) idField { return idField{field: field, kind: "migration", value: v} }
func optional(f idField) idField          { f.optional = true; return f }

// migrationRequest is a request that names one existing migration.
type migrationRequest interface{ GetMigrationId() string }

// requestIDs returns the IDs req carries, for every request of
// MigrationService and ClusterService; ok is false for any other request.
// validate_test.go checks that every method's request is here and that
// every "_id" field of it is listed.
func requestIDs(req any) (ids []idField, ok bool) {
	switch r := req.(type) {
	case *zdmpb.RegisterClusterRequest:
		return []idField{clusterID("cluster_id", r.GetClusterId())}, true
	case *zdmpb.GetClusterRequest:
		return []idField{clusterID("cluster_id", r.GetClusterId())}, true
	case *zdmpb.DeregisterClusterRequest:
		return []idField{clusterID("cluster_id", r.GetClusterId())}, true
	case *zdmpb.ListClustersRequest:
		return nil, true
	case *zdmpb.CreateMigrationRequest:
		return []idField{
			optional(migrationID("migration_id", r.GetMigrationId())),
			clusterID("source_cluster_id", r.GetSourceClusterId()),
			clusterID("target_cluster_id", r.GetTargetClusterId()),
		}, true
	case *zdmpb.ListMigrationsRequest:
		return []idField{optional(clusterID("cluster_id", r.GetClusterId()))}, true
	case *zdmpb.GetMigrationRequest, *zdmpb.WatchMigrationRequest, *zdmpb.StopSyncRequest,
		*zdmpb.SwitchoverRequest, *zdmpb.CancelMigrationRequest, *zdmpb.PauseMigrationRequest,
		*zdmpb.ResumeMigrationRequest, *zdmpb.SetThrottleRequest:
		return []idField{migrationID("migration_id", r.(migrationRequest).GetMigrationId())}, true
	}
	return nil, false
}

// checkIDs is the first step of every handler of the public API: an ID
// that is missing, malformed or too long is INVALID_ARGUMENT here, before
// it reaches a KV key or a subject (where it would be INTERNAL).
func checkIDs(req any) error {
	ids, ok := requestIDs(req)
	if !ok {
		// A handler added without its row in requestIDs; the test catches it.
		return fmt.Errorf("no ID rule for request %T", req)
	}
	for _, f := range ids {
		if err := f.check(); err != nil {
			return err
		}
	}
	return nil
}

func (f idField) check() error {
	if f.optional {
		return validate.OptionalID(f.field, f.kind, f.value)
	}
	return validate.ID(f.field, f.kind, f.value)
}
