package coordinator

import (
	"context"
	"errors"
	"fmt"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/zdm-io/zdm/pkg/apierr"
	"github.com/zdm-io/zdm/pkg/validate"
	coordpb "github.com/zdm-io/zdm/proto/zdm/coordinator/v1"
	zdmpb "github.com/zdm-io/zdm/proto/zdm/v1"
)

// RegisterCluster implements zdmpb.ClusterServiceServer.
func (c *Coordinator) RegisterCluster(ctx context.Context, req *zdmpb.RegisterClusterRequest) (*zdmpb.RegisterClusterResponse, error) {
	if err := checkIDs(req); err != nil {
		return nil, err
	}
	conn := req.GetConnection()
	if err := validate.Connection("connection", conn); err != nil {
		return nil, err
	}
	version, err := c.probe(ctx, req.GetClusterId(), conn)
	if err != nil {
		return nil, err
	}
	now := timestamppb.New(c.now())
	cl := &zdmpb.Cluster{
		ClusterId:     req.GetClusterId(),
		DisplayName:   req.GetDisplayName(),
		Endpoint:      conn.GetEndpoint(),
		TlsEnabled:    conn.GetTls().GetEnabled(),
		AuthKind:      authKind(conn),
		MilvusVersion: version,
		LockState:     zdmpb.LockState_LOCK_STATE_UNLOCKED,
		CreateTime:    now,
		UpdateTime:    now,
	}
	rec := &coordpb.ClusterRecord{Cluster: cl}
	if err := c.deps.Registry.Seal(rec, conn); err != nil {
		return nil, err
	}
	if _, err := c.store.clusters.Create(ctx, cl.GetClusterId(), rec); err != nil {
		return nil, err
	}
	return &zdmpb.RegisterClusterResponse{Cluster: cl}, nil
}

func authKind(conn *zdmpb.ClusterConnection) zdmpb.AuthKind {
	switch conn.GetAuth().(type) {
	case *zdmpb.ClusterConnection_UserPassword:
		return zdmpb.AuthKind_AUTH_KIND_USER_PASSWORD
	case *zdmpb.ClusterConnection_Token:
		return zdmpb.AuthKind_AUTH_KIND_TOKEN
	}
	return zdmpb.AuthKind_AUTH_KIND_NONE
}

// probe checks, within ProbeTimeout, that the cluster answers and is
// Milvus, and returns its version (see Prober.Probe).
func (c *Coordinator) probe(ctx context.Context, id string, conn *zdmpb.ClusterConnection) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.ProbeTimeout)
	defer cancel()
	return c.prober().Probe(ctx, id, conn)
}

func unreachable(id string, err error) error {
	return fmt.Errorf("%w: cluster %q does not answer: %v", apierr.ErrFailedPrecondition, id, err)
}

// GetCluster implements zdmpb.ClusterServiceServer.
func (c *Coordinator) GetCluster(ctx context.Context, req *zdmpb.GetClusterRequest) (*zdmpb.GetClusterResponse, error) {
	if err := checkIDs(req); err != nil {
		return nil, err
	}
	rec, _, err := c.store.clusters.Get(ctx, req.GetClusterId())
	if err != nil {
		return nil, err
	}
	cl, err := c.shown(ctx, rec.GetCluster())
	if err != nil {
		return nil, err
	}
	return &zdmpb.GetClusterResponse{Cluster: cl}, nil
}

// shown is the cluster as callers see it: a lock left by a migration that
// has ended (released by the effect that follows the final transition, a
// moment later or after a restart) shows as UNLOCKED, as lockHolder
// treats it.
func (c *Coordinator) shown(ctx context.Context, cl *zdmpb.Cluster) (*zdmpb.Cluster, error) {
	if cl.GetLockedByMigrationId() == "" {
		return cl, nil
	}
	holder, _, err := c.lockHolder(ctx, cl)
	if err != nil || holder != "" {
		return cl, err
	}
	cl.LockState, cl.LockedByMigrationId = zdmpb.LockState_LOCK_STATE_UNLOCKED, ""
	return cl, nil
}

// ListClusters implements zdmpb.ClusterServiceServer.
func (c *Coordinator) ListClusters(ctx context.Context, req *zdmpb.ListClustersRequest) (*zdmpb.ListClustersResponse, error) {
	if err := checkIDs(req); err != nil {
		return nil, err
	}
	size, err := pageSize(req.GetPageSize())
	if err != nil {
		return nil, err
	}
	after, err := clusterPages.after(req.GetPageToken())
	if err != nil {
		return nil, err
	}
	all, err := c.store.clusters.List(ctx)
	if err != nil {
		return nil, err
	}
	resp := &zdmpb.ListClustersResponse{}
	for _, e := range all {
		if e.Key <= after {
			continue
		}
		if len(resp.Clusters) == size {
			resp.NextPageToken = clusterPages.token(resp.Clusters[size-1].GetClusterId())
			break
		}
		cl, err := c.shown(ctx, e.Val.GetCluster())
		if err != nil {
			return nil, err
		}
		resp.Clusters = append(resp.Clusters, cl)
	}
	return resp, nil
}

