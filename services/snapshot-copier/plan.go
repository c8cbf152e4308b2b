package copier

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"

	"github.com/milvus-io/milvus-proto/go-api/v2/commonpb"
	"github.com/milvus-io/milvus-proto/go-api/v2/milvuspb"
	"github.com/milvus-io/milvus-proto/go-api/v2/schemapb"
	"github.com/milvus-io/milvus-sdk-go/v2/client"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/propagation"

	"github.com/zdm-io/zdm/pkg/apierr"
	"github.com/zdm-io/zdm/pkg/milvusx"
	"github.com/zdm-io/zdm/pkg/natsbus"
	copierpb "github.com/zdm-io/zdm/proto/zdm/copier/v1"
	eventspb "github.com/zdm-io/zdm/proto/zdm/events/v1"
)

// DefaultUnitRows is the size of a work unit when none is given.
const DefaultUnitRows = 100_000

// PlanOptions tune PlanCopy.
type PlanOptions struct {
	// Databases in scope; empty means all.
	Databases []string
	// UnitRows is the size of a unit in rows.
	UnitRows int64
	// BatchBytes caps each insert; 0 means DefaultBatchBytes.
	BatchBytes int64
	// Replicas of the unit plans bucket.
	Replicas int
	// SourceClusterID and TargetClusterID are what the units carry: the
	// copier resolves them from the registry, so no connection rides on
	// the work queue.
	SourceClusterID, TargetClusterID string
}

// PlanCopy splits every collection (and partition) of the source
// databases in scope into units of about unitRows rows and publishes them
// to the work queue. Unit IDs are derived from the migration, table and
// range, so planning again after a crash publishes the same IDs and
// JetStream drops the duplicates. It returns the units published. src is
// any SDK client of the source (a *milvusx.Client is used as it is); one
// without a raw stub is an error.
func PlanCopy(ctx context.Context, js jetstream.JetStream, prop propagation.TextMapPropagator, migration string,
	src client.Client, opts PlanOptions) ([]*eventspb.WorkUnit, error) {
	sc, err := milvusx.Wrap(src)
	if err != nil {
		return nil, err
	}
	dbs, err := milvusx.Databases(ctx, sc)
	if err != nil {
		return nil, fmt.Errorf("source: %w", err)
	}
	readTs, err := milvusx.ReadTimestamp(ctx, sc.Raw)
	if err != nil {
		return nil, fmt.Errorf("source: %w", err)
	}
	plans, err := natsbus.OpenTable(ctx, js, natsbus.UnitPlansBucket, "unit plan", opts.Replicas,
		func() *copierpb.TablePlan { return &copierpb.TablePlan{} })
	if err != nil {
		return nil, err
	}
	var out []*eventspb.WorkUnit
	for _, db := range dbs {
		if len(opts.Databases) > 0 && !slices.Contains(opts.Databases, db) {
			continue
		}
		names, err := milvusx.CollectionsIn(ctx, sc, db)
		if err != nil {
			return nil, fmt.Errorf("source: %w", err)
		}
		for _, name := range names {
			t, err := milvusx.DescribeTable(ctx, sc.Raw, db, name)
			if err != nil {
				return nil, err
			}
			t.ReadTs = readTs
			desc, err := describeSchema(ctx, sc.Raw, db, name)
			if err != nil {
				return nil, err
			}
			parts, err := milvusx.PagedPartitions(ctx, sc.Raw, db, name, desc)
			if err != nil {
				return nil, err
			}
			for _, part := range parts {
				pt := t
				pt.Partition = part
				plan, err := tablePlan(ctx, plans, natsbus.UnitPlanKey(migration, db, name, part), func() ([]Unit, error) {
					units, err := PlanUnits(ctx, sc.Raw, pt, opts.UnitRows)
					if err != nil {
						return nil, explainUnloaded(ctx, sc.Raw, db, name, err)
					}
					return units, nil
				}, t.PK.GetDataType() == schemapb.DataType_VarChar)
				if err != nil {
					return nil, err
				}
				for i, u := range plan.GetUnits() {
					wu := &eventspb.WorkUnit{
						UnitId: natsbus.UnitID(migration, db, name, part, i), MigrationId: migration,
						Database: db, Collection: name, Partition: part,
						Range: u.GetRange(), ExpectedRows: u.GetRows(), BatchBytes: opts.BatchBytes, ReadTimestamp: readTs,
						SourceClusterId: opts.SourceClusterID, TargetClusterId: opts.TargetClusterID,
					}
					if _, err := natsbus.Publish(ctx, js, prop, natsbus.WorkSubject(migration), wu.GetUnitId(), wu); err != nil {
						return nil, err
					}
					out = append(out, wu)
				}
			}
		}
	}
	return out, nil
}

