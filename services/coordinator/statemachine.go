package coordinator

import (
	"errors"
	"fmt"
	"slices"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	zdmpb "github.com/zdm-io/zdm/proto/zdm/v1"
)

// Trigger is what asks a migration to change state: an API call, a stage
// event from the bus or a timer.
type Trigger int

// Triggers. Their transitions are declared in transitions.
const (
	TriggerUnspecified Trigger = iota
	// TriggerStart begins a new migration (coordinator, after create).
	TriggerStart
	// TriggerPrepareDone: the target's schema objects exist (copier).
	TriggerPrepareDone
	// TriggerCopyDone: every existing row is copied (copier).
	TriggerCopyDone
	// TriggerLagReached: lag first reached the threshold (lag monitor).
	TriggerLagReached
	// TriggerStopSync: StopSync with confirmed stopped writes (API).
	TriggerStopSync
	// TriggerSwitchover: Switchover (API).
	TriggerSwitchover
	// TriggerDrained: remaining changes applied after StopSync (streamer).
	TriggerDrained
	// TriggerSwitchedOver: every gateway replica points at the target and
	// released its held writes there (streamer); a verification follows.
	TriggerSwitchedOver
	// TriggerSwitchoverAborted: draining took longer than the allowed
	// write pause; writes went back to the source (streamer).
	TriggerSwitchoverAborted
	// TriggerVerified: source and target compare equal (lag monitor).
	TriggerVerified
	// TriggerFail: a stage failed, verification found a mismatch, or the
	// maximum sync duration passed.
	TriggerFail
	// TriggerPause: PauseMigration (API).
	TriggerPause
	// TriggerResume: ResumeMigration (API).
	TriggerResume
	// TriggerCancel: CancelMigration (API).
	TriggerCancel
	// TriggerCancelled: what zdm created on the target is dropped.
	TriggerCancelled
)

var triggerNames = map[Trigger]string{
	TriggerStart: "start", TriggerPrepareDone: "prepare done", TriggerCopyDone: "copy done",
	TriggerLagReached: "lag threshold reached", TriggerStopSync: "stop sync", TriggerSwitchover: "switchover",
	TriggerDrained: "drained", TriggerSwitchedOver: "switched over", TriggerSwitchoverAborted: "switchover aborted",
	TriggerVerified: "verified", TriggerFail: "fail", TriggerPause: "pause", TriggerResume: "resume",
	TriggerCancel: "cancel", TriggerCancelled: "cancelled",
}

func (t Trigger) String() string {
	if n, ok := triggerNames[t]; ok {
		return n
	}
	return fmt.Sprintf("trigger(%d)", int(t))
}

// Short names for the states, to keep the table below readable.
const (
	pending       = zdmpb.MigrationState_MIGRATION_STATE_PENDING
	preparing     = zdmpb.MigrationState_MIGRATION_STATE_PREPARING_TARGET
	copying       = zdmpb.MigrationState_MIGRATION_STATE_COPYING
	syncing       = zdmpb.MigrationState_MIGRATION_STATE_SYNCING
	ready         = zdmpb.MigrationState_MIGRATION_STATE_READY_TO_FINALIZE
	stoppingSync  = zdmpb.MigrationState_MIGRATION_STATE_STOPPING_SYNC
	switchingOver = zdmpb.MigrationState_MIGRATION_STATE_SWITCHING_OVER
	verifying     = zdmpb.MigrationState_MIGRATION_STATE_VERIFYING
	paused        = zdmpb.MigrationState_MIGRATION_STATE_PAUSED
	cancelling    = zdmpb.MigrationState_MIGRATION_STATE_CANCELLING
	completed     = zdmpb.MigrationState_MIGRATION_STATE_COMPLETED
	failed        = zdmpb.MigrationState_MIGRATION_STATE_FAILED
	cancelled     = zdmpb.MigrationState_MIGRATION_STATE_CANCELLED

	zeroDowntime = zdmpb.MigrationType_MIGRATION_TYPE_ZERO_DOWNTIME
	offline      = zdmpb.MigrationType_MIGRATION_TYPE_OFFLINE
)

// resumeTarget marks a transition whose target is the state the migration
// was paused from.
const resumeTarget = zdmpb.MigrationState_MIGRATION_STATE_UNSPECIFIED

