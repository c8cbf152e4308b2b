package streamer

import (
	"testing"

	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/types/known/timestamppb"

	zdmpb "github.com/zdm-io/zdm/proto/zdm/v1"
)

func TestPolicy(t *testing.T) {
	p := newPolicy("src", nil)
	p.markReady()
	m := func(name string) string { return milvusService + name }
	allowed := func(method string) bool { return p.allow(method) == nil }

	// No migration: everything passes.
	for _, name := range []string{"Insert", "Delete", "CreateCollection", "AlterAlias", "Query", "Search"} {
		require.True(t, allowed(m(name)), name)
	}

	// A migration from another cluster changes nothing.
	p.update("other", &zdmpb.Migration{SourceClusterId: "elsewhere", Type: zdmpb.MigrationType_MIGRATION_TYPE_OFFLINE,
		State: zdmpb.MigrationState_MIGRATION_STATE_COPYING})
	require.True(t, allowed(m("Insert")))

	// OFFLINE from this cluster: every write refused, naming it; reads pass.
	p.update("off", &zdmpb.Migration{SourceClusterId: "src", Type: zdmpb.MigrationType_MIGRATION_TYPE_OFFLINE,
		State: zdmpb.MigrationState_MIGRATION_STATE_COPYING})
	for _, name := range []string{"Insert", "Upsert", "Delete", "CreateCollection", "DropIndex", "AlterAlias", "Import"} {
		var r *refusal
		require.ErrorAs(t, p.allow(m(name)), &r, name)
		require.Contains(t, r.Error(), `FAILED_PRECONDITION: `+name+` refused: cluster "src" is the source of OFFLINE migration "off"`)
	}
	for _, name := range []string{"Query", "Search", "DescribeCollection", "Flush", "LoadCollection", "GetVersion"} {
		require.True(t, allowed(m(name)), name)
	}
	require.True(t, allowed("/grpc.health.v1.Health/Check"), "other services pass")

	// It ends: writes pass again.
	p.update("off", &zdmpb.Migration{SourceClusterId: "src", Type: zdmpb.MigrationType_MIGRATION_TYPE_OFFLINE,
		State: zdmpb.MigrationState_MIGRATION_STATE_CANCELLED})
	require.True(t, allowed(m("Insert")))

	// ZERO_DOWNTIME: mutations and replicated DDL pass, frozen DDL does not.
	p.update("zdt", &zdmpb.Migration{SourceClusterId: "src", Type: zdmpb.MigrationType_MIGRATION_TYPE_ZERO_DOWNTIME,
		State: zdmpb.MigrationState_MIGRATION_STATE_SYNCING})
	for _, name := range []string{"Insert", "Upsert", "Delete", "CreateCollection", "DropCollection", "CreateIndex"} {
		require.True(t, allowed(m(name)), name)
	}
	for _, name := range []string{"AlterCollection", "AlterCollectionField", "CreateAlias", "DropAlias", "AlterAlias",
		"RenameCollection", "AlterDatabase", "Import"} {
		var r *refusal
		require.ErrorAs(t, p.allow(m(name)), &r, name)
		require.Contains(t, r.Error(), `migration "zdt"`)
	}
	p.update("zdt", nil) // deleted
	require.True(t, allowed(m("AlterAlias")))
}

func TestRawCodecKeepsBytes(t *testing.T) {
	in := &frame{b: []byte{0x0a, 0x03, 'a', 'b', 'c'}}
	data, err := rawCodec{}.Marshal(in)
	require.NoError(t, err)
	out := &frame{}
	require.NoError(t, rawCodec{}.Unmarshal(data, out))
	require.Equal(t, in.b, out.b)
	_, err = rawCodec{}.Marshal("not a frame")
	require.Error(t, err)
}

// TestPolicyFollowsSwitchovers: once a migration from the fronted cluster
// switched over, calls go to its target, for good and hop by hop; the
// switched migration stays the one captured until it ends, and the
// target view shows a target only while it syncs.
func TestPolicyFollowsSwitchovers(t *testing.T) {
	var got view
	p := newPolicy("a", func(v view) { got = v })
	p.markReady()
	zd := func(id, src, tgt string, state zdmpb.MigrationState, switched bool) *zdmpb.Migration {
		m := &zdmpb.Migration{MigrationId: id, SourceClusterId: src, TargetClusterId: tgt, Type: zdmpb.MigrationType_MIGRATION_TYPE_ZERO_DOWNTIME, State: state}
		if switched {
			m.Switchover = &zdmpb.SwitchoverAttempt{Attempt: 1, SwitchTime: timestamppb.Now()}
		}
		return m
	}
	p.update("m1", zd("m1", "a", "b", zdmpb.MigrationState_MIGRATION_STATE_READY_TO_FINALIZE, false))
	require.Equal(t, "a", got.upstream)
	require.Equal(t, "m1", got.active.GetMigrationId())
	require.Equal(t, "m1", p.syncing().GetMigrationId(), "the target view shows b")

	p.update("m1", zd("m1", "a", "b", zdmpb.MigrationState_MIGRATION_STATE_VERIFYING, true))
	require.Equal(t, "b", got.upstream, "switched: calls go to the target")
	require.Equal(t, "m1", got.active.GetMigrationId(), "writes after the switch are still recorded")
	require.Nil(t, p.syncing(), "nothing syncs any more")
	require.NoError(t, p.allow(milvusService+"Insert"))

	p.update("m1", zd("m1", "a", "b", zdmpb.MigrationState_MIGRATION_STATE_COMPLETED, true))
	require.Equal(t, "b", got.upstream, "for good")
	require.Nil(t, got.active)

	// A later migration from b is b's gateway's, and a second hop leads
	// on to c.
	p.update("m2", zd("m2", "b", "c", zdmpb.MigrationState_MIGRATION_STATE_SYNCING, false))
	require.Equal(t, "m2", got.active.GetMigrationId())
	var r *refusal
	require.ErrorAs(t, p.allow(milvusService+"AlterAlias"), &r)
	require.Contains(t, r.Error(), `cluster "b" is the source of migration "m2"`)
	p.update("m2", zd("m2", "b", "c", zdmpb.MigrationState_MIGRATION_STATE_COMPLETED, true))
	require.Equal(t, "c", got.upstream)
}
