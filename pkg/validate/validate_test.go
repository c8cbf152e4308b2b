package validate

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/zdm-io/zdm/pkg/apierr"
	zdmpb "github.com/zdm-io/zdm/proto/zdm/v1"
)

func TestID(t *testing.T) {
	for _, id := range []string{"a", "prod-a", "m-0a1b2c3d", "a-", strings.Repeat("a", 63)} {
		require.NoError(t, ID("cluster_id", "cluster", id), id)
	}
	for _, tc := range []struct{ id, says string }{
		{"", "migration_id is required: a migration ID of " + IDForm},
		{"has space", `migration ID "has space" (migration_id): want ` + IDForm},
		{"*", `"*"`}, {"UPPER", `"UPPER"`}, {"a.b", `"a.b"`}, {"-lead", `"-lead"`}, {"9lives", `"9lives"`}, {"a\x00b", `"a\x00b"`},
		{strings.Repeat("a", 64), "migration ID (migration_id) is 64 bytes long"},
		{strings.Repeat("a", 100_000), "100000 bytes long"},
	} {
		err := ID("migration_id", "migration", tc.id)
		require.ErrorIs(t, err, apierr.ErrInvalidArgument, "%q", tc.id)
		require.ErrorContains(t, err, tc.says)
	}
}

func TestConnection(t *testing.T) {
	require.NoError(t, Connection("source", &zdmpb.ClusterConnection{Endpoint: "milvus:19530"}))
	for _, tc := range []struct {
		conn *zdmpb.ClusterConnection
		says string
	}{
		{nil, "source.endpoint is required"},
		{&zdmpb.ClusterConnection{Endpoint: "127.0.0.1:99999"}, `source.endpoint "127.0.0.1:99999": port "99999"`},
		{&zdmpb.ClusterConnection{Endpoint: "m:1", Auth: &zdmpb.ClusterConnection_UserPassword{UserPassword: &zdmpb.UserPassword{}}},
			"source.user_password.username is empty"},
		{&zdmpb.ClusterConnection{Endpoint: "m:1", Tls: &zdmpb.TlsConfig{CaPem: []byte("x")}}, "source.tls has certificates but enabled is false"},
	} {
		err := Connection("source", tc.conn)
		require.ErrorIs(t, err, apierr.ErrInvalidArgument)
		require.ErrorContains(t, err, tc.says)
	}
}

func TestEndpoint(t *testing.T) {
	for _, ep := range []string{
		"127.0.0.1:19530", "localhost:1", "milvus.internal:65535", "milvus.internal.:19530",
		"[::1]:19530", "[fd00::5]:19530", "milvus_standalone:19530", "Milvus-1.EXAMPLE.com:443",
	} {
		require.NoError(t, Endpoint("connection.endpoint", ep), ep)
	}
	for _, tc := range []struct{ ep, says string }{
		{"", "connection.endpoint is required"},
		{"127.0.0.1:99999", "want a number from 1 to 65535"},
		{"127.0.0.1:0", "want a number from 1 to 65535"},
		{"127.0.0.1:-1", "want a number from 1 to 65535"},
		{"127.0.0.1:+80", "want a number from 1 to 65535"},
		{"127.0.0.1:195300", "want a number from 1 to 65535"},
		{"host:port", "want a number from 1 to 65535"},
		{"127.0.0.1:", "want a number from 1 to 65535"},
		{"http://x:19530", "has a scheme"},
		{"https://milvus.internal", "has a scheme"},
		{"x", "want host:port"},
		{"milvus", "want host:port"},
		{":19530", `host ""`},
		{"has space:19530", "spaces"},
		{" 127.0.0.1:19530", "spaces"},
		{"127.0.0.1:19530\n", "spaces"},
		{"a\x00b:19530", "control characters"},
		{"::1:19530", "want host:port"},
		{"[::1]", "want host:port"},
		{"[not-ip]:19530", "neither an IP address nor a host name"},
		{"[127.0.0.1]:19530", "neither an IP address nor a host name"},
		{"[fe80::1%eth0]:19530", "neither an IP address nor a host name"},
		{"999.1.1.1:19530", "neither an IP address nor a host name"},
		{"1.2.3:19530", "neither an IP address nor a host name"},
		{"-lead.example:19530", "neither an IP address nor a host name"},
		{"a..b:19530", "neither an IP address nor a host name"},
		{"a/b:19530", "neither an IP address nor a host name"},
		{"user@host:19530", "neither an IP address nor a host name"},
		{strings.Repeat("a", 64) + ".example:19530", "neither an IP address nor a host name"},
		{strings.Repeat("a.", 200) + "b:19530", "bytes long"},
	} {
		err := Endpoint("connection.endpoint", tc.ep)
		require.ErrorIs(t, err, apierr.ErrInvalidArgument, "%q", tc.ep)
		require.ErrorContains(t, err, tc.says, "%q", tc.ep)
	}
}

func TestOptionalID(t *testing.T) {
	require.NoError(t, OptionalID("migration_id", "migration", ""), "empty: not given")
	require.NoError(t, OptionalID("migration_id", "migration", "m-1"))
	err := OptionalID("migration_id", "migration", "Has Space")
	require.ErrorIs(t, err, apierr.ErrInvalidArgument)
	require.ErrorContains(t, err, `migration ID "Has Space" (migration_id)`)
}