// transition is one declared state change: trigger moves a migration of
// type only (any type when unspecified) from any of from to to.
type transition struct {
	trigger Trigger
	from    []zdmpb.MigrationState
	to      zdmpb.MigrationState
	only    zdmpb.MigrationType
}

// nonTerminal lists every state a migration can still leave.
var nonTerminal = []zdmpb.MigrationState{pending, preparing, copying, syncing, ready, stoppingSync, switchingOver, verifying, paused}

// transitions is the whole state machine. Anything not declared here is
// refused with ErrInvalidTransition.
var transitions = []transition{
	{TriggerStart, states(pending), preparing, 0},
	{TriggerPrepareDone, states(preparing), copying, 0},
	{TriggerCopyDone, states(copying), syncing, zeroDowntime},
	{TriggerCopyDone, states(copying), verifying, offline},
	{TriggerLagReached, states(syncing), ready, zeroDowntime},
	{TriggerStopSync, states(syncing, ready), stoppingSync, zeroDowntime},
	{TriggerSwitchover, states(ready), switchingOver, zeroDowntime},
	{TriggerDrained, states(stoppingSync), verifying, zeroDowntime},
	{TriggerSwitchedOver, states(switchingOver), verifying, zeroDowntime},
	{TriggerSwitchoverAborted, states(switchingOver), ready, zeroDowntime},
	{TriggerVerified, states(verifying), completed, 0},
	{TriggerFail, nonTerminal, failed, 0},
	{TriggerPause, states(preparing, copying), paused, 0},
	{TriggerResume, states(paused), resumeTarget, 0},
	{TriggerCancel, nonTerminal, cancelling, 0},
	{TriggerCancelled, states(cancelling), cancelled, 0},
}

func states(s ...zdmpb.MigrationState) []zdmpb.MigrationState { return s }

// ErrInvalidTransition is returned when a trigger is not allowed in the
// migration's current state; the wrapping message names that state.
var ErrInvalidTransition = errors.New("invalid transition")

// Event is one trigger with what the transition records. Time comes in with
// the event: the machine never reads a clock.
type Event struct {
	Trigger Trigger
	Time    time.Time
	// Actor is an API key's name, or "system" for stage events and timers.
	Actor  string
	Reason string
	// Error is recorded on the migration when the trigger fails it.
	Error *zdmpb.MigrationError
	// TargetEndpoint is recorded when the trigger completes the migration:
	// where clients connect from now on.
	TargetEndpoint string
	// Repairs are recorded from a verification that repaired what the
	// change stream missed (succeeded or failed).
	Repairs []*zdmpb.RangeRepair
	// SourceDuplicates are recorded from a verification: the keys the
	// source holds more than once. Nil leaves the record as it was.
	SourceDuplicates []*zdmpb.DuplicateKeys
	// MaxWritePause starts a switchover attempt (TriggerSwitchover).
	MaxWritePause time.Duration
	// WritePause, GatewayIDs and HeldWrites are recorded from a switchover
	// (TriggerSwitchedOver).
	WritePause time.Duration
	GatewayIDs []string
	HeldWrites int64
	// VerifyFailed completes a switched-over migration whose verification
	// found differences: the VERIFY stage is recorded FAILED, with Reason.
	VerifyFailed bool
}

// IsTerminal reports whether s can no longer change.
func IsTerminal(s zdmpb.MigrationState) bool {
	return s == completed || s == failed || s == cancelled
}

// find returns the transition trigger takes from m's state, if declared.
func find(m *zdmpb.Migration, trigger Trigger) (transition, bool) {
	for _, t := range transitions {
		if t.trigger == trigger && slices.Contains(t.from, m.GetState()) && (t.only == 0 || t.only == m.GetType()) {
			return t, true
		}
	}
	return transition{}, false
}