// DeregisterCluster implements zdmpb.ClusterServiceServer. The lock check
// and the delete are one revision-checked step: a migration that locks the
// cluster meanwhile makes the delete fail and the check run again.
func (c *Coordinator) DeregisterCluster(ctx context.Context, req *zdmpb.DeregisterClusterRequest) (*zdmpb.DeregisterClusterResponse, error) {
	if err := checkIDs(req); err != nil {
		return nil, err
	}
	for range maxConflictRetries {
		rec, rev, err := c.store.clusters.Get(ctx, req.GetClusterId())
		if err != nil {
			return nil, err
		}
		if holder, state, err := c.lockHolder(ctx, rec.GetCluster()); err != nil {
			return nil, err
		} else if holder != "" {
			return nil, fmt.Errorf("%w: cluster %q is LOCKED by migration %q, which is %s; cancel it or let it finish first",
				apierr.ErrFailedPrecondition, req.GetClusterId(), holder, stateName(state))
		}
		err = c.store.clusters.Delete(ctx, req.GetClusterId(), rev)
		if errors.Is(err, apierr.ErrFailedPrecondition) {
			continue // changed meanwhile: check again
		}
		if err != nil {
			return nil, err
		}
		return &zdmpb.DeregisterClusterResponse{}, nil
	}
	return nil, fmt.Errorf("%w: cluster %q keeps changing; retry", apierr.ErrUnavailable, req.GetClusterId())
}

// lockHolder returns the non-terminal migration holding cl's lock, if any.
// A lock left by a migration that no longer exists or has ended (a crash
// between steps) does not count.
func (c *Coordinator) lockHolder(ctx context.Context, cl *zdmpb.Cluster) (string, zdmpb.MigrationState, error) {
	id := cl.GetLockedByMigrationId()
	if id == "" {
		return "", 0, nil
	}
	m, _, err := c.store.migrations.Get(ctx, id)
	if errors.Is(err, apierr.ErrNotFound) {
		return "", 0, nil
	}
	if err != nil {
		return "", 0, err
	}
	if IsTerminal(m.GetState()) {
		return "", 0, nil
	}
	return id, m.GetState(), nil
}

// lock marks cluster id as used by migration. It fails with
// FailedPrecondition when another live migration holds it.
func (c *Coordinator) lock(ctx context.Context, role, id, migration string) (*coordpb.ClusterRecord, error) {
	rec, _, err := c.store.clusters.Update(ctx, id, func(r *coordpb.ClusterRecord) error {
		cl := r.GetCluster()
		if cl.GetLockedByMigrationId() == migration {
			return errStop
		}
		holder, state, err := c.lockHolder(ctx, cl)
		if err != nil {
			return err
		}
		if holder != "" {
			return fmt.Errorf("%w: %s cluster %q is in migration %q, which is %s", apierr.ErrFailedPrecondition, role, id, holder, stateName(state))
		}
		cl.LockState = zdmpb.LockState_LOCK_STATE_LOCKED
		cl.LockedByMigrationId = migration
		cl.UpdateTime = timestamppb.New(c.now())
		return nil
	})
	return rec, err
}

// unlock releases migration's lock on cluster id; a lock held by another
// migration, or a cluster gone, is left alone.
func (c *Coordinator) unlock(ctx context.Context, id, migration string) error {
	_, _, err := c.store.clusters.Update(ctx, id, func(r *coordpb.ClusterRecord) error {
		cl := r.GetCluster()
		if cl.GetLockedByMigrationId() != migration {
			return errStop
		}
		cl.LockState = zdmpb.LockState_LOCK_STATE_UNLOCKED
		cl.LockedByMigrationId = ""
		cl.UpdateTime = timestamppb.New(c.now())
		return nil
	})
	if errors.Is(err, apierr.ErrNotFound) {
		return nil
	}
	return err
}

func pageSize(n int32) (int, error) {
	switch {
	case n < 0:
		return 0, fmt.Errorf("%w: page_size %d is negative", apierr.ErrInvalidArgument, n)
	case n == 0:
		return 100, nil
	case n > 1000:
		return 1000, nil
	}
	return int(n), nil
}
