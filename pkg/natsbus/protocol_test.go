package natsbus_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/zdm-io/zdm/pkg/natsbus"
)

func TestHoldKeyRoundTrip(t *testing.T) {
	key := natsbus.HoldKey("m-1", 3)
	require.True(t, natsbus.IsHoldKey(key))
	require.False(t, natsbus.IsHoldKey(natsbus.SwitchoverKey("m-1", 3)), "a decision's key is no hold key")
	migration, attempt, err := natsbus.ParseHoldKey(key)
	require.NoError(t, err)
	require.Equal(t, "m-1", migration)
	require.Equal(t, int32(3), attempt)
	for _, bad := range []string{"m-1.x.hold", ".3.hold", "hold", "m-1.3"} {
		_, _, err := natsbus.ParseHoldKey(bad)
		require.Error(t, err, bad)
	}
}

func TestUnitIDsAreStable(t *testing.T) {
	key := natsbus.UnitPlanKey("m1", "db", "items", "")
	require.Equal(t, key, natsbus.UnitPlanKey("m1", "db", "items", ""))
	require.NotEqual(t, key, natsbus.UnitPlanKey("m1", "db", "items", "p1"))
	require.Equal(t, key+".2", natsbus.UnitID("m1", "db", "items", "", 2))
}
