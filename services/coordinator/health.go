package coordinator

import (
	"context"
	"errors"
	"fmt"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/zdm-io/zdm/pkg/apierr"
	"github.com/zdm-io/zdm/pkg/auth"
	coordpb "github.com/zdm-io/zdm/proto/zdm/coordinator/v1"
	eventspb "github.com/zdm-io/zdm/proto/zdm/events/v1"
	zdmpb "github.com/zdm-io/zdm/proto/zdm/v1"
)

// Work that keeps failing. Services retry a failed attempt with backoff and
// report it (eventspb.WorkFailed); the coordinator shows a cluster that
// does not answer in Migration.cluster_problems at once, and fails the
// migration when the cluster stays down past ClusterDownTimeout, or when a
// unit fails UnitMaxAttempts times in a row while both clusters answer.

// onWorkFailed records a failed attempt and fails the migration when the
// failures have gone on too long.
func (c *Coordinator) onWorkFailed(ctx context.Context, ev *eventspb.WorkFailed) error {
	at := ev.GetTime().AsTime()
	if ev.GetTime() == nil {
		at = c.now()
	}
	var fail *zdmpb.MigrationError
	if role := ev.GetCluster(); role != zdmpb.ClusterRole_CLUSTER_ROLE_UNSPECIFIED {
		_, _, err := c.store.migrations.Update(ctx, ev.GetMigrationId(), func(m *zdmpb.Migration) error {
			fail = nil
			if IsTerminal(m.GetState()) || m.GetState() == paused {
				return errStop // a late report: nothing runs now
			}
			p := problem(m, role)
			if p == nil {
				p = &zdmpb.ClusterProblem{Role: role, ClusterId: clusterOf(m, role), Since: timestamppb.New(at),
					FailTime: timestamppb.New(at.Add(c.cfg.ClusterDownTimeout))}
				m.ClusterProblems = append(m.ClusterProblems, p)
			}
			p.LastError, p.LastErrorTime = ev.GetErrorMessage(), timestamppb.New(at)
			p.FailedAttempts++
			m.UpdateTime = timestamppb.New(c.now())
			if fail = downTooLong(p, at); fail != nil {
				fail.Stage = ev.GetStage()
			}
			return nil
		})
		if err != nil {
			return err
		}
	} else if ev.GetUnitId() != "" {
		var err error
		if fail, err = c.countUnitFailure(ctx, ev); err != nil {
			return err
		}
	}
	if fail == nil {
		return nil
	}
	_, err := c.transition(ctx, ev.GetMigrationId(), Event{Trigger: TriggerFail, Time: at, Actor: auth.System,
		Reason: fail.GetMessage(), Error: fail})
	return err
}

// countUnitFailure counts a failed attempt at a unit whose clusters both
// answered; it returns the migration's error once the unit has failed
// UnitMaxAttempts times in a row.
func (c *Coordinator) countUnitFailure(ctx context.Context, ev *eventspb.WorkFailed) (*zdmpb.MigrationError, error) {
	var attempts int64
	_, err := c.updateCopy(ctx, ev.GetMigrationId(), ev.GetUnitId(), func(rec *coordpb.CopyRecord) error {
		if rec.Failures == nil {
			rec.Failures = map[string]*coordpb.UnitFailures{}
		}
		f := rec.Failures[ev.GetUnitId()]
		if f == nil {
			f = &coordpb.UnitFailures{}
			rec.Failures[ev.GetUnitId()] = f
		}
		f.Attempts++
		f.LastError = ev.GetErrorMessage()
		attempts = f.Attempts
		return nil
	})
	if err != nil || attempts < int64(c.cfg.UnitMaxAttempts) {
		return nil, err
	}
	return &zdmpb.MigrationError{
		Code: "UNIT_FAILED",
		Message: fmt.Sprintf("copying %s.%s, keys %s, failed %d times in a row while both clusters answered; last error: %s",
			ev.GetDatabase(), ev.GetCollection(), describeRange(ev.GetRange()), attempts, ev.GetErrorMessage()),
		Stage: ev.GetStage(), Database: ev.GetDatabase(), Collection: ev.GetCollection(), Time: ev.GetTime(),
	}, nil
}

// clearProblems forgets the cluster problems of a migration whose work
// made progress: both clusters answer again.
func clearProblems(m *zdmpb.Migration) bool {
	if len(m.GetClusterProblems()) == 0 {
		return false
	}
	m.ClusterProblems = nil
	return true
}

// downTooLong is the migration's error when p has gone on past its fail
// time at now; nil otherwise.
func downTooLong(p *zdmpb.ClusterProblem, now time.Time) *zdmpb.MigrationError {
	if now.Before(p.GetFailTime().AsTime()) {
		return nil
	}
	role := "source"
	if p.GetRole() == zdmpb.ClusterRole_CLUSTER_ROLE_TARGET {
		role = "target"
	}
	since := p.GetSince().AsTime()
	return &zdmpb.MigrationError{
		Code: "CLUSTER_UNREACHABLE",
		Message: fmt.Sprintf("%s cluster %q has not answered since %s (%s, %d failed attempts); last error: %s",
			role, p.GetClusterId(), since.Format(time.RFC3339), now.Sub(since).Round(time.Second), p.GetFailedAttempts(), p.GetLastError()),
		Time: timestamppb.New(now),
	}
}

// sweepProblems fails m if one of its clusters has been down past its
// fail time, also when no new failure arrives to say so.
func (c *Coordinator) sweepProblems(ctx context.Context, m *zdmpb.Migration, now time.Time) error {
	if IsTerminal(m.GetState()) || m.GetState() == paused {
		return nil
	}
	for _, p := range m.GetClusterProblems() {
		if fail := downTooLong(p, now); fail != nil {
			fail.Stage = stageOf(m.GetState())
			_, err := c.transition(ctx, m.GetMigrationId(), Event{Trigger: TriggerFail, Time: now, Actor: auth.System,
				Reason: fail.GetMessage(), Error: fail})
			if errors.Is(err, ErrInvalidTransition) || errors.Is(err, apierr.ErrNotFound) {
				return nil
			}
			return err
		}
	}
	return nil
}

func problem(m *zdmpb.Migration, role zdmpb.ClusterRole) *zdmpb.ClusterProblem {
	for _, p := range m.GetClusterProblems() {
		if p.GetRole() == role {
			return p
		}
	}
	return nil
}

func clusterOf(m *zdmpb.Migration, role zdmpb.ClusterRole) string {
	if role == zdmpb.ClusterRole_CLUSTER_ROLE_SOURCE {
		return m.GetSourceClusterId()
	}
	return m.GetTargetClusterId()
}

// describeRange shows a unit's key range as [start, end).
func describeRange(r *eventspb.KeyRange) string {
	show := func(set bool, v any, open string) string {
		if !set {
			return open
		}
		return fmt.Sprint(v)
	}
	if b := r.GetIntBounds(); b != nil {
		return fmt.Sprintf("[%s, %s)", show(b.Start != nil, b.GetStart(), "-inf"), show(b.End != nil, b.GetEnd(), "+inf"))
	}
	if b := r.GetStringBounds(); b != nil {
		return fmt.Sprintf("[%s, %s)", show(b.Start != nil, fmt.Sprintf("%q", b.GetStart()), `""`),
			show(b.End != nil, fmt.Sprintf("%q", b.GetEnd()), "+inf"))
	}
	return "(all)"
}
