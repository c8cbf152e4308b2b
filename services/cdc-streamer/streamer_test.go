package streamer

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/zdm-io/zdm/pkg/service"
)

// TestIdleWithoutApplierOrGateway: a streamer that neither applies
// changes nor fronts a cluster reports NOT_SERVING (service.Idle); one
// that applies serves the sync stages.
func TestIdleWithoutApplierOrGateway(t *testing.T) {
	idle, err := New(Config{}, service.Deps{Metrics: prometheus.NewRegistry()})
	require.NoError(t, err)
	require.True(t, idle.Idle())
	require.Empty(t, idle.Stages())

	applier, err := New(Config{Apply: true}, service.Deps{Metrics: prometheus.NewRegistry()})
	require.NoError(t, err)
	require.False(t, applier.Idle())
	require.Len(t, applier.Stages(), 2)

	fronting := &Streamer{cfg: Config{GatewayCluster: "prod"}, gateway: &gateway{}}
	require.False(t, fronting.Idle(), "a started gateway serves its cluster")
}
