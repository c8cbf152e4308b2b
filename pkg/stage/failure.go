package stage

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/propagation"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/zdm-io/zdm/pkg/milvusx"
	"github.com/zdm-io/zdm/pkg/natsbus"
	eventspb "github.com/zdm-io/zdm/proto/zdm/events/v1"
	zdmpb "github.com/zdm-io/zdm/proto/zdm/v1"
)

// ClusterError is an error that came from one cluster of a migration.
type ClusterError struct {
	Role zdmpb.ClusterRole
	Err  error
}

func (e *ClusterError) Error() string {
	if e.Role == zdmpb.ClusterRole_CLUSTER_ROLE_SOURCE {
		return "source: " + e.Err.Error()
	}
	return "target: " + e.Err.Error()
}

func (e *ClusterError) Unwrap() error { return e.Err }

// OnSource marks err as the source's; nil stays nil.
func OnSource(err error) error { return onCluster(zdmpb.ClusterRole_CLUSTER_ROLE_SOURCE, err) }

// OnTarget marks err as the target's; nil stays nil.
func OnTarget(err error) error { return onCluster(zdmpb.ClusterRole_CLUSTER_ROLE_TARGET, err) }

func onCluster(role zdmpb.ClusterRole, err error) error {
	var ce *ClusterError
	if err == nil || errors.As(err, &ce) {
		return err
	}
	return &ClusterError{Role: role, Err: err}
}

// Unreachable returns the cluster that err says did not answer, or
// CLUSTER_ROLE_UNSPECIFIED when err is not a failure to reach a cluster
// (the cluster answered with an error, or zdm itself failed).
func Unreachable(err error) zdmpb.ClusterRole {
	var ce *ClusterError
	if errors.As(err, &ce) && milvusx.IsUnreachable(ce.Err) {
		return ce.Role
	}
	return zdmpb.ClusterRole_CLUSTER_ROLE_UNSPECIFIED
}

// blameTimeout bounds the check Blame makes of each cluster.
const blameTimeout = 5 * time.Second

// Blame marks err, from work that talks to both clusters, as the source's
// or the target's when it says a server did not answer: it is the first of
// src and tgt that does not answer a check now. An error already marked,
// one that is not a failure to answer, or one after which both clusters
// answer is returned as it is. The check runs on its own deadline, so an
// error from a ctx that ran out is still blamed on the cluster behind it.
func Blame(ctx context.Context, err error, src, tgt *milvusx.Client) error {
	var ce *ClusterError
	if err == nil || errors.As(err, &ce) || !milvusx.IsUnreachable(err) {
		return err
	}
	answers := func(c *milvusx.Client) bool {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), blameTimeout)
		defer cancel()
		return !milvusx.IsUnreachable(milvusx.CheckMilvus(cctx, c))
	}
	switch {
	case !answers(src):
		return OnSource(err)
	case !answers(tgt):
		return OnTarget(err)
	}
	return err
}

// Backoff is how long the attempt after the given one (1 for the first)
// waits: 1s, doubling to at most 30s.
func Backoff(attempt uint64) time.Duration { return Doubling(time.Second, 30*time.Second, attempt) }

// Doubling is the wait after attempt (1 for the first): base, doubling
// with each attempt, at most ceiling.
func Doubling(base, ceiling time.Duration, attempt uint64) time.Duration {
	d := base
	for i := uint64(1); i < attempt && d < ceiling; i++ {
		d *= 2
	}
	return min(d, ceiling)
}

// Sleep waits d, or until ctx ends (its error).
func Sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// Attempt is the delivery count of msg: 1 for its first attempt.
func Attempt(msg jetstream.Msg) uint64 {
	md, err := msg.Metadata()
	if err != nil || md.NumDelivered == 0 {
		return 1
	}
	return md.NumDelivered
}

// PublishFailure tells the coordinator that an attempt at ev's work failed
// with err and will be retried; it fills in the cluster that did not
// answer, the message and the time. Its ID is unique to the attempt.
func PublishFailure(ctx context.Context, js jetstream.JetStream, prop propagation.TextMapPropagator, ev *eventspb.WorkFailed, err error) error {
	ev.Cluster = Unreachable(err)
	ev.ErrorMessage = err.Error()
	ev.Time = timestamppb.Now()
	_, perr := natsbus.Publish(ctx, js, prop, natsbus.EventSubject(ev.GetMigrationId(), natsbus.EventFailed), ev.GetEventId(), ev)
	if perr != nil {
		return fmt.Errorf("report failed attempt: %w", perr)
	}
	return nil
}
