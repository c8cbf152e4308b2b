package coordinator

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/zdm-io/zdm/pkg/apierr"
	"github.com/zdm-io/zdm/pkg/milvusx"
	zdmpb "github.com/zdm-io/zdm/proto/zdm/v1"
)

// Prober checks clusters before the coordinator records them or starts a
// migration between them: Probe when a cluster is registered and, for the
// source, when a migration is created; TargetIsNew for the target of a
// migration being created. The coordinator bounds each call with
// Config.ProbeTimeout through ctx; a call blocks until the cluster has
// answered or ctx ends. Errors reach the API caller as they are, so they
// wrap an apierr sentinel (FailedPrecondition for a cluster that does not
// answer, is not Milvus or is not fit to be a target) and never hold
// credentials. Implementations are safe for concurrent use.
type Prober interface {
	// Probe checks that cluster id, reached through conn, answers and is
	// Milvus, and returns the version it reports.
	Probe(ctx context.Context, id string, conn *zdmpb.ClusterConnection) (version string, err error)
	// TargetIsNew checks that cluster id holds no user collection in any
	// database, naming what it found when it does.
	TargetIsNew(ctx context.Context, id string, conn *zdmpb.ClusterConnection) error
}

// MilvusProber is the Prober that asks the clusters themselves through the
// Milvus SDK. It is the default.
type MilvusProber struct{}

var _ Prober = MilvusProber{}

// Probe implements Prober. A gRPC server that is not Milvus is
// FailedPrecondition saying so; a server that does not answer is
// FailedPrecondition naming the cluster.
func (MilvusProber) Probe(ctx context.Context, id string, conn *zdmpb.ClusterConnection) (version string, err error) {
	mc, err := milvusx.Connect(ctx, conn, "")
	if err != nil {
		return "", unreachable(id, err)
	}
	defer func() { err = errors.Join(err, mc.Close()) }()
	if err := milvusx.CheckMilvus(ctx, mc); errors.Is(err, milvusx.ErrNotMilvus) {
		return "", fmt.Errorf("%w: cluster %q: endpoint %s answers gRPC but is not a Milvus server; check the host and port", apierr.ErrFailedPrecondition, id, conn.GetEndpoint())
	} else if err != nil {
		return "", unreachable(id, err)
	}
	v, err := milvusx.ServerVersion(ctx, mc)
	if err != nil {
		return "", unreachable(id, err)
	}
	return v, nil
}

// TargetIsNew implements Prober: a target holding user collections is
// FailedPrecondition listing them (the first maxListedCollections).
func (MilvusProber) TargetIsNew(ctx context.Context, id string, conn *zdmpb.ClusterConnection) (err error) {
	mc, err := milvusx.Connect(ctx, conn, "")
	if err != nil {
		return fmt.Errorf("target: %w", unreachable(id, err))
	}
	defer func() { err = errors.Join(err, mc.Close()) }()
	colls, err := milvusx.UserCollections(ctx, mc)
	if err != nil {
		return fmt.Errorf("target: %w", unreachable(id, err))
	}
	return notNew(id, colls)
}

// notNew is the error for target id holding colls ("database.collection"),
// nil when it holds none.
func notNew(id string, colls []string) error {
	if len(colls) == 0 {
		return nil
	}
	shown := colls
	more := ""
	if len(shown) > maxListedCollections {
		shown, more = shown[:maxListedCollections], fmt.Sprintf(" and %d more", len(colls)-maxListedCollections)
	}
	return fmt.Errorf("%w: target cluster %q is not new: it holds %d collection(s): %s%s; migrate to an empty cluster",
		apierr.ErrFailedPrecondition, id, len(colls), strings.Join(shown, ", "), more)
}

// prober is the configured Prober, MilvusProber when none is.
func (c *Coordinator) prober() Prober {
	if c.cfg.Prober == nil {
		return MilvusProber{}
	}
	return c.cfg.Prober
}