// Apply moves m by ev, in place: its state, its stages and its history.
// It returns the state m was in. An undeclared transition leaves m
// untouched and returns an error wrapping ErrInvalidTransition that names
// the current state.
func Apply(m *zdmpb.Migration, ev Event) (zdmpb.MigrationState, error) {
	from := m.GetState()
	if ev.Trigger == TriggerCancel && Switched(m) {
		// Cancelling drops what zdm made on the target, where clients
		// write now.
		return from, fmt.Errorf("%w: cannot cancel a migration that switched over at %s: clients write to the target now; it completes once its verification ends",
			ErrInvalidTransition, m.GetSwitchover().GetSwitchTime().AsTime().Format(time.RFC3339))
	}
	t, ok := find(m, ev.Trigger)
	if !ok {
		return from, fmt.Errorf("%w: cannot %s a migration that is %s", ErrInvalidTransition, ev.Trigger, stateName(from))
	}
	to := t.to
	if to == resumeTarget {
		to = m.GetPausedFromState()
		if to == zdmpb.MigrationState_MIGRATION_STATE_UNSPECIFIED {
			return from, fmt.Errorf("%w: paused migration has no state to resume to", ErrInvalidTransition)
		}
	}
	at := timestamppb.New(ev.Time)
	updateStages(m, from, to, at, ev)

	switch {
	case to == paused:
		m.PausedFromState = from
	case from == paused:
		m.PausedFromState = zdmpb.MigrationState_MIGRATION_STATE_UNSPECIFIED
	}
	if to == ready {
		if m.Lag == nil {
			m.Lag = &zdmpb.Lag{}
		}
		if m.Lag.ThresholdReachedTime == nil {
			m.Lag.ThresholdReachedTime = at
		}
	}
	switch ev.Trigger {
	case TriggerSwitchover:
		m.Switchover = &zdmpb.SwitchoverAttempt{Attempt: m.GetSwitchover().GetAttempt() + 1,
			MaxWritePause: durationpb.New(ev.MaxWritePause), StartTime: at}
	case TriggerSwitchedOver:
		if m.Switchover == nil {
			m.Switchover = &zdmpb.SwitchoverAttempt{}
		}
		m.SwitchoverWritePause = durationpb.New(ev.WritePause)
		m.Switchover.SwitchTime, m.Switchover.GatewayIds, m.Switchover.HeldWrites = at, ev.GatewayIDs, ev.HeldWrites
	case TriggerSwitchoverAborted:
		if m.Switchover == nil {
			m.Switchover = &zdmpb.SwitchoverAttempt{}
		}
		m.Switchover.AbortReason = ev.Reason
	}
	if len(ev.Repairs) > 0 {
		m.Repairs, m.RepairedRanges, m.RepairedRows = ev.Repairs, int64(len(ev.Repairs)), 0
		for _, r := range ev.Repairs {
			m.RepairedRows += r.GetRowsUpserted() + r.GetKeysDeleted()
		}
	}
	if ev.SourceDuplicates != nil {
		m.SourceDuplicates = ev.SourceDuplicates
	}
	if to == failed {
		m.Error = ev.Error
		if m.Error == nil {
			m.Error = &zdmpb.MigrationError{Code: "FAILED", Message: ev.Reason}
		}
		if m.Error.Time == nil {
			m.Error.Time = at
		}
	}
	if to != failed {
		// The stage moved on: its clusters answered. A failure keeps the
		// problem that caused it on show.
		m.ClusterProblems = nil
	}
	if to == completed && ev.TargetEndpoint != "" {
		m.TargetEndpoint = ev.TargetEndpoint
	}
	if ev.Trigger == TriggerVerified && !ev.VerifyFailed {
		// Verification compares every collection: each one is verified. A
		// verification after a switchover that found differences completes
		// the migration all the same, and leaves the phases as they were.
		for _, c := range m.GetCollections() {
			c.Phase = zdmpb.CollectionPhase_COLLECTION_PHASE_VERIFIED
		}
	}
	m.State = to
	m.UpdateTime = at
	if IsTerminal(to) {
		m.EndTime = at
	}
	m.History = append(m.History, &zdmpb.Transition{FromState: from, ToState: to, Time: at, Reason: ev.Reason, Actor: ev.Actor})
	return from, nil
}

// Note records ev.Reason in m's history without a change of state: a
// gateway replica that joined or left, for example.
func Note(m *zdmpb.Migration, at time.Time, actor, reason string) {
	t := timestamppb.New(at)
	m.History = append(m.History, &zdmpb.Transition{FromState: m.GetState(), ToState: m.GetState(), Time: t, Reason: reason, Actor: actor})
	m.UpdateTime = t
}

