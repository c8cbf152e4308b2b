package main_test

import (
	"context"
	"crypto/tls"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/zdm-io/zdm/pkg/auth"
	"github.com/zdm-io/zdm/pkg/ztest"
	zdmpb "github.com/zdm-io/zdm/proto/zdm/v1"
)

// TestE2EAuthAndTLS serves the API over TLS with API keys and checks each
// role's reach.
func TestE2EAuthAndTLS(t *testing.T) {
	ztest.Integration(t)
	dir := t.TempDir()
	cert := ztest.SelfSigned(t)
	certFile, keyFile, pool := cert.CertFile, cert.KeyFile, cert.Pool
	keys := filepath.Join(dir, "keys")
	require.NoError(t, os.WriteFile(keys, []byte("ops admin "+auth.HashKey("adm-key")+"\ndash viewer "+auth.HashKey("view-key")+"\n"), 0o600))
	p := start(t, "-target", "coordinator", "-api-keys-file", keys, "-tls-cert", certFile, "-tls-key", keyFile)

	conn, err := grpc.NewClient(p.addrs.GRPC, grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: pool, ServerName: "localhost"})))
	require.NoError(t, err)
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	as := func(key string) context.Context {
		return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+key)
	}
	clusters := zdmpb.NewClusterServiceClient(conn)

	st, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
	require.NoError(t, err, "health needs no key")
	require.Equal(t, healthpb.HealthCheckResponse_SERVING, st.GetStatus())

	_, err = clusters.ListClusters(ctx, &zdmpb.ListClustersRequest{})
	require.Equal(t, codes.Unauthenticated, status.Code(err), "%v", err)
	_, err = clusters.ListClusters(as("wrong"), &zdmpb.ListClustersRequest{})
	require.Equal(t, codes.Unauthenticated, status.Code(err), "%v", err)
	_, err = clusters.ListClusters(as("view-key"), &zdmpb.ListClustersRequest{})
	require.NoError(t, err)
	bad := &zdmpb.RegisterClusterRequest{ClusterId: "c1", Connection: &zdmpb.ClusterConnection{Endpoint: "nowhere"}}
	_, err = clusters.RegisterCluster(as("view-key"), bad)
	require.Equal(t, codes.PermissionDenied, status.Code(err), "%v", err)
	_, err = clusters.RegisterCluster(as("adm-key"), bad)
	require.Equal(t, codes.InvalidArgument, status.Code(err), "admin passes auth and reaches validation: %v", err)

	plain, err := grpc.NewClient(p.addrs.GRPC, grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{InsecureSkipVerify: true})))
	require.NoError(t, err)
	defer plain.Close()
	_, err = healthpb.NewHealthClient(plain).Check(ctx, &healthpb.HealthCheckRequest{})
	require.NoError(t, err, "the API speaks TLS")
}
