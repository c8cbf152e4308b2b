package main_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
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
	certFile, keyFile, pool := selfSigned(t, dir)
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

func selfSigned(t *testing.T, dir string) (certFile, keyFile string, pool *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "zdm test"},
		DNSNames: []string{"localhost"}, IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	require.NoError(t, err)
	kder, err := x509.MarshalECPrivateKey(key)
	require.NoError(t, err)
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	require.NoError(t, os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600))
	require.NoError(t, os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600))
	cert, err := x509.ParseCertificate(der)
	require.NoError(t, err)
	pool = x509.NewCertPool()
	pool.AddCert(cert)
	return certFile, keyFile, pool
}
