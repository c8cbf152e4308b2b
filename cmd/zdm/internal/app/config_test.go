package app

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/stretchr/testify/require"

	"github.com/zdm-io/zdm/services/coordinator"
)

func TestParseDefaults(t *testing.T) {
	got, err := Parse(nil)
	require.NoError(t, err)
	want := DefaultConfig()
	require.NoError(t, want.Validate())
	if diff := cmp.Diff(want, got, cmp.AllowUnexported(Config{}), cmpopts.IgnoreFields(coordinator.Config{}, "Now")); diff != "" {
		t.Errorf("defaults (-want, +got):\n%s", diff)
	}
	require.Equal(t, []string{"snapshot-copier", "cdc-streamer", "lag-monitor", "coordinator"}, got.Targets)
	require.Equal(t, "127.0.0.1:7400", got.GRPCAddr)
	require.Equal(t, "127.0.0.1:7401", got.MetricsAddr)
	require.Empty(t, got.NATSURL, "embedded NATS by default")
	require.Zero(t, got.syncInterval, "fsync after every write by default")
}

func TestParseFlagsAndEnvironment(t *testing.T) {
	t.Setenv("ZDM_GRPC_ADDR", "0.0.0.0:9000")
	t.Setenv("ZDM_JETSTREAM_SYNC", "250ms")
	t.Setenv("ZDM_INSECURE_NO_AUTH", "true")
	got, err := Parse([]string{"-target", "coordinator, snapshot-copier", "--metrics-addr", ":9001"})
	require.NoError(t, err)
	require.Equal(t, "0.0.0.0:9000", got.GRPCAddr)
	require.Equal(t, ":9001", got.MetricsAddr)
	require.Equal(t, 250*time.Millisecond, got.syncInterval)
	require.Equal(t, []string{"snapshot-copier", "coordinator"}, got.Targets, "start-up order is fixed")
	require.True(t, got.AuthOff())
}

func TestParseAuthAndTLS(t *testing.T) {
	got, err := Parse(nil)
	require.NoError(t, err)
	require.True(t, got.AuthOff(), "loopback without keys runs open, and logs so")
	got, err = Parse([]string{"-grpc-addr", "[::1]:7400"})
	require.NoError(t, err)
	require.True(t, got.AuthOff())
	got, err = Parse([]string{"-grpc-addr", ":7400", "-api-keys-file", "/etc/zdm/keys"})
	require.NoError(t, err)
	require.False(t, got.AuthOff())
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"-grpc-addr", ":7400"}, "--grpc-addr :7400 is reachable from other machines: set --api-keys-file, or --insecure-no-auth"},
		{[]string{"-grpc-addr", "10.1.2.3:7400"}, "reachable from other machines"},
		{[]string{"-api-keys-file", "k", "-insecure-no-auth"}, "contradict each other"},
		{[]string{"-tls-cert", "c.pem"}, "--tls-cert and --tls-key go together"},
	} {
		_, err := Parse(tc.args)
		require.ErrorContains(t, err, tc.want, "args %q", tc.args)
	}
}

func TestParseRejectsBadConfig(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"-target", "copier"}, `unknown service "copier"; want all or a comma-separated list of snapshot-copier, cdc-streamer, lag-monitor, coordinator`},
		{[]string{"-grpc-addr", "7400"}, `--grpc-addr "7400": want host:port, for example 127.0.0.1:7400`},
		{[]string{"-metrics-addr", "localhost:http"}, `port "http" is not a number from 0 to 65535`},
		{[]string{"-jetstream-sync", "sometimes"}, `--jetstream-sync "sometimes": want always or a positive interval such as 1s`},
		{[]string{"-stream-replicas", "3"}, `--stream-replicas 3 needs a NATS cluster`},
		{[]string{"-stream-replicas", "2", "-nats-url", "nats://n:4222"}, `--stream-replicas 2: want 1, 3 or 5`},
		{[]string{"-coordinator-sweep-interval", "0s"}, `--coordinator-sweep-interval 0s: want 10ms to 1h`},
		{[]string{"-shutdown-timeout", "0s"}, `--shutdown-timeout 0s: want more than 0 and at most 5m`},
		{[]string{"-data-dir", ""}, `--data-dir is empty`},
		{[]string{"extra"}, `unexpected arguments ["extra"]`},
	} {
		_, err := Parse(tc.args)
		require.ErrorContains(t, err, tc.want, "args %q", tc.args)
	}
}

func TestParseExternalNATSIgnoresEmbeddedSettings(t *testing.T) {
	got, err := Parse([]string{"-nats-url", "nats://a:4222,nats://b:4222", "-stream-replicas", "3", "-jetstream-sync", "bogus"})
	require.NoError(t, err)
	require.Equal(t, 3, got.StreamReplicas)
}
