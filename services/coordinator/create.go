package coordinator

import (
	"context"
	"errors"
	"fmt"

	"go.opentelemetry.io/otel/trace"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/zdm-io/zdm/pkg/apierr"
	"github.com/zdm-io/zdm/pkg/auth"
	"github.com/zdm-io/zdm/pkg/telemetry"
	zdmpb "github.com/zdm-io/zdm/proto/zdm/v1"
)

// create starts migration id of type typ from cluster srcID to tgtID with
// opts (validated, defaults filled in): it checks that the migration's
// stages are served, that the source answers and the target is new,
// locks both clusters, records the migration and starts it. A retried
// create with the same ID and request returns the migration; the same ID
// with another request is AlreadyExists. Nothing is left locked or
// half-written when it fails.
func (c *Coordinator) create(ctx context.Context, id string, typ zdmpb.MigrationType, srcID, tgtID string, opts *zdmpb.MigrationOptions) (*zdmpb.Migration, error) {
	// A retried create with the same ID and request returns the migration.
	if existing, rev, err := c.store.migrations.Get(ctx, id); err == nil {
		if existing.GetType() == typ && existing.GetSourceClusterId() == srcID &&
			existing.GetTargetClusterId() == tgtID {
			return withRevision(existing, rev), nil
		}
		return nil, fmt.Errorf("%w: migration %q already exists with another request", apierr.ErrAlreadyExists, id)
	} else if !errors.Is(err, apierr.ErrNotFound) {
		return nil, err
	}

	if err := c.checkStagesServed(ctx, typ); err != nil {
		return nil, err
	}
	if err := c.checkFronted(ctx, typ, srcID); err != nil {
		return nil, err
	}
	src, _, err := c.store.clusters.Get(ctx, srcID)
	if err != nil {
		return nil, fmt.Errorf("source: %w", err)
	}
	tgt, _, err := c.store.clusters.Get(ctx, tgtID)
	if err != nil {
		return nil, fmt.Errorf("target: %w", err)
	}
	srcConn, err := c.deps.Registry.Connection(src)
	if err != nil {
		return nil, err
	}
	tgtConn, err := c.deps.Registry.Connection(tgt)
	if err != nil {
		return nil, err
	}
	if _, err := c.probe(ctx, srcID, srcConn); err != nil {
		return nil, fmt.Errorf("source: %w", err)
	}
	if err := c.checkTargetIsNew(ctx, tgtID, tgtConn); err != nil {
		return nil, err
	}

	// Lock both clusters, then record the migration. A crash in between
	// leaves a lock naming a migration that does not exist, which
	// lockHolder ignores.
	if _, err := c.lock(ctx, "source", srcID, id); err != nil {
		return nil, err
	}
	if _, err := c.lock(ctx, "target", tgtID, id); err != nil {
		return nil, errors.Join(err, c.unlock(context.WithoutCancel(ctx), srcID, id))
	}
	ctx, sp := c.tracer().Start(ctx, "create migration", trace.WithAttributes(telemetry.MigrationKey.String(id)))
	defer sp.End()
	now := c.now()
	m := &zdmpb.Migration{
		MigrationId:     id,
		Type:            typ,
		State:           pending,
		SourceClusterId: srcID,
		TargetClusterId: tgtID,
		Options:         opts,
		Stages:          NewStages(typ),
		CreatedBy:       auth.Actor(ctx),
		CreateTime:      timestamppb.New(now),
		UpdateTime:      timestamppb.New(now),
	}
	telemetry.RecordRoot(ctx, m)
	if _, err := c.store.migrations.Create(ctx, id, m); err != nil {
		uctx := context.WithoutCancel(ctx)
		return nil, errors.Join(err, c.unlock(uctx, srcID, id), c.unlock(uctx, tgtID, id))
	}
	return c.transition(ctx, id, Event{Trigger: TriggerStart, Time: now, Actor: auth.Actor(ctx), Reason: "migration created"})
}