// Switched reports whether m's clients were switched to its target.
func Switched(m *zdmpb.Migration) bool { return m.GetSwitchover().GetSwitchTime() != nil }

// stageOf is the stage a state belongs to.
func stageOf(s zdmpb.MigrationState) zdmpb.StageKind {
	switch s {
	case preparing:
		return zdmpb.StageKind_STAGE_KIND_PREPARE_TARGET
	case copying:
		return zdmpb.StageKind_STAGE_KIND_COPY_DATA
	case syncing, ready:
		return zdmpb.StageKind_STAGE_KIND_SYNC_INCREMENTAL
	case stoppingSync, switchingOver:
		return zdmpb.StageKind_STAGE_KIND_FINALIZE
	case verifying:
		return zdmpb.StageKind_STAGE_KIND_VERIFY
	}
	return zdmpb.StageKind_STAGE_KIND_UNSPECIFIED
}

// updateStages closes the stage being left and opens the one entered.
func updateStages(m *zdmpb.Migration, from, to zdmpb.MigrationState, at *timestamppb.Timestamp, ev Event) {
	cur := from
	if from == paused {
		cur = m.GetPausedFromState()
	}
	left, entered := stageOf(cur), stageOf(to)
	if to == paused || from == paused || left == entered {
		return
	}
	if s := stage(m, left); s != nil && s.State == zdmpb.StageState_STAGE_STATE_RUNNING {
		s.EndTime = at
		switch to {
		case failed:
			s.State = zdmpb.StageState_STAGE_STATE_FAILED
			s.Message = ev.Reason
		case cancelling:
			s.State = zdmpb.StageState_STAGE_STATE_CANCELLED
		case completed:
			s.State = zdmpb.StageState_STAGE_STATE_SUCCEEDED
			if ev.VerifyFailed {
				s.State = zdmpb.StageState_STAGE_STATE_FAILED
			}
			s.Message = ev.Reason
		default:
			s.State = zdmpb.StageState_STAGE_STATE_SUCCEEDED
		}
	}
	if s := stage(m, entered); s != nil && s.State != zdmpb.StageState_STAGE_STATE_SKIPPED {
		s.State = zdmpb.StageState_STAGE_STATE_RUNNING
		s.StartTime = at
		s.EndTime = nil
	}
}

func stage(m *zdmpb.Migration, kind zdmpb.StageKind) *zdmpb.Stage {
	for _, s := range m.GetStages() {
		if s.GetKind() == kind {
			return s
		}
	}
	return nil
}

// NewStages returns the stages of a new migration of type t, all PENDING
// except those the type skips.
func NewStages(t zdmpb.MigrationType) []*zdmpb.Stage {
	kinds := []zdmpb.StageKind{
		zdmpb.StageKind_STAGE_KIND_PREPARE_TARGET, zdmpb.StageKind_STAGE_KIND_COPY_DATA,
		zdmpb.StageKind_STAGE_KIND_SYNC_INCREMENTAL, zdmpb.StageKind_STAGE_KIND_FINALIZE,
		zdmpb.StageKind_STAGE_KIND_VERIFY,
	}
	out := make([]*zdmpb.Stage, 0, len(kinds))
	for _, k := range kinds {
		st := zdmpb.StageState_STAGE_STATE_PENDING
		if t == offline && (k == zdmpb.StageKind_STAGE_KIND_SYNC_INCREMENTAL || k == zdmpb.StageKind_STAGE_KIND_FINALIZE) {
			st = zdmpb.StageState_STAGE_STATE_SKIPPED
		}
		out = append(out, &zdmpb.Stage{Kind: k, State: st})
	}
	return out
}

// SyncStart is when the migration entered SYNCING; zero before.
func SyncStart(m *zdmpb.Migration) time.Time {
	if s := stage(m, zdmpb.StageKind_STAGE_KIND_SYNC_INCREMENTAL); s.GetStartTime() != nil {
		return s.GetStartTime().AsTime()
	}
	return time.Time{}
}

// stateName is the state as users see it, without the enum prefix.
func stateName(s zdmpb.MigrationState) string {
	const prefix = "MIGRATION_STATE_"
	n := s.String()
	if len(n) > len(prefix) {
		return n[len(prefix):]
	}
	return n
}