// explainUnloaded adds the likely cause to a read error on a collection
// that is not loaded: Milvus reads only loaded collections.
func explainUnloaded(ctx context.Context, c milvuspb.MilvusServiceClient, db, name string, err error) error {
	st, lerr := c.GetLoadState(ctx, &milvuspb.GetLoadStateRequest{DbName: db, CollectionName: name})
	if milvusx.Check(st, lerr) != nil || st.GetState() == commonpb.LoadState_LoadStateLoaded {
		return err
	}
	return fmt.Errorf("source collection %s.%s is not loaded (%s), and Milvus reads only loaded collections: "+
		"load it on the source (it needs an index) and retry: %w", db, name, st.GetState(), err)
}

// tablePlan returns the units stored for a table, or plans them and
// stores them before anything is published. A plan stored first by
// another copier wins.
func tablePlan(ctx context.Context, plans *natsbus.Table[*copierpb.TablePlan], key string, plan func() ([]Unit, error), strKeys bool) (*copierpb.TablePlan, error) {
	if p, _, err := plans.Get(ctx, key); !errors.Is(err, apierr.ErrNotFound) {
		return p, err
	}
	units, err := plan()
	if err != nil {
		return nil, err
	}
	p := &copierpb.TablePlan{}
	for _, u := range units {
		p.Units = append(p.Units, &copierpb.PlannedUnit{Range: rangeToPB(u.Range, strKeys), Rows: u.Rows})
	}
	if _, err := plans.Create(ctx, key, p); errors.Is(err, apierr.ErrAlreadyExists) {
		p, _, err = plans.Get(ctx, key)
		return p, err
	} else if err != nil {
		return nil, err
	}
	return p, nil
}

// Unit is a key range of one table with the rows it held when planned.
type Unit struct {
	Range milvusx.Range
	Rows  int64
}

// PlanUnits splits a table into key ranges of about unitRows rows each by
// reading its primary keys only, in key order. The first range is open
// below and the last open above, so rows written after planning still
// fall in some unit. An empty table is one open unit.
func PlanUnits(ctx context.Context, src milvuspb.MilvusServiceClient, t milvusx.Table, unitRows int64) ([]Unit, error) {
	if unitRows <= 0 {
		unitRows = DefaultUnitRows
	}
	if minKey, err := milvusx.HasMinInt64Key(ctx, src, t); err != nil {
		return nil, err
	} else if minKey {
		return nil, fmt.Errorf("%s.%s holds the primary key %d, which Milvus filters cannot express; delete or re-key that row before migrating",
			t.Database, t.Collection, int64(math.MinInt64))
	}
	var (
		units []Unit
		start *milvusx.Key
		after *milvusx.Key
		rows  int64
	)
	for {
		page, err := milvusx.QueryKeys(ctx, src, t, milvusx.Range{}, after, milvusx.MaxQueryRows-1)
		if err != nil {
			return nil, err
		}
		for _, k := range page.Keys {
			if rows == unitRows {
				end := k
				units = append(units, Unit{Range: milvusx.Range{Start: start, End: &end}, Rows: rows})
				start, rows = &end, 0
			}
			rows++
		}
		if !page.More {
			return append(units, Unit{Range: milvusx.Range{Start: start}, Rows: rows}), nil
		}
		last := page.Last
		after = &last
	}
}
