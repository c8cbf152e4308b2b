package streamer

import (
	"testing"

	"github.com/stretchr/testify/require"

	eventspb "github.com/zdm-io/zdm/proto/zdm/events/v1"
)

// TestReplicasJoinAndLeave: the first look only learns who is there;
// after it, a replica armed for the migration that appears joined and one
// whose entry is gone left; replicas of other migrations do not count.
func TestReplicasJoinAndLeave(t *testing.T) {
	r := newReplicas("m")
	gw := func(id, migration string) *eventspb.ResolvedTimestamp {
		return &eventspb.ResolvedTimestamp{GatewayId: id, MigrationId: migration, Addr: id + ":19540"}
	}
	require.Empty(t, r.changes([]*eventspb.ResolvedTimestamp{gw("a", "m"), gw("b", "m"), gw("x", "other")}))
	require.Empty(t, r.changes([]*eventspb.ResolvedTimestamp{gw("a", "m"), gw("b", "m")}))
	ch := r.changes([]*eventspb.ResolvedTimestamp{gw("a", "m"), gw("c", "m")})
	require.Len(t, ch, 2)
	byID := map[string]*eventspb.GatewayChange{}
	for _, c := range ch {
		byID[c.GetGatewayId()] = c
	}
	require.True(t, byID["c"].GetJoined())
	require.False(t, byID["b"].GetJoined())
	require.Equal(t, "b:19540", byID["b"].GetAddr())
	require.Equal(t, "gw-m-b-left", byID["b"].GetEventId(), "one event per departure, whoever sends it")
}
