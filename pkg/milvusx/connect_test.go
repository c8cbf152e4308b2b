package milvusx_test

import (
	"context"
	"testing"
	"time"

	"github.com/milvus-io/milvus-sdk-go/v2/entity"
	"github.com/stretchr/testify/require"

	"github.com/zdm-io/zdm/pkg/milvusx"
	"github.com/zdm-io/zdm/pkg/ztest"
	zdmpb "github.com/zdm-io/zdm/proto/zdm/v1"
)

// TestIntegrationUserCollections: on every tier, a collection made in a
// test's database is found by the whole-cluster listing the coordinator
// uses to refuse a target that is not new, and the version is read.
func TestIntegrationUserCollections(t *testing.T) {
	ztest.Integration(t)
	for _, tier := range ztest.Tiers(t) {
		t.Run(tier.Name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			p := ztest.NewPair(t, tier)
			name := p.Name("listed")
			schema := entity.NewSchema().WithName(name).
				WithField(entity.NewField().WithName("id").WithDataType(entity.FieldTypeInt64).WithIsPrimaryKey(true)).
				WithField(entity.NewField().WithName("vec").WithDataType(entity.FieldTypeFloatVector).WithDim(4))
			require.NoError(t, p.Target.Client.CreateCollection(ctx, schema, 1))

			c, err := milvusx.Connect(ctx, &zdmpb.ClusterConnection{Endpoint: tier.Target}, "")
			require.NoError(t, err)
			defer c.Close()
			all, err := milvusx.UserCollections(ctx, c)
			require.NoError(t, err)
			require.Contains(t, all, p.Target.Database+"."+name)
			v, err := milvusx.ServerVersion(ctx, c)
			require.NoError(t, err)
			require.NotEmpty(t, v)
		})
	}
}

func TestConnectRejectsBadEndpointWithoutLeakingSecrets(t *testing.T) {
	ctx := context.Background()
	_, err := milvusx.Connect(ctx, &zdmpb.ClusterConnection{Endpoint: "no-port",
		Auth: &zdmpb.ClusterConnection_Token{Token: "tok-secret"}}, "")
	require.ErrorContains(t, err, `endpoint "no-port": want host:port`)
	require.NotContains(t, err.Error(), "tok-secret")
	_, err = milvusx.Connect(ctx, &zdmpb.ClusterConnection{Endpoint: "h:1", Tls: &zdmpb.TlsConfig{Enabled: true, CaPem: []byte("junk")}}, "")
	require.ErrorContains(t, err, "tls.ca_pem holds no PEM certificate")
}
