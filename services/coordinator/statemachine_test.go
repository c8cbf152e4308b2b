package coordinator

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/testing/protocmp"

	zdmpb "github.com/zdm-io/zdm/proto/zdm/v1"
)

var allStates = []zdmpb.MigrationState{pending, preparing, copying, syncing, ready, stoppingSync, switchingOver, verifying, paused, cancelling, completed, failed, cancelled}

var allTriggers = []Trigger{
	TriggerStart, TriggerPrepareDone, TriggerCopyDone, TriggerLagReached, TriggerStopSync, TriggerSwitchover,
	TriggerDrained, TriggerSwitchedOver, TriggerSwitchoverAborted, TriggerVerified, TriggerFail, TriggerPause,
	TriggerResume, TriggerCancel, TriggerCancelled,
}

type edge struct {
	typ     zdmpb.MigrationType
	from    zdmpb.MigrationState
	trigger Trigger
}

// allowed is the expected machine, written out independently of the
// declarations so that a wrong declaration fails here.
func allowed() map[edge]zdmpb.MigrationState {
	want := map[edge]zdmpb.MigrationState{}
	both := []zdmpb.MigrationType{zeroDowntime, offline}
	for _, typ := range both {
		want[edge{typ, pending, TriggerStart}] = preparing
		want[edge{typ, preparing, TriggerPrepareDone}] = copying
		want[edge{typ, verifying, TriggerVerified}] = completed
		want[edge{typ, preparing, TriggerPause}] = paused
		want[edge{typ, copying, TriggerPause}] = paused
		want[edge{typ, paused, TriggerResume}] = copying // paused from copying in this test
		want[edge{typ, cancelling, TriggerCancelled}] = cancelled
		for _, s := range []zdmpb.MigrationState{pending, preparing, copying, syncing, ready, stoppingSync, switchingOver, verifying, paused} {
			want[edge{typ, s, TriggerFail}] = failed
			want[edge{typ, s, TriggerCancel}] = cancelling
		}
	}
	want[edge{zeroDowntime, copying, TriggerCopyDone}] = syncing
	want[edge{offline, copying, TriggerCopyDone}] = verifying
	want[edge{zeroDowntime, syncing, TriggerLagReached}] = ready
	for _, s := range []zdmpb.MigrationState{syncing, ready} {
		want[edge{zeroDowntime, s, TriggerStopSync}] = stoppingSync
	}
	want[edge{zeroDowntime, ready, TriggerSwitchover}] = switchingOver
	want[edge{zeroDowntime, stoppingSync, TriggerDrained}] = verifying
	want[edge{zeroDowntime, switchingOver, TriggerSwitchedOver}] = verifying
	want[edge{zeroDowntime, switchingOver, TriggerSwitchoverAborted}] = ready
	return want
}

func TestEveryTransition(t *testing.T) {
	want := allowed()
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	for _, typ := range []zdmpb.MigrationType{zeroDowntime, offline} {
		for _, from := range allStates {
			for _, trig := range allTriggers {
				name := fmt.Sprintf("%s/%s/%s", typ, stateName(from), trig)
				m := &zdmpb.Migration{Type: typ, State: from, Stages: NewStages(typ)}
				if from == paused {
					m.PausedFromState = copying
				}
				before := cloneMigration(m)
				got, err := Apply(m, Event{Trigger: trig, Time: at, Actor: "tester", Reason: "because"})
				require.Equal(t, from, got, name)
				to, ok := want[edge{typ, from, trig}]
				if !ok {
					require.ErrorIs(t, err, ErrInvalidTransition, name)
					require.Contains(t, err.Error(), stateName(from), "%s: error names the current state", name)
					if diff := cmp.Diff(before, m, protocmp.Transform()); diff != "" {
						t.Errorf("%s: refused transition changed the migration (-before, +after):\n%s", name, diff)
					}
					continue
				}
				require.NoError(t, err, name)
				require.Equal(t, to, m.GetState(), name)
				require.Len(t, m.GetHistory(), 1, name)
				h := m.GetHistory()[0]
				require.Equal(t, from, h.GetFromState(), name)
				require.Equal(t, to, h.GetToState(), name)
				require.Equal(t, at, h.GetTime().AsTime(), name)
				require.Equal(t, "tester", h.GetActor(), name)
				require.Equal(t, "because", h.GetReason(), name)
				require.Equal(t, IsTerminal(to), m.GetEndTime() != nil, "%s: end time set exactly on terminal states", name)
			}
		}
	}
}

func TestIsTerminal(t *testing.T) {
	for _, s := range allStates {
		want := s == completed || s == failed || s == cancelled
		require.Equal(t, want, IsTerminal(s), s.String())
	}
}

func TestZeroDowntimeFlowStages(t *testing.T) {
	m := &zdmpb.Migration{Type: zeroDowntime, State: pending, Stages: NewStages(zeroDowntime),
		Collections: []*zdmpb.CollectionProgress{{Database: "shop", Collection: "items", Phase: zdmpb.CollectionPhase_COLLECTION_PHASE_COPIED}}}
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	steps := []Trigger{TriggerStart, TriggerPrepareDone, TriggerPause, TriggerResume, TriggerCopyDone, TriggerLagReached, TriggerStopSync, TriggerDrained, TriggerVerified}
	for i, trig := range steps {
		_, err := Apply(m, Event{Trigger: trig, Time: t0.Add(time.Duration(i) * time.Minute), Actor: "system", TargetEndpoint: "next:19530"})
		require.NoError(t, err, trig.String())
		if trig != TriggerVerified {
			require.Empty(t, m.GetTargetEndpoint(), "the endpoint is recorded only on completion")
			require.Equal(t, zdmpb.CollectionPhase_COLLECTION_PHASE_COPIED, m.GetCollections()[0].GetPhase(), "not verified before %s", trig)
		}
	}
	require.Equal(t, zdmpb.CollectionPhase_COLLECTION_PHASE_VERIFIED, m.GetCollections()[0].GetPhase())
	require.Equal(t, completed, m.GetState())
	require.Equal(t, "next:19530", m.GetTargetEndpoint())
	for _, s := range m.GetStages() {
		require.Equal(t, zdmpb.StageState_STAGE_STATE_SUCCEEDED, s.GetState(), s.GetKind().String())
		require.NotNil(t, s.GetStartTime(), s.GetKind().String())
		require.NotNil(t, s.GetEndTime(), s.GetKind().String())
	}
	require.Equal(t, t0.Add(4*time.Minute), SyncStart(m), "sync began with copy done")
	require.Equal(t, t0.Add(5*time.Minute), m.GetLag().GetThresholdReachedTime().AsTime())
	var path []string
	for _, h := range m.GetHistory() {
		path = append(path, stateName(h.GetToState()))
	}
	require.Equal(t, "PREPARING_TARGET COPYING PAUSED COPYING SYNCING READY_TO_FINALIZE STOPPING_SYNC VERIFYING COMPLETED", strings.Join(path, " "))
	require.Equal(t, zdmpb.MigrationState_MIGRATION_STATE_UNSPECIFIED, m.GetPausedFromState())
}

// A verification after a switchover that finds differences completes the
// migration with its VERIFY stage failed, and verifies no collection.
func TestFailedVerificationAfterSwitchoverVerifiesNothing(t *testing.T) {
	m := &zdmpb.Migration{Type: zeroDowntime, State: pending, Stages: NewStages(zeroDowntime),
		Collections: []*zdmpb.CollectionProgress{{Database: "shop", Collection: "items", Phase: zdmpb.CollectionPhase_COLLECTION_PHASE_COPIED}}}
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for i, trig := range []Trigger{TriggerStart, TriggerPrepareDone, TriggerCopyDone, TriggerLagReached, TriggerSwitchover, TriggerSwitchedOver} {
		_, err := Apply(m, Event{Trigger: trig, Time: t0.Add(time.Duration(i) * time.Minute)})
		require.NoError(t, err, trig.String())
	}
	require.Equal(t, verifying, m.GetState())
	_, err := Apply(m, Event{Trigger: TriggerVerified, Time: t0.Add(time.Hour), Reason: "shop.items: keys [10, 20) differ", VerifyFailed: true})
	require.NoError(t, err)
	require.Equal(t, completed, m.GetState())
	require.Equal(t, zdmpb.CollectionPhase_COLLECTION_PHASE_COPIED, m.GetCollections()[0].GetPhase())
	verify := m.GetStages()[len(m.GetStages())-1]
	require.Equal(t, zdmpb.StageKind_STAGE_KIND_VERIFY, verify.GetKind())
	require.Equal(t, zdmpb.StageState_STAGE_STATE_FAILED, verify.GetState())
	require.Equal(t, "shop.items: keys [10, 20) differ", verify.GetMessage())
}

func TestOfflineSkipsSyncAndFailureIsRecorded(t *testing.T) {
	m := &zdmpb.Migration{Type: offline, State: pending, Stages: NewStages(offline)}
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, trig := range []Trigger{TriggerStart, TriggerPrepareDone, TriggerCopyDone} {
		_, err := Apply(m, Event{Trigger: trig, Time: t0})
		require.NoError(t, err)
	}
	require.Equal(t, verifying, m.GetState())
	mismatch := &zdmpb.MigrationError{Code: "VERIFICATION_MISMATCH", Message: "db.items: keys [10, 20) differ"}
	_, err := Apply(m, Event{Trigger: TriggerFail, Time: t0.Add(time.Hour), Actor: "system", Reason: "verification failed", Error: mismatch})
	require.NoError(t, err)
	require.Equal(t, failed, m.GetState())
	require.Equal(t, "VERIFICATION_MISMATCH", m.GetError().GetCode())
	require.Equal(t, t0.Add(time.Hour), m.GetError().GetTime().AsTime())
	states := map[zdmpb.StageKind]zdmpb.StageState{}
	for _, s := range m.GetStages() {
		states[s.GetKind()] = s.GetState()
	}
	require.Equal(t, map[zdmpb.StageKind]zdmpb.StageState{
		zdmpb.StageKind_STAGE_KIND_PREPARE_TARGET:   zdmpb.StageState_STAGE_STATE_SUCCEEDED,
		zdmpb.StageKind_STAGE_KIND_COPY_DATA:        zdmpb.StageState_STAGE_STATE_SUCCEEDED,
		zdmpb.StageKind_STAGE_KIND_SYNC_INCREMENTAL: zdmpb.StageState_STAGE_STATE_SKIPPED,
		zdmpb.StageKind_STAGE_KIND_FINALIZE:         zdmpb.StageState_STAGE_STATE_SKIPPED,
		zdmpb.StageKind_STAGE_KIND_VERIFY:           zdmpb.StageState_STAGE_STATE_FAILED,
	}, states)
	require.True(t, SyncStart(m).IsZero())
}

func TestInvalidTransitionMessage(t *testing.T) {
	m := &zdmpb.Migration{Type: offline, State: copying}
	_, err := Apply(m, Event{Trigger: TriggerStopSync})
	require.True(t, errors.Is(err, ErrInvalidTransition))
	require.EqualError(t, err, "invalid transition: cannot stop sync a migration that is COPYING")
}
